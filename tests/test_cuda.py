"""On a CUDA GPU only (skipped elsewhere; ``benchmarks/gpu_check.sh`` runs them): the fused Triton kernels on real
CUDA tensors in fp32 and bf16, a cached rollout and compiled CUDA-graph passes against the PyTorch path, each passing
the self-check without a fallback, and ``--device`` checked against the GPUs there are."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import randomize, tiny_config
from test_compile import count_calls, rollout_latents
from test_engine import tiny_world
from torch import nn

import worldsim.kernels as kernels
from worldsim.config import DiTConfig
from worldsim.devices import resolve_device
from worldsim.engine import WorldModel
from worldsim.errors import InputError
from worldsim.kernels.selfcheck import KernelChecks, SelfCheckWarning
from worldsim.models.attention import Rope3D
from worldsim.models.dit import DiT

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")
SHAPES = [(2, 2, (4, 4), 64, 4), (3, 3, (3, 3), 36, 3), (1, 1, (16, 16), 256, 4)]
"""(batch, frames, patch grid, width, heads): small powers of two, sizes that are not, and the shipped world's."""


@pytest.fixture(autouse=True)
def checked(monkeypatch):
    """The self-check on (the default on CUDA), on a fresh record, and any fallback a failure."""
    monkeypatch.delenv("WORLDSIM_KERNELS", raising=False)
    monkeypatch.delenv("WORLDSIM_NO_TRITON", raising=False)
    monkeypatch.setattr(kernels, "KERNEL_CHECKS", KernelChecks())
    with warnings.catch_warnings():
        warnings.simplefilter("error", SelfCheckWarning)
        yield


def close_to_rounded(fused: torch.Tensor, exact: torch.Tensor) -> None:
    """``fused`` (computed in fp32 and rounded once to its dtype) against ``exact`` (the PyTorch ops in fp32 on the
    same inputs): within fp32's reordered sums, or within one bf16 rounding step."""
    if fused.dtype == torch.float32:
        torch.testing.assert_close(fused, exact, atol=1e-5, rtol=1e-5)
    else:
        eps = torch.finfo(fused.dtype).eps
        torch.testing.assert_close(fused.float(), exact.to(fused.dtype).float(), atol=8 * eps, rtol=2 * eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_the_kernels_match_pytorch_on_the_gpu(shape, dtype):
    triton_ops = pytest.importorskip("worldsim.kernels.triton_ops")
    B, F_, grid, width, heads = shape
    N, head_dim = grid[0] * grid[1], width // heads
    g = torch.Generator(CUDA).manual_seed(0)
    x = (torch.randn(B, F_, N, width, generator=g, device=CUDA) * 3 + 1).to(dtype)
    mod = torch.randn(B, F_, 6, width, generator=g, device=CUDA).to(dtype)
    shift, scale, *_ = mod[:, :, :, None].unbind(2)  # strided views, as Block.forward makes them
    norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
    with torch.no_grad():
        exact = kernels.norm_modulate_torch(norm, x.float(), shift.float(), scale.float())
        close_to_rounded(triton_ops.norm_modulate(x, shift, scale, norm.eps), exact)

        qkv = torch.randn(B, F_, N, 3 * width, generator=g, device=CUDA).to(dtype)
        rope = Rope3D(head_dim, DiTConfig().rope_theta_time, DiTConfig().rope_theta_space)
        cos, sin = rope.table(torch.arange(5, 5 + F_), grid, torch.float32, CUDA)
        seq = F_ * N
        cache = torch.zeros(2, B, heads, 3 * seq, head_dim, dtype=dtype, device=CUDA)
        q = torch.empty(B, heads, seq, head_dim, dtype=dtype, device=CUDA)
        k_slots, v_slots = cache[0, :, :, seq : 2 * seq], cache[1, :, :, seq : 2 * seq]  # strided, as the cache's
        triton_ops.split_heads_rope_into(qkv, cos.to(dtype), sin.to(dtype), q, k_slots, v_slots)
        exact = kernels.split_heads_rope_torch(qkv.float(), heads, cos.to(dtype).float(), sin.to(dtype).float())
        for fused, want in zip((q, k_slots, v_slots), exact):
            close_to_rounded(fused, want)
        assert not cache[:, :, :, :seq].any() and not cache[:, :, :, 2 * seq :].any()  # nothing outside the slots


def on_gpu(wm: WorldModel, dtype: torch.dtype = torch.float32) -> WorldModel:
    """The same world (its modules move) on the GPU in ``dtype``."""
    return WorldModel(wm.config, wm.autoencoder, wm.dit, wm.starts, device=CUDA, dtype=dtype)


def test_a_rollout_on_the_gpu_makes_the_cpus_frames_through_the_checked_kernels(one_torch_thread):
    wm = tiny_world(seed=3, sinks=1, window=3)
    cpu = rollout_latents(wm)
    gpu = rollout_latents(on_gpu(wm)).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)
    if kernels._triton_ops() is not None:  # the fused kernels served, each shape checked first
        assert {op for op, *_ in kernels.KERNEL_CHECKS.checked} == {"norm_modulate", "split_heads_rope"}
    assert not kernels.KERNEL_CHECKS.failed
    bf16 = rollout_latents(on_gpu(tiny_world(seed=3, sinks=1, window=3), torch.bfloat16)).cpu()
    assert torch.isfinite(bf16).all() and not kernels.KERNEL_CHECKS.failed


def test_compiled_cuda_graphs_make_the_eager_frames_and_pass_the_self_check(one_torch_thread):
    wm = on_gpu(tiny_world(seed=3, sinks=1, window=3))
    eager = rollout_latents(wm)
    wm.compile()
    calls = count_calls(wm)
    compiled = rollout_latents(wm)
    assert len(calls) >= 3 * 7  # every frame from the third on: its passes replayed as CUDA graphs
    torch.testing.assert_close(compiled, eager, atol=1e-3, rtol=1e-3)
    assert wm._compiled.graph.fallback is None and wm._compiled_decoder.fallback is None


def test_devices_are_checked_against_the_gpus_there_are():
    assert resolve_device("cuda") == CUDA
    count = torch.cuda.device_count()
    assert resolve_device(f"cuda:{count - 1}").index == count - 1
    with pytest.raises(InputError, match=f"has {count} CUDA GPU"):
        resolve_device(f"cuda:{count}")


def test_with_gradients_on_the_gpu_the_pytorch_ops_run_and_backpropagate():
    """The kernels have no backward: training on the GPU must not meet them."""
    cfg = tiny_config()
    dit = randomize(DiT(cfg.dit, cfg.action, cfg.autoencoder.latent_channels)).to(CUDA)
    x = torch.randn(2, 1, cfg.autoencoder.latent_channels, *cfg.latent_size, device=CUDA)
    out = dit(x, torch.full((2, 1), 0.5, device=CUDA), torch.tensor([[1], [2]], device=CUDA),
              torch.zeros(2, 1, dtype=torch.bool, device=CUDA), torch.arange(1))  # fmt: skip
    out.velocity.square().mean().backward()
    assert all(p.grad is not None for p in dit.blocks[0].parameters())
