"""Attention pieces shared by training and inference: 3-D RoPE and block-causal sequence attention.

Token order everywhere is (frame, y, x): a block of F frames of N tokens is a sequence of F*N tokens.

Which keys a query frame ``f`` may see (the *visibility rule*, identical in training, in the KV cache
and in the full-recompute reference):

* the first ``sinks`` frames of the episode (pinned "sink" frames, StreamingLLM-style), and
* the ``window`` most recent frames up to and including ``f`` itself.

Once the window has rolled past the sinks, the sinks' keys are re-rotated in time so they sit just
before the oldest window frame; relative distances then never exceed ``sinks + window - 1``, the range
seen in training (RoPE is relative, so rotating keys by ``delta`` is the same as moving them).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)


class KVSlots(NamedTuple):
    """Where a memory keeps one layer's keys and values of the frames in flight: (B, heads, F*N, head_dim) views."""

    keys: Tensor
    values: Tensor


class AttentionMemory(Protocol):
    """What a self-attention layer calls to attend: plain block-causal, KV cache, or reference."""

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q, k, v: (B, heads, F*N, head_dim) for the frames of this pass -> (B, heads, F*N, head_dim)."""
        ...

    def kv_slots(self, layer: int, batch: int, length: int) -> KVSlots | None:
        """Where ``attend`` will put k and v of ``length`` tokens at ``layer``, for a kernel to write them there
        directly (``worldsim.kernels.split_heads_rope``); None when they are not kept in place."""
        ...


class Rope3D:
    """Rotary embedding over (t, y, x). The head dim splits into time, y and x parts.

    Uses the rotate-half layout: pair (i, i + head_dim/2) rotates by one angle. Angles are computed
    in float64 so absolute time positions can grow for hours of play without losing precision.
    """

    def __init__(self, head_dim: int, theta_time: float, theta_space: float) -> None:
        half = head_dim // 2
        d_t = 2 * (head_dim // 8)
        d_y = 2 * ((head_dim - d_t) // 4)
        n_t, n_y = d_t // 2, d_y // 2
        n_x = half - n_t - n_y

        def freqs(n: int, theta: float) -> Tensor:
            return theta ** (-torch.arange(n, dtype=torch.float64) / max(n, 1))

        self.head_dim = head_dim
        self.freq_t = freqs(n_t, theta_time)
        self.freq_y = freqs(n_y, theta_space)
        self.freq_x = freqs(n_x, theta_space)
        self._last: tuple | None = None
        self._shift_block: tuple | None = None
        self._space: dict[tuple[int, int], Tensor] = {}
        self._frames: dict[tuple, tuple[Tensor, Tensor]] = {}

    def _tables(self, angles: Tensor, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        cos, sin = angles.cos(), angles.sin()
        cos = torch.cat([cos, cos], dim=-1)
        sin = torch.cat([-sin, sin], dim=-1)
        return cos.to(device=device, dtype=dtype), sin.to(device=device, dtype=dtype)

    def table(
        self, t_positions: Tensor, grid: tuple[int, int], dtype: torch.dtype, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """cos/sin tables (F*N, head_dim) for frames at ``t_positions`` (F,) on a ``grid`` of patches."""
        # The K+1 passes of one frame share positions: remember the last table.
        positions = tuple(t_positions.tolist())
        key = (positions, grid, dtype, device)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        if len(positions) == 2:  # a merged pass (``write_then_denoise``): the frame before's rows were made for it
            rows = [self._frame_table(p, grid, dtype, device) for p in positions]
            tables = (torch.cat([rows[0][0], rows[1][0]]), torch.cat([rows[0][1], rows[1][1]]))
        elif len(positions) == 1:
            tables = self._frame_table(positions[0], grid, dtype, device)
        else:
            tables = self._build_table(t_positions, grid, dtype, device)
        self._last = (key, tables)
        return tables

    def _frame_table(self, position: int, grid: tuple[int, int], dtype, device) -> tuple[Tensor, Tensor]:
        """``table`` of one frame, kept for the next few calls: a rollout's frame g + 1 is the second frame of one
        pass and the only frame of the next, and frame g of the pass after."""
        key = (position, grid, dtype, device)
        if key not in self._frames:
            if len(self._frames) >= 4:
                del self._frames[next(iter(self._frames))]  # the oldest
            self._frames[key] = self._build_table(torch.tensor([position]), grid, dtype, device)
        return self._frames[key]

    def _space_angles(self, grid: tuple[int, int]) -> Tensor:
        """(N, n_y + n_x) float64 angles of the patches of a ``grid``, the same for every frame (kept per grid)."""
        if grid not in self._space:
            gh, gw = grid
            ys = torch.arange(gh, dtype=torch.float64)[:, None].expand(gh, gw).reshape(-1)
            xs = torch.arange(gw, dtype=torch.float64)[None, :].expand(gh, gw).reshape(-1)
            self._space[grid] = torch.cat([ys[:, None] * self.freq_y, xs[:, None] * self.freq_x], dim=-1)
        return self._space[grid]

    def _build_table(
        self, t_positions: Tensor, grid: tuple[int, int], dtype: torch.dtype, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        t = t_positions.to(torch.float64).cpu()
        a_t = t[:, None] * self.freq_t  # (F, n_t)
        a_s = self._space_angles(grid)  # (N, n_y + n_x)
        F_, N = a_t.shape[0], a_s.shape[0]
        angles = torch.cat([a_t[:, None, :].expand(F_, N, -1), a_s[None].expand(F_, N, -1)], dim=-1)
        return self._tables(angles.reshape(F_ * N, -1), dtype, device)

    def time_shift_table(self, delta: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """cos/sin (1, head_dim) that move a key ``delta`` frames later in time, leaving y and x alone."""
        # A rollout asks for delta, delta + 1, ... one frame after another: tables are made 64 deltas at a time.
        block = self._shift_block
        if block is None or block[1:3] != (dtype, device) or not 0 <= delta - block[0] < len(block[3]):
            a_t = torch.arange(delta, delta + 64, dtype=torch.float64)[:, None] * self.freq_t  # (64, n_t)
            angles = torch.cat([a_t, a_t.new_zeros(64, len(self.freq_y) + len(self.freq_x))], dim=-1)
            block = self._shift_block = (delta, dtype, device, *self._tables(angles, dtype, device))
        i = delta - block[0]
        return block[3][i : i + 1], block[4][i : i + 1]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (..., L, head_dim) by tables (L, head_dim) in rotate-half layout."""
    return torch.addcmul(x * cos, torch.roll(x, x.shape[-1] // 2, dims=-1), sin)


def cache_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
    """Inference attention of a few new frames' queries over the cache's keys: SDPA, except for a batch of bf16 worlds
    on a CPU, where PyTorch's flash kernel (tuned for long queries) loses to two matrix products and a softmax at
    these shapes (16-32 queries over ~250 keys) from 2 worlds on; one world does not gain, so it keeps SDPA
    (``docs/results.md``, "Gymnasium vector env"). ``bias``: additive, 0 where a key is seen and -inf where not
    (``visibility_bias``); added in place to the fresh scores, which halves the masked call against a bool mask's
    out-of-place ``masked_fill``."""
    if q.dtype != torch.bfloat16 or q.device.type != "cpu" or q.shape[0] < 2 or torch.is_grad_enabled():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    if bias is not None:
        scores.add_(bias)
    return torch.matmul(scores.softmax(-1), v)


def visibility_bias(seen: Tensor, dtype: torch.dtype) -> Tensor:
    """A bool mask (True where a key is seen) as the additive bias ``cache_attention`` and SDPA take."""
    return torch.zeros(seen.shape, dtype=dtype, device=seen.device).masked_fill_(~seen, float("-inf"))


def frame_visibility(query_frames: ArrayT, key_frames: ArrayT, window: int | None, sinks: int) -> ArrayT:
    """May query frame i see key frame j? The visibility rule of the module doc, the one copy of it.

    query_frames (..., Fq) and key_frames (..., Fk) are frame indices within the episode; a negative key index
    marks an empty slot (seen by nobody). ``window=None`` is plain causal attention (training clips are never
    longer than the window). Returns bool (..., Fq, Fk), a tensor for tensors (training) and a numpy array for
    arrays (the KV cache's bookkeeping).
    """
    q = query_frames[..., :, None]
    k = key_frames[..., None, :]
    visible = (k >= 0) & (k <= q)
    if window is None:
        return visible
    return visible & ((k < sinks) | (k > q - window))


@lru_cache(maxsize=32)
def block_causal_mask(frames: int, tokens: int, device: str) -> Tensor:
    """Token mask (frames*N, frames*N) of a training clip: ``frame_visibility`` with every frame in the window."""
    t = torch.arange(frames, device=device)
    return frame_visibility(t, t, None, 0).repeat_interleave(tokens, 0).repeat_interleave(tokens, 1)


class BlockCausal:
    """Attention over one whole block of frames with the visibility rule; no cache.

    With ``window=None`` (training) every frame sees all earlier frames in the clip: one masked
    SDPA call. With a window (the full-recompute reference for long rollouts) frames whose window
    has rolled get their own call over the keys the rule lets them see, with the sink keys re-rotated
    for that frame (as the KV cache does).
    """

    def __init__(
        self,
        tokens_per_frame: int,
        window: int | None = None,
        sinks: int = 0,
        rope: Rope3D | None = None,
    ) -> None:
        self.tokens = tokens_per_frame
        self.window = window
        self.sinks = sinks
        self.rope = rope

    def keys_of(self, frame: int, frames: int) -> Tensor:
        """Bool (frames,): which frames of the block frame ``frame`` attends to."""
        return frame_visibility(torch.tensor([frame]), torch.arange(frames), self.window, self.sinks)[0]

    def kv_slots(self, layer: int, batch: int, length: int) -> None:
        return None  # keys and values live only for this call

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        N = self.tokens
        frames = q.shape[-2] // N
        # Until a frame's window rolls past the sinks, the rule is plain causality: one masked call.
        rolled_from = frames if self.window is None else min(frames, self.sinks + self.window)
        head = rolled_from * N
        outs = [
            F.scaled_dot_product_attention(
                q[..., :head, :], k[..., :head, :], v[..., :head, :],
                attn_mask=block_causal_mask(rolled_from, N, str(q.device)),
            )
        ]  # fmt: skip
        if rolled_from == frames:
            return outs[0]
        assert self.rope is not None, "a rolling window needs the rope to re-rotate sink keys"
        sink_keys = k[..., : self.sinks * N, :]
        for f in range(rolled_from, frames):
            # The sinks move to just before the oldest frame of f's window (RoPE is relative).
            cos, sin = self.rope.time_shift_table(f - self.window + 1 - self.sinks, q.dtype, q.device)
            keys = torch.cat([apply_rope(sink_keys, cos, sin), k[..., self.sinks * N :, :]], dim=-2)
            seen = self.keys_of(f, frames).repeat_interleave(N)
            outs.append(
                F.scaled_dot_product_attention(q[..., f * N : (f + 1) * N, :], keys[..., seen, :], v[..., seen, :])
            )
        return torch.cat(outs, dim=-2)
