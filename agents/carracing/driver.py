"""A scripted CarRacing-v3 driver (discrete actions) that makes mistakes on purpose.

A world model learns what the data shows. A clean lap-follower never leaves the road, so its model has never seen
grass, skids or a car turned sideways, and falls apart the first time a player does. This driver follows the track
with pure pursuit (steer at a point a few tiles ahead, slow down before bends) and, on top of that, takes a random
action with probability ``noise`` each step and now and then goes on an *excursion*: a few dozen steps of one held
random action, or of deliberately steering off the road, after which pursuit brings it back to the track.

It reads the true car pose and the track from the env (``env.unwrapped.car``, ``env.unwrapped.track``), not pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np

from worldsim.errors import InputError

# CarRacing-v3 discrete actions. car_racing.py calls car.steer(-0.6) for action 1: the hull turns clockwise,
# i.e. to the driver's right (its docstring agrees: 1 steer right, 2 steer left).
NOTHING, RIGHT, LEFT, GAS, BRAKE = 0, 1, 2, 3, 4
EXCURSIONS = ("hold", "veer", "stop", "spin", "brake")
"""What ``CarRacingDriver`` can do besides following the road (see its docstring)."""
TRACK_HALF_WIDTH = 40 / 6.0
"""car_racing.TRACK_WIDTH: the road's half width in world units."""
STILL_SPEED = 1.0
"""Speed (world units per second, as ``car_state`` logs it) below which the car stands still."""


def car_speed(env: gymnasium.Env) -> float:
    """The car's speed, world units per second."""
    return float(np.hypot(*env.unwrapped.car.hull.linearVelocity))


def on_track(env: gymnasium.Env) -> bool:
    """Whether any wheel touches a road tile (the env's own notion; on grass every wheel's tile set is empty)."""
    return any(len(w.tiles) > 0 for w in env.unwrapped.car.wheels)


def _wrap(angle: float) -> float:
    """An angle in [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


class CarRacingDriver:
    """Pure-pursuit driver for ``CarRacing-v3`` with ``continuous=False``, plus noise and excursions.

    Args:
        env: the CarRacing env (wrapped or not); read every step, so it must be the env being stepped.
        seed: seeds the noise and excursions; ``reset(seed)`` re-seeds.
        noise: probability of a uniformly random action on any step.
        excursion_prob: per-step probability of starting an excursion while driving normally.
        excursion_steps: (min, max) length of an excursion, in steps (50 steps = 1 s).
        excursion_kinds: which excursions it takes, drawn uniformly: ``hold`` (one random action held), ``veer``
            (pursue a point beside the road: off it and back), ``stop`` (brake to a standstill and wait),
            ``spin`` (gas with the wheel held to one side), ``brake`` (a hard stamp on the brake at speed).
        veer_widths: (min, max) sideways offset of a ``veer``, in road half-widths (2 leaves the road).
        max_speed: speed limit on straights, world units per second (the road is ~13 units wide).
        min_speed: speed limit in the sharpest bends.
        lookahead: how far ahead the pursuit point sits, in track tiles (~3.5 units each), at standstill.
        deadband: heading error (radians) below which the driver stops steering and sees to its speed; discrete
            steering snaps back to centre on every other action, so a tight band spends the steps on steering.
    """

    def __init__(
        self,
        env: gymnasium.Env,
        seed: int | None = None,
        noise: float = 0.1,
        excursion_prob: float = 0.005,
        excursion_steps: tuple[int, int] = (20, 60),
        excursion_kinds: tuple[str, ...] = ("hold", "veer"),
        veer_widths: tuple[float, float] = (2.0, 4.0),
        max_speed: float = 110.0,
        min_speed: float = 40.0,
        lookahead: int = 6,
        deadband: float = 0.25,
    ) -> None:
        core = env.unwrapped
        if not hasattr(core, "car") or not hasattr(core, "continuous"):  # track and car exist only after reset
            raise InputError(f"the carracing driver drives CarRacing-v3, not {env.spec.id if env.spec else env}")
        if getattr(core, "continuous", True):
            raise InputError("the carracing driver uses discrete actions: make CarRacing-v3 with continuous=False")
        if not (0.0 <= noise <= 1.0 and 0.0 <= excursion_prob <= 1.0):
            raise InputError(f"noise ({noise}) and excursion_prob ({excursion_prob}) are probabilities in [0, 1]")
        if not (1 <= excursion_steps[0] <= excursion_steps[1]):
            raise InputError(f"excursion_steps must be (min, max) with 1 <= min <= max, got {excursion_steps}")
        unknown = set(excursion_kinds) - set(EXCURSIONS)
        if unknown or not excursion_kinds:
            raise InputError(f"excursion_kinds must be some of {', '.join(EXCURSIONS)}, got {excursion_kinds}")
        if not (0 < min_speed <= max_speed):
            raise InputError(f"need 0 < min_speed <= max_speed, got {min_speed} and {max_speed}")
        self.env = env
        self.noise = noise
        self.excursion_prob = excursion_prob
        self.excursion_steps = excursion_steps
        self.excursion_kinds = tuple(excursion_kinds)
        self.veer_widths = veer_widths
        self.max_speed = max_speed
        self.min_speed = min_speed
        self.lookahead = lookahead
        self.deadband = deadband
        self._track: list | None = None
        self._xy = np.zeros((0, 2))
        self._heading = np.zeros(0)
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.excursion_left = 0
        self.excursion_kind = ""
        self.excursion_action: int | None = None  # held during a "hold" or "spin" excursion
        self.excursion_offset = 0.0  # pursuit point's sideways shift during a "veer", world units (+ = left)

    @property
    def in_excursion(self) -> bool:
        return self.excursion_left > 0

    def __call__(self, observation: Any = None) -> int:
        if self.in_excursion:
            self.excursion_left -= 1
        elif self.rng.random() < self.excursion_prob:
            self._start_excursion()
        if self.rng.random() < self.noise:
            return int(self.rng.integers(5))
        if not self.in_excursion:
            return self._pursue(0.0)
        kind = self.excursion_kind
        if kind == "veer":
            return self._pursue(self.excursion_offset)
        if kind == "stop":  # brake until (nearly) still, then stand with no input, as a waiting player does
            return BRAKE if car_speed(self.env) > STILL_SPEED else NOTHING
        if kind == "spin":  # the wheel held to one side with the gas down, every other step (discrete steering)
            return self.excursion_action if self.excursion_left % 2 else GAS  # type: ignore[return-value]
        return self.excursion_action  # type: ignore[return-value]  # hold, brake

    def _start_excursion(self) -> None:
        self.excursion_left = int(self.rng.integers(self.excursion_steps[0], self.excursion_steps[1] + 1))
        self.excursion_kind = kind = str(self.rng.choice(self.excursion_kinds))
        self.excursion_action, self.excursion_offset = None, 0.0
        if kind == "hold":
            self.excursion_action = int(self.rng.integers(5))
        elif kind == "veer":
            side = 1.0 if self.rng.random() < 0.5 else -1.0
            self.excursion_offset = side * TRACK_HALF_WIDTH * self.rng.uniform(*self.veer_widths)
        elif kind == "spin":
            self.excursion_action = LEFT if self.rng.random() < 0.5 else RIGHT
        elif kind == "brake":
            self.excursion_action = BRAKE
            self.excursion_left = min(self.excursion_left, int(self.rng.integers(5, 21)))  # a stamp, not a stop

    def _track_geometry(self) -> None:
        """Cache the track's centre line and tangent headings; CarRacing builds a new track list every reset."""
        track = self.env.unwrapped.track
        if track is self._track:
            return
        self._track = track
        self._xy = np.array([(x, y) for _, _, x, y in track], dtype=np.float64)
        step = np.roll(self._xy, -1, axis=0) - self._xy
        self._heading = np.arctan2(step[:, 1], step[:, 0])

    def _pursue(self, offset: float) -> int:
        """Steer at a point ``lookahead`` tiles past the nearest (moved sideways by ``offset``); keep a speed limit."""
        self._track_geometry()
        car = self.env.unwrapped.car.hull
        pos = np.array(car.position, dtype=np.float64)
        speed = car_speed(self.env)
        n = len(self._xy)
        nearest = int(np.argmin(((self._xy - pos) ** 2).sum(axis=1)))
        ahead = (nearest + self.lookahead + int(speed / 25.0)) % n
        tangent = self._heading[ahead]
        target = self._xy[ahead] + offset * np.array([-math.sin(tangent), math.cos(tangent)])

        # The hull's forward axis is its local +y, i.e. world angle (angle + pi/2); err > 0 means target is to the left.
        to_target = target - pos
        err = _wrap(math.atan2(to_target[1], to_target[0]) - (car.angle + math.pi / 2))

        # Slow for the sharpest heading change within the next ~25 tiles: a bend needs braking well before it.
        window = self._heading[(nearest + np.arange(3, 8 + int(speed / 4.0))) % n]
        bend = max(abs(_wrap(h - self._heading[nearest])) for h in window)
        limit = self.max_speed - (self.max_speed - self.min_speed) * min(bend / (math.pi / 2), 1.0)

        if speed > limit + 5.0:
            return BRAKE
        if err > self.deadband:
            return LEFT
        if err < -self.deadband:
            return RIGHT
        if speed < limit:
            return GAS
        return NOTHING


def car_state(env: gymnasium.Env) -> dict[str, float]:
    """What the recorder logs per frame of a CarRacing episode for its data card: speed (world units per second)
    and whether the car touches the road."""
    return {"speed": car_speed(env), "on_track": float(on_track(env))}


def car_stands_still(state: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """CarRacing's rule for standing still (``SourceWorld.still``): per frame of ``car_state``'s log (``{name: (T,)
    array}``), whether the car's speed is below ``STILL_SPEED``; None where the log has no speed."""
    speed = state.get("speed")
    return None if speed is None else np.asarray(speed) < STILL_SPEED
