"""Shared tiny configs. Everything here runs on CPU in well under a second per model."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

from worldsim.config import ActionSpec, AutoencoderConfig, DiTConfig, SamplerConfig, WorldConfig  # noqa: E402


def tiny_config(
    action: ActionSpec | None = None,
    frame_size: tuple[int, int] = (32, 32),
    text_dim: int = 0,
    window: int = 4,
    sinks: int = 1,
    max_frames: int = 8,
    patch: int = 2,
) -> WorldConfig:
    return WorldConfig(
        frame_size=list(frame_size),
        action=action or ActionSpec(kind="discrete", n=3),
        autoencoder=AutoencoderConfig(widths=[8, 16, 16], latent_channels=4),
        dit=DiTConfig(width=32, depth=2, heads=2, patch=patch, text_dim=text_dim, max_frames=max_frames),
        sampler=SamplerConfig(steps=3, window=window, sinks=sinks, context_noise=0.05),
    )


def randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Overwrite every parameter with noise so zero-initialised layers do real work in a test."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture
def tiny() -> WorldConfig:
    return tiny_config()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core box a second OpenMP thread that loses
    its core stalls every parallel region (measured: a 5 ms step took 850 ms with 2 threads under load 3)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
