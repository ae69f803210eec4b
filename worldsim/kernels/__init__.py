"""The two memory-bound steps of a DiT block, each defined in PyTorch and fused into one Triton kernel for the GPU.

* ``norm_modulate``: LayerNorm, then adaLN's per-frame ``(1 + scale)`` and ``shift`` (DiT's ``modulate``). PyTorch
  reads and writes the tokens three times; the kernel once.
* ``split_heads_rope``: the qkv projection's output split into heads, q and k rotated by RoPE, and k and v written
  straight into the KV cache's slots for them. PyTorch does a rearrange, a rope pass and the cache copy; the kernel
  reads qkv once and writes every output in place.

The kernels run only on CUDA tensors at inference (they have no backward), when Triton imports, and unless
``WORLDSIM_KERNELS=torch`` (or the older ``WORLDSIM_NO_TRITON``) is set; everywhere else, the CPU included, the model
runs exactly the PyTorch ops below. Each kernel is tested against them under Triton's CPU interpreter
(``tests/test_triton_kernels.py``), and checked against them again on the first call of each shape on a GPU
(``worldsim.kernels.selfcheck``): one that disagrees there is dropped for them, with a warning.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType

import torch
from einops import rearrange
from torch import Tensor, nn

from worldsim.kernels.selfcheck import KernelChecks, kernel_path
from worldsim.models.attention import AttentionMemory, apply_rope

KERNEL_CHECKS = KernelChecks()
"""What the fused kernels showed on this process's devices (``selfcheck.KernelChecks``)."""

_PLAIN: ContextVar[bool] = ContextVar("worldsim_plain_torch", default=False)


@contextmanager
def plain_torch() -> Iterator[None]:
    """Within it the PyTorch ops run whatever the tensors: the path a compiled graph is checked against."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


def use_triton(t: Tensor) -> bool:
    """Whether the fused kernels take ``t``: a CUDA tensor, outside autograd and outside ``torch.compile`` (inductor
    fuses these ops itself), Triton importable, not switched off."""
    return (
        t.is_cuda
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not _PLAIN.get()
        and not os.environ.get("WORLDSIM_NO_TRITON")
        and kernel_path() != "torch"
        and _triton_ops() is not None
    )


@functools.cache
def _triton_ops() -> ModuleType | None:
    """``worldsim.kernels.triton_ops``, imported with Triton on the first CUDA tensor; None where Triton is missing."""
    try:
        from worldsim.kernels import triton_ops  # optional: Triton (Linux, the triton extra)
    except ImportError:
        return None
    return triton_ops


# ----------------------------------------------------------------- adaLN modulate + LayerNorm
def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """DiT's ``x * (1 + scale) + shift`` as one fused multiply-add (fewer ops: a batch-1 pass is bound by them)."""
    return torch.addcmul(shift, x, 1 + scale)


def norm_modulate_torch(norm: nn.LayerNorm, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``modulate(norm(x), shift, scale)`` in PyTorch: x (B, F, N, d), shift and scale (B, F, 1, d)."""
    return modulate(norm(x), shift, scale)


def norm_modulate(norm: nn.LayerNorm, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``norm_modulate_torch``, as one kernel on the GPU (for a LayerNorm without affine weights, as adaLN's are)."""
    if not (norm.weight is None and use_triton(x) and KERNEL_CHECKS.trusted("norm_modulate", x)):
        return norm_modulate_torch(norm, x, shift, scale)
    out = _triton_ops().norm_modulate(x, shift, scale, norm.eps)
    if KERNEL_CHECKS.due("norm_modulate", x):
        plain = norm_modulate_torch(norm, x, shift, scale)
        if not KERNEL_CHECKS.agree("norm_modulate", x, out, plain):
            return plain
    return out


# ----------------------------------------------------------------- qkv split + RoPE + KV-cache write
def split_heads_rope_torch(qkv: Tensor, heads: int, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v (B, heads, F*N, head_dim) from qkv (B, F, N, 3 * width); q and k rotated by tables (F*N, head_dim)."""
    qkv = rearrange(qkv, "b f n (three h d) -> three b h (f n) d", three=3, h=heads)
    qk = apply_rope(qkv[:2], cos, sin)  # rotate q and k in one go
    return qk[0], qk[1], qkv[2]


def split_heads_rope_into_torch(
    qkv: Tensor, cos: Tensor, sin: Tensor, q_out: Tensor, k_out: Tensor, v_out: Tensor
) -> None:
    """What ``triton_ops.split_heads_rope_into`` writes (same signature), done with ``split_heads_rope_torch``."""
    for out, t in zip((q_out, k_out, v_out), split_heads_rope_torch(qkv, q_out.shape[1], cos, sin)):
        out.copy_(t)


def split_heads_rope(
    qkv: Tensor, heads: int, cos: Tensor, sin: Tensor, memory: AttentionMemory, layer: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``split_heads_rope_torch``, as one kernel on the GPU that writes k and v where ``memory`` keeps them for
    ``layer`` (``kv_slots``), so the cache has nothing left to copy."""
    if not (use_triton(qkv) and KERNEL_CHECKS.trusted("split_heads_rope", qkv)):
        return split_heads_rope_torch(qkv, heads, cos, sin)
    B, F_, N, three_width = qkv.shape
    shape = (B, heads, F_ * N, three_width // (3 * heads))
    q = qkv.new_empty(shape)
    slots = memory.kv_slots(layer, B, F_ * N)
    k, v = slots if slots is not None else (qkv.new_empty(shape), qkv.new_empty(shape))
    _triton_ops().split_heads_rope_into(qkv, cos, sin, q, k, v)
    if KERNEL_CHECKS.due("split_heads_rope", qkv):
        plain = split_heads_rope_torch(qkv, heads, cos, sin)
        if not KERNEL_CHECKS.agree("split_heads_rope", qkv, dict(q=q, k=k, v=v), dict(zip("qkv", plain))):
            k.copy_(plain[1])  # the cache's slots (when k and v are them) get what the PyTorch path computes
            v.copy_(plain[2])
            return plain[0], k, v
    return q, k, v
