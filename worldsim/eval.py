"""``worldsim eval``: how good is a world, measured on held-out real episodes.

Open-loop rollouts: the model gets ``context`` real frames (and the actions between them), then
predicts ``horizon`` frames from the true actions alone; PSNR of frame h is compared with the
copy-last-frame baseline (the real last context frame repeated) and with the same rollout under
random actions (controllability, Genie's delta-PSNR). More metrics (SSIM, long-run stability, reward
and termination quality) come with the shipped world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from worldsim.data.reader import TrajectoryReader
from worldsim.engine import WorldModel, resize_frames
from worldsim.errors import InputError


@dataclass
class EvalConfig:
    """What ``worldsim eval`` measures."""

    checkpoint: str = "carracing"
    """World checkpoint dir or shipped name."""
    data: str = ""
    """Held-out trajectories (episodes never trained on)."""
    episodes: str = ""
    """Episode indices to use, e.g. '220-239' (default: all in the file)."""
    horizons: str = "1,4,16"
    """Comma-separated horizons at which PSNR is reported."""
    context: int = 4
    """Real frames given before the open-loop rollout."""
    starts_per_episode: int = 2
    """Rollout start points per episode (spread over the episode)."""
    seed: int = 0
    """Seed of sampling noise and of the random actions."""


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 frames (..., H, W, 3)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(-3, -2, -1))
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def parse_episodes(text: str, total: int) -> list[int]:
    if not text:
        return list(range(total))
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    bad = [e for e in out if not 0 <= e < total]
    if bad:
        raise InputError(f"--episodes {text}: the file has episodes 0..{total - 1}")
    return out


def evaluate(cfg: EvalConfig, progress: bool = False) -> dict[str, Any]:
    wm = WorldModel.from_pretrained(cfg.checkpoint)
    reader = TrajectoryReader(cfg.data)
    horizons = [int(h) for h in cfg.horizons.split(",")]
    longest = max(horizons)
    episodes = parse_episodes(cfg.episodes, len(reader))
    size = wm.frame_size
    space = wm.action_space
    space.seed(cfg.seed)  # random actions for the controllability rollouts, reproducibly
    model, baseline, shuffled = ([[] for _ in horizons] for _ in range(3))
    from tqdm import tqdm

    for e in tqdm(episodes, desc="eval", disable=not progress):
        n = reader.episode_frames[e]
        if n < cfg.context + longest:
            continue
        frames = resize_frames(torch.from_numpy(reader.frames(e)), size).numpy()
        actions = reader.steps(e)["actions"]
        last_start = n - cfg.context - longest
        for s in np.linspace(0, last_start, cfg.starts_per_episode).astype(int):
            ctx = frames[s : s + cfg.context]
            ctx_actions = actions[s : s + cfg.context - 1]
            future_actions = actions[s + cfg.context - 1 : s + cfg.context - 1 + longest]
            real = frames[s + cfg.context : s + cfg.context + longest]
            gen = torch.Generator().manual_seed(cfg.seed + int(e) * 1000 + int(s))
            wm.reset(ctx[None], actions=ctx_actions[None], generator=gen)
            dream = wm.predict(future_actions[None]).frames[0]
            random_actions = np.stack([space.sample() for _ in range(longest)])
            gen = torch.Generator().manual_seed(cfg.seed + int(e) * 1000 + int(s))
            wm.reset(ctx[None], actions=ctx_actions[None], generator=gen)
            dream_random = wm.predict(random_actions[None]).frames[0]
            for i, h in enumerate(horizons):
                model[i].append(psnr(dream[h - 1], real[h - 1]))
                baseline[i].append(psnr(ctx[-1], real[h - 1]))
                shuffled[i].append(psnr(dream_random[h - 1], real[h - 1]))
    if not model[0]:
        raise InputError(f"no episode in {cfg.data} is long enough for context {cfg.context} + horizon {longest}")
    result: dict[str, Any] = {"checkpoint": cfg.checkpoint, "data": cfg.data, "rollouts": len(model[0])}
    for i, h in enumerate(horizons):
        result[f"psnr_h{h}"] = float(np.mean(model[i]))
        result[f"baseline_psnr_h{h}"] = float(np.mean(baseline[i]))
        result[f"random_action_psnr_h{h}"] = float(np.mean(shuffled[i]))
        result[f"delta_psnr_h{h}"] = result[f"psnr_h{h}"] - result[f"random_action_psnr_h{h}"]
    return result


def format_eval_table(result: dict[str, Any], horizons: list[int]) -> str:
    lines = [
        f"{result['rollouts']} open-loop rollouts of {result['checkpoint']} on {result['data']}",
        "| horizon | PSNR (dB) | copy-last PSNR | random-action PSNR | delta PSNR |",
        "|---|---|---|---|---|",
    ]
    for h in horizons:
        lines.append(
            f"| {h} | {result[f'psnr_h{h}']:.2f} | {result[f'baseline_psnr_h{h}']:.2f} | "
            f"{result[f'random_action_psnr_h{h}']:.2f} | {result[f'delta_psnr_h{h}']:.2f} |"
        )
    return "\n".join(lines)
