"""What ``predict`` gives: ``PredictResult``, one policy's dreamed (and real) episodes with their summary, and the one
rule of success both sides are judged by (``episode_success``). Change what a result reports here; how it prints is
``report``'s business."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from worldsim.envs.sources import SourceWorld
from worldsim.evaluation.metrics import bootstrap_ci

SUCCESS_TOLERANCE = 1e-3
"""How far below ``success_reward`` a step's reward may fall and still count as reaching it (float rounding), for
envs whose success is a reward, not a termination."""


@dataclass
class PredictResult:
    """Per-episode outcomes of a policy's dreams (and real episodes); ``summary()`` aggregates them."""

    dream_return: np.ndarray
    """(N,) float: the reward head summed over the dreamed steps, up to its termination."""
    dream_terminated: np.ndarray
    """(N,) bool: the termination head fired within the horizon."""
    dream_max_reward: np.ndarray
    """(N,) float: the reward head's highest per-step reward over the dreamed steps, up to its termination."""
    real_return: np.ndarray | None
    """(N,) float: the real env's reward over the same steps after the fork (with real=True)."""
    real_terminated: np.ndarray | None
    """(N,) bool: the real env terminated within the horizon (with real=True)."""
    real_max_reward: np.ndarray | None
    """(N,) float: the real env's highest reward of one world step after the fork (with real=True)."""
    dream_frames: np.ndarray | None
    """uint8 (K, H+1, h, w, 3) of the first K episodes (all of them with keep_frames): the context's last frame,
    then the dream; after a termination the last frame repeats."""
    real_frames: np.ndarray | None
    """uint8 (K, H+1, h, w, 3) at the world's frame size, with real=True, of the episodes in dream_frames: the
    fork's frame, then the real env; after the episode ends the last frame repeats."""
    seeds: list[int]
    """Each episode's seed: its real env's seed and its dream's noise seed."""
    world: str = ""
    """The world, as given."""
    policy: str = ""
    """The policy, as given (a factory callable by its qualified name)."""
    horizon: int = 0
    """Steps per episode after the context."""
    frame_rate: int = 0
    """The world's frames per second."""
    success_reward: float | None = None
    """The world's source env's success reward (``SourceWorld.success_reward``); None: no notion of success, and
    no success or highest-reward numbers in the summary."""
    dream_success: np.ndarray | None = None
    """(N,) bool where the env has a notion of success: the dream succeeded (``episode_success``)."""
    real_success: np.ndarray | None = None
    """(N,) bool with real=True where the env has a notion of success: the real episode succeeded."""
    judge: str = ""
    """The judge that scored the dreams (``worldsim.envs.judges``), or empty: the world's heads did."""
    dream_head_return: np.ndarray | None = None
    """(N,) float with a judge: the reward head's return over the same dreamt steps."""
    dream_head_success: np.ndarray | None = None
    """(N,) bool with a judge, where the env knows success: the termination head's verdict (``episode_success``)."""

    def summary(self) -> dict[str, Any]:
        """Means, (population) standard deviations and 95% bootstrap intervals over episodes (``*_ci95``: [low,
        high]) of the returns; termination rates; where the env knows success, success rates and the mean highest
        per-step reward, each with its interval; with the real env the dream's return error: ``return_mae`` = mean
        |dream - real|, ``return_bias`` = mean (dream - real)."""
        out: dict[str, Any] = {"episodes": len(self.seeds)}
        out.update(_side_summary("dream", self.dream_return, self.dream_terminated, self.dream_max_reward,
                                 self.dream_success))  # fmt: skip
        if self.dream_head_return is not None:
            out["dream_head_return_mean"] = float(np.mean(self.dream_head_return))
        if self.dream_head_success is not None:
            out["dream_head_success_rate"] = float(np.mean(self.dream_head_success))
        if self.real_return is not None and self.real_terminated is not None and self.real_max_reward is not None:
            out.update(_side_summary("real", self.real_return, self.real_terminated, self.real_max_reward,
                                     self.real_success))  # fmt: skip
            error = self.dream_return - self.real_return
            out.update(return_mae=float(np.mean(np.abs(error))), return_bias=float(np.mean(error)))
        return out

    def per_episode(self) -> list[dict[str, Any]]:
        """One dict per episode: seed, dream return and termination (and the real ones); where the env knows
        success, also each side's highest per-step reward and success."""
        rows = []
        for i, seed in enumerate(self.seeds):
            row: dict[str, Any] = {
                "episode": i,
                "seed": seed,
                "dream_return": float(self.dream_return[i]),
                "dream_terminated": bool(self.dream_terminated[i]),
            }
            if self.dream_success is not None:
                row.update(dream_max_reward=float(self.dream_max_reward[i]), dream_success=bool(self.dream_success[i]))
            if self.real_return is not None and self.real_terminated is not None:
                row.update(real_return=float(self.real_return[i]), real_terminated=bool(self.real_terminated[i]))
                if self.real_success is not None and self.real_max_reward is not None:
                    row.update(real_max_reward=float(self.real_max_reward[i]), real_success=bool(self.real_success[i]))
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Everything but the frames, JSON-ready: what ``worldsim predict --json`` writes."""
        head: dict[str, Any] = {"world": self.world, "policy": self.policy, "horizon": self.horizon,
                                "frame_rate": self.frame_rate}  # fmt: skip
        if self.success_reward is not None:
            head["success_reward"] = self.success_reward
        if self.judge:
            head["judge"] = self.judge
        return {**head, **self.summary(), "per_episode": self.per_episode()}


def _side_summary(
    side: str, returns: np.ndarray, terminated: np.ndarray, max_reward: np.ndarray, success: np.ndarray | None
) -> dict[str, Any]:
    """One side's (``dream`` or ``real``) aggregate: ``{side}_return_mean`` ... ``{side}_max_reward_ci95``."""
    out: dict[str, Any] = {
        f"{side}_return_mean": float(np.mean(returns)),
        f"{side}_return_std": float(np.std(returns)),
        f"{side}_return_ci95": list(bootstrap_ci(returns)),
        f"{side}_termination_rate": float(np.mean(terminated)),
    }
    if success is not None:
        out.update(
            {
                f"{side}_success_rate": float(np.mean(success)),
                f"{side}_success_ci95": list(bootstrap_ci(success)),
                f"{side}_max_reward_mean": float(np.mean(max_reward)),
                f"{side}_max_reward_ci95": list(bootstrap_ci(max_reward)),
            }
        )
    return out


def episode_success(max_reward: np.ndarray, terminated: np.ndarray, source: SourceWorld) -> np.ndarray | None:
    """Which episodes succeeded, (N,) bool; None where the env has no notion of success. The one rule for the real
    env and the dream: where the env terminates exactly when it succeeds (PushT), an episode that terminated (in a
    dream: whose termination head fired; see the module docstring for why not the reward head); elsewhere one whose
    highest per-step reward reached ``success_reward``."""
    if source.success_reward is None:
        return None
    if source.success_terminates:
        return np.array(terminated, bool)
    return np.asarray(max_reward) >= source.success_reward - SUCCESS_TOLERANCE
