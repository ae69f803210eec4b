"""Training objectives: the diffusion forcing loss for the world model (+ reward/termination heads).

Per-frame convention (the whole project uses it): frame t is conditioned on the action that led to
it, and the reward / termination of that transition belong to frame t. The first frame of an
episode has no action (null).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldsim.config import SamplerConfig
from worldsim.diffusion.schedule import add_noise, euler_step, sample_training_levels, sampling_levels, velocity_target
from worldsim.models.conditioning import TextContext
from worldsim.models.dit import DiT


@dataclass
class ClipBatch:
    """A batch of latent clips with per-frame conditioning and targets."""

    latents: Tensor
    """(B, T, C, h, w) scaled latents."""
    actions: Tensor | None
    """(B, T, ...) action that led to each frame, or None."""
    action_null: Tensor
    """(B, T) bool: frame has no action (episode start)."""
    rewards: Tensor | None = None
    """(B, T) reward of the transition into each frame."""
    terminations: Tensor | None = None
    """(B, T) 1.0 where the frame is terminal."""
    text: TextContext | None = None
    """Prompt token embeddings, or None."""
    state: Tensor | None = None
    """(B, T, k) the task object's standardised state in each frame (``training.state``), or None."""


@dataclass
class LossConfig:
    """Weights and augmentation of the diffusion forcing objective."""

    context_noise_max: float = 0.1
    """Context frames are noised to a level in [0, this] (GameNGen's noise augmentation)."""
    teacher_forcing_prob: float = 0.5
    """Fraction of clips split into a low-noise past and independently-noised future."""
    action_dropout: float = 0.1
    """Probability a frame's action is replaced by the null action (for action CFG)."""
    text_dropout: float = 0.1
    """Probability a clip's prompt is replaced by the null prompt (for text CFG)."""
    head_weight: float = 0.1
    """Weight of the reward and termination losses."""
    motion_weight: float = 0.0
    """Extra flow-loss weight on the latent pixels that change from the frame before (``motion_weights``): what the
    action moved (a pusher, the object it pushes) is a sliver of the frame, and an unweighted mean lets a model
    that leaves it where it was score almost as well as one that moves it. 0: every latent pixel weighs the same."""
    state_weight: float = 0.0
    """Weight of the state head's loss (``training.state``), on every frame whatever its noise level."""


@dataclass
class ForcingNoise:
    """All the randomness of one diffusion forcing step, drawn for the whole global batch.

    Drawing it once for the global batch and giving each data-parallel rank its rows makes N
    processes compute exactly what one process computes on the same global batch.
    """

    levels: Tensor
    """(B, T) noise level per frame."""
    is_context: Tensor
    """(B, T) bool: teacher-forced context frame (no flow loss)."""
    noise: Tensor
    """(B, T, C, h, w) Gaussian noise."""
    action_drop: Tensor
    """(B, T) bool: action replaced by the null action."""
    text_drop: Tensor
    """(B,) bool: prompt replaced by the null prompt."""

    def rows(self, rows: slice) -> ForcingNoise:
        return ForcingNoise(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


def draw_forcing_noise(
    batch: int, frames: int, latent_shape: tuple[int, ...], cfg: LossConfig, generator: torch.Generator | None
) -> ForcingNoise:
    levels, is_context = sample_training_levels(
        batch, frames, generator, cfg.context_noise_max, cfg.teacher_forcing_prob
    )
    return ForcingNoise(
        levels=levels,
        is_context=is_context,
        noise=torch.randn(batch, frames, *latent_shape, generator=generator),
        action_drop=torch.rand(batch, frames, generator=generator) < cfg.action_dropout,
        text_drop=torch.rand(batch, generator=generator) < cfg.text_dropout,
    )


def diffusion_forcing_loss(
    dit: DiT,
    batch: ClipBatch,
    cfg: LossConfig,
    generator: torch.Generator | None = None,
    draw: ForcingNoise | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Flow-matching loss with an independent noise level per frame (Chen et al. 2024).

    Every term is a mean over clips of a per-clip quantity, so the loss of a batch is the average of
    the losses of its parts (what data-parallel gradient averaging assumes).
    """
    x = batch.latents
    B, T = x.shape[:2]
    device = x.device
    if draw is None:
        draw = draw_forcing_noise(B, T, tuple(x.shape[2:]), cfg, generator)
    levels = draw.levels.to(device)
    target_frames = (~draw.is_context).to(device).float()
    noise = draw.noise.to(device=device, dtype=x.dtype)
    null = batch.action_null | draw.action_drop.to(device)
    text = batch.text
    if text is not None and cfg.text_dropout > 0:
        text = drop_text(dit, text, draw.text_drop.to(device))

    out = dit(add_noise(x, noise, levels), levels, batch.actions, null, torch.arange(T), text)
    error = (out.velocity.float() - velocity_target(x, noise).float()).pow(2)
    if cfg.motion_weight > 0:
        weights = motion_weights(x.float(), cfg.motion_weight)
        per_frame = (error * weights).flatten(2).sum(-1) / weights.expand_as(error).flatten(2).sum(-1)  # (B, T)
    else:
        per_frame = error.flatten(2).mean(-1)  # (B, T)
    # Teacher-forced context frames get no flow loss: at level ~0 the target asks for noise the net cannot see.
    flow = ((per_frame * target_frames).sum(1) / target_frames.sum(1).clamp_min(1.0)).mean()
    loss = flow
    metrics = {"flow": flow.item()}
    # Heads are read from a frame's last Euler pass (level 1/K; ``worldsim.diffusion.sampler``), from a nearly
    # clean frame at best: weight them by 1 - s.
    weight = 1.0 - levels
    if batch.rewards is not None:
        reward = (weight * (out.reward.float() - batch.rewards.float()) ** 2).mean()
        loss = loss + cfg.head_weight * reward
        metrics["reward"] = reward.item()
    if batch.terminations is not None:
        term = (
            weight
            * F.binary_cross_entropy_with_logits(
                out.termination_logit.float(), batch.terminations.float(), reduction="none"
            )
        ).mean()
        loss = loss + cfg.head_weight * term
        metrics["termination"] = term.item()
    if batch.state is not None and cfg.state_weight > 0:
        # Every frame, at any noise: at high noise the pose is not in the frame; the network has to bring it from
        # the context through the action.
        state = (out.state.float() - batch.state.float()).pow(2).mean()
        loss = loss + cfg.state_weight * state
        metrics["state"] = state.item()
    metrics["loss"] = loss.item()
    return loss, metrics


def motion_weights(latents: Tensor, strength: float) -> Tensor:
    """(B, T, C, h, w) latents -> (B, T, 1, h, w) loss weights 1 + strength * change / the frame's largest change,
    where change is a latent pixel's mean absolute difference from the frame before (0 for a clip's first frame and
    for a frame where nothing changed). Weights lie in [1, 1 + strength]; the loss normalises by their sum, so a
    frame's loss stays a weighted mean of its errors."""
    change = torch.zeros_like(latents[:, :, :1])
    change[:, 1:] = (latents[:, 1:] - latents[:, :-1]).abs().mean(2, keepdim=True)
    largest = change.flatten(2).amax(-1)[..., None, None, None].clamp_min(1e-6)
    return 1.0 + strength * change / largest


def drop_text(dit: DiT, text: TextContext, drop: Tensor) -> TextContext:
    """Replace the prompts of clips where ``drop`` is set with the learned null prompt."""
    B, L, _ = text.tokens.shape
    null = getattr(dit, "module", dit).null_text(B, text.tokens.device)  # unwrap DistributedDataParallel
    tokens = text.tokens.clone()
    mask = text.mask.clone()
    tokens[drop] = 0
    tokens[drop, 0] = null.tokens[drop, 0].to(tokens.dtype)
    mask[drop] = False
    mask[drop, 0] = True
    return TextContext(tokens=tokens, mask=mask)


@torch.no_grad()
def own_rollout(
    net: nn.Module,
    x: Tensor,
    start: int,
    stop: int,
    sampler: SamplerConfig,
    context_noise: Tensor,
    noise: Tensor,
    actions: Tensor | None,
    null: Tensor,
    text: TextContext | None = None,
) -> Tensor:
    """Latents (B, T, C, h, w) of real clips -> the same clips with frames ``start..stop-1`` made by ``net``, one at
    a time as the engine makes them: from ``noise``, the sampler's Euler steps, each frame attending to the frames
    before it at the sampler's context level (noised by ``context_noise``, as the training pass will show them).

    Training on such clips (self-forcing, Huang et al. 2025; DIAMOND and GameNGen approximate it with noise) shows
    the network the errors its own rollouts make, which a teacher-forced network never sees and which compound
    over a long dream."""
    B = x.shape[0]
    steps = sampling_levels(sampler.steps, sampler.shift).tolist()
    x = x.clone()
    for t in range(start, stop):
        past_levels = torch.full((B, t), sampler.context_noise, device=x.device)
        past = add_noise(x[:, :t], context_noise[:, :t], past_levels)
        frame = noise[:, t : t + 1]
        seen = (actions[:, : t + 1] if actions is not None else None, null[:, : t + 1])
        for a, b in zip(steps[:-1], steps[1:]):
            now, then = (torch.full((B, 1), s, device=x.device) for s in (a, b))
            out = net(torch.cat([past, frame], 1), torch.cat([past_levels, now], 1), *seen, torch.arange(t + 1), text)
            frame = euler_step(frame, out.velocity[:, -1:].float(), now, then)
        x[:, t] = frame[:, 0].to(x.dtype)
    return x
