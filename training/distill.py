"""Distil a world's K-step sampler into k < K steps (progressive distillation, laid out teacher-forced).

The student starts as a copy of the world's DiT; the teacher is the world as it is, frozen. Both step through the
world's own levels (``sampling_levels`` with its ``shift``; the student visits every (K/k)-th of the teacher's). At
each of the student's levels it learns the velocity that takes a frame, in one step, to where the teacher's K/k Euler
steps take it (Salimans & Ho 2022, on flow matching: the target is the mean of the teacher's velocities along its
path). Frames are noised from real data, so no teacher rollout is needed.

Why this objective (against shortcut models, consistency distillation or training on the model's own rollouts): it
needs nothing but the world's own forward pass, it keeps the sampler a plain Euler sampler (the engine, the KV cache,
``[``/``]`` in the viewer are unchanged: ``sampler.steps`` is stored in the exported checkpoint), and each step is
3 + K/k passes over one clip, so it runs on this CPU.

With ``--rollout-from N`` (self-forcing-style, Huang et al. 2025, with the teacher's steps as the target instead of a
distribution-matching critic) the context is no longer all real: each clip keeps its first N real frames, and the
student makes the rest itself, frame by frame as the engine does (``own_rollout``). The student then learns the
teacher's steps on the contexts its own rollouts give it, whose errors a teacher-forced student never sees, and
which compound over a long dream. ``--data-weight`` adds a second target beside the teacher's: the step that lands
on the recorded frame. Alone it would teach the mean of what may come next (blurry). Beside the teacher's, it pulls a
frame made from a drifted context back toward the data, which the teacher's steps do not do: they follow the context.

A text-to-video world (``train t2v``) distils on its captioned files, each at its own frame size, with no actions
and its prompts (dropped for 10% of clips, as in training). Its teacher steps with classifier-free guidance on the
prompt (``--text-cfg``, default the world's own ``sampler.text_cfg``) and the student learns the guided steps in its
one conditional pass (guidance distillation, Meng et al. 2023): it samples unguided, so a frame costs k passes where
the teacher's cost 2K. The teacher's pass without the prompt drops it for the whole clip, context frames included,
as its training dropped it; the engine's cached sampler keeps the context it wrote under the prompt and drops it
for the new frame only, so the target is the guidance of the uncached reference path.

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
from worldsim.diffusion.schedule import add_noise, euler_step, sampling_levels
from worldsim.engine import WorldModel
from worldsim.errors import InputError
from worldsim.models.conditioning import TextContext, TextEncoder
from worldsim.models.dit import DiT, DiTOutput
from worldsim.training.common import BucketedClips, cached_latents, open_captioned, open_training_data
from worldsim.training.config import DistillTrainConfig
from worldsim.training.loop import Distributed
from worldsim.training.objectives import LossConfig, drop_text, own_rollout
from worldsim.training.t2v import captioned_clips, check_frame_sizes, log_text_rollouts
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
        self.world = WorldModel.from_pretrained(cfg.world)
        config = self.world.config
        # A text-to-video world learns from captioned clips with no actions (as `train t2v`), any number of files.
        self.text_to_video = config.text_to_video
        if self.text_to_video:
            self.sources = open_captioned(cfg)
        else:
            self.sources = [open_training_data(cfg)]
            check_data_matches_world(self.sources[0][0], config, cfg.world, "distil")
            if cfg.text_cfg:
                raise InputError(f"--text-cfg: {cfg.world} is not a text-to-video world (it has no prompt to guide)")
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
        if not 0 <= cfg.rollout_from < self.frames:
            raise InputError(f"--rollout-from {cfg.rollout_from} must be in 0..{self.frames - 1} (real frames a clip "
                             f"starts from; 0: teacher-forced)")  # fmt: skip
        if cfg.data_weight < 0:
            raise InputError(f"--data-weight {cfg.data_weight} must be >= 0 (0: the teacher's steps only)")
        if cfg.text_cfg and cfg.text_cfg < 1:
            raise InputError(f"--text-cfg {cfg.text_cfg} must be at least 1 (1: no guidance; 0: the world's own)")
        # Guidance distillation (Meng et al. 2023): the teacher's guided steps are the target of the student's
        # conditional pass, so the student samples unguided: one pass a step where the teacher takes two.
        self.guidance = (cfg.text_cfg or config.sampler.text_cfg) if self.text_to_video else 1.0
        # The student keeps the world's shift: its levels are every (K/k)-th of the teacher's (the loss below).
        # A guided teacher's scale is built into the student; an unguided one leaves the world's scale as it was.
        sampler = dataclasses.replace(
            config.sampler, steps=k, text_cfg=1.0 if self.guidance != 1.0 else config.sampler.text_cfg
        )
        self.config = dataclasses.replace(config, sampler=sampler)
        self.teacher_levels = sampling_levels(K, config.sampler.shift)
        self.teacher = self.world.dit.to(d.device).eval().requires_grad_(False)
        self.model = copy.deepcopy(self.teacher).train().requires_grad_(True)
        self.autoencoder = self.world.autoencoder.to(d.device)
        self.dataset: ClipDataset | BucketedClips
        if self.text_to_video:
            check_frame_sizes(self.sources, config.autoencoder.factor * config.dit.patch)
            self.dataset = captioned_clips(self.sources, self.autoencoder, Path(cfg.out), self.frames, 0.0, d)
            self.text_encoder = TextEncoder(d.device)
        else:
            reader, episodes = self.sources[0]
            size = tuple(config.frame_size)
            latents = None
            if cfg.latent_cache:
                latents = cached_latents(reader, self.autoencoder, Path(cfg.out) / "latents.h5", size, d)
            self.dataset = ClipDataset(reader, self.frames, size, episodes=episodes, latents=latents)
        h, w = config.latent_size
        self.tokens_per_sample = (2 * self.frames - 1) * (h // config.dit.patch) * (w // config.dit.patch)
        self.head_weight = LossConfig().head_weight
        own = f", context after frame {cfg.rollout_from} the student's own rollout" if cfg.rollout_from else ""
        guided = f", the teacher guided at text cfg {self.guidance:g}" if self.guidance != 1.0 else ""
        print(
            f"distilling {cfg.world}: {K} Euler steps -> {k} (each student step learns {K // k} of the teacher's), "
            f"clips of {self.frames} frames{own}{guided}",
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
        r = self.teacher_steps_per_step
        first = torch.randint(self.config.sampler.steps, (global_batch, T - 1), generator=generator)[rows] * r
        context_noise = torch.randn(global_batch, T, *shape, generator=generator)[rows].to(device)
        noise = torch.randn(global_batch, T - 1, *shape, generator=generator)[rows].to(device)
        first = first.to(device)
        levels = self.teacher_levels.to(device)
        student_levels = levels[first]

        B, (h, w) = x.shape[0], shape[1:]
        layout = TeacherForced(T, (h // self.config.dit.patch) * (w // self.config.dit.patch), device)
        context_level = torch.full((B, T), self.config.sampler.context_noise, device=device)
        text = teacher_text = null_text = None
        if self.text_to_video:  # no actions; the prompt, dropped for some clips as in training (unguided samples)
            actions, null = None, torch.ones(B, 2 * T - 1, dtype=torch.bool, device=device)
            drop = (torch.rand(global_batch, generator=generator) < LossConfig().text_dropout)[rows].to(device)
            prompts = self.text_encoder(list(batch["caption"]))
            text, teacher_text = drop_text(model, prompts, drop), drop_text(self.teacher, prompts, drop)
            null_text = self.teacher.null_text(B, device)
        else:
            actions = torch.cat([batch["actions"], batch["actions"][:, 1:]], 1).to(device)
            null = torch.cat([batch["action_null"], batch["action_null"][:, 1:]], 1).to(device)
        recorded = x
        if self.cfg.rollout_from:
            rollout_noise = torch.randn(global_batch, T, *shape, generator=generator)[rows].to(device)
            seen = (actions[:, :T] if actions is not None else None, null[:, :T])
            rollout_text = None if text is None else TextContext(text.tokens.detach(), text.mask)  # no gradient
            start, sampler = self.cfg.rollout_from, self.config.sampler
            x = own_rollout(model, x, start, T, sampler, context_noise, rollout_noise, *seen, rollout_text)
        context = add_noise(x, context_noise, context_level)

        def noisy_part(net: nn.Module, frames: Tensor, frame_levels: Tensor, prompt: TextContext | None) -> DiTOutput:
            out = net(torch.cat([context, frames], 1), torch.cat([context_level, frame_levels], 1), actions, null,
                      layout.positions, prompt, memory=layout)  # fmt: skip
            return DiTOutput(*(o[:, T:] for o in out))

        def teacher_velocity(frames: Tensor, frame_levels: Tensor) -> Tensor:
            v = noisy_part(self.teacher, frames, frame_levels, teacher_text).velocity.float()
            if self.guidance == 1.0:
                return v
            unconditional = noisy_part(self.teacher, frames, frame_levels, null_text).velocity.float()
            return v + (self.guidance - 1.0) * (v - unconditional)  # as the engine guides (guided_velocity)

        start = add_noise(x[:, 1:], noise, student_levels)
        with torch.no_grad():
            teacher_x = start
            for i in range(r):
                a, b = levels[first + i], levels[first + i + 1]
                teacher_x = euler_step(teacher_x, teacher_velocity(teacher_x, a), a, b)
            # The one velocity that lands where the teacher's steps landed (the mean of theirs).
            span = (student_levels - levels[first + r])[..., None, None, None]
            target = (start - teacher_x) / span
            # The one velocity that lands on the recorded frame, at the same end level and noise.
            data_target = (start - add_noise(recorded[:, 1:], noise, levels[first + r])) / span
        out = noisy_part(model, start, student_levels, text)
        velocity = out.velocity.float()
        teacher_flow = (velocity - target).pow(2).mean()
        data_flow = (velocity - data_target).pow(2).mean()
        flow = teacher_flow + self.cfg.data_weight * data_flow
        metrics = {"flow": flow.item(), "teacher_flow": teacher_flow.item(), "data_flow": data_flow.item()}
        loss = flow
        if not self.text_to_video:  # a text-to-video backbone has no rewards to learn (as in `train t2v`)
            rewards, terminations = batch["rewards"][:, 1:].to(device), batch["terminations"][:, 1:].to(device)
            reward = (out.reward.float() - rewards).pow(2).mean()
            term = F.binary_cross_entropy_with_logits(out.termination_logit.float(), terminations)
            loss = flow + self.head_weight * (reward + term)
            metrics |= {"reward": reward.item(), "termination": term.item()}
        return loss, {"loss": loss.item()} | metrics

    def world_model(self, ema: nn.Module) -> WorldModel:
        dit = DiT(self.config.dit, self.config.action, self.config.autoencoder.latent_channels)
        dit.load_state_dict({k: v.detach().float().cpu() for k, v in ema.state_dict().items()})
        return WorldModel(self.config, copy.deepcopy(self.autoencoder).cpu(), dit, self.world.starts)

    def export(self, ema: nn.Module, out: Path, card: dict[str, Any]) -> None:
        K = self.teacher_steps
        guided = (
            f"The teacher was guided at text cfg {self.guidance:g}; the student has it built in and samples unguided "
            "(`sampler.text_cfg` 1).\n\n"
            if self.guidance != 1.0
            else ""
        )
        model_card = (
            f"# {self.config.name}\n\n`{self.cfg.world}` distilled by `worldsim train distill` from {K} Euler steps a "
            f"frame to {self.config.sampler.steps} on `{self.cfg.data}`.\n\n{guided}"
            f"- steps: {card['step']}, wall time: {card['wall_seconds']} s\n"
        )
        self.world_model(ema).save_pretrained(out / EXPORT_DIR, card=model_card)

    @torch.no_grad()
    def log_samples(self, ema: nn.Module, tb: Any, step: int) -> None:
        if self.text_to_video:
            log_text_rollouts(tb, self.world_model(ema), self.sources, step)
        else:
            reader, episodes = self.sources[0]
            log_open_loop(tb, self.world_model(ema), reader, episodes[0], step)
