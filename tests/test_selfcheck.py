"""The self-check of the fast paths (``worldsim.kernels.selfcheck``): a deliberately wrong fused kernel or compiled
graph, injected on the CPU, is caught on first use, reported in one line and dropped for the PyTorch path, whose
results the world then gets; ``WORLDSIM_KERNELS`` forces a path."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize, tiny_config
from helpers import cached_passes
from test_compile import rollout_latents
from test_engine import tiny_world

import worldsim.kernels as kernels
from worldsim.engine import WorldModel
from worldsim.errors import ConfigError
from worldsim.kernels.selfcheck import KernelChecks, SelfCheckWarning, mismatch
from worldsim.models.dit import DiT, DiTOutput

CPU = torch.device("cpu")


def right_norm_modulate(x, shift, scale, eps):
    return kernels.modulate(F.layer_norm(x, x.shape[-1:], eps=eps), shift, scale)


@pytest.fixture
def dit(one_torch_thread):
    cfg = tiny_config()
    return randomize(DiT(cfg.dit, cfg.action, cfg.autoencoder.latent_channels)), cfg.latent_size


@pytest.fixture
def fused_on_cpu(monkeypatch):
    """``install(...)``: from then on CPU tensors go through "fused" kernels a test gives (a seam for the Triton ones),
    checked, on a fresh record."""
    calls = {"norm_modulate": 0, "split_heads_rope_into": 0}

    def install(norm_modulate=right_norm_modulate, split_heads_rope_into=kernels.split_heads_rope_into_torch):
        def counted(name, fn):
            def call(*args):
                calls[name] += 1
                return fn(*args)

            return call

        ops = SimpleNamespace(
            norm_modulate=counted("norm_modulate", norm_modulate),
            split_heads_rope_into=counted("split_heads_rope_into", split_heads_rope_into),
        )
        monkeypatch.setattr(kernels, "_triton_ops", lambda: ops)
        monkeypatch.setattr(kernels, "use_triton", lambda t: True)
        monkeypatch.setattr(kernels, "KERNEL_CHECKS", KernelChecks())
        monkeypatch.setenv("WORLDSIM_KERNELS", "check")  # a CPU tensor is checked only when asked to
        return calls

    return install


def assert_same(outs: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    for out, want in zip(outs, expected):
        torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-6)


def test_right_kernels_pass_the_check_and_serve(dit, fused_on_cpu):
    expected = cached_passes(*dit)
    calls = fused_on_cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SelfCheckWarning)
        assert_same(cached_passes(*dit), expected)
    assert calls["norm_modulate"] > 0 and calls["split_heads_rope_into"] > 0
    assert not kernels.KERNEL_CHECKS.failed and kernels.KERNEL_CHECKS.checked


def test_a_wrong_norm_kernel_is_caught_reported_and_dropped(dit, fused_on_cpu):
    def one_row_wrong(x, shift, scale, eps):  # what a wrong batch stride does: world 0 right, world 1 not
        out = right_norm_modulate(x, shift, scale, eps)
        out[1:] += 0.5
        return out

    expected = cached_passes(*dit)
    calls = fused_on_cpu(norm_modulate=one_row_wrong)
    with pytest.warns(SelfCheckWarning) as caught:
        outs = cached_passes(*dit)
    assert_same(outs, expected)  # the wrong call's result was replaced, and no later call went fused
    assert calls["norm_modulate"] == 1 and calls["split_heads_rope_into"] > 1
    (line,) = [str(w.message) for w in caught]
    assert "the fused norm_modulate kernel differs from the PyTorch path on cpu in float32" in line
    assert "output is off by up to 0.5" in line and "benchmarks/gpu_check.sh" in line and "\n" not in line
    assert set(kernels.KERNEL_CHECKS.failed) == {("norm_modulate", CPU, torch.float32)}
    assert kernels.KERNEL_CHECKS.trusted("norm_modulate", torch.zeros(1, dtype=torch.bfloat16))  # per dtype


def test_a_wrong_cache_write_is_caught_and_the_slots_repaired(dit, fused_on_cpu):
    def k_and_v_swapped(qkv, cos, sin, q_out, k_out, v_out):
        kernels.split_heads_rope_into_torch(qkv, cos, sin, q_out, v_out, k_out)

    expected = cached_passes(*dit)
    calls = fused_on_cpu(split_heads_rope_into=k_and_v_swapped)
    with pytest.warns(SelfCheckWarning, match=r"fused split_heads_rope kernel .*: output\.k is off"):
        outs = cached_passes(*dit)
    assert_same(outs, expected)  # the cache's k and v (written in place by the kernel) hold the PyTorch values
    assert calls["split_heads_rope_into"] == 1


def test_fused_skips_the_check_and_torch_skips_the_kernels(dit, fused_on_cpu, monkeypatch):
    expected = cached_passes(*dit)
    fused_on_cpu(norm_modulate=lambda x, shift, scale, eps: right_norm_modulate(x, shift, scale, eps) + 0.5)
    monkeypatch.setenv("WORLDSIM_KERNELS", "fused")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SelfCheckWarning)
        outs = cached_passes(*dit)
    assert (outs[0] - expected[0]).abs().max() > 0.1  # unchecked: the wrong kernel served

    monkeypatch.undo()  # the real dispatch rule again, with a CUDA stand-in (no GPU here)
    cuda = SimpleNamespace(is_cuda=True)
    with torch.no_grad():
        for path, fused in [("torch", False), ("fused", True), ("check", True)]:
            monkeypatch.setenv("WORLDSIM_KERNELS", path)
            assert kernels.use_triton(cuda) == fused, path
        monkeypatch.setenv("WORLDSIM_KERNELS", "triton")
        with pytest.raises(ConfigError, match="WORLDSIM_KERNELS must be one of torch, fused, check or unset"):
            kernels.use_triton(cuda)


# ----------------------------------------------------------------- compiled graphs
def compiled_with(wm: WorldModel, graph) -> list[int]:
    """``wm`` compiled, its passes' graph replaced by ``graph(eager_forward)`` and its decoder's by the eager decoder
    (nothing is built: no C++ compiler needed). Returns a list that grows by one per call into ``graph``."""
    wm.compile()
    calls: list[int] = []
    passes = wm._compiled.graph
    wrong = graph(passes.fn)
    passes.graph = lambda *inputs: (calls.append(1), wrong(*inputs))[1]
    wm._compiled_decoder.graph = wm.autoencoder.latents_to_frames
    return calls


def stale_replay(forward):
    """A graph that replays its first output for every later call of the same shape (a CUDA graph captured before
    the cache rolled on, reading addresses that no longer hold its inputs): right once, wrong from then on."""
    first: dict = {}

    def graph(*inputs):
        key = tuple(getattr(t, "shape", None) for t in inputs)
        if key not in first:
            first[key] = forward(*inputs)
        return DiTOutput(*(t.clone() for t in first[key][0])), *first[key][1:]

    return graph


def test_a_stale_graph_is_caught_on_its_second_call_and_the_world_steps_eagerly(monkeypatch, one_torch_thread):
    eager = rollout_latents(tiny_world(seed=3, sinks=1, window=3))
    monkeypatch.setenv("WORLDSIM_KERNELS", "check")
    wm = tiny_world(seed=3, sinks=1, window=3)
    calls = compiled_with(wm, stale_replay)
    with pytest.warns(SelfCheckWarning) as caught:
        latents = rollout_latents(wm)
    torch.testing.assert_close(latents, eager, atol=1e-4, rtol=0)
    (line,) = [str(w.message) for w in caught]
    assert line.startswith(
        "the compiled graph of CompiledPass._forward differs from the PyTorch path on cpu in float32:"
    )
    assert wm._compiled.graph.fallback == line
    # The first steady pass (its first call: right), then the next pass of that shape (a stale replay: caught). No
    # call went into the graphs after that.
    assert len(calls) == 2


def test_cpu_graphs_go_unchecked_unless_asked_and_torch_leaves_them_out(monkeypatch, one_torch_thread):
    monkeypatch.delenv("WORLDSIM_KERNELS", raising=False)
    wm = tiny_world(seed=3, sinks=1, window=3)
    compiled_with(wm, stale_replay)
    assert not wm._compiled.graph.check  # the CPU path pays nothing: no eager pass beside the graphs

    eager = rollout_latents(tiny_world(seed=3, sinks=1, window=3))
    monkeypatch.setenv("WORLDSIM_KERNELS", "torch")
    wm = tiny_world(seed=3, sinks=1, window=3)
    calls = compiled_with(wm, stale_replay)
    torch.testing.assert_close(rollout_latents(wm), eager, atol=1e-4, rtol=0)
    assert not calls


def test_mismatch_scales_its_tolerance_and_names_what_differs():
    v = torch.tensor([[8.0, -2.0], [0.5, 0.1]])
    out = DiTOutput(velocity=v, reward=torch.zeros(2), termination_logit=torch.zeros(2), state=torch.zeros(2, 0))
    assert mismatch(out, out._replace(velocity=v + 0.9), torch.bfloat16) is None  # within 1/8 of 8
    assert "output.velocity is off by up to 1.1" in mismatch(out._replace(velocity=v + 1.1), out, torch.bfloat16)
    assert "output.reward is off" in mismatch(out._replace(reward=torch.full((2,), 0.02)), out, torch.float32)
    assert "NaN" in mismatch(out._replace(velocity=v * float("nan")), out, torch.float32)
    frames = torch.full((2, 4, 4, 3), 200, dtype=torch.uint8)
    assert mismatch(frames + 2, frames, torch.float32) is None  # a grey level or two of rounding
    assert "off by up to 40" in mismatch(frames - 40, frames, torch.bfloat16)
