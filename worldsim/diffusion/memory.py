"""The rollout's memory of finished frames: the KV cache, and the full-recompute reference that tests hold it to.

Both answer the same two calls for the sampling loop (``worldsim.diffusion.sampler``):

* ``denoise(...)``: one DiT pass over a block of new frames that attends to everything remembered;
* ``write(...)``: the same pass, after which the block is remembered too.

``KVCache`` keeps each finished frame's keys/values, so a pass costs the new frame's tokens only. ``Recompute``
keeps the frames themselves and runs the whole history again on every pass. Which frames a frame sees is
``worldsim.models.attention.frame_visibility`` in both (and in training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from worldsim.models.attention import (
    BlockCausal,
    KVSlots,
    apply_rope,
    cache_attention,
    frame_visibility,
    visibility_bias,
)
from worldsim.models.conditioning import FrameConditioning, TextContext
from worldsim.models.dit import DiT, DiTOutput

if TYPE_CHECKING:  # an annotation only: the compiled pass runs on this cache
    from worldsim.kernels.compiled_pass import CompiledPass

EMPTY = -(2**40)
"""``slot_frame`` of a slot that holds nothing for that row."""


@dataclass
class KeysValues:
    """Keys and values of one block of frames at every layer."""

    keys: Tensor
    """(L, B, heads, F*N, head_dim), keys already rotated to the frames' time positions."""
    values: Tensor
    """(L, B, heads, F*N, head_dim)."""


class KVCache:
    """Keys/values of finished frames: ``sinks`` pinned slots plus a ring of ``window - 1`` slots.

    Per layer the buffers are (B, heads, slots * N, head_dim), preallocated, so memory and per-frame
    cost are constant however long the rollout runs. All rows share one clock (``next_frame``, the
    global frame index) but each row has its own episode ``origin``: a row reset mid-rollout (a
    VectorEnv sub-env starting a new episode) restarts its local frame count while the others go on.
    A row's first ``sinks`` local frames live in the sink slots; later frames go to the ring slot of
    their global index. ``slot_frame`` (B, slots) records which global frame each slot holds per row,
    and visibility is worked out from it; in the steady state every slot is visible to every row and
    single-frame passes need no mask at all.

    Sink keys sit just before the oldest frame of the querying frame's window, so two frames of one pass would want
    them in two places. A ``write_then_denoise`` pass (a finished frame, then the next one) reads the sinks in place
    for the first and a look-ahead copy, rotated one frame further, for the second: the copy lives in front of the
    slots (``ahead`` tokens), so attention still reads one contiguous slice.
    """

    def __init__(
        self,
        dit: DiT,
        batch: int,
        tokens: int,
        sinks: int,
        window: int,
        dtype,
        device,
        scratch_frames: int = 1,
        compiled: CompiledPass | None = None,
    ) -> None:
        cfg = dit.cfg
        self.dit = dit
        self.compiled = compiled
        """Runs the passes of the steady state (``steady``) as compiled graphs, when given."""
        self.tokens, self.sinks, self.window = tokens, sinks, window
        self.rope = dit.rope
        self.slots = sinks + window - 1
        self.scratch = scratch_frames
        # The frames of the pass in flight write their keys/values right after the used slots
        # (the next ring slots, or a spare region once the ring is full), so attention reads one
        # contiguous slice and nothing is concatenated on the hot path.
        self.ahead = sinks * tokens
        """Tokens of the look-ahead copy of the sinks, in front of the slots."""
        shape = (cfg.depth, batch, cfg.heads, (self.slots + scratch_frames) * tokens, cfg.width // cfg.heads)
        self._k = torch.zeros((*shape[:3], self.ahead + shape[3], shape[4]), dtype=dtype, device=device)
        self._v = torch.zeros_like(self._k)
        self._slot_views()
        # Sink keys as written (rotated at their own global frame); re-rotated into ``k`` as the window rolls.
        self.sink_k = torch.zeros((*shape[:3], sinks * tokens, shape[-1]), dtype=dtype, device=device)
        self.slot_frame = torch.full((batch, self.slots), EMPTY, dtype=torch.long)
        self.origin = torch.zeros(batch, dtype=torch.long)
        """Global frame at which each row's current episode began."""
        self.used = 0
        """Slots [0, used) may hold something for some row: attention reads this prefix."""
        self.next_frame = 0
        """Global index of the first frame of the next block."""
        self._bias_key: tuple[int, int, bool] | None = None
        self._bias_memo: dict[tuple, Tensor | None] = {}
        self._bias: Tensor | None = None
        self._version = 0
        self._ahead_version = -1
        self._sinks_written = 0
        """Counts writes of sink keys (``sink_k``), so a rotation of them can tell whether it was done already."""
        self._ahead_placed: tuple[int, list[int]] | None = None
        """(``_sinks_written``, per-row shift) of the sinks now in the look-ahead region."""

    def _slot_views(self) -> None:
        """``k`` / ``v``: the slots and scratch, views behind the look-ahead region of the buffers."""
        self.k, self.v = self._k[..., self.ahead :, :], self._v[..., self.ahead :, :]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    # ----------------------------------------------------------------- the two calls of the sampling loop
    def denoise(self, x: Tensor, levels: Tensor, cond: FrameConditioning, text: TextContext | None) -> DiTOutput:
        """One pass over the block ``x`` (B', F, C, h, w) that starts at ``next_frame``; nothing is remembered.
        B' may be a multiple of the batch (guidance stacks its variants along it)."""
        return self._pass(x, levels, cond, text, CachePass(self, keep=False))

    def write(self, x: Tensor, levels: Tensor, cond: FrameConditioning, text: TextContext | None) -> DiTOutput:
        """The same pass, then the block's keys/values go into their slots and the clock moves on."""
        step = CachePass(self, keep=True)
        out = self._pass(x, levels, cond, text, step)
        self.append(step.written())
        return out

    def write_then_denoise(
        self, done: WrittenBlock, x: Tensor, levels: Tensor, cond: FrameConditioning, text: TextContext | None
    ) -> DiTOutput:
        """``write(done)`` and then ``denoise(x)`` in one pass over both blocks: the finished frames come first in
        time, attend only to the cache and themselves (as their own write pass would), and are remembered after it;
        the new block attends to them too. Returns the output for ``x``'s frames."""
        done_frames = done.latents.shape[1]
        if done_frames != 1 or x.shape[1] != 1 or x.shape[0] != self.batch:
            raise ValueError("write_then_denoise takes one finished frame and one new frame per row, unguided")
        self._look_ahead()
        step = CachePass(self, keep=True, ahead=True)
        out = self._pass(*_joined(self.dit, done, x, levels, cond), text, step)
        self.append(step.written(tokens=done_frames * self.tokens))
        return DiTOutput(*(o[:, done_frames:] for o in out))

    def _pass(self, x: Tensor, levels: Tensor, cond: FrameConditioning, text: TextContext | None, step: CachePass):
        positions = torch.arange(self.next_frame, self.next_frame + x.shape[1])
        if self.compiled is not None and text is None and self.steady(x, step.ahead):
            return self.compiled(self, x, levels, cond, positions, step)
        return self.dit(x, levels, cond.actions, cond.null, positions, text, memory=step)

    def steady(self, x: Tensor, ahead: bool = False) -> bool:
        """Whether a pass over ``x`` is one of a frame-by-frame rollout in the cache's steady state, whose shapes
        repeat frame after frame: every slot in use (the ring has filled), one row per world (no guidance variants),
        one new frame (two in a ``write_then_denoise`` pass, ``ahead``)."""
        return self.used == self.slots and x.shape[0] == self.batch and x.shape[1] == (2 if ahead else 1)

    def context(self, ahead: bool = False) -> tuple[Tensor, Tensor]:
        """Views (L, B, heads, keys, head_dim) of the keys and values a pass attends to before its own block's: the
        used slots, behind the look-ahead sinks with ``ahead``. The same pass reads the same addresses each frame."""
        start, end = self._context_range(ahead)
        return self._k[..., start:end, :], self._v[..., start:end, :]

    def _context_range(self, ahead: bool) -> tuple[int, int]:
        return (0 if ahead else self.ahead), self.ahead + self.used * self.tokens

    # ----------------------------------------------------------------- visibility
    # The bookkeeping arrays are tiny ((B, slots) ints): numpy views of them do it at a third of torch's per-op cost.
    def _slot_local_frames(self) -> np.ndarray:
        """(B, used) local frame index each used slot holds per row (EMPTY where nothing)."""
        slot_frame = self.slot_frame[:, : self.used].numpy()
        origin = self.origin.numpy()
        local = slot_frame - origin[:, None]
        if self.sinks:
            sinks = np.arange(min(self.sinks, self.used))[None, :]
            written = sinks < (self.next_frame - origin)[:, None]
            local[:, : sinks.shape[1]] = np.where(written, sinks, EMPTY)
        local[slot_frame == EMPTY] = EMPTY
        return local

    def visibility(self, frames: int, ahead: bool = False) -> Tensor:
        """(B, frames, used + frames) bool: may frame f of the block in flight see used slot j (then the block)?
        With ``ahead`` (a two-frame ``write_then_denoise`` pass): (B, 2, sinks + used + 2), the second frame seeing
        the look-ahead sinks in front instead of those in place."""
        local_q = self.next_frame - self.origin.numpy()[:, None] + np.arange(frames)[None, :]  # (B, F)
        local_k = np.concatenate([self._slot_local_frames(), local_q], 1)  # (B, used + F)
        vis = frame_visibility(local_q, local_k, self.window, self.sinks)
        if ahead:
            front = np.zeros((vis.shape[0], frames, self.sinks), dtype=bool)
            placed = min(self.sinks, self.used)
            front[:, 1, :placed] = vis[:, 1, :placed]
            vis[:, 1, :placed] = False
            vis = np.concatenate([front, vis], 2)
        return torch.from_numpy(vis)

    def block_bias(self, frames: int, ahead: bool = False) -> Tensor | None:
        """(B, 1, frames*N, keys*N) additive attention bias of ``visibility`` (0 seen, -inf not), or None when
        everything is visible; built once per write (the K passes of a frame share it), and kept by what it depends
        on (``_visibility_key``): in a rollout's steady state the same few patterns come round as the ring turns."""
        key = (self._version, frames, ahead)  # the version changes with every write and restart
        if self._bias_key != key:
            pattern = self._visibility_key(frames, ahead)
            if pattern not in self._bias_memo:
                if len(self._bias_memo) >= 64:
                    self._bias_memo.clear()
                self._bias_memo[pattern] = self._build_bias(self.visibility(frames, ahead))
            self._bias = self._bias_memo[pattern]
            self._bias_key = key
        return self._bias

    def _build_bias(self, vis: Tensor) -> Tensor | None:
        if vis.all():
            return None
        B, F_, K = vis.shape  # the frames' bias, each entry then spread over its N x N tokens in one copy
        N = self.tokens
        bias = visibility_bias(vis, self._k.dtype)[:, None, :, None, :, None]
        return bias.expand(B, 1, F_, N, K, N).reshape(B, 1, F_ * N, K * N).to(self._k.device)

    def _visibility_key(self, frames: int, ahead: bool) -> tuple:
        """All that ``visibility(frames, ahead)`` depends on, with the clock taken out: for each row its episode's
        age (frames since its origin) up to ``sinks`` (a sink slot is seen once written), and for each used slot how
        many frames ago its frame was (-1 if empty) up to ``window + 1`` (a ring slot holds a frame at least ``sinks``
        into its episode, seen by frame f of the block while fewer than ``window - f`` frames ago)."""
        slot_frame = self.slot_frame[:, : self.used].numpy()
        age = np.minimum(self.next_frame - self.origin.numpy(), self.sinks)
        ago = np.minimum(self.next_frame - slot_frame, self.window + 1)
        ago[slot_frame == EMPTY] = -1
        return (frames, ahead, *ago.shape, age.tobytes(), ago.tobytes())

    def kv_slots(self, layer: int, batch: int, length: int) -> KVSlots | None:
        """Where ``attend`` puts the block in flight: right after the used slots, when the block fits the scratch room;
        None for a guidance batch (B' > B) or a longer block, which ``attend`` concatenates instead."""
        if batch != self.batch or length // self.tokens > self.scratch:
            return None
        n = self.used * self.tokens
        return KVSlots(self.k[layer, :, :, n : n + length], self.v[layer, :, :, n : n + length])

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, ahead: bool = False) -> Tensor:
        """Attention of the block in flight (q, k, v: (B', heads, F*N, head_dim)) over the cache and itself (and
        with ``ahead`` the look-ahead sinks: a ``write_then_denoise`` pass)."""
        n = self.used * self.tokens
        m = k.shape[-2]
        frames = m // self.tokens
        bias = self.block_bias(frames, ahead)
        reps = q.shape[0] // self.batch
        if bias is not None and reps > 1:  # guidance passes stack cond/uncond along the batch
            bias = bias.repeat(reps, 1, 1, 1)
        slots = self.kv_slots(layer, q.shape[0], m)
        if slots is not None:
            # Nothing to copy when a fused kernel wrote k and v there already: copy_ skips a view onto itself.
            slots.keys.copy_(k)
            slots.values.copy_(v)
            start, end = self._context_range(ahead)
            return cache_attention(
                q, self._k[layer, :, :, start : end + m], self._v[layer, :, :, start : end + m], bias
            )
        assert not ahead, "a write_then_denoise pass fits the scratch and is never guided"
        ck, cv = self.k[layer, :, :, :n], self.v[layer, :, :, :n]
        if reps > 1:
            ck, cv = ck.repeat(reps, 1, 1, 1), cv.repeat(reps, 1, 1, 1)
        return cache_attention(q, torch.cat([ck, k], -2), torch.cat([cv, v], -2), bias)

    # ----------------------------------------------------------------- writing
    def _ring_slot(self, g: int) -> int:
        return self.sinks + (g - self.sinks) % (self.window - 1)

    def _store(self, rows: Tensor, g: int, k: Tensor, v: Tensor) -> None:
        """Write frame ``g``'s keys/values (L, R, H, N, hd) for ``rows`` into their sink or ring slots."""
        N = self.tokens
        local = g - self.origin[rows]
        for is_sink in (True, False):
            sel = (local < self.sinks) if is_sink else (local >= self.sinks)
            if not sel.any():
                continue
            r = rows[sel]
            kk, vv = k[:, sel], v[:, sel]
            if is_sink:
                for j in local[sel].unique().tolist():
                    jj = local[sel] == j
                    rr = r[jj]
                    self.k[:, rr, :, j * N : (j + 1) * N] = kk[:, jj]
                    self.v[:, rr, :, j * N : (j + 1) * N] = vv[:, jj]
                    self.sink_k[:, rr, :, j * N : (j + 1) * N] = kk[:, jj]
                    self.slot_frame[rr, j] = g
                    self.used = max(self.used, j + 1)
                self._sinks_written += 1
            else:
                self._store_ring(g, kk, vv, None if len(r) == self.batch else r)

    def _store_ring(self, g: int, k: Tensor, v: Tensor, rows: Tensor | None = None) -> None:
        """Write frame ``g``'s keys/values (L, R, H, N, hd) for ``rows`` (every row when None) into its ring slot."""
        N = self.tokens
        slot = self._ring_slot(g)
        idx = slice(None) if rows is None else rows
        self.k[:, idx, :, slot * N : (slot + 1) * N] = k
        self.v[:, idx, :, slot * N : (slot + 1) * N] = v
        self.slot_frame[idx, slot] = g
        self.used = max(self.used, slot + 1)

    def append(self, block: KeysValues) -> None:
        """Store a block of finished frames (every row) in their slots and advance the clock."""
        N = self.tokens
        frames = block.keys.shape[-2] // N
        newest_origin = int(self.origin.numpy().max())
        for i in range(frames):
            g = self.next_frame + i
            src = slice(i * N, (i + 1) * N)
            keys, values = block.keys[..., src, :], block.values[..., src, :]
            if g - newest_origin >= self.sinks:  # every row is past its sinks (a rollout's usual frame): one write
                self._store_ring(g, keys, values)
            else:
                self._store(torch.arange(self.batch), g, keys, values)
        self.next_frame += frames
        self._rotate_sinks()
        self._version += 1

    def _look_ahead(self) -> None:
        """Fill the look-ahead sinks: each row's sinks as the frame after ``next_frame`` sees them."""
        if not self.sinks or self._ahead_version == self._version:
            return
        deltas = self._sink_shift(self.next_frame + 1)
        self._place_sinks(deltas, self._k[..., : self.ahead, :])
        self._v[..., : self.ahead, :] = self.v[..., : self.ahead, :]
        self._ahead_version = self._version
        self._ahead_placed = (self._sinks_written, deltas)

    def _rotate_sinks(self) -> None:
        """Once a row's window has rolled past its sinks, move them to just before the window's oldest frame."""
        if not self.sinks:
            return
        deltas = self._sink_shift(self.next_frame)
        if not any(deltas):
            return
        keys = self.k[..., : self.ahead, :]
        if self._ahead_placed == (self._sinks_written, deltas):  # the last look-ahead placed them so: copy them
            keys.copy_(self._k[..., : self.ahead, :])
        else:
            self._place_sinks(deltas, keys)

    def _sink_shift(self, frame: int) -> list[int]:
        """Frames each row's sinks move so they sit just before the oldest frame of ``frame``'s window."""
        return (frame - self.window + 1 - self.sinks - self.origin.numpy()).clip(min=0).tolist()

    def _place_sinks(self, deltas: list[int], keys: Tensor) -> None:
        """Write each row's sink keys as written, moved ``deltas[row]`` frames later, into ``keys`` (L, B, H,
        sinks*N, hd)."""
        if len(set(deltas)) == 1:  # every row's episode began at the same frame: one rotation, no row indexing
            cos, sin = self.rope.time_shift_table(deltas[0], self.k.dtype, self.k.device)
            keys.copy_(apply_rope(self.sink_k, cos, sin))
            return
        for delta in sorted(set(deltas)):
            rows = torch.tensor([b for b, d in enumerate(deltas) if d == delta])
            cos, sin = self.rope.time_shift_table(delta, self.k.dtype, self.k.device)
            keys[:, rows] = apply_rope(self.sink_k[:, rows], cos, sin)

    def keep_rows(self, rows: Tensor) -> None:
        """Go on with only ``rows`` of the batch, in that order (the others' keys and values are dropped). Every
        kept row's slots, clock and episode origin move with it, so it attends to exactly what it did."""
        self._k, self._v, self.sink_k = (t[:, rows].contiguous() for t in (self._k, self._v, self.sink_k))
        self._sinks_written += 1
        self._slot_views()
        self.slot_frame, self.origin = self.slot_frame[rows], self.origin[rows]
        self._bias_key = self._bias = None
        self._version += 1

    def transplant(self, rows: list[int], other: KVCache) -> None:
        """Make ``rows`` start over as the rows of ``other`` (a fresh cache that holds their new context).

        ``other`` counted its frames from 0; here they become the latest frames of this cache's clock,
        so their keys are moved ``next_frame - other.next_frame`` frames later in time (RoPE is relative:
        every attention score is unchanged).
        """
        N = self.tokens
        o = self.next_frame - other.next_frame
        idx = torch.tensor(rows)
        cos, sin = self.rope.time_shift_table(o, self.k.dtype, self.k.device)
        self.slot_frame[idx] = EMPTY
        self.origin[idx] = o
        for local in range(other.next_frame):
            src_slot = local if local < other.sinks else other._ring_slot(local)
            if other.slot_frame[0, src_slot] != local:
                continue  # rolled out of the other cache's window
            sl = slice(src_slot * N, (src_slot + 1) * N)
            k = other.sink_k[..., sl, :] if local < other.sinks else other.k[..., sl, :]
            self._store(idx, o + local, apply_rope(k, cos, sin), other.v[..., sl, :])
        self._rotate_sinks()
        self._version += 1


class CachePass:
    """The attention memory of one DiT pass over new frames: attends through the cache, and when ``keep`` holds
    on to the block's keys/values (one per layer) for ``KVCache.append``."""

    def __init__(self, cache: KVCache, keep: bool, ahead: bool = False) -> None:
        self.cache = cache
        self.keep = keep
        self.ahead = ahead
        self._layers: list[tuple[Tensor, Tensor]] = []
        self._stacked: KeysValues | None = None

    def kv_slots(self, layer: int, batch: int, length: int) -> KVSlots | None:
        return self.cache.kv_slots(layer, batch, length)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.keep:
            self._layers.append((k, v))
        return self.cache.attend(layer, q, k, v, self.ahead)

    def remember(self, block: KeysValues) -> None:
        """Hold on to the block's keys/values of every layer at once (a compiled pass returns them stacked)."""
        if self.keep:
            self._stacked = block

    def written(self, tokens: int | None = None) -> KeysValues:
        """The block's keys/values at every layer; the first ``tokens`` of them when given (the finished frames of a
        ``write_then_denoise`` pass)."""
        if self._stacked is not None:
            keys, values = self._stacked.keys, self._stacked.values
        else:
            keys, values = torch.stack([k for k, _ in self._layers]), torch.stack([v for _, v in self._layers])
        return KeysValues(keys[..., :tokens, :], values[..., :tokens, :])


@dataclass
class WrittenBlock:
    """A block of finished frames as a write pass sees them: what the reference remembers, and what the sampler holds
    back to write in the next frame's first pass (``KVCache.write_then_denoise``)."""

    latents: Tensor
    """(B, F, C, h, w) at the context noise level."""
    levels: Tensor
    """(B, F)."""
    cond: FrameConditioning


class Recompute:
    """The reference memory: keeps every written frame and recomputes the whole history on every pass (slow; for
    tests and benchmarks). Same visibility rule and same inputs as the cache, so the two give the same frames."""

    def __init__(self, dit: DiT, batch: int, tokens: int, sinks: int, window: int) -> None:
        self.dit = dit
        self.batch = batch
        self.history: list[WrittenBlock] = []
        self.attention = BlockCausal(tokens, window, sinks, dit.rope)

    @property
    def next_frame(self) -> int:
        """Frames written so far (a multi-frame context counts every frame)."""
        return sum(block.latents.shape[1] for block in self.history)

    def denoise(self, x: Tensor, levels: Tensor, cond: FrameConditioning, text: TextContext | None) -> DiTOutput:
        # Guidance passes stack their variants along the batch; the past is the same for every variant.
        reps = x.shape[0] // self.batch
        spec = self.dit.action_embed.spec
        past = self.history
        xs = torch.cat([b.latents.repeat(reps, 1, 1, 1, 1) for b in past] + [x], 1)
        lv = torch.cat([b.levels.repeat(reps, 1) for b in past] + [levels], 1)
        full = FrameConditioning.concat([b.cond.dense(spec).repeat(reps) for b in past] + [cond.dense(spec)])
        out = self.dit(xs, lv, full.actions, full.null, torch.arange(xs.shape[1]), text, memory=self.attention)
        frames = x.shape[1]
        return DiTOutput(*(o[:, -frames:] for o in out))

    def write(self, x: Tensor, levels: Tensor, cond: FrameConditioning, text: TextContext | None) -> DiTOutput:
        out = self.denoise(x, levels, cond, text)
        self.history.append(WrittenBlock(x, levels, cond))
        return out

    def write_then_denoise(
        self, done: WrittenBlock, x: Tensor, levels: Tensor, cond: FrameConditioning, text: TextContext | None
    ) -> DiTOutput:
        out = self.denoise(*_joined(self.dit, done, x, levels, cond), text)
        self.history.append(done)
        return DiTOutput(*(o[:, done.latents.shape[1] :] for o in out))


def _joined(
    dit: DiT, done: WrittenBlock, x: Tensor, levels: Tensor, cond: FrameConditioning
) -> tuple[Tensor, Tensor, FrameConditioning]:
    """A block of finished frames followed by a block of new ones, as one block (latents, levels, conditioning)."""
    spec = dit.action_embed.spec
    return (
        torch.cat([done.latents, x], 1),
        torch.cat([done.levels, levels], 1),
        FrameConditioning.concat([done.cond.dense(spec), cond.dense(spec)]),
    )
