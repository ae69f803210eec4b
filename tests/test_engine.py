"""The inference engine: cache equivalence with full recompute, determinism, prediction, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import randomize, tiny_config

from worldsim.config import ActionSpec
from worldsim.diffusion.sampler import Rollout
from worldsim.engine import WorldModel
from worldsim.errors import InputError, WorldsimError
from worldsim.models.attention import BlockCausal, block_causal_mask, frame_visibility
from worldsim.models.conditioning import FrameConditioning


def tiny_world(seed=0, **kw) -> WorldModel:
    cfg = tiny_config(**kw)
    wm = WorldModel(cfg)
    randomize(wm.dit, seed)
    randomize(wm.autoencoder, seed + 1, std=0.05)
    return wm


def latent_rollout(
    wm: WorldModel, reference: bool, frames: int, action_cfg: float = 1.0, seed: int = 0, merge: bool = True
):
    """Generate ``frames`` latent frames after a 2-frame context; returns latents and heads."""
    cfg = wm.sampler_config
    cfg.action_cfg = action_cfg
    g = torch.Generator().manual_seed(seed)
    B = 2
    r = Rollout(wm.dit, cfg, B, wm.latent_shape, g, reference=reference)
    r.merge_writes = merge
    ctx = torch.randn(B, 2, *wm.latent_shape, generator=torch.Generator().manual_seed(99))
    null = torch.tensor([[True, False]] * B)
    r.write(ctx, FrameConditioning(torch.tensor([[0, 1]] * B), null))
    outs = []
    for t in range(frames):
        a = torch.tensor([[t % 3], [(t + 1) % 3]])
        outs.append(r.generate(FrameConditioning(a, torch.zeros(B, 1, dtype=torch.bool)), 1))
    return [torch.cat([o[i] for o in outs], 1) for i in range(3)]


@pytest.mark.parametrize("frames", [3, 14], ids=["within-window", "rolling-window-with-sink"])
@pytest.mark.parametrize("action_cfg", [1.0, 2.5], ids=["no-cfg", "action-cfg"])
def test_cached_rollout_equals_full_recompute(frames, action_cfg):
    """The backbone of trust: step-by-step cached sampling == recomputing everything (fp32)."""
    wm = tiny_world(window=4, sinks=1)
    cached = latent_rollout(wm, reference=False, frames=frames, action_cfg=action_cfg)
    full = latent_rollout(wm, reference=True, frames=frames, action_cfg=action_cfg)
    for a, b in zip(cached, full):
        assert (a - b).abs().max().item() < 1e-4
    assert cached[0].abs().mean() > 0.1  # the comparison is of real, non-trivial frames


def test_writing_each_frame_in_the_next_frames_pass_makes_the_same_frames_in_fewer_passes():
    """A finished frame written in the next frame's first pass (one block of two) instead of a pass of its own: the
    same frames through a rolled window with a sink (the second frame reads the sinks one frame on), K DiT passes a
    frame instead of K + 1."""
    wm = tiny_world(window=4, sinks=1)
    calls = []
    wm.dit.register_forward_hook(lambda *_: calls.append(1))
    frames, steps = 14, wm.sampler_config.steps
    merged = latent_rollout(wm, reference=False, frames=frames)
    merged_passes, calls[:] = len(calls), []
    alone = latent_rollout(wm, reference=False, frames=frames, merge=False)
    assert (merged[0] - alone[0]).abs().max() < 1e-4
    assert merged[0].abs().mean() > 0.1  # real, non-trivial frames
    assert len(calls) == 1 + frames * (steps + 1)  # the context's write, then K + 1 passes a frame
    assert merged_passes == 1 + frames * steps


def test_cache_memory_is_constant():
    wm = tiny_world(window=4, sinks=1)
    wm.reset(np.zeros((1, 32, 32, 3), np.uint8), seed=0)
    size = wm._rollout.memory.k.numel()
    for _ in range(12):
        wm.step([1])
    assert wm._rollout.memory.k.numel() == size
    assert wm.frame_index == 13
    wm._rollout.flush()  # the last frame is held back, to be written in the next frame's first pass
    assert wm._rollout.memory.k.numel() == size
    assert sorted(wm._rollout.memory.slot_frame[0].tolist()) == [0, 10, 11, 12]  # sink + last window-1 frames


def test_step_is_deterministic_given_seed_and_differs_across_seeds():
    wm = tiny_world()
    ctx = np.random.default_rng(0).integers(0, 255, (2, 2, 32, 32, 3), dtype=np.uint8)

    def run(seed):
        wm.reset(ctx, seed=seed)
        return [wm.step([0, 2]) for _ in range(3)]

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b):
        assert np.array_equal(x.frames, y.frames) and np.array_equal(x.reward, y.reward)
    assert not all(np.array_equal(x.frames, z.frames) for x, z in zip(a, c))
    out = a[0]
    assert out.frames.shape == (2, 32, 32, 3) and out.frames.dtype == np.uint8
    assert out.reward.shape == (2,) and out.reward.dtype == np.float32
    assert out.terminated.shape == (2,) and out.terminated.dtype == bool


def test_a_bf16_world_decodes_in_bf16_and_saves_fp32_weights(tmp_path):
    """The decoder follows the world's dtype (its convs are a sixth of a CPU step); its frames stay within a couple
    of grey levels of fp32's, the encoder stays fp32, and what it saves is the fp32 checkpoint it loaded."""
    tiny_world().save_pretrained(tmp_path / "w")
    fp32 = WorldModel.from_pretrained(tmp_path / "w")
    bf16 = WorldModel.from_pretrained(tmp_path / "w", dtype=torch.bfloat16)
    assert bf16.autoencoder.decoder.conv_in.weight.dtype == torch.bfloat16
    assert bf16.autoencoder.encoder.conv_in.weight.dtype == torch.float32
    latents = torch.randn(3, *fp32.latent_shape)
    a, b = (w.autoencoder.decode(latents).int() for w in (fp32, bf16))
    assert b.dtype == a.dtype and 0 < (a - b).abs().float().mean() < 1.0 and (a - b).abs().max() <= 4
    assert all(v.dtype == torch.float32 for v in bf16.state_dict().values() if v.is_floating_point())


def test_predict_one_frame_equals_step():
    wm = tiny_world()
    ctx = np.random.default_rng(1).integers(0, 255, (1, 2, 32, 32, 3), dtype=np.uint8)
    wm.reset(ctx, seed=3)
    a = wm.step([2])
    wm.reset(ctx, seed=3)
    b = wm.predict([[2]])
    assert np.array_equal(a.frames, b.frames[:, 0])


def test_step_with_observed_frames_puts_reality_in_memory():
    """Teacher forcing: after step(a, observed=f2) the world's memory holds f2, not its own guess,
    exactly as a world reset from [f0, f1, f2] would; the returned frame is still its prediction."""
    wm = tiny_world(window=4)
    wm.set_sampler(context_noise=0.0)  # written frames carry no noise: the two memories can match exactly
    f = np.random.default_rng(2).integers(0, 255, (1, 3, 32, 32, 3), dtype=np.uint8)

    def memory() -> torch.Tensor:
        wm._rollout.flush()  # a step's frame is written in the next step's first pass: write it now
        cache = wm._rollout.memory
        return torch.cat([cache.k.flatten(), cache.v.flatten()]).float()

    wm.reset(f[:, :2], actions=[[2]], seed=0)
    guess = wm.step([0])
    own = memory()
    wm.reset(f[:, :2], actions=[[2]], seed=0)
    teacher = wm.step([0], observed=f[:, 2])
    assert np.array_equal(teacher.frames, guess.frames)  # the prediction does not see the observation
    observed = memory()
    wm.reset(f, actions=[[2, 0]], seed=0)
    assert (observed - memory()).abs().max() < 1e-4
    assert (own - memory()).abs().max() > 1e-2  # the world's own guess would have been remembered otherwise
    with pytest.raises(InputError, match="one frame per world"):
        wm.step([0], observed=f[0, :2])


def test_predict_multiple_frames_pyramid():
    wm = tiny_world(window=4)
    wm.reset(np.zeros((2, 32, 32, 3), np.uint8), seed=0)
    out = wm.predict(np.array([[0, 1, 2, 1, 0, 1], [1, 1, 1, 1, 1, 1]]))
    assert out.frames.shape == (2, 6, 32, 32, 3) and out.reward.shape == (2, 6)
    assert wm.frame_index == 7
    wm.step([0, 0])  # the cache keeps working after a multi-frame block


@pytest.mark.parametrize(
    "spec,good,bad",
    [
        (ActionSpec(kind="discrete", n=3), [2], [3]),
        (ActionSpec(kind="multi_discrete", nvec=[3, 2]), [[2, 1]], [[2, 2]]),
        (ActionSpec(kind="box", shape=[2], low=[-1, -1], high=[1, 1]), [[0.5, -0.5]], [[0.5]]),
    ],
    ids=lambda x: getattr(x, "kind", None),
)
def test_actions_are_validated(spec, good, bad):
    wm = tiny_world(action=spec)
    wm.reset(np.zeros((1, 32, 32, 3), np.uint8), seed=0)
    wm.step(good)
    with pytest.raises(InputError):
        wm.step(bad)


def test_bad_frames_and_order_give_clear_errors():
    wm = tiny_world()
    with pytest.raises(WorldsimError, match="reset"):
        wm.step([0])
    with pytest.raises(InputError, match="uint8"):
        wm.reset(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(InputError, match="H, W, 3"):
        wm.reset(np.zeros((32, 32), np.uint8))
    with pytest.raises(InputError, match="no start contexts"):
        wm.reset()
    with pytest.raises(InputError, match="without text"):
        wm.reset(np.zeros((32, 32, 3), np.uint8), text="a red car")
    # frames of another size are resized, not rejected
    assert wm.reset(np.zeros((1, 48, 40, 3), np.uint8), seed=0).shape == (1, 32, 32, 3)


def test_reset_from_shipped_start_contexts_by_seed():
    wm = tiny_world()
    starts = np.random.default_rng(0).integers(0, 255, (5, 2, 32, 32, 3), dtype=np.uint8)
    wm.starts = {"frames": torch.from_numpy(starts)}
    a = wm.reset(seed=1, batch_size=3)
    b = wm.reset(seed=1, batch_size=3)
    assert np.array_equal(a, b) and a.shape == (3, 32, 32, 3)
    assert all(any(np.array_equal(f, s[-1]) for s in starts) for f in a)


@pytest.mark.parametrize(("sinks", "context"), [(1, 2), (2, 3), (0, 1)])
def test_reset_worlds_restarts_one_world_while_the_others_go_on(sinks, context):
    """A batch with a per-world reset mid-rollout equals independent batches of one (a VectorEnv's autoreset)."""
    wm = tiny_world(seed=3, sinks=sinks, window=4)
    latents: list[torch.Tensor] = []  # compare latents: decoded frames of a random tiny model hide differences
    decode = wm.autoencoder.decode
    wm.autoencoder.decode = lambda z, **net: (latents.append(z.clone()), decode(z, **net))[1]
    rng = np.random.default_rng(0)
    H, W = wm.frame_size
    ctx = rng.integers(0, 256, (3, context, H, W, 3), dtype=np.uint8)
    new_ctx = rng.integers(0, 256, (1, context, H, W, 3), dtype=np.uint8)
    actions = rng.integers(0, 3, (16, 3))
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731

    def run(steps) -> torch.Tensor:
        latents.clear()
        for t in steps:
            wm.step(actions[t, : wm.batch_size] if wm.batch_size == 3 else actions[t, row : row + 1])
        return torch.cat(latents, 1)  # (B, T, C, h, w)

    row = 0
    wm.reset(frames=ctx, generator=[gen(1), gen(2), gen(3)])
    first = run(range(6))
    restart = wm.reset_worlds([1], [gen(9)], frames=new_ctx)
    second = run(range(6, 16))
    np.testing.assert_array_equal(restart[0], new_ctx[0, -1])
    batched = torch.cat([first, second], 1)

    for row in (0, 2):
        wm.reset(frames=ctx[row : row + 1], generator=[gen(row + 1)])
        torch.testing.assert_close(batched[row], run(range(16))[0], atol=1e-4, rtol=0)
    row = 1
    wm.reset(frames=ctx[1:2], generator=[gen(2)])
    torch.testing.assert_close(batched[1, :6], run(range(6))[0], atol=1e-4, rtol=0)
    wm.reset(frames=new_ctx, generator=[gen(9)])
    torch.testing.assert_close(batched[1, 6:], run(range(6, 16))[0], atol=1e-4, rtol=0, msg="restarted world differs")


@pytest.mark.parametrize(("sinks", "window"), [(1, 4), (2, 4), (0, 3), (1, 6)])
def test_a_kept_attention_bias_is_the_one_the_cache_would_build_now(sinks, window):
    """The cache keeps each visibility pattern's bias by what visibility depends on (``_visibility_key``), not by
    the clock: at every frame of a rollout whose worlds restart at different times, for both kinds of pass, the kept
    bias is the one built from scratch."""
    wm = tiny_world(seed=5, sinks=sinks, window=window)
    rng = np.random.default_rng(1)
    H, W = wm.frame_size
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    wm.reset(frames=rng.integers(0, 256, (3, 2, H, W, 3), dtype=np.uint8), generator=[gen(1), gen(2), gen(3)])
    restarts = {4: [1], 7: [0, 2], 9: [1], 15: [2]}
    checked = 0
    for t in range(24):
        if t in restarts:
            rows = restarts[t]
            ctx = rng.integers(0, 256, (len(rows), 1 + t % 2, H, W, 3), dtype=np.uint8)
            wm.reset_worlds(rows, [gen(10 + t + r) for r in rows], frames=ctx)
        wm.step(rng.integers(0, 3, 3))
        cache = wm._rollout.memory
        for frames, ahead in ((1, False), (2, True)):
            cache._bias_key = None
            kept = cache.block_bias(frames, ahead)
            built = cache._build_bias(cache.visibility(frames, ahead))
            assert (kept is None) == (built is None), (t, frames, ahead)
            if built is not None:
                assert torch.equal(kept, built), (t, frames, ahead)
                checked += 1
    assert checked > 10  # some patterns carried a mask
    # One world without restarts: once its ring has filled and turned, the patterns come round with it.
    wm.reset(frames=rng.integers(0, 256, (1, 2, H, W, 3), dtype=np.uint8), seed=0)
    sizes = []
    for _ in range(4 * window):
        wm.step(rng.integers(0, 3, 1))
        sizes.append(len(wm._rollout.memory._bias_memo))
    assert sizes[-1] == sizes[-window] > 0


@pytest.mark.parametrize("sinks", [0, 1])
def test_worlds_dropped_from_the_batch_leave_the_others_as_they_were(sinks):
    """keep_worlds: after worlds 1 and 3 leave (and 2 and 0 swap places), the kept worlds produce what they would
    have in the full batch; bad indices are one-line errors."""
    wm = tiny_world(seed=4, sinks=sinks, window=4)
    latents: list[torch.Tensor] = []
    decode = wm.autoencoder.decode
    wm.autoencoder.decode = lambda z, **net: (latents.append(z.clone()), decode(z, **net))[1]
    rng = np.random.default_rng(1)
    H, W = wm.frame_size
    ctx = rng.integers(0, 256, (4, 2, H, W, 3), dtype=np.uint8)
    actions = rng.integers(0, 3, (10, 4))
    gens = lambda: [torch.Generator().manual_seed(s) for s in (11, 12, 13, 14)]  # noqa: E731

    wm.reset(frames=ctx, generator=gens())
    for t in range(10):
        wm.step(actions[t])
    full = torch.cat(latents, 1)  # (4, 10, C, h, w)
    latents.clear()
    wm.reset(frames=ctx, generator=gens())
    for t in range(4):
        wm.step(actions[t])
    wm.keep_worlds([2, 0])
    assert wm.batch_size == 2
    for t in range(4, 10):
        wm.step(actions[t, [2, 0]])
    after = torch.cat(latents[4:], 1)  # (2, 6, ...)
    torch.testing.assert_close(after, full[[2, 0], 4:], atol=1e-4, rtol=0)
    for bad in ([], [0, 0], [2]):
        with pytest.raises(InputError, match="keep_worlds"):
            wm.keep_worlds(bad)


def test_reference_frame_index_counts_context_frames():
    """The full-recompute reference counts frames, not writes: a 3-frame context is 3 frames, as in the cache."""
    ctx = np.random.default_rng(4).integers(0, 255, (1, 3, 32, 32, 3), dtype=np.uint8)
    for reference in (False, True):
        wm = tiny_world(window=4, sinks=1)
        wm.reset(ctx, seed=0, reference=reference)
        assert wm.frame_index == 3
        wm.step([1])
        wm.predict([[0, 2]])
        assert wm.frame_index == 6


def test_one_visibility_rule_in_training_cache_and_reference():
    """Training's mask, the KV cache and the reference path all see exactly the frames the rule allows: the sinks
    and the last ``window`` frames up to the frame itself, with a 3-frame context, 2 sinks and a rolled window."""
    sinks, window, context, steps = 2, 4, 3, 9

    def allowed(q: int) -> set[int]:  # the rule, written out independently of the code under test
        return {k for k in range(q + 1) if k < sinks or k > q - window}

    q = torch.arange(context + steps)
    rule = frame_visibility(q, q, window, sinks)
    assert all(set(torch.nonzero(rule[f]).flatten().tolist()) == allowed(f) for f in range(len(q)))

    # Training: a clip (never longer than the window) is plain block-causal, token by token.
    N = 4
    mask = block_causal_mask(6, N, "cpu")
    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    assert torch.equal(mask, causal.repeat_interleave(N, 0).repeat_interleave(N, 1))

    # Reference path: which frames each frame of a long block attends to.
    wm = tiny_world(window=window, sinks=sinks, max_frames=8)
    reference = BlockCausal(N, window, sinks, wm.dit.rope)
    for f in range(len(q)):
        assert set(torch.nonzero(reference.keys_of(f, len(q))).flatten().tolist()) == allowed(f)

    # KV cache: what the block in flight sees, slot by slot, mapped back to frame indices.
    g = torch.Generator().manual_seed(0)
    rollout = Rollout(wm.dit, wm.sampler_config, 1, wm.latent_shape, g)
    cache = rollout.memory
    null = torch.ones(1, context, dtype=torch.bool)

    def seen_by_cache(frames: int, ahead: bool = False) -> list[set[int]]:
        vis = cache.visibility(frames, ahead)[0]  # (frames, [sinks +] used + frames)
        slots = torch.from_numpy(cache._slot_local_frames()[0])
        front = torch.cat([slots[:sinks], torch.full((sinks,), -1)])[:sinks] if ahead else slots[:0]
        keys = torch.cat([front, slots, cache.next_frame + torch.arange(frames)])
        return [set(keys[vis[i]].tolist()) for i in range(frames)]

    assert seen_by_cache(context) == [allowed(f) for f in range(context)]  # the context block sees itself causally
    rollout.write(torch.randn(1, context, *wm.latent_shape), FrameConditioning(None, null))
    for f in range(context, context + steps):
        if rollout.pending is None:
            assert seen_by_cache(1) == [allowed(f)], f"frame {f}"
        else:  # frame f - 1 is written in frame f's first pass: one block of two, sinks read ahead for frame f
            assert seen_by_cache(2, ahead=True) == [allowed(f - 1), allowed(f)], f"frames {f - 1}, {f}"
        rollout.generate(FrameConditioning(torch.tensor([[1]]), torch.zeros(1, 1, dtype=torch.bool)), 1)
    assert rollout.pending is not None  # the merged passes were the ones checked
