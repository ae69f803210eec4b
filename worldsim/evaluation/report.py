"""How a ``PredictResult`` is shown: the table ``worldsim predict`` prints, its JSON file and the real | dream video
grid. Change a column or the grid here; what the numbers are is ``result``'s business."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from worldsim.checkpoint import atomic_path
from worldsim.errors import InputError
from worldsim.evaluation.result import PredictResult
from worldsim.video import VideoWriter


def format_ci(ci: Sequence[float], fmt: str = ".2f") -> str:
    """A 95% interval as ``[low, high]``."""
    return f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def format_predict_table(result: PredictResult) -> str:
    """The markdown report ``worldsim predict`` prints: one row per episode, then the aggregate."""
    s = result.summary()
    real = result.real_return is not None
    success = result.dream_success is not None
    seconds = f" ({result.horizon / result.frame_rate:.1f} s at {result.frame_rate} fps)" if result.frame_rate else ""
    lines = [f"{result.policy} in {result.world}: {s['episodes']} episodes of {result.horizon} steps{seconds}", ""]
    if real:
        head = ["episode", "seed", "dream return", "real return", "terminated (dream / real)"]
        head += ["max reward (dream / real)", "success (dream / real)"] if success else []
    else:
        head = ["episode", "seed", "dream return", "terminated"] + (["max reward", "success"] if success else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    for row in result.per_episode():
        cells = [str(row["episode"]), str(row["seed"]), f"{row['dream_return']:.2f}"]
        if real:
            cells += [f"{row['real_return']:.2f}", f"{yes(row['dream_terminated'])} / {yes(row['real_terminated'])}"]
            if success:
                cells += [f"{row['dream_max_reward']:.3f} / {row['real_max_reward']:.3f}",
                          f"{yes(row['dream_success'])} / {yes(row['real_success'])}"]  # fmt: skip
        else:
            cells.append(yes(row["dream_terminated"]))
            if success:
                cells += [f"{row['dream_max_reward']:.3f}", yes(row["dream_success"])]
        lines.append("| " + " | ".join(cells) + " |")
    n = s["episodes"]
    dream_ended = round(s["dream_termination_rate"] * n)
    line = f"mean return: dream {s['dream_return_mean']:.2f} ± {s['dream_return_std']:.2f} "
    line += format_ci(s["dream_return_ci95"])
    if real:
        line += (
            f", real {s['real_return_mean']:.2f} ± {s['real_return_std']:.2f} {format_ci(s['real_return_ci95'])}; "
            f"MAE {s['return_mae']:.2f} (bias {s['return_bias']:+.2f}); terminated: dream {dream_ended}/{n}, "
            f"real {round(s['real_termination_rate'] * n)}/{n}"
        )
    else:
        line += f"; terminated: {dream_ended}/{n}"
    lines += ["", line]
    if success:
        sides = ["dream", "real"] if real else ["dream"]
        lines.append(
            "success: "
            + ", ".join(
                f"{side} {s[f'{side}_success_rate']:.0%} {format_ci(s[f'{side}_success_ci95'], '.0%')}"
                for side in sides
            )  # fmt: skip
            + "; mean max reward: "
            + ", ".join(
                f"{side} {s[f'{side}_max_reward_mean']:.3f} {format_ci(s[f'{side}_max_reward_ci95'], '.3f')}"
                for side in sides
            )  # fmt: skip
        )
    lines.append("[low, high]: 95% bootstrap interval over episodes")
    return "\n".join(lines)


def write_predict_json(result: PredictResult, path: str | Path) -> None:
    """``result.to_dict()`` as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2))


GAP = 2
"""Pixels between real and dream in a cell, and between cells (even, so mp4's even frame sizes hold)."""


def grid_frames(result: PredictResult, scale: int = 0) -> np.ndarray:
    """The episodes side by side in a grid, uint8 (H+1, gh, gw, 3): each cell real | dream (dream alone without the
    real env), ``scale`` screen pixels per frame pixel (0: at least 128 pixels a frame)."""
    if result.dream_frames is None:
        raise InputError("a video needs the frames: run predict with keep_frames=True")
    cells = result.dream_frames
    if result.real_frames is not None:
        gap = np.zeros((*cells.shape[:3], GAP, 3), np.uint8)
        cells = np.concatenate([result.real_frames, gap, cells], axis=3)
    N, T, h, w, _ = cells.shape
    scale = scale or max(1, math.ceil(128 / min(result.dream_frames.shape[2:4])))
    cells = cells.repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = h * scale, w * scale
    cols = math.ceil(math.sqrt(N * h / w))  # about square
    rows = math.ceil(N / cols)
    grid = np.zeros((T, rows * (h + GAP) - GAP, cols * (w + GAP) - GAP, 3), np.uint8)
    for i in range(N):
        r, c = divmod(i, cols)
        grid[:, r * (h + GAP) : r * (h + GAP) + h, c * (w + GAP) : c * (w + GAP) + w] = cells[i]
    return grid


def write_predict_video(result: PredictResult, path: str | Path) -> None:
    """The grid of episodes (``grid_frames``) as an .mp4 or .gif at the world's frame rate, atomically."""
    with VideoWriter(path, fps=result.frame_rate or 15) as video:
        for frame in grid_frames(result):
            video.append(frame)
