"""Maths of the backbone: shapes, zero init, block causality, per-frame levels, any frame size."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize, tiny_config

from worldsim.config import ActionSpec
from worldsim.diffusion.schedule import add_noise, pyramid_levels, sample_training_levels, sampling_levels
from worldsim.models.attention import BlockCausal
from worldsim.models.dit import DiT

ACTION_SPACES = [
    ActionSpec(kind="discrete", n=5),
    ActionSpec(kind="multi_discrete", nvec=[3, 2]),
    ActionSpec(kind="box", shape=[2], low=[-1.0, 0.0], high=[1.0, 512.0]),
]


def make_inputs(cfg, B=2, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = cfg.autoencoder.latent_channels
    h, w = cfg.latent_size
    x = torch.randn(B, T, C, h, w, generator=g)
    levels = torch.rand(B, T, generator=g)
    spec = cfg.action
    if spec.kind == "discrete":
        actions = torch.randint(spec.n, (B, T), generator=g)
    elif spec.kind == "multi_discrete":
        actions = torch.stack([torch.randint(n, (B, T), generator=g) for n in spec.nvec], -1)
    else:
        actions = torch.rand(B, T, *spec.shape, generator=g) * torch.tensor(spec.high)
    null = torch.zeros(B, T, dtype=torch.bool)
    null[:, 0] = True
    return x, levels, actions, null


@pytest.mark.parametrize("spec", ACTION_SPACES, ids=lambda s: s.kind)
def test_shapes_for_every_action_space(spec):
    cfg = tiny_config(action=spec)
    dit = randomize(DiT(cfg.dit, cfg.action, cfg.autoencoder.latent_channels))
    x, levels, actions, null = make_inputs(cfg)
    out = dit(x, levels, actions, null, torch.arange(x.shape[1]))
    assert out.velocity.shape == x.shape
    assert out.reward.shape == out.termination_logit.shape == x.shape[:2]
    assert torch.isfinite(out.velocity).all()


def test_zero_init_predicts_zero():
    cfg = tiny_config()
    dit = DiT(cfg.dit, cfg.action, cfg.autoencoder.latent_channels)
    x, levels, actions, null = make_inputs(cfg)
    out = dit(x, levels, actions, null, torch.arange(x.shape[1]))
    assert torch.count_nonzero(out.velocity) == 0
    assert torch.count_nonzero(out.reward) == 0 and torch.count_nonzero(out.termination_logit) == 0
    # ... and every block starts as the identity: gates are zero.
    assert torch.count_nonzero(dit.modulation[-1].weight) == 0
    assert torch.count_nonzero(dit.block_modulation) == 0


@pytest.mark.parametrize("changed", ["latent", "level", "action"])
def test_block_causal_in_time(changed):
    """Changing anything about frame t never changes outputs at frames < t; it does change frame t."""
    cfg = tiny_config()
    dit = randomize(DiT(cfg.dit, cfg.action, cfg.autoencoder.latent_channels))
    x, levels, actions, null = make_inputs(cfg, T=6)
    t = 3
    base = dit(x, levels, actions, null, torch.arange(6))
    x2, levels2, actions2 = x.clone(), levels.clone(), actions.clone()
    if changed == "latent":
        x2[:, t] += torch.randn_like(x2[:, t])
    elif changed == "level":
        levels2[:, t] = 1.0 - levels2[:, t]
    else:
        actions2[:, t] = (actions2[:, t] + 1) % cfg.action.n
    out = dit(x2, levels2, actions2, null, torch.arange(6))
    for name in ("velocity", "reward", "termination_logit"):
        a, b = getattr(base, name), getattr(out, name)
        assert torch.equal(a[:, :t], b[:, :t]), f"{name} of earlier frames changed"
    assert not torch.allclose(base.velocity[:, t], out.velocity[:, t])


def test_frame_sees_only_its_window_and_sinks():
    """With a rolling window, a frame far outside it has no influence; a sink frame does."""
    cfg = tiny_config(window=3, sinks=1)
    dit = randomize(DiT(cfg.dit, cfg.action, cfg.autoencoder.latent_channels))
    x, levels, actions, null = make_inputs(cfg, B=1, T=8)
    memory = BlockCausal(
        (cfg.latent_size[0] // cfg.dit.patch) * (cfg.latent_size[1] // cfg.dit.patch), window=3, sinks=1, rope=dit.rope
    )
    base = dit(x, levels, actions, null, torch.arange(8), memory=memory).velocity
    # Frame 7 sees sink 0 and frames 5, 6, 7 at layer 1; frames 1..4 reach it only through depth (2 layers).
    x_sink = x.clone()
    x_sink[:, 0] += 1.0
    assert not torch.allclose(
        dit(x_sink, levels, actions, null, torch.arange(8), memory=memory).velocity[:, 7], base[:, 7]
    )
    x_far = x.clone()
    x_far[:, 1] += 1.0  # frame 1 -> (frame 3 at layer 1 via window) -> frame 5 at layer 2 cannot reach 7 ...
    out = dit(x_far, levels, actions, null, torch.arange(8), memory=memory).velocity
    assert torch.equal(out[:, 7], base[:, 7])


def test_noise_levels_are_per_frame():
    clean = torch.randn(2, 4, 3, 2, 2)
    noise = torch.randn_like(clean)
    levels = torch.tensor([[0.0, 1.0, 0.5, 0.25], [1.0, 0.0, 0.0, 0.75]])
    noisy = add_noise(clean, noise, levels)
    assert torch.equal(noisy[0, 0], clean[0, 0]) and torch.equal(noisy[1, 1], clean[1, 1])
    assert torch.equal(noisy[0, 1], noise[0, 1]) and torch.equal(noisy[1, 0], noise[1, 0])
    assert torch.allclose(noisy[0, 2], 0.5 * clean[0, 2] + 0.5 * noise[0, 2])


def test_model_reads_each_frames_own_level():
    """The network's output for frame t depends on the level of frame t (not one shared level)."""
    cfg = tiny_config()
    dit = randomize(DiT(cfg.dit, cfg.action, cfg.autoencoder.latent_channels))
    x, levels, actions, null = make_inputs(cfg, T=4)
    a = dit(x, levels, actions, null, torch.arange(4)).velocity
    levels2 = levels.clone()
    levels2[:, 2] = (levels2[:, 2] + 0.5) % 1.0
    b = dit(x, levels2, actions, null, torch.arange(4)).velocity
    assert torch.equal(a[:, :2], b[:, :2]) and not torch.allclose(a[:, 2], b[:, 2])


def test_training_levels_have_clean_context_and_noisy_future():
    g = torch.Generator().manual_seed(0)
    levels, is_context = sample_training_levels(4096, 8, g, context_noise_max=0.1, teacher_forcing_prob=1.0)
    assert levels.shape == is_context.shape == (4096, 8)
    assert is_context[:, 0].all() and not is_context[:, -1].any()
    assert (levels[is_context] <= 0.1).all()
    assert (levels[:, 0] <= 0.1).all()  # split >= 1: frame 0 is always context
    assert levels[:, -1].mean() > 0.4  # the last frame is never context
    independent, none = sample_training_levels(4096, 8, g, teacher_forcing_prob=0.0)
    assert not none.any()
    assert abs(independent.mean().item() - 0.5) < 0.02


def test_pyramid_schedule():
    sched = pyramid_levels(frames=3, steps=4, delay=1)
    assert sched.shape == (4 + 2 + 1, 3)
    assert torch.equal(pyramid_levels(1, 4, 1)[:, 0], sampling_levels(4))
    assert (sched[0] == 1).all() and (sched[-1] == 0).all()
    # nearer frames are never noisier than later ones
    assert (sched[:, :-1] <= sched[:, 1:]).all()


@pytest.mark.parametrize("shift", [0.5, 1.0, 3.0])
def test_shifted_levels_keep_their_ends_and_order(shift):
    levels = sampling_levels(5, shift)
    assert levels[0] == 1 and levels[-1] == 0 and (levels[1:] < levels[:-1]).all()
    middle = levels[1:-1]
    even = sampling_levels(5)[1:-1]
    assert (middle > even).all() if shift > 1 else (middle < even).all() if shift < 1 else torch.equal(middle, even)
    assert torch.equal(pyramid_levels(1, 5, 1, shift)[:, 0], levels)


@pytest.mark.parametrize("frame_size", [(32, 32), (32, 64), (48, 16)])
def test_any_frame_size_and_aspect(frame_size):
    cfg = tiny_config(frame_size=frame_size)
    dit = randomize(DiT(cfg.dit, cfg.action, cfg.autoencoder.latent_channels))
    x, levels, actions, null = make_inputs(cfg, T=3)
    assert dit(x, levels, actions, null, torch.arange(3)).velocity.shape == x.shape


def test_a_point_action_is_embedded_per_token_and_starts_as_nothing():
    """A Box(2) action read as a point: zero at initialisation (the world does what it did without it), nothing on
    a frame without an action, and only for a Box of two values."""
    import gymnasium

    from worldsim.config import ActionSpec, dit_config
    from worldsim.models.conditioning import ActionPoint
    from worldsim.models.dit import DiT

    spec = ActionSpec.from_gym(gymnasium.spaces.Box(0, 512, (2,)))
    cfg = dit_config("XS", patch=1, action_point=True)
    torch.manual_seed(0)
    dit = DiT(cfg, spec, 4)
    plain = DiT(dit_config("XS", patch=1), spec, 4)
    plain.load_state_dict({k: v for k, v in dit.state_dict().items() if ".point." not in k})
    x, levels = torch.randn(1, 2, 4, 8, 8), torch.rand(1, 2)
    actions, null, t = torch.tensor([[[100.0, 400.0], [300.0, 50.0]]]), torch.tensor([[True, False]]), torch.arange(2)
    with torch.no_grad():
        with_point = dit(x, levels, actions, null, t).velocity
        torch.testing.assert_close(with_point, plain(x, levels, actions, null, t).velocity)
    point = ActionPoint(spec, 16)
    with torch.no_grad():
        emb = point(actions, null, (8, 8))
    assert emb.shape == (1, 2, 64, 16) and emb[0, 0].abs().max() == 0  # the null frame gets nothing
    with pytest.raises(Exception, match="Box of 2"):
        ActionPoint(ActionSpec(kind="discrete", n=3), 16)


def test_cache_attention_in_bf16_matches_sdpa_with_and_without_a_mask():
    """The bf16 CPU path for a batch of worlds (matrix products and a softmax instead of SDPA's flash kernel) computes
    the same attention as SDPA with the bool mask the bias stands for: within bf16 rounding of the fp32 result, no
    further from it than SDPA in bf16, and masked keys get no weight."""
    import torch.nn.functional as F

    from worldsim.models.attention import cache_attention, visibility_bias

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, n, 64, generator=g) for n in (32, 240, 240))
    mask = torch.rand(3, 1, 32, 240, generator=g) > 0.3
    mask[..., 0] = True  # every query sees at least one key
    for m in (None, mask):
        exact = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        bias = None if m is None else visibility_bias(m, torch.float32)
        torch.testing.assert_close(cache_attention(q, k, v, bias), exact)  # fp32: SDPA itself, with the bias
        with torch.inference_mode():
            bf16_bias = None if m is None else visibility_bias(m, torch.bfloat16)
            ours = cache_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), bf16_bias).float()
            sdpa = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), attn_mask=m).float()
        assert (ours - exact).abs().max() < 0.03
        assert (ours - exact).pow(2).mean().sqrt() < 3 * (sdpa - exact).pow(2).mean().sqrt()
    with torch.inference_mode():  # a key nobody may see changes nothing
        k2, v2 = k.clone(), v.clone()
        hidden = ~mask[0, 0, 0]
        k2[..., hidden.nonzero()[0], :] += 5
        v2[..., hidden.nonzero()[0], :] -= 5
        seen_by_one = visibility_bias(mask[:1, :, :1], torch.bfloat16)
        a = cache_attention(q[:2, :, :1].bfloat16(), k[:2].bfloat16(), v[:2].bfloat16(), seen_by_one)
        b = cache_attention(q[:2, :, :1].bfloat16(), k2[:2].bfloat16(), v2[:2].bfloat16(), seen_by_one)
    assert torch.equal(a, b)
    with torch.inference_mode():  # one world keeps SDPA (faster there)
        one = (q[:1].bfloat16(), k[:1].bfloat16(), v[:1].bfloat16())
        assert torch.equal(cache_attention(*one), F.scaled_dot_product_attention(*one))
