"""Shared tiny configs. Everything here runs on CPU in well under a second per model."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

import gymnasium as gym  # noqa: E402

from worldsim.config import ActionSpec, AutoencoderConfig, DiTConfig, SamplerConfig, WorldConfig  # noqa: E402
from worldsim.engine import WorldModel  # noqa: E402

SIZE = 32
STARTS = 3
"""Start contexts shipped in the tiny checkpoint of ``save_world``, each 2 frames."""


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


def save_world(
    path,
    action: ActionSpec | None = None,
    key_map: dict | None = None,
    frame_rate: int = 12,
    size: int = SIZE,
    text_dim: int = 0,
    starts: bool = True,
) -> str:
    """A tiny checkpoint with nonzero random weights (so frames depend on noise and actions) and start contexts
    (``starts=False``: none, as a text-to-video backbone); ``text_dim`` 384 makes it take prompts."""
    cfg = tiny_config(action=action or ActionSpec(kind="discrete", n=5), frame_size=(size, size), text_dim=text_dim)
    cfg.frame_rate = frame_rate
    cfg.key_map = key_map or {}
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (STARTS, 2, size, size, 3), dtype=torch.uint8, generator=g)
    wm = WorldModel(cfg, starts={"frames": frames} if starts else {})
    randomize(wm.dit, 0)
    randomize(wm.autoencoder, 1, std=0.05)
    wm.save_pretrained(path)
    return str(path)


def save_pusht_world(path, frame_size: int = 32) -> str:
    """A tiny random world of gym_pusht/PushT-v0: Box(2) actions in [0, 512]^2 (absolute pusher targets), 10 fps
    like the env, 3 shipped 2-frame starts; nonzero random weights, so frames depend on noise and actions."""
    cfg = tiny_config(action=ActionSpec.from_gym(gym.spaces.Box(0, 512, (2,))), frame_size=(frame_size, frame_size))
    cfg.frame_rate, cfg.source_env, cfg.name = 10, "gym_pusht/PushT-v0", "TinyPushT"
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, 256, (3, 2, frame_size, frame_size, 3), dtype=torch.uint8, generator=g)
    wm = WorldModel(cfg, starts={"frames": starts})
    randomize(wm.dit, 0)
    randomize(wm.autoencoder, 1, std=0.05)
    wm.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    """``save_world``'s tiny checkpoint, one per test module: 32x32, Discrete(5), 12 fps, 3 shipped 2-frame starts,
    no source env."""
    return save_world(tmp_path_factory.mktemp("world") / "w")


@pytest.fixture(scope="module")
def pusht_world(tmp_path_factory) -> str:
    """A tiny 32x32 random world of gym_pusht/PushT-v0: Box(2) in [0, 512]^2, 10 fps, 3 shipped starts."""
    return save_pusht_world(tmp_path_factory.mktemp("world") / "pusht")


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
