"""Distil a world's K-step sampler into k < K steps (progressive distillation, laid out teacher-forced).

The student starts as a copy of the world's DiT; the teacher is the world as it is, frozen. At each level the
student's Euler sampler visits (k steps: 1, 1 - 1/k, ...), the student learns the velocity that takes a frame, in one
step, to where the teacher's K/k Euler steps take it (Salimans & Ho 2022, on flow matching: the target is the mean
of the teacher's velocities along its path). Frames are noised from real data, so no teacher rollout is needed.

Why this objective (against shortcut models, consistency distillation or training on the model's own rollouts): it
needs nothing but the world's own forward pass, it keeps the sampler a plain Euler sampler (the engine, the KV cache,
``[``/``]`` in the viewer are unchanged: ``sampler.steps`` is stored in the exported checkpoint), and each step is
3 + K/k passes over one clip, so it runs on this CPU.

A training clip is laid out teacher-forced: its T frames at the sampler's context level (what a rollout's memory
holds), then frames 1..T-1 again at the student's levels. A noisy frame sees the context frames before it and itself,
exactly what the next frame of a rollout sees, so one pass trains T - 1 frames. The reward / termination heads keep
training on the student's pass, at the levels the engine now reads them (a frame's last Euler pass).
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldsim.data.clips import ClipDataset
from worldsim.data.compat import check_data_matches_world
from worldsim.diffusion.schedule import add_noise, sampling_levels
from worldsim.engine import WorldModel
from worldsim.errors import InputError
from worldsim.models.dit import DiT, DiTOutput
from worldsim.training.common import cached_latents, open_training_data
from worldsim.training.config import DistillTrainConfig
from worldsim.training.loop import Distributed
from worldsim.training.objectives import LossConfig
from worldsim.training.world import EXPORT_DIR, log_open_loop


class TeacherForced:
    """Attention of a teacher-forced clip (module doc): frames 0..T-1 at the context level, then 1..T-1 noisy. A
    context frame sees the context frames up to itself; a noisy frame sees the context frames before it and itself."""

    def __init__(self, frames: int, tokens: int, device: torch.device) -> None:
        time = torch.cat([torch.arange(frames), torch.arange(1, frames)])
        noisy = torch.arange(2 * frames - 1) >= frames
        q, k = time[:, None], time[None, :]
        context_key = ~noisy[None, :]
        seen = context_key & ((k < q) | ((k == q) & ~noisy[:, None]))
        seen |= torch.eye(2 * frames - 1, dtype=torch.bool)  # every frame sees itself
        self.mask = seen.repeat_interleave(tokens, 0).repeat_interleave(tokens, 1).to(device)
        self.positions = time

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)

    def kv_slots(self, layer: int, batch: int, length: int) -> None:
        return None  # keys and values live only for this pass


class DistillStage:
    name = "distill"

    def __init__(self, cfg: DistillTrainConfig, d: Distributed | None = None) -> None:
        d = d or Distributed()
        self.cfg = cfg
        if not cfg.world:
            raise InputError("--world is required: the world (checkpoint, run or shipped name) to distil")
        self.reader, episodes = open_training_data(cfg)
        self.world = WorldModel.from_pretrained(cfg.world)
        config = self.world.config
        check_data_matches_world(self.reader, config, cfg.world, "distil")
        K, k = cfg.teacher_steps or config.sampler.steps, cfg.student_steps
        if cfg.teacher_steps < 0:
            raise InputError(f"--teacher-steps {cfg.teacher_steps} must be positive (or 0: the world's own)")
        if not 1 <= k < K or K % k:
            raise InputError(f"--student-steps {k} must be below and divide the teacher's sampler steps ({K})")
        self.teacher_steps = K
        self.teacher_steps_per_step = K // k
        self.frames = cfg.clip_frames or config.dit.max_frames
        if not 2 <= self.frames <= config.dit.max_frames:
            raise InputError(f"--clip-frames {self.frames} must be in 2..{config.dit.max_frames} (the world's clips)")
        # Teacher and student step through evenly spaced levels (the loss below), so the student samples unshifted
        # whatever the world's own sampler.shift is.
        self.config = dataclasses.replace(config, sampler=dataclasses.replace(config.sampler, steps=k, shift=1.0))
        self.teacher = self.world.dit.to(d.device).eval().requires_grad_(False)
        self.model = copy.deepcopy(self.teacher).train().requires_grad_(True)
        self.autoencoder = self.world.autoencoder.to(d.device)
        size = tuple(config.frame_size)
        latents = None
        if cfg.latent_cache:
            latents = cached_latents(self.reader, self.autoencoder, Path(cfg.out) / "latents.h5", size, d)
        self.dataset = ClipDataset(self.reader, self.frames, size, episodes=episodes, latents=latents)
        h, w = config.latent_size
        self.tokens = (h // config.dit.patch) * (w // config.dit.patch)
        self.tokens_per_sample = (2 * self.frames - 1) * self.tokens
        self.head_weight = LossConfig().head_weight
        print(
            f"distilling {cfg.world}: {K} Euler steps -> {k} (each student step learns {K // k} of the teacher's), "
            f"clips of {self.frames} frames",
            file=sys.stderr,
        )

    def loss(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator, rows: slice, global_batch: int
    ) -> tuple[Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        if "latents" in batch:
            x = batch["latents"].to(device)
        else:
            with torch.no_grad():
                x = self.autoencoder.encode(batch["frames"].to(device)).float()
        T, shape = x.shape[1], tuple(x.shape[2:])
        # All randomness for the global batch, then this rank's rows (as the world stage does).
        levels = sampling_levels(self.config.sampler.steps)[:-1]
        student_levels = levels[torch.randint(len(levels), (global_batch, T - 1), generator=generator)][rows]
        context_noise = torch.randn(global_batch, T, *shape, generator=generator)[rows].to(device)
        noise = torch.randn(global_batch, T - 1, *shape, generator=generator)[rows].to(device)
        student_levels = student_levels.to(device)

        B = x.shape[0]
        layout = TeacherForced(T, self.tokens, device)
        context_level = torch.full((B, T), self.config.sampler.context_noise, device=device)
        context = add_noise(x, context_noise, context_level)
        actions = torch.cat([batch["actions"], batch["actions"][:, 1:]], 1).to(device)
        null = torch.cat([batch["action_null"], batch["action_null"][:, 1:]], 1).to(device)

        def noisy_part(net: nn.Module, frames: Tensor, frame_levels: Tensor) -> DiTOutput:
            out = net(torch.cat([context, frames], 1), torch.cat([context_level, frame_levels], 1), actions, null,
                      layout.positions, None, memory=layout)  # fmt: skip
            return DiTOutput(*(o[:, T:] for o in out))

        start = add_noise(x[:, 1:], noise, student_levels)
        dt = 1.0 / (self.teacher_steps_per_step * self.config.sampler.steps)  # one teacher step
        with torch.no_grad():
            teacher_x, level = start, student_levels
            for _ in range(self.teacher_steps_per_step):
                teacher_x = teacher_x - dt * noisy_part(self.teacher, teacher_x, level).velocity.float()
                level = level - dt
            # The one velocity that lands where the teacher's steps landed (the mean of theirs).
            target = (start - teacher_x) / (dt * self.teacher_steps_per_step)
        out = noisy_part(model, start, student_levels)
        flow = (out.velocity.float() - target).pow(2).mean()
        rewards, terminations = batch["rewards"][:, 1:].to(device), batch["terminations"][:, 1:].to(device)
        reward = (out.reward.float() - rewards).pow(2).mean()
        term = F.binary_cross_entropy_with_logits(out.termination_logit.float(), terminations)
        loss = flow + self.head_weight * (reward + term)
        return loss, {"loss": loss.item(), "flow": flow.item(), "reward": reward.item(), "termination": term.item()}

    def world_model(self, ema: nn.Module) -> WorldModel:
        dit = DiT(self.config.dit, self.config.action, self.config.autoencoder.latent_channels)
        dit.load_state_dict({k: v.detach().float().cpu() for k, v in ema.state_dict().items()})
        return WorldModel(self.config, copy.deepcopy(self.autoencoder).cpu(), dit, self.world.starts)

    def export(self, ema: nn.Module, out: Path, card: dict[str, Any]) -> None:
        K = self.teacher_steps
        model_card = (
            f"# {self.config.name}\n\n`{self.cfg.world}` distilled by `worldsim train distill` from {K} Euler steps a "
            f"frame to {self.config.sampler.steps} on `{self.cfg.data}`.\n\n"
            f"- steps: {card['step']}, wall time: {card['wall_seconds']} s\n"
        )
        self.world_model(ema).save_pretrained(out / EXPORT_DIR, card=model_card)

    @torch.no_grad()
    def log_samples(self, ema: nn.Module, tb: Any, step: int) -> None:
        log_open_loop(tb, self.world_model(ema), self.reader, self.dataset.episodes[0], step)
