"""A PushT expert that plans with the env's own physics: the data's successes, and the skill ladder below them.

PushT (``gym_pusht/PushT-v0``) is quasi-static: the block stops the moment the pusher lets go, and the physics is
deterministic. So a planner that copies the true state into a private copy of the simulator can try candidate
pushes and know exactly where each leaves the block. ``PushTPlanner`` does that (sampling-based planning over push
primitives, in the spirit of the sampling MPC used for pushing in robotics): every decision it samples
``candidates`` primitives — go to a point just off the block's outline, then push across it along the inward
normal for a few steps — simulates each, and carries out the one that leaves the block's keypoints closest to
the goal's, open-loop (the simulator is exact, so the real env ends where the plan did). Where no primitive
improves, it takes a random one among the better half: greedy planning's way out of a local minimum.

Skill is a knob, which is what a policy-ranking dataset needs: fewer candidates plan worse, ``noise`` replaces a
share of the decisions with a random primitive, ``jitter`` shakes every target. The planner reads the true state
(``env.unwrapped``), so it records data; it cannot drive a dream (policies that see only pixels do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import gymnasium
import numpy as np

from worldsim.agents.pusht.pixels import read_pusht_pose
from worldsim.agents.pusht.pusher import BAR, COG_LOCAL, GOAL_POSE, PUSHER_RADIUS, STEM, TABLE, PushTPose, wrap_angle
from worldsim.config import ActionSpec
from worldsim.errors import InputError

SUBSTEPS = 10
"""Physics steps per env step: gym_pusht runs ``1 / (dt * control_hz)`` = 1 / (0.01 * 10) of them."""


@dataclass(frozen=True)
class Primitive:
    """One push: reach ``approach`` (through ``via`` when the way there crosses the block), then push to ``push``.

    Each point is held for its number of env steps.
    """

    targets: tuple[tuple[float, float], ...]
    """The pusher's absolute target at each env step, world units."""


class PushTPlanner:
    """Push the T onto its goal by planning each push in a private copy of the env's physics.

    Args:
        env: the PushT env being stepped (wrapped or not); its true state is read at every decision.
        seed: seeds the sampling, the noise and the jitter; ``reset(seed)`` re-seeds.
        candidates: primitives simulated per decision: the planner's skill (4: poor, 64: strong).
        noise: share of decisions that take a random primitive instead of the best one.
        jitter: standard deviation of a Gaussian shake of every target, world units.
    """

    def __init__(
        self,
        env: gymnasium.Env,
        seed: int | None = None,
        candidates: int = 48,
        lookahead: int = 4,
        noise: float = 0.0,
        jitter: float = 0.0,
    ) -> None:
        if not hasattr(env.unwrapped, "add_tee"):  # PushTEnv's T builder
            raise InputError(f"the PushT planner pushes gym_pusht/PushT-v0, not {env.spec.id if env.spec else env}")
        self.env = env
        self._setup(seed, candidates, lookahead, noise, jitter)

    def _setup(self, seed: int | None, candidates: int, lookahead: int, noise: float, jitter: float) -> None:
        if candidates < 1 or not 0.0 <= noise <= 1.0 or jitter < 0:
            raise InputError(f"need candidates >= 1, noise in [0, 1], jitter >= 0; got {candidates}, {noise}, {jitter}")
        from gym_pusht.envs.pusht import PushTEnv  # optional: the sources extra

        self.candidates = candidates
        self.lookahead = lookahead
        self.noise = noise
        self.jitter = jitter
        self.sim = PushTEnv(obs_type="state")  # the private copy of the physics the plans run in
        self.sim.reset(seed=0)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        elif not hasattr(self, "rng"):
            self.rng = np.random.default_rng()
        self.plan: list[tuple[float, float]] = []

    def state_of(self, observation: Any) -> _State:
        """What the planner plans from: here the env's true state (``PixelPlanner``: what a frame shows)."""
        return _read_state(self.env.unwrapped)

    def __call__(self, observation: Any = None) -> np.ndarray:
        if not self.plan:
            self.plan = list(self._decide(self.state_of(observation)).targets)
        target = np.asarray(self.plan.pop(0), dtype=np.float64)
        if self.jitter:
            target = target + self.rng.normal(0.0, self.jitter, size=2)
        return np.clip(target, *TABLE).astype(np.float32)

    # ------------------------------------------------------------------ deciding
    def _decide(self, state: _State) -> Primitive:
        now = _keypoint_error(state.block_pos, state.block_angle)
        primitives = [self._sample(state, now) for _ in range(self.candidates)]
        if self.rng.random() < self.noise:
            return primitives[0]
        outcomes = [self._simulate(state, p) for p in primitives]
        costs = np.array([_keypoint_error(o.block_pos, o.block_angle) for o in outcomes])
        # Two pushes ahead for the most promising few: a push that sets up a good next one beats a greedy one.
        for i in np.argsort(costs)[: self.lookahead]:
            after = outcomes[i]
            after_now = costs[i]
            follow = [self._sample(after, after_now) for _ in range(max(1, self.candidates // 4))]
            best_next = min(
                _keypoint_error(o.block_pos, o.block_angle) for o in map(partial(self._simulate, after), follow)
            )
            costs[i] = min(costs[i], best_next + 1.0)
        best = int(np.argmin(costs))
        if costs[best] > now - 0.5 and len(primitives) > 1:  # stuck: no push helps, so move on at random
            better_half = np.argsort(costs)[: max(1, len(primitives) // 2)]
            best = int(self.rng.choice(better_half))
        return primitives[best]

    def _sample(self, state: _State, error: float) -> Primitive:
        """A random push: a point on the T's outline, pushed along its inward normal (give or take 30°), shorter
        the closer the block is to the goal (``error``: its keypoint error now)."""
        local, normal = _outline_point(self.rng)
        c, s = math.cos(state.block_angle), math.sin(state.block_angle)
        rot = np.array([[c, -s], [s, c]])
        contact = state.block_pos + rot @ local
        direction = rot @ normal
        turn = self.rng.uniform(-math.pi / 6, math.pi / 6)
        ct, st = math.cos(turn), math.sin(turn)
        direction = np.array([ct * direction[0] - st * direction[1], st * direction[0] + ct * direction[1]])
        approach = contact - direction * (PUSHER_RADIUS + 8.0)
        # How far the block goes: the pusher's front meets the outline when its centre is a radius short of it.
        depth = self.rng.uniform(1.0, float(np.clip(error, 20.0, 60.0)))
        push = contact + direction * (depth - PUSHER_RADIUS)
        targets: list[tuple[float, float]] = []
        via = _detour(state, approach)
        if via is not None:
            targets += [tuple(via)] * 3
        targets += [tuple(approach)] * 3
        push_steps = int(self.rng.integers(2, 6))
        for k in range(1, push_steps + 1):
            targets.append(tuple(approach + (push - approach) * k / push_steps))
        return Primitive(tuple((float(np.clip(x, *TABLE)), float(np.clip(y, *TABLE))) for x, y in targets))

    def _simulate(self, state: _State, primitive: Primitive) -> _State:
        """The state the primitive leaves the env in."""
        sim = self.sim
        _write_state(sim, state)
        agent = sim.agent
        for target in primitive.targets:
            tx, ty = target
            for _ in range(SUBSTEPS):  # gym_pusht's PD control, as in PushTEnv.step
                vx, vy = agent.velocity
                px, py = agent.position
                agent.velocity = (
                    vx + (sim.k_p * (tx - px) - sim.k_v * vx) * sim.dt,
                    vy + (sim.k_p * (ty - py) - sim.k_v * vy) * sim.dt,
                )
                sim.space.step(sim.dt)
        return _read_state(sim)


# ---------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class _State:
    agent_pos: np.ndarray
    agent_vel: np.ndarray
    block_pos: np.ndarray
    block_angle: float
    block_vel: np.ndarray
    block_spin: float


def _read_state(core: Any) -> _State:
    return _State(
        np.array(core.agent.position, dtype=np.float64),
        np.array(core.agent.velocity, dtype=np.float64),
        np.array(core.block.position, dtype=np.float64),
        float(core.block.angle),
        np.array(core.block.velocity, dtype=np.float64),
        float(core.block.angular_velocity),
    )


def _write_state(sim: Any, state: _State) -> None:
    """A fresh space in that state: pymunk keeps contacts (and their impulses) from step to step, so a reused space
    would carry the last plan's contacts into the next and two simulations of one push would differ."""
    sim._setup()
    sim.agent.position = tuple(state.agent_pos)
    sim.agent.velocity = tuple(state.agent_vel)
    sim.block.angle = state.block_angle  # first: pymunk turns a body about its centre of gravity, moving its origin
    sim.block.position = tuple(state.block_pos)
    sim.block.velocity = tuple(state.block_vel)
    sim.block.angular_velocity = state.block_spin


KEYPOINTS = np.array(
    [(x, y) for (x0, y0), (x1, y1) in (BAR, STEM) for x in (x0, x1) for y in (y0, y1)], dtype=np.float64
)
"""The corners of the T's two rectangles in the block's frame: where the block is, in 8 points."""
GOAL = (np.array(GOAL_POSE[:2]), GOAL_POSE[2])


def _place(points: np.ndarray, pos: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]]) + pos


_GOAL_KEYPOINTS = _place(KEYPOINTS, *GOAL)


def _keypoint_error(pos: np.ndarray, angle: float) -> float:
    """Mean distance of the T's corners from where they are at the goal, world units (0: on the goal)."""
    return float(np.linalg.norm(_place(KEYPOINTS, pos, angle) - _GOAL_KEYPOINTS, axis=1).mean())


# The T's outline as segments with their outward normals, in the block's frame (the bar's underside only where the
# stem does not cover it).
(_BX0, _BY0), (_BX1, _BY1) = BAR
(_SX0, _SY0), (_SX1, _SY1) = STEM
_OUTLINE = (
    ((_BX0, _BY0), (_BX1, _BY0), (0.0, -1.0)),  # the bar's outer edge
    ((_BX1, _BY0), (_BX1, _BY1), (1.0, 0.0)),
    ((_BX0, _BY1), (_BX0, _BY0), (-1.0, 0.0)),
    ((_BX0, _BY1), (_SX0, _BY1), (0.0, 1.0)),
    ((_SX1, _BY1), (_BX1, _BY1), (0.0, 1.0)),
    ((_SX1, _SY0), (_SX1, _SY1), (1.0, 0.0)),
    ((_SX0, _SY1), (_SX0, _SY0), (-1.0, 0.0)),
    ((_SX0, _SY1), (_SX1, _SY1), (0.0, 1.0)),  # the stem's end
)
_LENGTHS = np.array([math.dist(a, b) for a, b, _ in _OUTLINE])


def _outline_point(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A uniform point on the T's outline and the inward normal there, in the block's frame."""
    i = int(rng.choice(len(_OUTLINE), p=_LENGTHS / _LENGTHS.sum()))
    a, b, outward = _OUTLINE[i]
    u = rng.uniform(0.1, 0.9)
    point = np.array(a) + u * (np.array(b) - np.array(a))
    return point, -np.array(outward)


BLOCK_REACH = 100.0
"""A circle around the block's centre of gravity that holds the whole T with the pusher's radius to spare."""


def _detour(state: _State, approach: np.ndarray) -> np.ndarray | None:
    """A waypoint beside the block when the straight way from the pusher to ``approach`` crosses it, else None."""
    c, s = math.cos(state.block_angle), math.sin(state.block_angle)
    cog = state.block_pos + np.array([[c, -s], [s, c]]) @ np.array(COG_LOCAL)  # the T's centre of gravity
    a, d = state.agent_pos, approach - state.agent_pos
    length = float(np.hypot(*d))
    if length < 1e-6:
        return None
    u = d / length
    along = float(np.clip((cog - a) @ u, 0.0, length))
    closest = a + u * along
    gap = float(np.hypot(*(cog - closest)))
    if gap > 80.0:
        return None
    side = np.array([-u[1], u[0]])
    if (closest - cog) @ side < 0:
        side = -side
    return cog + side * BLOCK_REACH


class PixelPlanner(PushTPlanner):
    """The planner from frames alone: the pose read off each frame (``read_pusht_pose``), the pusher's velocity
    from the last two frames, the block at rest (PushT is quasi-static). Its plans run in the same physics, so what
    it lacks against ``PushTPlanner`` is only what a frame does not show exactly: a few units of pose at 64x64.
    A factory ``(action_space, seed)`` shape, so it can drive a dream.

    When the frame shows no pusher or no T it keeps its current plan, or holds still.
    """

    def __init__(
        self,
        env: Any,
        seed: int | None = None,
        candidates: int = 48,
        lookahead: int = 4,
        noise: float = 0.0,
        jitter: float = 0.0,
        frame_rate: float = 10.0,
    ) -> None:
        space = getattr(env, "action_space", env)
        if ActionSpec.from_gym(space) != ActionSpec.from_gym(gymnasium.spaces.Box(0, 512, (2,), np.float32)):
            raise InputError(f"the PushT pixel planner acts in PushT's Box(0, 512, (2,)), not {space}")
        self.frame_rate = frame_rate
        self._setup(seed, candidates, lookahead, noise, jitter)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.last_pose: PushTPose | None = None
        self.pose: PushTPose | None = None

    def __call__(self, observation: Any = None) -> np.ndarray:
        self.last_pose, self.pose = self.pose, read_pusht_pose(np.asarray(observation))
        if self.pose is None and not self.plan:
            held = self.last_pose.agent if self.last_pose is not None else np.array([256.0, 256.0])
            return np.clip(held, *TABLE).astype(np.float32)
        return super().__call__(observation)

    def state_of(self, observation: Any) -> _State:
        pose = self.pose
        assert pose is not None  # __call__ plans only from a readable frame
        c, s = math.cos(pose.block_angle), math.sin(pose.block_angle)
        origin = pose.block_cog - np.array([[c, -s], [s, c]]) @ np.array(COG_LOCAL)
        moved = pose.agent - self.last_pose.agent if self.last_pose is not None else np.zeros(2)
        return _State(pose.agent, moved * self.frame_rate, origin, wrap_angle(pose.block_angle), np.zeros(2), 0.0)
