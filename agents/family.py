"""A family of frame-only CarRacing drivers of clearly different quality and style.

``worldsim eval``'s policy-shift part asks a world to rank policies it never saw: each member plays real tracks and
the dream of them, and the world's predicted returns should order (and size) the policies as the real ones do.
Every member sees only the frame, like ``RoadFollower`` (all but ``random`` are that follower with one thing
changed), so each can drive the real env and a dream alike. The CarRacing source adapter lists them
(``SourceWorld.policy_family`` in ``envs/sources.py``); ``--policy NAME`` picks one anywhere.

=============== =====================================================================================================
``road``        ``RoadFollower``: gas on half the straight steps
``road_slow``   gas on 15% of the straight steps: a cautious crawl
``road_fast``   gas on 90% of the straight steps: as fast as the follower can hold the road
``road_stopgo`` drives 60 steps, brakes 20, stands still with no input 30, again (``StopAndGo``)
``road_weave``  aims 0.12 frame widths left, then right, of the road's centre, switching every 12 steps (``Weaver``)
``road_brake``  the follower, but every 4th step brakes (``Braker``: a quarter of all steps)
``random``      uniform random actions (``worldsim.agents.policy.RandomPolicy``)
=============== =====================================================================================================

Steps are the world's (25 fps: two CarRacing physics steps each).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from worldsim.agents.carracing import BRAKE, NOTHING
from worldsim.agents.road_follower import RoadFollower


class StopAndGo:
    """Follows the road for ``drive_steps``, brakes for ``brake_steps``, waits ``wait_steps`` with no input; repeats.

    The braking is long enough to stop the car from the follower's cruising speed, so it stands still (a frame that
    does not change) for most of the wait: the pattern a player waiting at a junction makes.

    Args:
        env, seed: unused (the factory shape ``(env, seed)``); it is deterministic given what it sees.
        drive_steps, brake_steps, wait_steps: the length of each phase, in steps.
        gas_share: the follower's gas share while driving.
    """

    def __init__(
        self,
        env: Any = None,
        seed: int | None = None,
        drive_steps: int = 60,
        brake_steps: int = 20,
        wait_steps: int = 30,
        gas_share: float = 0.5,
    ) -> None:
        self.phases = (drive_steps, brake_steps, wait_steps)
        self.follower = RoadFollower(gas_share=gas_share)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.follower.reset(seed)
        self._t = 0

    def __call__(self, observation: Any) -> int:
        drive, brake, wait = self.phases
        t = self._t % (drive + brake + wait)
        self._t += 1
        if t < drive:
            return self.follower(observation)
        return BRAKE if t < drive + brake else NOTHING


class Weaver(RoadFollower):
    """A road follower whose aim swings between ``amplitude`` left and right of the road's centre line, switching
    every ``half_period`` steps: deliberate weaving, to and fro across the road.

    Args:
        amplitude: how far from the centre it aims, in frame widths (the road is about 0.25 wide at 64x64).
        half_period: steps on one side before it aims at the other.
        gas_share, env, seed: as for ``RoadFollower``.
    """

    def __init__(
        self,
        env: Any = None,
        seed: int | None = None,
        amplitude: float = 0.12,
        half_period: int = 12,
        gas_share: float = 0.5,
    ) -> None:
        self.amplitude, self.half_period = amplitude, half_period
        super().__init__(env, seed, gas_share=gas_share)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._t = 0

    def aim(self) -> float:
        return self.amplitude if (self._t // self.half_period) % 2 else -self.amplitude

    def __call__(self, observation: Any) -> int:
        action = super().__call__(observation)
        self._t += 1
        return action


class Braker:
    """A road follower that brakes on ``brake_share`` of all steps (evenly spread), whatever it sees.

    Args:
        brake_share: fraction of the steps that brake.
        gas_share, env, seed: as for ``RoadFollower`` (its gas share on the steps it drives).
    """

    def __init__(
        self, env: Any = None, seed: int | None = None, brake_share: float = 0.25, gas_share: float = 0.7
    ) -> None:
        self.brake_share = brake_share
        self.follower = RoadFollower(gas_share=gas_share)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.follower.reset(seed)
        self._credit = 0.0

    def __call__(self, observation: Any) -> int:
        self._credit += self.brake_share
        if self._credit >= 1.0:
            self._credit -= 1.0
            return BRAKE
        return self.follower(observation)


ROAD_FAMILY: dict[str, Callable[[Any, int | None], Any]] = {
    "road_slow": partial(RoadFollower, gas_share=0.15),
    "road_fast": partial(RoadFollower, gas_share=0.9),
    "road_stopgo": StopAndGo,
    "road_weave": Weaver,
    "road_brake": Braker,
}
"""The road follower's variants by name, as ``(env, seed)`` factories (``road`` itself and ``random`` are registered
beside them in ``worldsim.agents.policy``)."""
