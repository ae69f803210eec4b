"""A family of frame-only CarRacing drivers of clearly different quality and style.

``worldsim eval``'s policy-shift part asks a world to rank policies: each member plays real tracks and
the dream of them, and the world's predicted returns should order (and size) the policies as the real ones do.
Every member sees only the frame, like ``RoadFollower`` (all but ``random`` are that follower with one thing
changed), so each can drive the real env and a dream alike. The CarRacing source adapter lists them
(``SourceWorld.policy_family`` in ``envs/sources.py``); ``--policy NAME`` picks one anywhere.

=============== =====================================================================================================
``road``        ``RoadFollower``: gas on half the straight steps
``road_slow``   gas on 25% of the straight steps: a cautious pace
``road_fast``   gas on 90% of the straight steps: as fast as the follower can hold the road
``road_stopgo`` drives 60 steps, brakes 20 (to a standstill), waits 30 with no input, again
``road_weave``  every 20 steps a 5-step swerve, to the right, then to the left the next time; drives between
``road_brake``  gas on every straight step, but brakes 3 steps in every 12: a quarter of all steps
``random``      uniform random actions (``worldsim.agents.policy.RandomPolicy``)
=============== =====================================================================================================

Their mean real returns over 200 steps after the intro (tracks 5-8) are well apart: road_fast 198, road 172,
road_slow 125, road_weave 91, road_stopgo 46, road_brake 23, random -22. Steps are the world's (25 fps: two
CarRacing physics steps each). ``road_stopgo``, ``road_weave`` and ``road_brake``
are ``Routine``s: the follower on a fixed cycle of phases, some of which hold an action instead.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from worldsim.agents.carracing.driver import BRAKE, LEFT, NOTHING, RIGHT
from worldsim.agents.carracing.road_follower import RoadFollower
from worldsim.errors import InputError

Phase = tuple[int, int | None]
"""(steps, action) in a ``Routine``'s cycle: that action held for that many steps, or None: the road follower drives."""


class Routine:
    """A road follower on a fixed cycle of phases, some of which override it with a held action: stop-and-go, weaving
    and braking drivers are all one of these (see ``ROAD_FAMILY``).

    Args:
        env, seed: unused (the factory shape ``(env, seed)``); it is deterministic given what it sees.
        phases: the cycle, as ``(steps, action)`` pairs; action None hands those steps to the follower.
        gas_share: the follower's gas share on the straight steps it drives.
    """

    def __init__(
        self, env: Any = None, seed: int | None = None, phases: tuple[Phase, ...] = ((1, None),), gas_share: float = 0.5
    ) -> None:
        if not phases or any(steps < 1 for steps, _ in phases):
            raise InputError(f"a routine's phases need at least one step each, got {phases}")
        self.schedule = [action for steps, action in phases for _ in range(steps)]  # the cycle, step by step
        self.follower = RoadFollower(gas_share=gas_share)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.follower.reset(seed)
        self._t = 0

    def __call__(self, observation: Any) -> int:
        action = self.schedule[self._t % len(self.schedule)]
        self._t += 1
        return self.follower(observation) if action is None else action


ROAD_FAMILY: dict[str, Callable[[Any, int | None], Any]] = {
    "road_slow": partial(RoadFollower, gas_share=0.25),
    "road_fast": partial(RoadFollower, gas_share=0.9),
    "road_stopgo": partial(Routine, phases=((60, None), (20, BRAKE), (30, NOTHING))),
    "road_weave": partial(Routine, phases=((5, RIGHT), (15, None), (5, LEFT), (15, None))),
    "road_brake": partial(Routine, phases=((9, None), (3, BRAKE)), gas_share=1.0),
}
"""The road follower's variants by name, as ``(env, seed)`` factories (``road`` itself and ``random`` are registered
beside them in ``worldsim.agents.policy``)."""
