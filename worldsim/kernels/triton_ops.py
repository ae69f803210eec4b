"""The Triton kernels behind ``worldsim.kernels``; imported (and Triton with it) only once a CUDA tensor asks for one.

Both kernels work in fp32 whatever the tensors' dtype and round once, on the store. With ``TRITON_INTERPRET=1`` set
before Triton is imported, Triton's interpreter runs them on CPU tensors (how the tests check them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _norm_modulate_kernel(
    x_ptr,
    shift_ptr,
    scale_ptr,
    out_ptr,
    frames,
    tokens,
    width,
    shift_stride_b,
    shift_stride_f,
    scale_stride_b,
    scale_stride_f,
    eps,
    BLOCK: tl.constexpr,
):
    # One program per token row of x (B * F * N rows of ``width``, contiguous); row = (b * F + f) * N + n.
    row = tl.program_id(0)
    frame = row // tokens
    b, f = frame // frames, frame % frames
    cols = tl.arange(0, BLOCK)
    inside = cols < width
    x = tl.load(x_ptr + row * width + cols, mask=inside, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / width
    centred = tl.where(inside, x - mean, 0.0)
    var = tl.sum(centred * centred, axis=0) / width  # biased, as LayerNorm's
    normed = centred * tl.rsqrt(var + eps)
    shift = tl.load(shift_ptr + b * shift_stride_b + f * shift_stride_f + cols, mask=inside).to(tl.float32)
    scale = tl.load(scale_ptr + b * scale_stride_b + f * scale_stride_f + cols, mask=inside).to(tl.float32)
    out = normed * (1 + scale) + shift
    tl.store(out_ptr + row * width + cols, out.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _split_heads_rope_kernel(
    qkv_ptr,
    cos_ptr,
    sin_ptr,
    q_ptr,
    k_ptr,
    v_ptr,
    seq,
    heads,
    head_dim,
    qkv_stride_b,
    qkv_stride_t,
    q_stride_b,
    q_stride_h,
    q_stride_t,
    k_stride_b,
    k_stride_h,
    k_stride_t,
    v_stride_b,
    v_stride_h,
    v_stride_t,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program per token (b, t) of qkv (B, F*N, 3 * width), every head at once as a (heads, head_dim) tile.
    token = tl.program_id(0)
    b, t = token // seq, token % seq
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    inside = (h < heads) & (d < head_dim)
    # Rotate-half layout (``apply_rope``): x * cos + roll(x, head_dim // 2) * sin, the sin table holding [-sin, sin].
    rolled = (d + head_dim - head_dim // 2) % head_dim
    cos = tl.load(cos_ptr + t * head_dim + d, mask=d < head_dim).to(tl.float32)
    sin = tl.load(sin_ptr + t * head_dim + d, mask=d < head_dim).to(tl.float32)
    width = heads * head_dim
    src = qkv_ptr + b * qkv_stride_b + t * qkv_stride_t + h * head_dim  # q at src, k at src + width, v beyond
    q = tl.load(src + d, mask=inside).to(tl.float32)
    q_rolled = tl.load(src + rolled, mask=inside).to(tl.float32)
    k = tl.load(src + width + d, mask=inside).to(tl.float32)
    k_rolled = tl.load(src + width + rolled, mask=inside).to(tl.float32)
    v = tl.load(src + 2 * width + d, mask=inside)
    q_dst = q_ptr + b * q_stride_b + h * q_stride_h + t * q_stride_t + d
    k_dst = k_ptr + b * k_stride_b + h * k_stride_h + t * k_stride_t + d
    v_dst = v_ptr + b * v_stride_b + h * v_stride_h + t * v_stride_t + d
    tl.store(q_dst, (q * cos + q_rolled * sin).to(q_ptr.dtype.element_ty), mask=inside)
    tl.store(k_dst, (k * cos + k_rolled * sin).to(k_ptr.dtype.element_ty), mask=inside)
    tl.store(v_dst, v.to(v_ptr.dtype.element_ty), mask=inside)


def _per_frame(t: Tensor, batch: int, frames: int, width: int) -> Tensor:
    """A (B, F, 1, d) modulation (or one that broadcasts to it) as a (B, F, d) view with a contiguous last dim."""
    t = t.expand(batch, frames, 1, width)[:, :, 0]
    return t if t.stride(-1) == 1 else t.contiguous()


def _unit_last_stride(*tensors: Tensor) -> None:
    for t in tensors:
        if t.stride(-1) != 1:
            raise ValueError(f"the kernel needs a contiguous last dim, got strides {t.stride()}")


def norm_modulate(x: Tensor, shift: Tensor, scale: Tensor, eps: float) -> Tensor:
    """LayerNorm (no affine) of x (B, F, N, d), then ``* (1 + scale) + shift``, both (B, F, 1, d)."""
    B, F_, N, d = x.shape
    x = x.contiguous()
    shift, scale = _per_frame(shift, B, F_, d), _per_frame(scale, B, F_, d)
    out = torch.empty_like(x)
    _norm_modulate_kernel[(B * F_ * N,)](
        x, shift, scale, out, F_, N, d, *shift.stride()[:2], *scale.stride()[:2], eps,
        BLOCK=triton.next_power_of_2(d),
    )  # fmt: skip
    return out


def split_heads_rope_into(qkv: Tensor, cos: Tensor, sin: Tensor, q_out: Tensor, k_out: Tensor, v_out: Tensor) -> None:
    """Split qkv (B, F, N, 3 * width) into heads, rotate q and k by the tables (F*N, head_dim) and write q, k, v into
    the given (B, heads, F*N, head_dim) tensors, which may be strided views (the KV cache's slots)."""
    B, F_, N, _ = qkv.shape
    _, heads, seq, head_dim = q_out.shape
    qkv = qkv.reshape(B, seq, -1)
    cos, sin = cos.contiguous(), sin.contiguous()
    _unit_last_stride(qkv, q_out, k_out, v_out)
    _split_heads_rope_kernel[(B * seq,)](
        qkv, cos, sin, q_out, k_out, v_out, seq, heads, head_dim, *qkv.stride()[:2],
        *q_out.stride()[:3], *k_out.stride()[:3], *v_out.stride()[:3],
        BLOCK_H=triton.next_power_of_2(heads), BLOCK_D=triton.next_power_of_2(head_dim),
    )  # fmt: skip
