"""Per-frame convolutional VAE: uint8 frames <-> unit-variance latents.

Why not ``diffusers.AutoencoderKL``: its decoder runs two ResNet blocks with GroupNorm and a
mid-block attention at every level, about 2-3x the FLOPs of this one at the same widths, and the
decoder runs once per generated frame on the hot path of real-time CPU play. This design follows
TAESD's lesson (no norms or attention in the decoder, nearest upsample + conv), keeps a KL-regularised
encoder so the latent space stays smooth for diffusion, and narrows channels as resolution grows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldsim.config import AutoencoderConfig


class ResBlock(nn.Module):
    """conv-act-conv with a skip; GroupNorm only in the encoder (the decoder must be cheap)."""

    def __init__(self, channels: int, norm: bool) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, channels) if norm else nn.Identity()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, channels) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        w = cfg.widths
        self.conv_in = nn.Conv2d(3, w[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, width in enumerate(w):
            layers += [ResBlock(width, norm=True) for _ in range(cfg.blocks_per_level)]
            if i + 1 < len(w):
                layers.append(nn.Conv2d(width, w[i + 1], 3, stride=2, padding=1))
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(8, w[-1])
        self.conv_out = nn.Conv2d(w[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(x)))))
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        w = cfg.widths[::-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, w[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, width in enumerate(w):
            layers += [ResBlock(width, norm=False) for _ in range(cfg.blocks_per_level)]
            if i + 1 < len(w):
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, w[i + 1], 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(w[-1], 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        return self.conv_out(F.silu(self.body(self.conv_in(z))))


class FrameAutoencoder(nn.Module):
    """Encodes frames to latents scaled by ``latent_scale`` (unit variance on the training data)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        # channels_last keeps oneDNN on its fast path for the thin convs (the decode time in docs/results.md).
        self.decoder = Decoder(cfg).to(memory_format=torch.channels_last)
        # A buffer, so it travels with the weights in the safetensors file.
        self.register_buffer("latent_scale", torch.ones(()))

    @staticmethod
    def to_pixels(frames: Tensor) -> Tensor:
        """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
        return rearrange(frames, "... h w c -> ... c h w").float() / 127.5 - 1.0

    @staticmethod
    def to_uint8(pixels: Tensor) -> Tensor:
        """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)."""
        x = ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        return rearrange(x, "... c h w -> ... h w c")

    def encode_distribution(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) pixels -> unscaled posterior mean and log-variance (N, C, h, w)."""
        return self.encoder(pixels)

    def forward(self, pixels: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: (N, 3, H, W) pixels and N(0, 1) noise of the latent's shape -> (recon, mean, logvar).

        The noise comes from the caller so training randomness is reproducible and shardable.
        """
        mean, logvar = self.encoder(pixels)
        z = mean + torch.exp(0.5 * logvar) * eps.to(mean.dtype)
        return self.decoder(z), mean, logvar

    @torch.inference_mode()
    def encode(self, frames: Tensor) -> Tensor:
        """uint8 frames (..., H, W, 3) -> scaled latents (..., C, h, w), using the posterior mean."""
        lead = frames.shape[:-3]
        pixels = self.to_pixels(frames.reshape(-1, *frames.shape[-3:]))
        mean, _ = self.encoder(pixels.to(self.latent_scale.device))
        return (mean * self.latent_scale).reshape(*lead, *mean.shape[1:])

    @torch.inference_mode()
    def decode(self, latents: Tensor, decoder: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Scaled latents (..., C, h, w) -> uint8 frames (..., H, W, 3). ``decoder``: what runs ``latents_to_frames``
        (a compiled graph of it, ``WorldModel.compile``); the method itself by default."""
        lead = latents.shape[:-3]
        frames = (decoder or self.latents_to_frames)(latents.reshape(-1, *latents.shape[-3:]))
        return frames.reshape(*lead, *frames.shape[-3:])

    def latents_to_frames(self, latents: Tensor) -> Tensor:
        """Scaled latents (N, C, h, w) -> uint8 frames (N, H, W, 3): the decoder network and the scalings around it."""
        z = latents.float() / self.latent_scale
        z = z.to(self.decoder.conv_in.weight.dtype)  # a bf16 decoder (a bf16 world's) takes bf16 latents
        return self.to_uint8(self.decoder(z.contiguous(memory_format=torch.channels_last)))
