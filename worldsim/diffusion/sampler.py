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
from worldsim.models.attention import BlockCausal, apply_rope, frame_visibility
from worldsim.models.conditioning import TextContext
from worldsim.models.dit import DiT


class KVCache:
    """Keys/values of finished frames: ``sinks`` pinned slots plus a ring of ``window - 1`` slots.

    Per layer the buffers are (B, heads, slots * N, head_dim), preallocated, so memory and per-frame
    cost are constant however long the rollout runs. A single-frame pass sees every filled slot (the
    ring holds exactly the frames in its window), so it needs no mask; a multi-frame block (context
    prefill, pyramid prediction) uses a frame-level mask built from ``slot_frame``.
    """

    def __init__(
        self, dit: DiT, batch: int, tokens: int, sinks: int, window: int, dtype, device, scratch_frames: int = 1
    ) -> None:
        cfg = dit.cfg
        self.tokens, self.sinks, self.window = tokens, sinks, window
        self.rope = dit.rope
        self.slots = sinks + window - 1
        self.scratch = scratch_frames
        # The frames of the pass in flight write their keys/values right after the filled slots
        # (the next ring slots, or a spare region once the ring is full), so attention reads one
        # contiguous slice and nothing is concatenated on the hot path.
        shape = (cfg.depth, batch, cfg.heads, (self.slots + scratch_frames) * tokens, cfg.width // cfg.heads)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.sink_k = torch.zeros((*shape[:3], sinks * tokens, shape[-1]), dtype=dtype, device=device)
        self.slot_frame = torch.full((self.slots,), -1, dtype=torch.long)
        self.next_frame = 0
        """Index of the first frame of the next block."""
        self.writing = False
        """When set, the next pass's keys/values are kept for ``commit``."""
        self._new: list[tuple[Tensor, Tensor]] = [None] * cfg.depth  # type: ignore[list-item]
        self._mask_key: tuple[int, int] | None = None
        self._mask: Tensor | None = None

    @property
    def filled(self) -> int:
        """Number of filled slots; they always form a prefix of the buffer."""
        return min(self.next_frame, self.slots)

    def _block_mask(self, frames: int, device) -> Tensor:
        key = (self.next_frame, frames)
        if self._mask_key != key:
            query = torch.arange(self.next_frame, self.next_frame + frames)
            keys = torch.cat([self.slot_frame[: self.filled], query])
            vis = frame_visibility(query, keys, self.window, self.sinks)
            N = self.tokens
            self._mask = vis.repeat_interleave(N, 0).repeat_interleave(N, 1).to(device)
            self._mask_key = key
        return self._mask

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n = self.filled * self.tokens
        m = k.shape[-2]
        frames = m // self.tokens
        mask = self._block_mask(frames, q.device) if frames > 1 else None
        if self.writing:
            self._new[layer] = (k, v)
        if q.shape[0] == self.k.shape[1] and frames <= self.scratch:
            self.k[layer, :, :, n : n + m] = k
            self.v[layer, :, :, n : n + m] = v
            return F.scaled_dot_product_attention(
                q, self.k[layer, :, :, : n + m], self.v[layer, :, :, : n + m], attn_mask=mask
            )
        ck, cv = self.k[layer, :, :, :n], self.v[layer, :, :, :n]
        reps = q.shape[0] // ck.shape[0]
        if reps > 1:  # guidance passes stack cond/uncond along the batch
            ck, cv = ck.repeat(reps, 1, 1, 1), cv.repeat(reps, 1, 1, 1)
        return F.scaled_dot_product_attention(q, torch.cat([ck, k], -2), torch.cat([cv, v], -2), attn_mask=mask)

    def commit(self) -> None:
        """Store the frames of the last writing pass in their slots and advance the clock."""
        N = self.tokens
        new_k = torch.stack([kv[0] for kv in self._new])  # (L, B, H, F*N, hd)
        new_v = torch.stack([kv[1] for kv in self._new])
        frames = new_k.shape[-2] // N
        for i in range(frames):
            g = self.next_frame + i
            slot = g if g < self.sinks else self.sinks + (g - self.sinks) % (self.window - 1)
            src = slice(i * N, (i + 1) * N)
            self.k[..., slot * N : (slot + 1) * N, :] = new_k[..., src, :]
            self.v[..., slot * N : (slot + 1) * N, :] = new_v[..., src, :]
            if g < self.sinks:
                self.sink_k[..., g * N : (g + 1) * N, :] = new_k[..., src, :]
            self.slot_frame[slot] = g
        self.next_frame += frames
        self.writing = False
        self._new = [None] * len(self._new)  # type: ignore[list-item]
        # Once the window has rolled past the sinks, move the sinks to just before its oldest frame.
        start = self.next_frame - self.window + 1
        if self.sinks and start > self.sinks:
            cos, sin = self.rope.time_shift_table(start - self.sinks, self.k.dtype, self.k.device)
            self.k[..., : self.sinks * N, :] = apply_rope(self.sink_k, cos, sin)


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
        generator: torch.Generator,
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

    def generate(self, cond: FrameBatch, frames: int) -> tuple[Tensor, Tensor, Tensor]:
        """Denoise ``frames`` new frames (pyramid schedule when > 1), then write them.

        Returns latents (B, F, C, h, w), reward (B, F) and termination logit (B, F).
        """
        schedule = pyramid_levels(frames, self.cfg.steps, self.cfg.pyramid_delay).to(self.device)
        x = self._noise(frames)
        with torch.inference_mode():
            for i in range(schedule.shape[0] - 1):
                level, next_level = schedule[i], schedule[i + 1]
                # Frames not in flight this iteration have level == next_level: the step leaves them.
                v = self._guided_velocity(x, level.expand(self.batch, frames), cond)
                x = euler_step(x, v, level[None], next_level[None])
            reward, term = self.write(x, cond)
        return x, reward, term
