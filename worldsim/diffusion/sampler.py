"""Autoregressive rollout of latent frames: the KV cache, the Euler loop and guidance.

One frame (``Rollout.step``):
  1. the new frame starts as noise and takes K Euler steps, each a DiT pass over its N tokens that
     attends to the cached keys/values of earlier frames (the context is never recomputed);
  2. one more pass of the finished frame at the context noise level writes its keys/values into the
     cache and yields the reward / termination heads.

``reference=True`` swaps the cache for a full recompute of the whole history on every pass, with
the same visibility rule and the same random draws; tests hold the two to the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from worldsim.config import SamplerConfig
from worldsim.diffusion.schedule import add_noise, euler_step, pyramid_levels
from worldsim.models.attention import BlockCausal, apply_rope
from worldsim.models.conditioning import TextContext
from worldsim.models.dit import DiT

EMPTY = -(2**40)
"""``slot_frame`` of a slot that holds nothing for that row."""


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
    """

    def __init__(
        self, dit: DiT, batch: int, tokens: int, sinks: int, window: int, dtype, device, scratch_frames: int = 1
    ) -> None:
        cfg = dit.cfg
        self.tokens, self.sinks, self.window = tokens, sinks, window
        self.rope = dit.rope
        self.slots = sinks + window - 1
        self.scratch = scratch_frames
        # The frames of the pass in flight write their keys/values right after the used slots
        # (the next ring slots, or a spare region once the ring is full), so attention reads one
        # contiguous slice and nothing is concatenated on the hot path.
        shape = (cfg.depth, batch, cfg.heads, (self.slots + scratch_frames) * tokens, cfg.width // cfg.heads)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        # Sink keys as written (rotated at their own global frame); re-rotated into ``k`` as the window rolls.
        self.sink_k = torch.zeros((*shape[:3], sinks * tokens, shape[-1]), dtype=dtype, device=device)
        self.slot_frame = torch.full((batch, self.slots), EMPTY, dtype=torch.long)
        self.origin = torch.zeros(batch, dtype=torch.long)
        """Global frame at which each row's current episode began."""
        self.used = 0
        """Slots [0, used) may hold something for some row: attention reads this prefix."""
        self.next_frame = 0
        """Global index of the first frame of the next block."""
        self.writing = False
        """When set, the next pass's keys/values are kept for ``commit``."""
        self._new: list[tuple[Tensor, Tensor]] = [None] * cfg.depth  # type: ignore[list-item]
        self._mask_key: tuple[int, int] | None = None
        self._mask: Tensor | None = None
        self._version = 0

    # ----------------------------------------------------------------- visibility
    def _slot_local_frames(self) -> Tensor:
        """(B, used) local frame index each used slot holds per row (EMPTY where nothing)."""
        local = self.slot_frame[:, : self.used] - self.origin[:, None]
        if self.sinks:
            sink_cols = min(self.sinks, self.used)
            written = torch.arange(sink_cols)[None, :] < (self.next_frame - self.origin)[:, None]
            local[:, :sink_cols] = torch.where(written, torch.arange(sink_cols)[None, :], EMPTY)
        local[self.slot_frame[:, : self.used] == EMPTY] = EMPTY
        return local

    def _block_mask(self, frames: int, device) -> Tensor | None:
        """(B, 1, frames*N, keys*N) visibility of used slots + the block in flight, or None if all visible."""
        key = (self._version, frames)  # the version changes with every commit and restart
        if self._mask_key != key:
            local_q = self.next_frame - self.origin[:, None] + torch.arange(frames)[None, :]  # (B, F)
            local_k = torch.cat([self._slot_local_frames(), local_q], 1)  # (B, used + F)
            q, k = local_q[:, :, None], local_k[:, None, :]
            window = k > q - self.window
            sink_slot = torch.zeros(local_k.shape[1], dtype=torch.bool)
            sink_slot[: min(self.sinks, self.used)] = True
            in_flight = torch.zeros(local_k.shape[1], dtype=torch.bool)
            in_flight[self.used :] = True
            # Sink slots hold a row's local frames < sinks (``_store`` never puts those in the ring), ring slots
            # later ones within the window; the block in flight is seen causally within the window like any frame.
            vis = (
                (k != EMPTY)
                & (k <= q)
                & torch.where(sink_slot, True, torch.where(in_flight, (k < self.sinks) | window, window))
            )
            if vis.all():
                self._mask = None
            else:
                N = self.tokens
                self._mask = vis.repeat_interleave(N, 1).repeat_interleave(N, 2)[:, None].to(device)
            self._mask_key = key
        return self._mask

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n = self.used * self.tokens
        m = k.shape[-2]
        frames = m // self.tokens
        mask = self._block_mask(frames, q.device)
        if self.writing:
            self._new[layer] = (k, v)
        reps = q.shape[0] // self.k.shape[1]
        if mask is not None and reps > 1:  # guidance passes stack cond/uncond along the batch
            mask = mask.repeat(reps, 1, 1, 1)
        if reps == 1 and frames <= self.scratch:
            self.k[layer, :, :, n : n + m] = k
            self.v[layer, :, :, n : n + m] = v
            return F.scaled_dot_product_attention(
                q, self.k[layer, :, :, : n + m], self.v[layer, :, :, : n + m], attn_mask=mask
            )
        ck, cv = self.k[layer, :, :, :n], self.v[layer, :, :, :n]
        if reps > 1:
            ck, cv = ck.repeat(reps, 1, 1, 1), cv.repeat(reps, 1, 1, 1)
        return F.scaled_dot_product_attention(q, torch.cat([ck, k], -2), torch.cat([cv, v], -2), attn_mask=mask)

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
            else:
                slot = self._ring_slot(g)
                whole = len(r) == self.k.shape[1]
                idx = slice(None) if whole else r
                self.k[:, idx, :, slot * N : (slot + 1) * N] = kk
                self.v[:, idx, :, slot * N : (slot + 1) * N] = vv
                self.slot_frame[r, slot] = g
                self.used = max(self.used, slot + 1)

    def commit(self) -> None:
        """Store the frames of the last writing pass in their slots and advance the clock."""
        N = self.tokens
        new_k = torch.stack([kv[0] for kv in self._new])  # (L, B, H, F*N, hd)
        new_v = torch.stack([kv[1] for kv in self._new])
        frames = new_k.shape[-2] // N
        rows = torch.arange(self.k.shape[1])
        for i in range(frames):
            src = slice(i * N, (i + 1) * N)
            self._store(rows, self.next_frame + i, new_k[..., src, :], new_v[..., src, :])
        self.next_frame += frames
        self.writing = False
        self._new = [None] * len(self._new)  # type: ignore[list-item]
        self._rotate_sinks()
        self._version += 1

    def _rotate_sinks(self) -> None:
        """Once a row's window has rolled past its sinks, move them to just before the window's oldest frame."""
        if not self.sinks:
            return
        start = self.next_frame - self.window + 1
        shift = (start - self.sinks - self.origin).clamp_min(0)  # (B,) frames to move each row's sinks
        if not shift.any():
            return
        N = self.tokens
        for delta in shift.unique().tolist():
            rows = (shift == delta).nonzero().flatten()
            cos, sin = self.rope.time_shift_table(delta, self.k.dtype, self.k.device)
            self.k[:, rows, :, : self.sinks * N] = apply_rope(self.sink_k[:, rows], cos, sin)

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


@dataclass
class FrameBatch:
    """Conditioning of a block of frames: actions (or None) and which frames have no action."""

    actions: Tensor | None
    null: Tensor
    """(B, F) bool."""


class Rollout:
    """Generates latent frames one block at a time for a batch of B worlds.

    Owns the cache (or the reference history), the noise generator and the Euler loop. Inputs are
    already validated tensors; ``worldsim.engine.WorldModel`` is the user-facing wrapper.
    """

    def __init__(
        self,
        dit: DiT,
        cfg: SamplerConfig,
        batch: int,
        latent_shape: tuple[int, int, int],
        generator: torch.Generator | list[torch.Generator],
        text: TextContext | None = None,
        reference: bool = False,
    ) -> None:
        self.dit, self.cfg, self.batch = dit, cfg, batch
        self.latent_shape = latent_shape
        self.generator = generator
        self.reference = reference
        p = dit.cfg.patch
        self.tokens = (latent_shape[1] // p) * (latent_shape[2] // p)
        param = next(dit.parameters())
        self.dtype, self.device = param.dtype, param.device
        self.text = text
        self.null_text = dit.null_text(batch, self.device) if dit.cfg.text_dim else None
        self.cache = KVCache(dit, batch, self.tokens, cfg.sinks, cfg.window, self.dtype, self.device)
        # Reference mode keeps every frame as it was written: (latents, levels, actions, null).
        self.history: list[tuple[Tensor, Tensor, Tensor | None, Tensor]] = []

    @property
    def frame_index(self) -> int:
        """Index of the next frame to be generated."""
        return self.cache.next_frame if not self.reference else len(self.history)

    def _noise(self, frames: int) -> Tensor:
        if isinstance(self.generator, list):  # one stream per row: row b draws what a batch of one would
            return torch.cat(
                [torch.randn((1, frames, *self.latent_shape), generator=g, device=g.device) for g in self.generator]
            ).to(self.device)
        return torch.randn(
            (self.batch, frames, *self.latent_shape), generator=self.generator, device=self.generator.device
        ).to(self.device)

    def _forward(self, x: Tensor, levels: Tensor, cond: FrameBatch, text: TextContext | None, write: bool):
        """One DiT pass over the block ``x`` (B, F, C, h, w) that starts at ``frame_index``."""
        t0 = self.frame_index
        frames = x.shape[1]
        if not self.reference:
            self.cache.writing = write
            positions = torch.arange(t0, t0 + frames)
            return self.dit(x, levels, cond.actions, cond.null, positions, text, memory=self.cache)
        # Full recompute: the whole history, then this block, in one pass. Guidance passes stack
        # cond/uncond along the batch; the past is the same for every half.
        reps = x.shape[0] // self.batch
        past = self.history

        def with_past(i: int, current: Tensor) -> Tensor:
            if not past:
                return current
            prev = torch.cat([h[i] for h in past], 1)
            return torch.cat([prev.repeat(reps, *[1] * (prev.dim() - 1)), current], 1)

        acts = None
        if cond.actions is not None or any(h[2] is not None for h in past):
            current = self._dense_actions(cond.actions, cond.null)
            acts = torch.cat(
                [self._dense_actions(h[2], h[3]).repeat(reps, *[1] * (current.dim() - 1)) for h in past] + [current], 1
            )
        xs, lv, null = with_past(0, x), with_past(1, levels), with_past(3, cond.null)
        memory = BlockCausal(self.tokens, self.cfg.window, self.cfg.sinks, self.dit.rope)
        out = self.dit(xs, lv, acts, null, torch.arange(xs.shape[1]), text, memory=memory)
        return type(out)(*(o[:, -frames:] for o in out))

    def _dense_actions(self, actions: Tensor | None, null: Tensor) -> Tensor:
        """Actions for a block with None replaced by zeros (masked as null anyway)."""
        if actions is not None:
            return actions
        spec = self.dit.action_embed.spec
        B, F_ = null.shape
        if spec.kind == "discrete":
            return torch.zeros(B, F_, dtype=torch.long, device=self.device)
        if spec.kind == "multi_discrete":
            return torch.zeros(B, F_, len(spec.nvec), dtype=torch.long, device=self.device)
        return torch.zeros(B, F_, *spec.shape, device=self.device)

    def _guided_velocity(self, x: Tensor, levels: Tensor, cond: FrameBatch) -> Tensor:
        """Velocity with action / text classifier-free guidance (extra batch entries only when on)."""
        cfg = self.cfg
        text = self.text
        variants = [(cond, text)]
        if cfg.action_cfg != 1.0:
            variants.append((FrameBatch(cond.actions, torch.ones_like(cond.null)), text))
        if cfg.text_cfg != 1.0 and text is not None:
            variants.append((cond, self.null_text))
        if len(variants) == 1:
            return self._forward(x, levels, cond, text, write=False).velocity
        n = len(variants)
        acts = None if cond.actions is None else cond.actions.repeat(n, *[1] * (cond.actions.dim() - 1))
        stacked = FrameBatch(acts, torch.cat([c.null for c, _ in variants]))
        texts = [t for _, t in variants]
        text_all = None
        if texts[0] is not None:
            width = max(t.tokens.shape[1] for t in texts)
            text_all = TextContext(
                tokens=torch.cat([F.pad(t.tokens, (0, 0, 0, width - t.tokens.shape[1])) for t in texts]),
                mask=torch.cat([F.pad(t.mask, (0, width - t.mask.shape[1])) for t in texts]),
            )
        v = self._forward(x.repeat(n, 1, 1, 1, 1), levels.repeat(n, 1), stacked, text_all, write=False).velocity
        v = v.chunk(n)
        out = v[0]
        i = 1
        if cfg.action_cfg != 1.0:
            out = out + (cfg.action_cfg - 1.0) * (v[0] - v[i])
            i += 1
        if cfg.text_cfg != 1.0 and text is not None:
            out = out + (cfg.text_cfg - 1.0) * (v[0] - v[i])
        return out

    def write(self, clean: Tensor, cond: FrameBatch) -> tuple[Tensor, Tensor]:
        """Write finished frames (B, F, C, h, w) at the context level; returns (reward, term_logit)."""
        B, F_ = clean.shape[:2]
        levels = torch.full((B, F_), self.cfg.context_noise, device=self.device)
        noisy = add_noise(clean, self._noise(F_), levels)
        out = self._forward(noisy, levels, cond, self.text, write=True)
        if self.reference:
            self.history.append((noisy, levels, cond.actions, cond.null))
        else:
            self.cache.commit()
        return out.reward, out.termination_logit

    def reset_rows(
        self, rows: list[int], clean: Tensor, cond: FrameBatch, generators: list[torch.Generator]
    ) -> tuple[Tensor, Tensor]:
        """Start ``rows`` over from new context frames (R, T, C, h, w) while the other rows go on.

        The context is written exactly as a fresh rollout of those rows would write it (same passes,
        same noise from ``generators``), then moved into this cache at the current clock.
        """
        if self.reference or not isinstance(self.generator, list):
            raise ValueError("per-row resets need the KV cache and one generator per row")
        text = None if self.text is None else TextContext(self.text.tokens[rows], self.text.mask[rows])
        fresh = Rollout(self.dit, self.cfg, len(rows), self.latent_shape, generators, text)
        out = fresh.write(clean, cond)
        self.cache.transplant(rows, fresh.cache)
        for r, g in zip(rows, generators):
            self.generator[r] = g
        return out

    def generate(self, cond: FrameBatch, frames: int, observed: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Denoise ``frames`` new frames (pyramid schedule when > 1), then write them.

        ``observed`` (B, F, C, h, w): the real latents of those frames, when known; they are written
        instead of the prediction (teacher forcing), so the memory follows reality.
        Returns the predicted latents (B, F, C, h, w), reward (B, F) and termination logit (B, F).
        """
        schedule = pyramid_levels(frames, self.cfg.steps, self.cfg.pyramid_delay).to(self.device)
        x = self._noise(frames)
        with torch.inference_mode():
            for i in range(schedule.shape[0] - 1):
                level, next_level = schedule[i], schedule[i + 1]
                # Frames not in flight this iteration have level == next_level: the step leaves them.
                v = self._guided_velocity(x, level.expand(self.batch, frames), cond)
                x = euler_step(x, v, level[None], next_level[None])
            reward, term = self.write(x if observed is None else observed, cond)
        return x, reward, term
