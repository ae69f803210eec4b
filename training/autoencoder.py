"""Stage 1: train the per-frame VAE on the frames of trajectory datasets (one, or several for one shared VAE)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset

from worldsim.checkpoint import atomic_path, load_autoencoder, load_state, save_autoencoder
from worldsim.config import AutoencoderConfig
from worldsim.data.clips import ClipDataset
from worldsim.data.recorder import parse_size
from worldsim.errors import CheckpointError, ConfigError, InputError
from worldsim.inputs import resize_frames
from worldsim.models.autoencoder import FrameAutoencoder
from worldsim.training.common import open_training_files
from worldsim.training.config import AutoencoderTrainConfig
from worldsim.worlds import resolve_world

EXPORT_DIR = "autoencoder"
METRICS_FILE = "metrics.json"
SCALE_FRAMES = 512
"""Frames encoded to measure the latent scale at export."""
HELDOUT_FRAMES = 1024
"""Held-out frames (spread over the --holdout episodes) whose reconstruction PSNR is measured at every export."""


def load_trained_autoencoder(path: str | Path) -> tuple[list[int], AutoencoderConfig, FrameAutoencoder]:
    """An autoencoder from a stage-1 run directory, an autoencoder checkpoint, or a world's: its checkpoint, its
    run directory or a shipped world's name (``--autoencoder t2v`` fine-tunes on the backbone's own latents)."""
    path = Path(path)
    if (path / EXPORT_DIR).is_dir():
        path = path / EXPORT_DIR
    else:
        try:
            path = resolve_world(path)
        except CheckpointError:
            raise InputError(
                f"--autoencoder {path} does not exist: train one first with `worldsim train autoencoder`"
            ) from None
    frame_size, config, state = load_autoencoder(path)
    try:
        ae_config = AutoencoderConfig(**config)
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"{path}: autoencoder config does not match this worldsim ({e})") from None
    ae = FrameAutoencoder(ae_config)
    load_state(ae, state, str(path))
    return frame_size, ae_config, ae.eval().requires_grad_(False)


class FramesOnly(Dataset):
    """A clip dataset's frames alone: files of different action spaces then share a batch."""

    def __init__(self, clips: ClipDataset) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"frames": self.clips[index]["frames"]}


class AutoencoderStage:
    name = "autoencoder"

    def __init__(self, cfg: AutoencoderTrainConfig) -> None:
        self.cfg = cfg
        self.frame_size = parse_size(cfg.frame_size)
        start = None
        if cfg.init:
            _, self.ae_config, start = load_trained_autoencoder(cfg.init)
        else:
            try:
                widths = [int(w) for w in cfg.widths.split(",")]
                self.ae_config = AutoencoderConfig(
                    widths=widths, latent_channels=cfg.latent_channels, kl_weight=cfg.kl_weight
                )
            except (ValueError, ConfigError) as e:
                raise InputError(f"bad autoencoder shape: {e}") from None
        f = self.ae_config.factor
        if self.frame_size[0] % f or self.frame_size[1] % f:
            raise InputError(f"--frame-size {cfg.frame_size} must be divisible by the autoencoder factor {f}")
        # Several files (comma-separated) train one autoencoder for all of them, every frame at --frame-size.
        self.sources = open_training_files(cfg)
        self.dataset = ConcatDataset(
            [
                FramesOnly(ClipDataset(reader, 1, self.frame_size, episodes=episodes))
                for reader, episodes in self.sources
            ]
        )
        torch.manual_seed(cfg.seed)
        self.model = FrameAutoencoder(self.ae_config)
        if start is not None:
            self.model.load_state_dict(start.state_dict())
        h, w = self.frame_size
        self.latent_shape = (self.ae_config.latent_channels, h // f, w // f)
        self.tokens_per_sample = h * w  # pixels per frame

    def loss(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator, rows: slice, global_batch: int
    ) -> tuple[Tensor, dict[str, float]]:
        pixels = FrameAutoencoder.to_pixels(batch["frames"][:, 0]).to(next(model.parameters()).device)
        eps = torch.randn(global_batch, *self.latent_shape, generator=generator)[rows].to(pixels.device)
        recon, mean, logvar = model(pixels, eps)
        err = recon.float() - pixels
        l1 = err.abs().mean()
        mse = err.pow(2).mean()
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).mean()
        loss = l1 + mse + self.ae_config.kl_weight * kl
        psnr = 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))  # pixels span 2 (-1..1)
        return loss, {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "kl": kl.item(), "psnr": psnr.item()}

    @torch.no_grad()
    def latent_scale(self, model: FrameAutoencoder) -> float:
        """1 / std of the posterior means on a fixed sample of training frames (unit-variance latents)."""
        rng = np.random.default_rng(0)
        idx = rng.choice(len(self.dataset), size=min(SCALE_FRAMES, len(self.dataset)), replace=False)
        frames = torch.stack([self.dataset[int(i)]["frames"][0] for i in idx])
        device = next(model.parameters()).device
        mean, _ = model.encode_distribution(FrameAutoencoder.to_pixels(frames).to(device))
        return float(1.0 / mean.float().std().clamp_min(1e-6))

    @torch.no_grad()
    def heldout_psnr(self, model: FrameAutoencoder) -> dict[str, float]:
        """Reconstruction PSNR (dB, uint8 frames) of up to ``HELDOUT_FRAMES`` frames of the held-out episodes:
        the ceiling of every frame a world built on this autoencoder shows. Empty without --holdout."""
        heldout = [(r, e) for r, episodes in self.sources for e in range(len(episodes), len(r))]
        if not heldout:
            return {}
        per_episode = max(1, HELDOUT_FRAMES // len(heldout))
        frames = []
        for reader, e in heldout:
            n = reader.episodes[e].steps + 1
            idx = np.unique(np.linspace(0, n - 1, min(n, per_episode)).round().astype(int))
            frames.append(resize_frames(torch.from_numpy(reader.frames(e)[idx]), self.frame_size))
        real = torch.cat(frames)
        device = next(model.parameters()).device
        recon = torch.cat([model.decode(model.encode(chunk.to(device))).cpu() for chunk in real.split(256)])
        mse = (recon.double() - real.double()).pow(2).mean(dim=(1, 2, 3))
        psnr = (10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).numpy()
        return {
            "heldout_psnr": float(psnr.mean()),
            "heldout_psnr_p10": float(np.percentile(psnr, 10)),
            "frames": len(psnr),
        }

    def export(self, ema: nn.Module, out: Path, card: dict[str, Any]) -> None:
        ema.latent_scale.fill_(self.latent_scale(ema))  # type: ignore[union-attr]
        save_autoencoder(out / EXPORT_DIR, list(self.frame_size), dataclasses.asdict(self.ae_config), ema.state_dict())
        metrics = self.heldout_psnr(ema)  # type: ignore[arg-type]
        if metrics:
            with atomic_path(out / EXPORT_DIR / METRICS_FILE) as tmp:
                tmp.write_text(json.dumps({**card, **metrics}, indent=2))
            print(
                f"autoencoder at step {card.get('step')}: held-out reconstruction PSNR "
                f"{metrics['heldout_psnr']:.2f} dB (10th percentile {metrics['heldout_psnr_p10']:.2f}) "
                f"over {metrics['frames']} frames",
                file=sys.stderr,
                flush=True,
            )

    @torch.no_grad()
    def log_samples(self, ema: nn.Module, tb: Any, step: int) -> None:
        frames = torch.stack(
            [self.dataset[i]["frames"][0] for i in range(0, len(self.dataset), max(1, len(self.dataset) // 8))][:8]
        )
        device = next(ema.parameters()).device
        recon = ema.decode(ema.encode(frames.to(device))).cpu()  # type: ignore[operator]
        grid = torch.cat([torch.cat(list(frames), 1), torch.cat(list(recon), 1)], 0)  # real row over recon row
        tb.add_image("autoencoder/real_vs_recon", grid.numpy(), step, dataformats="HWC")
