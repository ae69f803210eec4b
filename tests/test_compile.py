"""Compiled passes (``WorldModel.compile``): the eager engine's frames, through the cache's steady state, a world
restarted mid-rollout and weights changed after compiling."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from test_engine import tiny_world
from torch._dynamo.utils import counters

from worldsim.engine import WorldModel
from worldsim.errors import InputError
from worldsim.models.conditioning import TextContext

# Inductor builds CPU graphs with a C++ compiler; without one ``compile`` is a one-line error, not a feature to test.
pytestmark = pytest.mark.skipif(
    not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++")),
    reason="no C++ compiler for torch.compile",
)


def rollout_latents(wm: WorldModel, steps: int = 10, restart_at: int = 6) -> torch.Tensor:
    """(B, steps, C, h, w) latents of 3 worlds stepped with fixed actions, world 1 restarted at ``restart_at`` (a
    VectorEnv's autoreset: the cache then holds rows of two ages, so passes carry a visibility mask)."""
    latents: list[torch.Tensor] = []  # latents, not decoded frames: a random tiny decoder hides differences
    decode = wm.autoencoder.decode
    wm.autoencoder.decode = lambda z, **net: (latents.append(z.clone()), decode(z, **net))[1]
    rng = np.random.default_rng(0)
    H, W = wm.frame_size
    context = rng.integers(0, 256, (3, 2, H, W, 3), dtype=np.uint8)
    actions = rng.integers(0, 3, (steps, 3))
    try:
        wm.reset(frames=context, generator=[torch.Generator().manual_seed(s) for s in (1, 2, 3)])
        for t in range(steps):
            if t == restart_at:
                wm.reset_worlds([1], [torch.Generator().manual_seed(9)], frames=context[:1])
            wm.step(actions[t])
    finally:
        wm.autoencoder.decode = decode
    return torch.cat(latents, 1)


def count_calls(wm: WorldModel) -> list[int]:
    """A list that grows by one for each call into the compiled passes' graphs (until they are built again)."""
    calls: list[int] = []
    graphs = wm._compiled.graph
    graph = graphs.graph
    graphs.graph = lambda *inputs: (calls.append(1), graph(*inputs))[1]
    return calls


def test_a_compiled_world_makes_the_eager_worlds_frames(one_torch_thread):
    wm = tiny_world(seed=3, sinks=1, window=3)
    eager = rollout_latents(wm)
    wm.compile()
    calls = count_calls(wm)
    counters.clear()
    compiled = rollout_latents(wm)
    # Every frame from the third on runs its K = 3 passes compiled (the ring of 3 slots is full by then) ...
    assert len(calls) >= 3 * 7
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=0)
    assert eager.abs().mean() > 0.1  # real, non-trivial latents
    # ... through three graphs: the merged write-then-denoise pass, the plain pass, and the plain pass with a mask
    # once world 1 has restarted (a write pass's levels and a denoise pass's, or the first Euler pass's noise and the
    # next ones', must not each build another); and one for the decoder (one batch size).
    assert counters["stats"]["unique_graphs"] == 3 + 1

    # The weights are frozen into the graphs, and a change after compiling is followed from the next reset on: the
    # graphs are built again (for the DiT's passes and for the decoder), with the new weights.
    with torch.no_grad():
        for p in wm.dit.parameters():
            p.mul_(1.2)
    with torch.compiler.set_stance("force_eager"):
        eager_changed = rollout_latents(wm)
    assert (eager_changed - eager).abs().max() > 0.1
    torch.testing.assert_close(rollout_latents(wm), eager_changed, atol=1e-4, rtol=0)
    assert wm._compiled.graph.builds == 2 and wm._compiled_decoder.builds == 1  # only the DiT's weights changed
    assert counters["stats"]["unique_graphs"] == 3 + 1 + 3  # the decoder's graph (one batch size), then 3 again


def test_two_compiled_worlds_keep_graphs_of_their_own_weights(one_torch_thread):
    """Frozen graphs hold their world's weights and skip the guards on the module tree: a second world of the same
    shapes must not reuse the first one's graphs (each world compiles its own copy of the code)."""
    worlds = [tiny_world(seed=s, sinks=1, window=3) for s in (3, 4)]
    eager = [rollout_latents(wm) for wm in worlds]
    assert (eager[0] - eager[1]).abs().max() > 0.1
    for wm in worlds:
        wm.compile()
    for wm, expected in zip(worlds, eager):
        calls = count_calls(wm)
        torch.testing.assert_close(rollout_latents(wm), expected, atol=1e-4, rtol=0)
        assert len(calls) >= 3 * 7


def test_a_text_world_compiles_its_passes_without_a_prompt_and_steps_eagerly_under_one(one_torch_thread):
    """Without a prompt a text world's blocks add the null prompt's constant, which the graphs compute themselves;
    under a prompt (its cross-attention folded per prompt, a Python-side cache) every pass stays eager."""
    wm = tiny_world(seed=7, sinks=1, window=3, text_dim=16)
    g = torch.Generator().manual_seed(0)
    prompt = TextContext(
        torch.randn(3, 4, 16, generator=g), torch.tensor([[True] * 4, [True] * 2 + [False] * 2] * 2)[:3]
    )

    def latents(text: TextContext | None) -> torch.Tensor:
        original = wm.reset
        wm.reset = lambda **kw: (original(**kw), wm._rollout.set_text(text))[0]  # a prompt from the first frame on
        try:
            return rollout_latents(wm)
        finally:
            wm.reset = original

    eager = [latents(None), latents(prompt)]
    assert (eager[0] - eager[1]).abs().max() > 1e-2  # the prompt changes the frames
    wm.compile()
    calls = count_calls(wm)
    torch.testing.assert_close(latents(None), eager[0], atol=1e-4, rtol=0)
    assert len(calls) >= 3 * 7
    calls.clear()
    torch.testing.assert_close(latents(prompt), eager[1], atol=1e-4, rtol=0)
    assert not calls


def test_bench_counts_the_same_flops_for_a_compiled_world(tmp_path):
    """The FLOP counter cannot see inside a compiled graph: bench counts the step run eagerly, so MFU stays honest."""
    from worldsim.bench import BenchConfig, run_bench

    tiny_world(seed=6, sinks=1, window=3).save_pretrained(tmp_path / "w")
    runs = [
        run_bench(BenchConfig(checkpoint=str(tmp_path / "w"), frames=30, recompute_context=6, compile=c), False)
        for c in (False, True)
    ]
    assert runs[1]["compiled"] and runs[1]["compile_seconds"] > 0 and runs[1]["fps"] > 0
    assert runs[0]["compile_seconds"] is None
    assert runs[1]["gflops_per_step"] == pytest.approx(runs[0]["gflops_per_step"]) and runs[0]["gflops_per_step"] > 0


def test_rl_compile_is_refused_where_nothing_would_be_compiled():
    from worldsim.training.rl import RLTrainConfig

    for flags in ({"real": True}, {"dream_dropout": 0.1}):
        with pytest.raises(InputError, match="--compile"):
            RLTrainConfig(world="carracing", compile=True, **flags).check()
