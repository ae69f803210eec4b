"""The fused Triton kernels against the PyTorch ops they replace, run on CPU tensors by Triton's interpreter; and the
dispatch rule that keeps everything but CUDA inference on those PyTorch ops."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import randomize, tiny_config
from helpers import cached_passes
from torch import nn

import worldsim.kernels as kernels
from worldsim.config import DiTConfig
from worldsim.models.attention import BlockCausal, Rope3D
from worldsim.models.dit import DiT

pytest.importorskip("triton")

# Triton decides between compiling a kernel and interpreting it on CPU tensors when the kernel is decorated, and the
# library's own kernels (tl.sum, ...) are decorated when Triton is imported: so TRITON_INTERPRET=1 must be set before
# anything in the process imports Triton, which a test module cannot promise (another module, or torch, may have).
# The kernel tests therefore run in a fresh pytest process started with it set (``test_kernels_in_the_interpreter``).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not INTERPRETED, reason="run in a fresh process by test_kernels_in_the_interpreter")

# (batch, frames, patch grid, width, heads): powers of two, then a width, head count and head dim that are not.
SHAPES = [(2, 2, (4, 4), 64, 4), (2, 3, (3, 3), 36, 3)]
CPU = torch.device("cpu")


@pytest.mark.skipif(INTERPRETED, reason="this is the fresh process")
def test_kernels_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def rope_tables(head_dim: int, frames: int, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = DiTConfig()
    rope = Rope3D(head_dim, cfg.rope_theta_time, cfg.rope_theta_space)
    return rope.table(torch.arange(5, 5 + frames), grid, torch.float32, CPU)  # later frames: non-trivial angles


@interpreted
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_norm_modulate_kernel_matches_pytorch(shape):
    from worldsim.kernels import triton_ops

    B, F_, grid, width, _ = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, F_, grid[0] * grid[1], width, generator=g) * 3 + 1
    mod = torch.randn(B, F_, 6, width, generator=g)
    shift, scale, *_ = mod[:, :, :, None].unbind(2)  # strided views, as Block.forward makes them
    norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
    fused = triton_ops.norm_modulate(x, shift, scale, norm.eps)
    torch.testing.assert_close(fused, kernels.norm_modulate_torch(norm, x, shift, scale), atol=1e-5, rtol=1e-5)


@interpreted
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_split_heads_rope_kernel_writes_what_pytorch_writes_into_cache_slots(shape):
    from worldsim.kernels import triton_ops

    B, F_, grid, width, heads = shape
    seq, head_dim = F_ * grid[0] * grid[1], width // heads
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, F_, grid[0] * grid[1], 3 * width, generator=g)
    cos, sin = rope_tables(head_dim, F_, grid)
    filler = torch.randn(2, B, heads, 3 * seq, head_dim, generator=g)  # a cache with something already in it
    written = []
    for write in (triton_ops.split_heads_rope_into, kernels.split_heads_rope_into_torch):
        q, cache = torch.empty(B, heads, seq, head_dim), filler.clone()
        write(qkv, cos, sin, q, cache[0, :, :, seq : 2 * seq], cache[1, :, :, seq : 2 * seq])  # strided slots
        written.append((q, cache))
    (q_fused, cache_fused), (q_torch, cache_torch) = written
    torch.testing.assert_close(q_fused, q_torch, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache_fused, cache_torch, atol=1e-5, rtol=1e-5)  # and nothing outside the slots


@interpreted
def test_cached_passes_through_the_kernels_match_pytorch(monkeypatch):
    """The wiring: the fused path on a KV cache (k and v written into its slots) gives what the PyTorch path gives."""
    cfg = tiny_config()
    dit = randomize(DiT(cfg.dit, cfg.action, cfg.autoencoder.latent_channels))
    expected = cached_passes(dit, cfg.latent_size, guidance=True)
    monkeypatch.setattr(kernels, "use_triton", lambda t: True)  # CPU tensors through the (interpreted) kernels
    for fused, torch_ in zip(cached_passes(dit, cfg.latent_size, guidance=True), expected):
        torch.testing.assert_close(fused, torch_, atol=1e-5, rtol=1e-5)


def test_cpu_tensors_take_the_pytorch_ops(monkeypatch):
    def no_triton():
        raise AssertionError("a CPU tensor reached the Triton kernels")

    monkeypatch.setattr(kernels, "_triton_ops", no_triton)
    g = torch.Generator().manual_seed(0)
    x, shift, scale = (torch.randn(shape, generator=g) for shape in [(1, 2, 4, 8), (1, 2, 1, 8), (1, 2, 1, 8)])
    qkv = torch.randn(1, 2, 4, 24, generator=g)
    cos, sin = rope_tables(4, 2, (2, 2))
    norm = nn.LayerNorm(8, elementwise_affine=False, eps=1e-6)
    with torch.no_grad():
        assert not kernels.use_triton(x)
        assert torch.equal(
            kernels.norm_modulate(norm, x, shift, scale), kernels.norm_modulate_torch(norm, x, shift, scale)
        )
        split = kernels.split_heads_rope(qkv, 2, cos, sin, BlockCausal(4), layer=0)
        for a, b in zip(split, kernels.split_heads_rope_torch(qkv, 2, cos, sin)):
            assert torch.equal(a, b)


def test_the_kernels_take_only_cuda_inference_unless_switched_off(monkeypatch):
    cuda = SimpleNamespace(is_cuda=True)  # a stand-in: no GPU here
    monkeypatch.delenv("WORLDSIM_NO_TRITON", raising=False)
    with torch.no_grad():
        assert kernels.use_triton(cuda)
        monkeypatch.setenv("WORLDSIM_NO_TRITON", "1")
        assert not kernels.use_triton(cuda)
    monkeypatch.delenv("WORLDSIM_NO_TRITON")
    assert torch.is_grad_enabled() and not kernels.use_triton(cuda)  # training: the kernels have no backward
    with torch.no_grad():  # inside torch.compile inductor fuses these ops itself (compiled CUDA-graph passes)
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        assert not kernels.use_triton(cuda)
