"""Crafter (Hafner, 2021) behind the Gymnasium API, so it records and trains like every other source world.

``crafter.Env`` speaks the old Gym protocol: ``reset() -> obs``, ``step(a) -> (obs, reward, done, info)`` and its
own space namedtuples. This wrapper owns the Gymnasium side (spaces, seeding, terminated vs truncated) and delegates
the world itself to crafter.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import crafter
import numpy as np
from gymnasium import Env, spaces


class CrafterEnv(Env[np.ndarray, np.int64]):
    """Crafter's open world: survive, gather, craft; +1 reward per new achievement, +-0.1 per health point.

    ## Action Space

    ``Discrete(17)``: crafter's actions in its order (``noop``, ``move_left``, ``move_right``, ``move_up``,
    ``move_down``, ``do``, ``sleep``, ``place_stone`` ... ``make_iron_sword``); ``action_names`` lists them.

    ## Observation Space

    ``Box(0, 255, (H, W, 3), uint8)``: the local top-down view above the inventory bar, ``size=(H, W)``.

    ## Episode End

    Terminated when the player dies (crafter reports ``discount == 0``); truncated at crafter's own
    ``length`` limit (10000 steps by default).

    ## Seeding

    ``reset(seed=s)`` seeds ``self.np_random`` and draws the world seed from it, so a reset seed fixes the world
    and every unseeded reset after it. The inner crafter env is rebuilt per episode (cheap next to world
    generation, ~0.8 s at the default 64x64 area) because crafter only takes its seed in the constructor.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        render_mode: str | None = None,
        size: tuple[int, int] = (64, 64),
        area: tuple[int, int] = (64, 64),
        length: int = 10000,
    ) -> None:
        """``size`` is the frame's (height, width); ``area`` the world's cells (smaller generates faster)."""
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.size = (int(size[0]), int(size[1]))
        self.area = (int(area[0]), int(area[1]))
        self.length = int(length)
        self.observation_space = spaces.Box(0, 255, (*self.size, 3), np.uint8)
        self.action_space = spaces.Discrete(len(crafter.constants.actions))
        self.action_names: list[str] = list(crafter.constants.actions)
        self._world: crafter.Env | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        world_seed = int(self.np_random.integers(2**31 - 1))
        # crafter's size is (width, height); its frames come out (height, width, 3).
        self._world = crafter.Env(
            area=self.area, size=(self.size[1], self.size[0]), length=self.length, seed=world_seed
        )
        obs = self._world.reset()
        return obs, {"world_seed": world_seed}

    def step(self, action: int) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict]:
        if self._world is None:
            raise RuntimeError("call reset() before step()")
        obs, reward, done, info = self._world.step(int(action))
        info["player_pos"] = np.array(info["player_pos"])  # crafter hands out its live position array
        terminated = bool(done and info["discount"] == 0)
        truncated = bool(done and not terminated)
        return obs, float(reward), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None or self._world is None:
            return None
        return self._world.render()
