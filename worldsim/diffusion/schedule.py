"""The noise process: rectified flow with an independent noise level per frame (diffusion forcing).

x_s = (1 - s) * x + s * noise, s in [0, 1]; the network predicts v = noise - x, so one Euler step
from level s to s' is x_s' = x_s + (s' - s) * v. Level 0 is clean, level 1 is pure noise.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _per_frame(levels: Tensor, like: Tensor) -> Tensor:
    """(B, F) levels -> broadcastable against (B, F, C, h, w)."""
    return levels.reshape(*levels.shape, *([1] * (like.dim() - levels.dim()))).to(like.dtype)


def add_noise(clean: Tensor, noise: Tensor, levels: Tensor) -> Tensor:
    """Noise each frame of ``clean`` (B, F, C, h, w) to its own level in ``levels`` (B, F)."""
    s = _per_frame(levels, clean)
    return (1 - s) * clean + s * noise


def velocity_target(clean: Tensor, noise: Tensor) -> Tensor:
    """What the network is trained to predict."""
    return noise - clean


def euler_step(x: Tensor, velocity: Tensor, level_from: Tensor, level_to: Tensor) -> Tensor:
    """Move every frame of ``x`` from its level to its next level along the predicted velocity."""
    return x + _per_frame(level_to - level_from, x) * velocity


def sample_training_levels(
    batch: int,
    frames: int,
    generator: torch.Generator | None = None,
    context_noise_max: float = 0.0,
    teacher_forcing_prob: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Per-frame noise levels (B, F) for one training batch, and which frames are given context.

    Diffusion forcing draws every frame's level independently. Independent levels rarely produce
    the case that matters most at play time (a nearly clean past and one noisy present), so with
    probability ``teacher_forcing_prob`` a clip is split at a random frame: frames before it get a
    small context level in [0, context_noise_max] (context-noise augmentation, GameNGen), frames
    from it on keep independent levels.

    The second output marks those context frames. The loss skips them: at a level near 0 the target
    v = noise - x asks the network to guess the noise it cannot see, pure irreducible variance.
    """
    levels = torch.rand(batch, frames, generator=generator)
    split = torch.randint(1, max(frames, 2), (batch, 1), generator=generator)
    # A single frame (an image) has no past to be given.
    teacher = (torch.rand(batch, 1, generator=generator) < teacher_forcing_prob) & (frames > 1)
    context = torch.arange(frames)[None, :] < split
    low = torch.rand(batch, frames, generator=generator) * context_noise_max
    is_context = teacher & context
    return torch.where(is_context, low, levels), is_context


def sampling_levels(steps: int, shift: float = 1.0) -> Tensor:
    """The K+1 levels an Euler sampler visits, from pure noise to clean: (steps + 1,).

    Evenly spaced, then shifted as SD3 does (s -> shift * s / (1 + (shift - 1) * s)): a shift above 1 spends more
    of the steps at high noise, below 1 at low noise; both ends stay at 1 and 0.
    """
    s = torch.linspace(1.0, 0.0, steps + 1)
    return shift * s / (1 + (shift - 1) * s)


def pyramid_levels(frames: int, steps: int, delay: int, shift: float = 1.0) -> Tensor:
    """Diffusion forcing's pyramid scheduling matrix: (iterations + 1, frames) levels.

    Frame h starts denoising ``h * delay`` iterations after frame 0, so nearer frames are always
    cleaner than later ones and each Euler pass moves every frame in flight at once. With one frame
    it reduces to ``sampling_levels(steps)``.
    """
    iters = steps + (frames - 1) * delay
    m = torch.arange(iters + 1)[:, None]
    done = (m - torch.arange(frames)[None, :] * delay).clamp(0, steps)  # Euler steps finished
    return sampling_levels(steps, shift)[done]
