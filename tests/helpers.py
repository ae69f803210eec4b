"""Shared test helpers (importable from tests: pytest puts this folder on sys.path)."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import torch

from worldsim.data import TrajectoryWriter
from worldsim.diffusion.memory import KVCache
from worldsim.models.conditioning import FrameConditioning
from worldsim.models.dit import DiT


def labelled_episode(episode: int, steps: int, size: int = 16, n_actions: int = 5) -> dict:
    """Frames whose pixels encode (episode, frame index), so a clip can be traced back to its source."""
    frames = np.zeros((steps + 1, size, size, 3), dtype=np.uint8)
    frames[..., 0] = episode
    frames[..., 1] = np.arange(steps + 1)[:, None, None]
    frames[..., 2] = 7
    return {
        "observations": frames,
        "actions": (np.arange(steps) + episode) % n_actions,
        "rewards": np.arange(steps, dtype=np.float32) + 100 * episode,
        "terminations": np.arange(steps) == steps - 1,
        "truncations": np.zeros(steps, dtype=bool),
    }


def write_dataset(
    path, lengths=(12, 5, 20), size: int = 16, captions: bool = False, env_id: str = "Test-v0", action_space=None
) -> list[dict]:
    episodes = [labelled_episode(i, n, size) for i, n in enumerate(lengths)]
    space = action_space or gym.spaces.Discrete(5)
    if not isinstance(space, gym.spaces.Discrete):
        for ep in episodes:
            ep["actions"] = np.stack([space.sample() for _ in ep["actions"]])
    with TrajectoryWriter(path, env_id=env_id, frame_size=(size, size), action_space=space, frame_rate=12) as w:
        for i, ep in enumerate(episodes):
            w.add_episode(**ep, seed=40 + i, caption=f"episode {i}" if captions else None)
    return episodes


def ddp_worker(rank: int, world: int, port: int, cfg_dict: dict) -> None:
    """One process of a gloo data-parallel training run (spawned by tests/test_training.py)."""
    import torch
    import torch.distributed as dist

    from worldsim.training.config import WorldTrainConfig
    from worldsim.training.loop import init_distributed, train
    from worldsim.training.world import WorldStage

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    d = init_distributed("cpu")
    cfg = WorldTrainConfig(**cfg_dict)
    try:
        train(WorldStage(cfg, d), cfg, d, progress=False)
    finally:
        dist.destroy_process_group()


def cached_passes(dit: DiT, latent_size: tuple[int, int], guidance: bool = False) -> list[torch.Tensor]:
    """Velocities of two write passes and a plain pass of 2 worlds on a KV cache (with ``guidance`` also a
    guidance-sized one: no in-place slots), then the cache's keys and values (a fast path against the PyTorch ops:
    tests/test_selfcheck.py, tests/test_triton_kernels.py)."""
    B, C, (h, w) = 2, dit.latent_channels, latent_size
    gh, gw = dit.grid(latent_size)
    g = torch.Generator().manual_seed(1)
    cache = KVCache(dit, B, gh * gw, sinks=1, window=4, dtype=torch.float32, device=torch.device("cpu"))
    cond = FrameConditioning(torch.tensor([[1], [2]]), torch.zeros(B, 1, dtype=torch.bool))
    levels = torch.full((B, 1), 0.5)
    outs = []
    with torch.no_grad():
        for _ in range(2):
            outs.append(cache.write(torch.randn(B, 1, C, h, w, generator=g), levels, cond, None).velocity)
        x = torch.randn(B, 1, C, h, w, generator=g)
        outs.append(cache.denoise(x, levels, cond, None).velocity)
        if guidance:
            outs.append(cache.denoise(x.repeat(2, 1, 1, 1, 1), levels.repeat(2, 1), cond.repeat(2), None).velocity)
    return [*outs, cache.k, cache.v]
