"""The documented mix of PushT behaviours behind ``worldsim record --policy pusht_mix``.

A world that ranks robot policies has to have seen successes, near misses and plain failures, so the data is
recorded by policies of very different skill, one drawn per episode by the episode's seed:

============ ======= ===================================================================================
style        weight  what it is
============ ======= ===================================================================================
expert       0.30    ``PushTPlanner``, 48 candidates, 2-push lookahead of the best 4: ~80% success
good         0.15    the planner, 24 candidates, lookahead of the best 2
medium       0.15    the planner, 16 candidates, greedy: near misses (~10% success)
weak         0.10    the planner, 8 candidates, greedy, a random push in 30% of the decisions: failures
shaky        0.10    the expert with every target shaken by 12 units (std)
heuristic    0.10    ``PushTPusher``: the hand-written push-from-behind rule, with its default noise
wander       0.05    a smooth random walk of the pusher's target: contact by chance
random       0.05    uniform random targets (``RandomPolicy``): the pusher jumps across the table
============ ======= ===================================================================================

Every style but ``expert`` first holds still for 0-20 steps (the pusher stays where it is), so the world also
sees a robot that waits. The learned (behaviour-cloning) policies are recorded into their own file by their own
names; see the PushT world's model card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

from worldsim.agents.policy import RandomPolicy, check_style_weights, draw_style
from worldsim.agents.pusht.planner import PushTPlanner
from worldsim.agents.pusht.pusher import TABLE, PushTPusher


@dataclass(frozen=True)
class PushTStyle:
    name: str
    weight: float
    make: Callable[[gymnasium.Env, int], Any]
    """``(env, seed) -> policy``."""
    start_still: tuple[int, int] = (0, 20)
    """Steps (inclusive range) the pusher holds still at the start of the episode."""
    notes: dict[str, Any] = field(default_factory=dict)


def _planner(**kwargs: Any) -> Callable[[gymnasium.Env, int], Any]:
    def make(env: gymnasium.Env, seed: int) -> Any:
        return PushTPlanner(env, seed, **kwargs)

    return make


def _heuristic(env: gymnasium.Env, seed: int) -> Any:
    return PushTPusher(env, seed)


def _random(env: gymnasium.Env, seed: int) -> Any:
    return RandomPolicy(env, seed)


class RandomWalk:
    """The pusher's target drifts by a smooth random walk (speed up to ``speed`` units a step), bouncing off the
    walls: it wanders the table and touches the block only by chance."""

    def __init__(self, env: gymnasium.Env, seed: int | None = None, speed: float = 25.0) -> None:
        self.env, self.speed = env, speed
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.target: np.ndarray | None = None
        self.velocity = self.rng.normal(0.0, self.speed / 2, size=2)

    def __call__(self, observation: Any = None) -> np.ndarray:
        if self.target is None:
            self.target = np.array(self.env.unwrapped.agent.position, dtype=np.float64)
        self.velocity = 0.8 * self.velocity + self.rng.normal(0.0, self.speed / 3, size=2)
        self.velocity *= min(1.0, self.speed / max(float(np.hypot(*self.velocity)), 1e-6))
        self.target = self.target + self.velocity
        outside = (self.target < TABLE[0]) | (self.target > TABLE[1])
        self.velocity[outside] *= -1
        self.target = np.clip(self.target, *TABLE)
        return self.target.astype(np.float32)


PUSHT_STYLES: tuple[PushTStyle, ...] = (
    PushTStyle("expert", 0.30, _planner(candidates=48, lookahead=4), start_still=(0, 0)),
    PushTStyle("good", 0.15, _planner(candidates=24, lookahead=2)),
    PushTStyle("medium", 0.15, _planner(candidates=16, lookahead=0)),
    PushTStyle("weak", 0.10, _planner(candidates=8, lookahead=0, noise=0.3)),
    PushTStyle("shaky", 0.10, _planner(candidates=48, lookahead=4, jitter=12.0)),
    PushTStyle("heuristic", 0.10, _heuristic),
    PushTStyle("wander", 0.05, RandomWalk),
    PushTStyle("random", 0.05, _random),
)


class PushTMix:
    """A different PushT style every episode, drawn from ``PUSHT_STYLES`` by the episode's seed; ``episode_attrs``
    names it (the recorder stores it with the episode)."""

    def __init__(self, env: gymnasium.Env, seed: int | None = None, styles: tuple[PushTStyle, ...] = PUSHT_STYLES):
        check_style_weights(styles, "PushT style")
        self.env, self.styles = env, styles
        self._made: dict[str, Any] = {}
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.style, self.still_left, sub_seed, _ = draw_style(self.styles, seed)
        if self.style.name not in self._made:  # one instance per style: the planner's simulator is built once
            self._made[self.style.name] = self.style.make(self.env, sub_seed)
        self.policy = self._made[self.style.name]
        self.policy.reset(sub_seed)
        self.hold: np.ndarray | None = None

    @property
    def episode_attrs(self) -> dict[str, str]:
        return {"style": self.style.name}

    def __call__(self, observation: Any = None) -> np.ndarray:
        if self.still_left > 0:
            self.still_left -= 1
            if self.hold is None:
                self.hold = np.array(self.env.unwrapped.agent.position, dtype=np.float32)
            return self.hold.copy()
        return self.policy(observation)
