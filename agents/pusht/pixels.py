"""A PushT pusher that sees only pixels: it can push in the real env and in a dreamed one alike.

``read_pusht_pose`` reads the pusher and the T off one RGB frame of ``gym_pusht/PushT-v0`` (96x96 as rendered, or
resized, e.g. to a world's 64x64), in world units. The frame is the 512x512 table drawn without a y flip (pymunk's
``positive_y_is_up`` is False): pixel column i holds x = (i + 0.5) * 512 / W, row j holds y likewise. What is drawn:

* the table white, the walls LightGray, the goal T LightGreen: none of them bluer than red (b - r = 0);
* the T LightSlateGray, filled 1.2x lighter by gym_pusht's debug draw: b - r = 41 inside, 34 on its outline, with
  g - r about half of b - r; it is drawn over the goal;
* the pusher RoyalBlue, a 15-unit disc, drawn over the T: b - r = 160-177, g - r about a quarter of that.

So b - r measures how much of a pixel is T or pusher whatever it is blended with (resizing blends neighbours), and
g - r tells the two apart. The pusher is the weighted centroid of its blue. The T's angle comes from its edges, all
along its two axes: their gradients vote for it modulo a quarter turn. The T drawn at each of the four candidate
angles, with its centroid on the frame's, picks the angle that fits (the T is not symmetric under a half turn, so
this resolves the full angle). Round the pusher, which is drawn over the T, only pixels of the T's own colours count;
where part of the T is hidden there, the drawn T is moved till its visible part has the frame's centroid. (Image
moments alone, the long axis of the second moments and the sign of the third, were tried first: the T's two second
moments differ by only 1.6x, so a pusher hiding the end of the stem swung the axis by up to 35 degrees.)

Measured on 1,020 frames (random resets, the state pusher's episodes, the T on the goal, the pusher over the T),
largest errors (medians): at 96x96 the pusher 1.9 units (0.5), the centre of gravity 2.8 units (0.7), the angle 1.8
degrees (0.3); at 64x64 (``worldsim.inputs.resize_frames`` or cv2's INTER_AREA) 2.2 (0.6), 3.8 (0.7) and 1.6
degrees (0.3). ``tests/test_pusht_pixels.py`` holds every frame it reads to 4 units, 6 units and 4 degrees. A frame
takes 0.75 ms at 96x96 and 0.47 ms at 64x64 (one core of a busy 2-core CPU).

``PixelPusher`` is ``PosePusher`` (``worldsim.agents.pusht``) driven by it.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import numpy as np

from worldsim.agents.pusht.pusher import BAR, COG_LOCAL, PUSHER_RADIUS, STEM, PosePusher, PushTPose, toward, wrap_angle
from worldsim.errors import InputError

TABLE_SIZE = 512.0
"""gym_pusht draws a 512x512 world-unit table to the whole frame."""
PUSHER_BLUE = (60.0, 170.0)
"""b - r from which a pixel counts as pusher (above any T pixel's 41), and from which it is all pusher."""
TEE_BLUE = 38.0
"""b - r of a pixel that is all T (41 inside, 34 on the outline)."""
TEE_GREEN_SHARE = 0.49
"""g - r over b - r on the T (20 / 41); on the pusher it is 0.27, on the goal green it is unbounded."""
FAINT_PUSHER_SHARE = 0.38
"""Between the pusher's g - r share (0.27) and the T's (0.49): where no pusher is seen, bluer pixels count as T only
above it, so a faintly drawn pusher is not taken for part of the T."""
OUTLINE = 2.0
"""Width of the T's outline, drawn outside its polygon, world units."""
VISIBLE = 0.3
"""A pusher or T counts as seen when at least this share of its area shows."""
REACH = 84.0
"""Farthest the T's outline reaches from its centroid, world units (the stem end's corners: 82.7)."""

_AREAS = [(x1 - x0) * (y1 - y0) for (x0, y0), (x1, y1) in (BAR, STEM)]
TEE_AREA = float(sum(_AREAS))
"""The T's area, world units^2 (6300)."""
_CENTROID_Y = sum(a * (y0 + y1) / 2 for a, ((_, y0), (_, y1)) in zip(_AREAS, (BAR, STEM))) / TEE_AREA
COG_PAST_CENTROID = COG_LOCAL[1] - _CENTROID_Y
"""How far down the stem the centre of gravity lies from the T's centroid (4.3 units): ``add_tee`` averages the
two rectangles' centres without weighting them by area."""


def read_pusht_pose(frame: np.ndarray, require_pusher: bool = True) -> PushTPose | None:
    """The pusher's and the T's pose in world units, read off one uint8 RGB frame (H, W, 3) of any size.

    None when the pusher or the T does not show (less than ``VISIBLE`` of its area). With ``require_pusher=False``
    a frame whose pusher does not show (a dream that drew it faintly) still gives the T's pose, the pusher's centre
    then NaN: a judge of the T should not fail for want of the pusher.
    """
    H, W, _ = frame.shape
    unit = np.array([TABLE_SIZE / W, TABLE_SIZE / H])  # world units per pixel, x and y
    xs = (np.arange(W) + 0.5) * unit[0]  # pixel centres, world units
    ys = (np.arange(H) + 0.5) * unit[1]
    f = frame.astype(np.int16)
    blue = f[..., 2] - f[..., 0]  # (H, W); 0 on the table, the walls and the goal
    green = f[..., 1] - f[..., 0]

    pusher = np.clip((blue - PUSHER_BLUE[0]) / (PUSHER_BLUE[1] - PUSHER_BLUE[0]), 0.0, 1.0)
    seen = pusher.sum() * unit.prod() >= VISIBLE * math.pi * PUSHER_RADIUS**2
    if not seen and require_pusher:
        return None
    agent = _centroid(pusher, xs, ys) if seen else np.full(2, np.nan)

    tee = np.clip(blue / TEE_BLUE, 0.0, 1.0)
    # Blended with the pusher's blue (its g - r share 0.27); where no pusher shows, a faint one may still be drawn
    # (a dream's), so a pixel must be nearer the T's share than the pusher's to count.
    tee[green < (TEE_GREEN_SHARE / 2 if seen else FAINT_PUSHER_SHARE) * blue] = 0.0
    # Round the pusher the T may be hidden (the pusher is drawn over it), and the pusher's rim blended with the
    # goal's green and the white can look like T: only pixels of the T's own colours are kept there.
    # (H, W) world units; a pusher not seen is nowhere near (NaN compares False)
    from_pusher = np.hypot(xs[None, :] - agent[0], ys[:, None] - agent[1])
    near = from_pusher < PUSHER_RADIUS + 1.5 * unit.max()
    # The T's colours: fill (143, 163, 184) and outline (119, 136, 153); blends with white or green are redder.
    plain = (np.abs(blue - TEE_BLUE) <= 8) & (np.abs(green - TEE_GREEN_SHARE * blue) <= 4) & (f[..., 0] <= 150)
    hidden = near & ~plain
    tee[hidden] = 0.0
    if tee.sum() * unit.prod() < VISIBLE * TEE_AREA:
        return None

    quarter = _edge_angle(tee, ~(from_pusher <= PUSHER_RADIUS + 2.5 * unit.max()))  # NaN (no pusher): all trusted
    centroid = _centroid(tee, xs, ys)
    rows, cols = np.nonzero(np.hypot(xs[None, :] - centroid[0], ys[:, None] - centroid[1]) < REACH + unit.max())
    points = np.stack([xs[cols], ys[rows]], axis=1)  # (N, 2) world units: every pixel the T can cover
    seen, shown = tee[rows, cols], ~hidden[rows, cols]
    pixel = float(unit.mean())
    # The edges fix the angle up to a quarter turn; the T drawn at each of the four tells which one it is.
    fits = []
    for k in range(4):
        angle = wrap_angle(quarter + k * math.pi / 2)
        cog = centroid + COG_PAST_CENTROID * np.array([-math.sin(angle), math.cos(angle)])  # down the stem
        drawn = _tee_coverage(points, cog, angle, pixel) * shown
        fits.append((float(((drawn - seen) ** 2).sum()), angle, cog, drawn))
    _, angle, cog, drawn = min(fits, key=lambda fit: fit[0])
    if not shown.all():  # part of the T is hidden: move it till the part that shows has the frame's centroid
        cog = cog + seen @ points / seen.sum() - drawn @ points / max(drawn.sum(), 1e-6)
    return PushTPose(agent=agent, block_cog=cog, block_angle=angle)


def _centroid(weights: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Weighted centroid (x, y) of an (H, W) map on pixel centres ``xs`` (W,), ``ys`` (H,)."""
    m = weights.sum()
    return np.array([weights.sum(0) @ xs / m, weights.sum(1) @ ys / m])


def _edge_angle(tee: np.ndarray, trusted: np.ndarray) -> float:
    """The T's angle modulo a quarter turn, in [-pi/4, pi/4), from the directions of its edges in the (H, W) map.

    All the T's edges run along its two axes, so their normals' angles times four agree; each ``trusted`` pixel
    votes with its gradient to the fourth power (strong edges count most). A binomial blur and Scharr's derivative
    kernels (Scharr 2000) keep the vote unbiased on a pixel grid: plain central differences favour the grid's axes
    and diagonals, by up to 15 degrees on the 96x96 frames (whose resize samples rather than averages).
    """
    p = np.pad(tee, 2, mode="edge")  # (H + 4, W + 4)
    p = _taps(_taps(p, (1, 2, 1), 0), (1, 2, 1), 1)  # (H + 2, W + 2)
    gx = _taps(_taps(p, (3, 10, 3), 0), (-1, 0, 1), 1)  # (H, W)
    gy = _taps(_taps(p, (3, 10, 3), 1), (-1, 0, 1), 0)
    vote = ((gx + 1j * gy) ** 4)[trusted].sum()
    return float(np.angle(vote)) / 4


def _taps(x: np.ndarray, taps: tuple[int, int, int], axis: int) -> np.ndarray:
    """``x`` correlated with three taps along ``axis``, where they fit (one pixel shorter at each end)."""
    x = np.moveaxis(x, axis, 0)
    n = len(x)
    out = sum(t * x[i : n - 2 + i] for i, t in enumerate(taps) if t)
    return np.moveaxis(out, 0, axis)


def _tee_coverage(points: np.ndarray, cog: np.ndarray, angle: float, pixel: float) -> np.ndarray:
    """How much of a pixel of width ``pixel`` centred on each of ``points`` (N, 2) the T at (cog, angle) covers,
    outline included: from the signed distance to its two rectangles, ramped over one pixel."""
    c, s = math.cos(angle), math.sin(angle)
    local = (points - cog) @ np.array([[c, -s], [s, c]]) + COG_LOCAL  # rotate by -angle into the block's frame
    distance = np.full(len(points), np.inf)
    for (x0, y0), (x1, y1) in (BAR, STEM):
        qx = np.abs(local[:, 0] - (x0 + x1) / 2) - (x1 - x0) / 2  # > 0 outside the box along x
        qy = np.abs(local[:, 1] - (y0 + y1) / 2) - (y1 - y0) / 2
        box = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0)
        distance = np.minimum(distance, box)
    return np.clip(0.5 - (distance - OUTLINE) / pixel, 0.0, 1.0)


class PixelPusher(PosePusher):
    """``PosePusher`` on the pose read off each frame (``read_pusht_pose``): nothing but the frame is looked at.

    When the frame shows no pusher or no T it heads from its last target toward the table's centre, ``max_step`` a
    step, till it sees both again.

    Args:
        env: the env or the action space it acts in (``(env_or_action_space, seed)`` like every seeing policy);
            only checked to be PushT's: a Box of two (x, y) targets.
        seed: seeds the noise and wandering; ``reset(seed)`` re-seeds.
        params: ``PosePusher``'s ``noise``, ``wander_prob``, ``jitter`` and ``max_step``.
    """

    def __init__(self, env: Any = None, seed: int | None = None, **params: float) -> None:
        space = getattr(env, "action_space", env)
        if space is not None and not (isinstance(space, gymnasium.spaces.Box) and space.shape == (2,)):
            raise InputError(f"the pusht_pixels pusher sets (x, y) targets for gym_pusht/PushT-v0, not {space}")
        super().__init__(seed, **params)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.target = np.full(2, TABLE_SIZE / 2, dtype=np.float32)

    def __call__(self, observation: Any) -> np.ndarray:
        pose = read_pusht_pose(np.asarray(observation))
        if pose is None:
            self.target = toward(self.target, np.full(2, TABLE_SIZE / 2), self.max_step)
        else:
            self.target = self.act(pose)
        return self.target.copy()
