"""``Stats``: the counters of a play session, what the HUD shows and ``Viewer.run`` returns."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from worldsim.viewer.worker import Reset, Result


@dataclass
class Stats:
    """Counters the HUD shows and ``run`` returns."""

    shown: int = 0
    """New frames displayed (each one recorded with --record)."""
    model_steps: int = 0
    model_seconds: float = 0.0
    episode_return: float = 0.0
    reward: float = 0.0
    terminated: bool = False
    frame_index: int = 0
    sampler_steps: int = 0
    resets: int = 0
    shown_at: deque = field(default_factory=lambda: deque(maxlen=30))
    """perf_counter of the last frames displayed, for the HUD's displayed fps."""
    step_seconds: deque = field(default_factory=lambda: deque(maxlen=30))
    """Durations of the last world steps, for the HUD's model fps."""

    def add(self, r: Result) -> None:
        """Count one result of the worker."""
        self.sampler_steps, self.frame_index = r.sampler_steps, r.frame_index
        if r.frame is None:
            return
        self.reward, self.terminated = r.reward, r.terminated
        if isinstance(r.command, Reset):
            self.episode_return, self.resets = 0.0, self.resets + 1
        else:
            self.episode_return += r.reward
            self.model_steps += 1
            self.model_seconds += r.seconds
            self.step_seconds.append(r.seconds)

    def add_shown(self) -> None:
        """Count one new frame displayed."""
        self.shown += 1
        self.shown_at.append(time.perf_counter())

    @property
    def display_fps(self) -> float:
        t = self.shown_at
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    @property
    def model_fps(self) -> float:
        total = sum(self.step_seconds)
        return len(self.step_seconds) / total if total > 0 else 0.0
