"""Judges: task state read off frames, so a dream can be scored by the rule its real env scores by.

A world's heads guess reward and termination from its features; a judge instead reads the state a task is about
(PushT: where the T block is) off the pixels of any frame, real or dreamt, and applies the source env's own rule
to it (PushT: coverage of the goal, success at 95%). Because it reads only pixels, the same judge scores a real
episode and a dream of it, and it is validated on real frames, where the truth is known (``tests/test_judges.py``,
``docs/robotics.md``).

A source world names its judge in ``SourceWorld.judge`` (``envs/sources.py``); ``judge_for(env_id)`` builds it, or
refuses in one line where the source has none. What a judge offers:

* ``state(frames)``: named per-frame arrays (NaN where the frame shows no readable state);
* ``mask(frames)``: the task object's pixel mask, for overlap (IoU) between a dream and the real frames;
* ``state_errors(a, b)``: named per-frame errors between two states (PushT: position in table units, angle in
  degrees; inf where either side is unreadable);
* ``score(frames)``: the env's own graded score (PushT: coverage), ``success_score`` the level that means success;
  ``reward(frames)``: the env's reward for that state (PushT: clip(coverage / 0.95, 0, 1)).
"""

from __future__ import annotations

import importlib
import math
from typing import Protocol

import numpy as np

from worldsim.agents.pusht.pixels import PUSHER_BLUE, TEE_BLUE, TEE_GREEN_SHARE, read_pusht_pose
from worldsim.agents.pusht.pusher import BAR, COG_LOCAL, GOAL_POSE, STEM
from worldsim.envs.sources import source_world
from worldsim.errors import InputError


class Judge(Protocol):
    success_score: float
    STATE: tuple[str, ...]

    def state(self, frames: np.ndarray) -> dict[str, np.ndarray]: ...

    def mask(self, frames: np.ndarray) -> np.ndarray: ...

    def state_errors(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def score(self, frames: np.ndarray) -> np.ndarray: ...

    def reward(self, frames: np.ndarray) -> np.ndarray: ...


# ----------------------------------------------------------------------------- PushT's geometry
def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _rectangle(corners: tuple[tuple[float, float], tuple[float, float]]) -> np.ndarray:
    (x0, y0), (x1, y1) = corners
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


T_PARTS = (_rectangle(BAR), _rectangle(STEM))
"""The T as gym_pusht builds it (``add_tee``): two disjoint rectangles in the block's frame, world units."""


def tee_polygons(body: np.ndarray, angle: float) -> list[np.ndarray]:
    """The T's two rectangles (4, 2) on the table for a block body at ``body`` (x, y) turned by ``angle``."""
    rotation = _rotation(angle)
    return [part @ rotation.T + body for part in T_PARTS]


def body_from_cog(cog: np.ndarray, angle: float) -> np.ndarray:
    """The block body's position from its centre of gravity (what the pose reader and the probe report)."""
    return np.asarray(cog, dtype=np.float64) - _rotation(angle) @ np.array(COG_LOCAL)


def _area(polygon: np.ndarray) -> float:
    if len(polygon) < 3:
        return 0.0
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _clip(subject: np.ndarray, clipper: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the part of convex polygon ``subject`` inside convex polygon ``clipper``."""
    if _area(clipper) == 0.0:
        return subject[:0]
    # Orient the clipper counter-clockwise so "inside" is left of every edge.
    x, y = clipper[:, 0], clipper[:, 1]
    if float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) < 0:
        clipper = clipper[::-1]
    out = list(subject)
    for a, b in zip(clipper, np.roll(clipper, -1, axis=0)):
        if not out:
            break
        edge = b - a

        def side(p: np.ndarray, a: np.ndarray = a, edge: np.ndarray = edge) -> float:
            return float(edge[0] * (p[1] - a[1]) - edge[1] * (p[0] - a[0]))

        points, out = out, []
        for p, q in zip(points, points[1:] + points[:1]):
            sp, sq = side(p), side(q)
            if sp >= 0:
                out.append(p)
            if (sp >= 0) != (sq >= 0):
                out.append(p + (q - p) * (sp / (sp - sq)))
    return np.array(out).reshape(-1, 2)


GOAL_POLYGONS = tee_polygons(np.array(GOAL_POSE[:2]), GOAL_POSE[2])
GOAL_AREA = sum(_area(p) for p in GOAL_POLYGONS)


def pusht_coverage(cog: np.ndarray, angle: float) -> float:
    """gym_pusht's coverage: the share of the goal T's area the block covers (``PushTEnv._get_coverage``, computed
    with our own polygon clipping instead of shapely). The two parts of each T are disjoint, so the overlap of the
    two Ts is the sum of the four part-to-part overlaps."""
    block = tee_polygons(body_from_cog(cog, angle), angle)
    return sum(_area(_clip(b, g)) for b in block for g in GOAL_POLYGONS) / GOAL_AREA


def _wrap_degrees(radians: np.ndarray) -> np.ndarray:
    return np.degrees(np.abs((radians + math.pi) % (2 * math.pi) - math.pi))


class PushTJudge:
    """PushT's state and success read off frames: the project's pose reader (``read_pusht_pose``) for the pusher
    and the T, the T's colour for its mask, gym_pusht's geometry for coverage; success at 95% coverage, the env's
    rule (``success_threshold``)."""

    success_score = 0.95
    STATE = ("agent_x", "agent_y", "block_x", "block_y", "block_angle")
    """The keys of ``state`` (the names ``worldsim.agents.pusht.pusht_state`` logs, so recorded and read states
    compare key by key)."""

    def state(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Per frame of (N, H, W, 3) uint8: the pusher's centre, the T's centre of gravity (table units) and angle
        (radians); NaN where the T does not show (the pusher's alone where it does not: the T is read without it)."""
        values = np.full((len(frames), len(self.STATE)), np.nan)
        for i, frame in enumerate(frames):
            pose = read_pusht_pose(frame, require_pusher=False)
            if pose is not None:
                values[i] = [*pose.agent, *pose.block_cog, pose.block_angle]
        return {key: values[:, k] for k, key in enumerate(self.STATE)}

    def mask(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W) bool: the pixels that are mostly T block (its grey-blue, not the pusher's blue nor the goal's
        green), as the pose reader weighs them."""
        f = np.asarray(frames).astype(np.int16)
        blue = f[..., 2] - f[..., 0]
        green = f[..., 1] - f[..., 0]
        return (blue >= TEE_BLUE / 2) & (blue < PUSHER_BLUE[0]) & (green >= TEE_GREEN_SHARE / 2 * blue)

    def state_errors(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per frame: the T's position error (table units) and angle error (degrees, the shorter way round), the
        pusher's position error; inf where either side is unreadable (a dream that lost the T counts as wrong)."""
        block = np.hypot(a["block_x"] - b["block_x"], a["block_y"] - b["block_y"])
        angle = _wrap_degrees(a["block_angle"] - b["block_angle"])
        agent = np.hypot(a["agent_x"] - b["agent_x"], a["agent_y"] - b["agent_y"])
        return {k: np.where(np.isnan(v), np.inf, v) for k, v in (("block", block), ("angle", angle), ("agent", agent))}

    def score(self, frames: np.ndarray) -> np.ndarray:
        """Per frame: coverage of the goal by the T read off it (0 where the T is unreadable: a lost block covers
        nothing)."""
        return self.score_states(self.state(frames))

    def reward(self, frames: np.ndarray) -> np.ndarray:
        """Per frame: gym_pusht's reward for the state read off it, clip(coverage / 0.95, 0, 1)."""
        return np.clip(self.score(frames) / self.success_score, 0.0, 1.0)

    def score_states(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """Coverage of states (read or recorded), 0 where unreadable."""
        x, y, angle = state["block_x"], state["block_y"], state["block_angle"]
        return np.array(
            [0.0 if np.isnan(a) else pusht_coverage(np.array([u, v]), float(a)) for u, v, a in zip(x, y, angle)]
        )


def has_judge(env_id: str) -> bool:
    return bool(source_world(env_id).judge)


def judge_for(env_id: str, world: str = "") -> Judge:
    """The judge of ``env_id``'s source world (``SourceWorld.judge``, ``module:Class``); one line (InputError) where
    it has none."""
    spec = source_world(env_id).judge
    if not spec:
        raise InputError(
            f"{world or env_id}: its source env {env_id or '(none)'} has no judge that reads task state off frames "
            "(judges exist for: gym_pusht/PushT-v0)"
        )
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)()
