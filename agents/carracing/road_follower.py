"""A CarRacing driver that sees only pixels: it can drive the real env and a dreamed one alike.

The scripted ``CarRacingDriver`` reads the true track from the env, so it cannot drive a world model. This one
looks at the frame the player sees: the grey road in a band ahead of the car (which CarRacing draws at the
horizontal centre, about three quarters down the playfield), steers toward the road's centre of mass there,
and keeps a moderate speed by pressing gas on a fixed share of the steps it is not steering. With no road in
view it turns the way it last turned until the road comes back. It is what ``worldsim eval`` uses to drive the
long dreams of the stability measurement, and what ``worldsim play --policy road`` drives the dream with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worldsim.agents.carracing.driver import GAS, LEFT, NOTHING, RIGHT

HUD_FRACTION = 0.125
"""CarRacing's bottom 12.5% is the black HUD bar, not playfield."""


def road_mask(frame: np.ndarray) -> np.ndarray:
    """Grey road pixels of uint8 RGB frames (..., H, W, 3): all channels close, mid brightness."""
    f = frame.astype(np.int16)
    spread = f.max(-1) - f.min(-1)
    mean = f.mean(-1)
    return (spread < 20) & (mean > 60) & (mean < 160)


class RoadFollower:
    """Steer toward the road seen ahead; gas on ``gas_share`` of the straight steps.

    Args:
        env: unused (policies are built as ``factory(env, seed)``); the driver reads observations only.
        seed: unused: the driver is deterministic given what it sees.
        gas_share: fraction of the steps without steering that press gas (speed without a speedometer).
        deadband: road offset from the car, as a fraction of the frame width, below which it does not steer.
        band: rows (fractions of the frame height) searched for road, ahead of the car.
    """

    def __init__(
        self,
        env: Any = None,
        seed: int | None = None,
        gas_share: float = 0.5,
        deadband: float = 0.06,
        band: tuple[float, float] = (0.45, 0.72),
    ) -> None:
        self.gas_share, self.deadband, self.band = gas_share, deadband, band
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self._last_turn = LEFT
        self._credit = 0.0

    def __call__(self, observation: Any) -> int:
        frame = np.asarray(observation)
        H, W = frame.shape[:2]
        rows = frame[int(self.band[0] * H) : int(self.band[1] * H)]
        cols = np.nonzero(road_mask(rows))[1]
        if len(cols) < max(2, W // 32):  # lost: keep turning the way it last turned, slowly
            return self._last_turn
        offset = (cols.mean() + 0.5) / W - 0.5
        if abs(offset) > self.deadband:
            self._last_turn = RIGHT if offset > 0 else LEFT
            return self._last_turn
        self._credit += self.gas_share
        if self._credit >= 1.0:
            self._credit -= 1.0
            return GAS
        return NOTHING
