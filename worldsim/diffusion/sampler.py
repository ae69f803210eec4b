"""The sampling loop: noise, the per-frame level schedule, Euler steps and guidance, over a memory of finished frames.

One frame (``Rollout.generate``):
  1. the new frame starts as noise and takes K Euler steps, each a DiT pass over its N tokens that
     attends to the memory of earlier frames (with the KV cache, the context is never recomputed);
  2. the finished frame, noised to the context level, is written into the memory by a pass of its own.
     It is the same pass whether the frame goes alone or first in a longer block (a frame never attends to
     later ones), so without guidance it rides along with the *next* frame's first Euler pass
     (``write_then_denoise``): K passes a frame instead of K + 1. The reward / termination heads of a frame
     are then read from its last Euler pass (trained at every noise level, weighted by 1 - level), so a step
     still returns them; with guidance the write pass runs on its own and the heads come from it.

The memory (``worldsim.diffusion.memory``) is the KV cache, or with ``reference=True`` a full recompute of
the whole history on every pass, with the same visibility rule and the same random draws; tests hold the two
to the same frames. To change the integrator, edit ``Rollout.generate``'s loop (``schedule.euler_step``); to
change guidance, ``guided_velocity``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from worldsim.config import SamplerConfig
from worldsim.diffusion.memory import KVCache, Recompute, WrittenBlock
from worldsim.diffusion.schedule import add_noise, euler_step, pyramid_levels
from worldsim.kernels.compiled_pass import CompiledPass
from worldsim.models.conditioning import FrameConditioning, TextContext
from worldsim.models.dit import DiT, DiTOutput

Denoiser = Callable[[Tensor, Tensor, FrameConditioning, "TextContext | None"], DiTOutput]
"""One DiT pass over a block of new frames that attends to the memory: (x, levels, conditioning, text) -> output."""


def guided_velocity(
    denoise: Denoiser,
    x: Tensor,
    levels: Tensor,
    cond: FrameConditioning,
    text: TextContext | None,
    null_text: TextContext | None,
    action_scale: float,
    text_scale: float,
) -> Tensor:
    """Velocity with classifier-free guidance on the action and on the text prompt (Ho & Salimans 2022).

    v = v(c) + (w_a - 1) (v(c) - v(c without action)) + (w_t - 1) (v(c) - v(c without text)). The variants go
    through the network as one stacked batch; a scale of 1 adds no variant, so unguided sampling is one pass.
    """
    variants: list[tuple[FrameConditioning, TextContext | None, float]] = []
    if action_scale != 1.0:
        variants.append((cond.without_actions(), text, action_scale))
    if text_scale != 1.0 and text is not None:
        variants.append((cond, null_text, text_scale))
    if not variants:
        return denoise(x, levels, cond, text).velocity
    n = 1 + len(variants)
    stacked = FrameConditioning.stack([cond] + [c for c, _, _ in variants])
    texts = [text] + [t for _, t, _ in variants]
    v = denoise(x.repeat(n, 1, 1, 1, 1), levels.repeat(n, 1), stacked, _stack_text(texts)).velocity.chunk(n)
    out = v[0]
    for i, (_, _, scale) in enumerate(variants, start=1):
        out = out + (scale - 1.0) * (v[0] - v[i])
    return out


def _stack_text(texts: list[TextContext | None]) -> TextContext | None:
    """Prompts of the guidance variants stacked along the batch, padded to the longest."""
    if texts[0] is None:
        return None
    width = max(t.tokens.shape[1] for t in texts)  # type: ignore[union-attr]
    return TextContext(
        tokens=torch.cat([F.pad(t.tokens, (0, 0, 0, width - t.tokens.shape[1])) for t in texts]),  # type: ignore
        mask=torch.cat([F.pad(t.mask, (0, width - t.mask.shape[1])) for t in texts]),  # type: ignore[union-attr]
    )


class Rollout:
    """Generates latent frames one block at a time for a batch of B worlds.

    Owns the memory, the noise generator(s) and the sampling loop. Inputs are already validated tensors;
    ``worldsim.engine.WorldModel`` is the user-facing wrapper.
    """

    def __init__(
        self,
        dit: DiT,
        settings: SamplerConfig,
        batch: int,
        latent_shape: tuple[int, int, int],
        generator: torch.Generator | list[torch.Generator],
        text: TextContext | None = None,
        reference: bool = False,
        compiled: CompiledPass | None = None,
    ) -> None:
        self.dit, self.settings, self.batch = dit, settings, batch
        self.latent_shape = latent_shape
        self.generator = generator
        p = dit.cfg.patch
        self.tokens = (latent_shape[1] // p) * (latent_shape[2] // p)
        param = next(dit.parameters())
        self.device = param.device
        self.text = text
        self.null_text = dit.null_text(batch, self.device) if dit.cfg.text_dim else None
        s = settings
        self.memory: KVCache | Recompute = (
            Recompute(dit, batch, self.tokens, s.sinks, s.window)
            if reference  # room in the cache's scratch for a one-frame block after a held-back frame
            else KVCache(
                dit,
                batch,
                self.tokens,
                s.sinks,
                s.window,
                param.dtype,
                self.device,
                scratch_frames=2,
                compiled=compiled,
            )
        )
        self.merge_writes = True
        """Write each finished frame in the next frame's first pass (module doc); False: in a pass of its own."""
        self.pending: WrittenBlock | None = None
        """Finished frames (noised to the context level) whose write rides along with the next pass."""
        self._schedule: tuple[tuple, list[tuple[Tensor, Tensor, Tensor]]] | None = None

    @property
    def frame_index(self) -> int:
        """Index of the next frame to be generated (context frames included)."""
        held = self.pending.latents.shape[1] if self.pending is not None else 0
        return self.memory.next_frame + held

    def _noise(self, frames: int) -> Tensor:
        if isinstance(self.generator, list):  # one stream per row: row b draws what a batch of one would
            return torch.cat(
                [torch.randn((1, frames, *self.latent_shape), generator=g, device=g.device) for g in self.generator]
            ).to(self.device)
        return torch.randn(
            (self.batch, frames, *self.latent_shape), generator=self.generator, device=self.generator.device
        ).to(self.device)

    def write(self, clean: Tensor, cond: FrameConditioning) -> tuple[Tensor, Tensor]:
        """Write finished frames (B, F, C, h, w) at the context level; returns (reward, termination logit), (B, F)."""
        self.flush()
        block = self._at_context_level(clean, cond)
        out = self.memory.write(block.latents, block.levels, block.cond, self.text)
        return out.reward, out.termination_logit

    def _at_context_level(self, clean: Tensor, cond: FrameConditioning) -> WrittenBlock:
        B, F_ = clean.shape[:2]
        levels = torch.full((B, F_), self.settings.context_noise, device=self.device)
        return WrittenBlock(add_noise(clean, self._noise(F_), levels), levels, cond)

    def flush(self) -> None:
        """Write the held-back frame now, in a pass of its own: before anything that changes what its write pass
        would see (the prompt, the rows of the batch)."""
        if self.pending is not None:
            p, self.pending = self.pending, None
            with torch.inference_mode():
                self.memory.write(p.latents, p.levels, p.cond, self.text)

    def set_text(self, text: TextContext | None) -> None:
        """Change the prompt from the next frame on (the frames already made are written under the old one)."""
        self.flush()
        self.text = text

    def reset_rows(
        self, rows: list[int], clean: Tensor, cond: FrameConditioning, generators: list[torch.Generator]
    ) -> tuple[Tensor, Tensor]:
        """Start ``rows`` over from new context frames (R, T, C, h, w) while the other rows go on.

        The context is written exactly as a fresh rollout of those rows would write it (same passes,
        same noise from ``generators``), then moved into this cache at the current clock.
        """
        if not isinstance(self.memory, KVCache) or not isinstance(self.generator, list):
            raise ValueError("per-row resets need the KV cache and one generator per row")
        self.flush()
        text = None if self.text is None else TextContext(self.text.tokens[rows], self.text.mask[rows])
        fresh = Rollout(self.dit, self.settings, len(rows), self.latent_shape, generators, text)
        out = fresh.write(clean, cond)
        self.memory.transplant(rows, fresh.memory)  # type: ignore[arg-type]
        for r, g in zip(rows, generators):
            self.generator[r] = g
        return out

    def keep_rows(self, rows: list[int]) -> None:
        """Go on with only ``rows`` of the batch, in that order: each kept row's memory, noise stream and prompt move
        with it, so it goes on as it would have (up to float rounding of a smaller batch)."""
        if not isinstance(self.memory, KVCache) or not isinstance(self.generator, list):
            raise ValueError("dropping rows needs the KV cache and one generator per row")
        self.flush()
        idx = torch.tensor(rows, dtype=torch.long)
        self.memory.keep_rows(idx)
        self.generator = [self.generator[r] for r in rows]
        if self.text is not None:
            self.text = TextContext(self.text.tokens[idx], self.text.mask[idx])
        if self.null_text is not None:
            self.null_text = self.dit.null_text(len(rows), self.device)
        self.batch = len(rows)

    def _iterations(self, frames: int) -> list[tuple[Tensor, Tensor, Tensor]]:
        """The Euler iterations of a block of ``frames`` under the current settings (``pyramid_levels``): each
        iteration's levels (B, F) and the levels it moves from and to (1, F). The same every frame of a frame-by-frame
        rollout, so the last ones are kept (they are only read)."""
        s = self.settings
        key = (frames, s.steps, s.pyramid_delay, s.shift, self.batch)
        if self._schedule is None or self._schedule[0] != key:
            levels = pyramid_levels(*key[:4]).to(self.device)
            rows = [levels[i][None] for i in range(levels.shape[0])]
            steps = [(rows[i].expand(self.batch, frames), rows[i], rows[i + 1]) for i in range(len(rows) - 1)]
            self._schedule = (key, steps)
        return self._schedule[1]

    def generate(
        self, cond: FrameConditioning, frames: int, observed: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Denoise ``frames`` new frames (pyramid schedule when > 1), then write them (a single unguided frame is
        held back and written in the next frame's first pass, ``pending``).

        ``observed`` (B, F, C, h, w): the real latents of those frames, when known; they are written
        instead of the prediction (teacher forcing), so the memory follows reality.
        Returns the predicted latents (B, F, C, h, w), reward (B, F) and termination logit (B, F).
        """
        s = self.settings
        guided = s.action_cfg != 1.0 or (s.text_cfg != 1.0 and self.text is not None)
        # A merged pass is one finished frame then one new frame (the cache's look-ahead sinks serve one frame on).
        merge = self.merge_writes and not guided and frames == 1
        with torch.inference_mode():  # every pass's inputs inference tensors alike (a compiled pass guards on it)
            iterations = self._iterations(frames)
            x = self._noise(frames)
            if not merge:
                self.flush()
            out = None
            for levels, level, next_level in iterations:
                # Frames not in flight this iteration have level == next_level: the step leaves them.
                if guided:
                    v = guided_velocity(
                        self.memory.denoise, x, levels, cond, self.text, self.null_text, s.action_cfg, s.text_cfg
                    )
                else:
                    if self.pending is not None:
                        done, self.pending = self.pending, None
                        out = self.memory.write_then_denoise(done, x, levels, cond, self.text)
                    else:
                        out = self.memory.denoise(x, levels, cond, self.text)
                    v = out.velocity
                x = euler_step(x, v, level, next_level)
            finished = x if observed is None else observed
            if not merge:
                reward, term = self.write(finished, cond)
            else:
                assert out is not None  # at least one Euler step ran
                self.pending = self._at_context_level(finished, cond)
                reward, term = out.reward, out.termination_logit
        return x, reward, term
