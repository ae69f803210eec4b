"""A scripted PushT pusher: get behind the T, push it toward the goal, twist it by pushing off-centre.

It does not solve the task (that is what the human demonstrations of Diffusion Policy, Chi et al. 2023, are for);
it is a source of plausible, varied contact data: the block slides and turns across the table, the pusher circles
round it to re-approach, and noise plus random wandering take it through the rest of the space. Actions are
absolute targets in [0, 512]^2 for the env's PD controller, so each step's target is kept within ``max_step`` of the
pusher to keep its motion smooth.

``PosePusher`` decides from a ``PushTPose`` (where the pusher and the T are); where the pose comes from is its
subclasses' business. ``PushTPusher`` reads the true poses from the env (``env.unwrapped.agent``, ``.block``);
``worldsim.agents.pusht.pixels.PixelPusher`` reads them off the frame, so it can drive a dream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from worldsim.errors import InputError

SCALE, LENGTH = 30.0, 4.0
"""gym_pusht's T (``add_tee(scale=30)``, length 4): a 4x1 bar with a 1x3 stem below it, in units of ``SCALE``."""
BAR = ((-LENGTH * SCALE / 2, 0.0), (LENGTH * SCALE / 2, SCALE))
"""The bar's corners (x0, y0), (x1, y1) in the block's frame, world units; the stem hangs from y = SCALE."""
STEM = ((-SCALE / 2, SCALE), (SCALE / 2, LENGTH * SCALE))
"""The stem's corners in the block's frame: at angle 0 it points along +y (down the frame, as drawn)."""
COG_LOCAL = tuple(float(v) for v in (np.mean(BAR, axis=0) + np.mean(STEM, axis=0)) / 2)
"""The block's centre of gravity in its frame, (0, 45): ``add_tee`` sets the mean of the two rectangles' centres."""
GOAL_POSE = (256.0, 256.0, math.pi / 4)
"""gym_pusht's fixed goal pose (``goal_pose``): body position x, y and angle."""
BLOCK_REACH = 77.0
"""Farthest point of the T from its centre of gravity (gym_pusht ``add_tee`` with scale 30), world units."""
PUSHER_RADIUS = 15.0
"""gym_pusht's agent circle radius."""
TABLE = (20.0, 492.0)
"""Targets are kept inside the walls (at 5 and 506) with room for the pusher."""


@dataclass(frozen=True)
class PushTPose:
    """Where the pusher and the T are, in world units (the table is [0, 512]^2, y pointing down the frame)."""

    agent: np.ndarray
    """The pusher's centre, (2,)."""
    block_cog: np.ndarray
    """The T's centre of gravity, (2,): ``block.local_to_world(block.center_of_gravity)``."""
    block_angle: float
    """The T's angle in radians, as ``block.angle`` (any turn; 0: bar on top, stem pointing down the frame)."""


def pose_of(env: gymnasium.Env) -> PushTPose:
    """The true pose of a ``gym_pusht/PushT-v0`` env (wrapped or not)."""
    core = env.unwrapped
    block = core.block
    return PushTPose(
        agent=np.array(core.agent.position, dtype=np.float64),
        block_cog=np.array(block.local_to_world(block.center_of_gravity), dtype=np.float64),
        block_angle=float(block.angle),
    )


def pusht_state(env: gymnasium.Env) -> dict[str, float]:
    """What the recorder logs per frame of a PushT episode (``SourceWorld.probe``): the pusher's centre and the T's
    centre of gravity (world units) and angle (radians), so evaluations and auxiliary losses can use the true pose."""
    pose = pose_of(env)
    return {
        "agent_x": float(pose.agent[0]),
        "agent_y": float(pose.agent[1]),
        "block_x": float(pose.block_cog[0]),
        "block_y": float(pose.block_cog[1]),
        "block_angle": pose.block_angle,
    }


def wrap_angle(angle: float) -> float:
    """An angle in [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.hypot(*v))
    return v / n if n > 1e-6 else np.array([1.0, 0.0])


def toward(start: np.ndarray, target: np.ndarray, max_step: float) -> np.ndarray:
    """A target (2,) float32 on the table, on the way from ``start`` to ``target`` and at most ``max_step`` away."""
    step = target - start
    step *= min(1.0, max_step / max(float(np.hypot(*step)), 1e-6))
    return np.clip(start + step, *TABLE).astype(np.float32)


def _goal_cog() -> np.ndarray:
    """Where the T's centre of gravity is when the block sits on the goal."""
    gx, gy, gangle = GOAL_POSE
    c, s = math.cos(gangle), math.sin(gangle)
    return np.array([gx + c * COG_LOCAL[0] - s * COG_LOCAL[1], gy + s * COG_LOCAL[0] + c * COG_LOCAL[1]])


class PosePusher:
    """Push the T block toward its goal pose in ``gym_pusht/PushT-v0``, with noise, deciding from a ``PushTPose``.

    ``act(pose)`` gives the action for the pose seen now; subclasses are the policies, each reading the pose from
    somewhere (the env's state, the frame).

    Args:
        seed: seeds the noise and wandering; ``reset(seed)`` re-seeds.
        noise: probability per step of jittering the target by ``jitter`` (std, world units).
        wander_prob: per-step probability of leaving for a random point on the table for 5-20 steps.
        jitter: standard deviation of the target jitter, world units.
        max_step: the farthest a target is set from the pusher, world units (the table is 512 wide).
    """

    def __init__(
        self,
        seed: int | None = None,
        noise: float = 0.2,
        wander_prob: float = 0.02,
        jitter: float = 20.0,
        max_step: float = 30.0,
    ) -> None:
        if not (0.0 <= noise <= 1.0 and 0.0 <= wander_prob <= 1.0):
            raise InputError(f"noise ({noise}) and wander_prob ({wander_prob}) are probabilities in [0, 1]")
        if max_step <= 0 or jitter < 0:
            raise InputError(f"need max_step > 0 and jitter >= 0, got {max_step} and {jitter}")
        self.noise = noise
        self.wander_prob = wander_prob
        self.jitter = jitter
        self.max_step = max_step
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.pushing = False
        self.wander_left = 0
        self.wander_to = np.zeros(2)

    def act(self, pose: PushTPose) -> np.ndarray:
        """The target (2,) float32 for the env's PD controller, within ``max_step`` of the pusher."""
        agent = pose.agent
        if self.wander_left > 0:
            self.wander_left -= 1
            target = self.wander_to
        elif self.rng.random() < self.wander_prob:
            self.wander_left = int(self.rng.integers(5, 21))
            self.wander_to = self.rng.uniform(*TABLE, size=2)
            target = self.wander_to
        else:
            target = self._push_target(pose)
        if self.rng.random() < self.noise:
            target = target + self.rng.normal(0.0, self.jitter, size=2)
        return toward(agent, target, self.max_step)

    def _push_target(self, pose: PushTPose) -> np.ndarray:
        """Where to send the pusher now: round to the push point behind the block, or through the block."""
        agent, cog, angle = pose.agent, pose.block_cog, pose.block_angle
        to_goal = _goal_cog() - cog
        turn = wrap_angle(GOAL_POSE[2] - angle)
        # Close to the goal only the angle is left to fix: push sideways off the centre line to twist the block.
        direction = _unit(to_goal) if np.hypot(*to_goal) > 20.0 else np.array([math.cos(angle), math.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        # A push along `direction` applied `lever` to the `normal` side of the centre gives torque -lever, so to
        # turn by `turn` (> 0 counter-clockwise) push on the -normal side.
        lever = -float(np.clip(turn / (math.pi / 4), -1.0, 1.0)) * 35.0
        clearance = BLOCK_REACH + PUSHER_RADIUS + 10.0
        # Near a wall the ideal push point lies off the table; the clipped one is as far behind as the pusher gets.
        behind = np.clip(cog - direction * clearance + normal * lever, *TABLE)

        offset = agent - cog
        alignment = float(_unit(offset) @ -direction)  # 1: straight behind the block, -1: in front of it
        if self.pushing and alignment < math.cos(math.radians(50)):
            self.pushing = False  # slid off the back of the block: go round again
        at_push_point = np.hypot(*(agent - behind)) < 15.0
        already_behind = alignment > math.cos(math.radians(25)) and np.hypot(*offset) < clearance + 15.0
        if not self.pushing and (at_push_point or already_behind):
            self.pushing = True
        if self.pushing:
            # Push less deep near the goal so the block stops there instead of overshooting it.
            return cog + direction * float(np.clip(np.hypot(*to_goal), 10.0, 40.0)) + normal * lever

        # Going round: if the straight path to the push point cuts the block, aim for a point beside it first.
        if alignment < 0.3:
            side = 1.0 if float(_unit(offset) @ normal) >= 0 else -1.0
            return cog + (normal * side * (clearance + 5.0) - direction * 60.0)
        return behind


class PushTPusher(PosePusher):
    """The ``PosePusher`` on the true poses, read from the env every step (so it records data; it cannot drive a dream).

    Args:
        env: the PushT env (wrapped or not); read every step, so it must be the env being stepped.
        seed: seeds the noise and wandering; ``reset(seed)`` re-seeds.
        params: ``PosePusher``'s ``noise``, ``wander_prob``, ``jitter`` and ``max_step``.
    """

    def __init__(self, env: gymnasium.Env, seed: int | None = None, **params: float) -> None:
        if not hasattr(env.unwrapped, "add_tee"):  # PushTEnv's T builder; agent, block and goal exist only after reset
            raise InputError(f"the pusht pusher pushes gym_pusht/PushT-v0, not {env.spec.id if env.spec else env}")
        self.env = env
        super().__init__(seed, **params)

    def __call__(self, observation: Any = None) -> np.ndarray:
        return self.act(pose_of(self.env))
