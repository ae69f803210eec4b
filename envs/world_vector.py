"""A batch of generated worlds as one native Gymnasium VectorEnv: one engine call steps every sub-env.

``gymnasium.make_vec("worldsim/WorldModel-v0", num_envs=N, checkpoint=...)`` builds it. Sub-env i seeded
with ``seed + i`` produces the frames a single ``WorldModelEnv`` reset with that seed would (each world has
its own noise stream in the batch), and a sub-env whose episode ended starts over on the next ``step``
(``AutoresetMode.NEXT_STEP``) while the others go on, without recomputing their history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from worldsim.envs.world import START_OPTIONS, load_world
from worldsim.errors import InputError, WorldsimError


class WorldModelVectorEnv(VectorEnv):
    """N worlds of one checkpoint stepped together.

    ``reset(seed=s)`` seeds sub-env i with ``s + i`` (a list gives one seed per sub-env);
    ``reset(options={"start": frames})`` starts every sub-env from the same image or clip (uint8
    ``(H, W, 3)`` / ``(T, H, W, 3)``) or one per sub-env (``(N, T, H, W, 3)``); ``options["reset_mask"]``
    (bool ``(N,)``) restarts only the marked sub-envs. Autoresets reuse the last reset's start option
    (none: a shipped start context chosen by the sub-env's seed).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        checkpoint: str | Path,
        num_envs: int = 1,
        render_mode: str | None = None,
        device: str | torch.device = "cpu",
        sampler_steps: int | None = None,
        max_episode_steps: int | None = None,
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.world = load_world(checkpoint, device, precision, sampler_steps, compile)
        config = self.world.config
        self.metadata = {**self.metadata, "render_fps": int(config.frame_rate)}
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        H, W = self.world.frame_size

        self.single_observation_space = spaces.Box(0, 255, (H, W, 3), np.uint8)
        self.single_action_space = config.action.to_gym()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs = [seeding.np_random()[0] for _ in range(num_envs)]
        self._frames: np.ndarray | None = None
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._start: np.ndarray | None = None  # (N, T, H, W, 3) of the last reset, reused by autoresets

    # ----------------------------------------------------------------- Gymnasium API
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        options = dict(options or {})
        unknown = set(options) - START_OPTIONS - {"reset_mask"}
        if unknown:
            raise InputError(f"unknown reset option(s) {sorted(unknown)}; use {sorted(START_OPTIONS | {'reset_mask'})}")
        if options.get("text") is not None or options.get("actions") is not None:
            raise InputError("the vector env takes only 'start' and 'reset_mask' options")
        mask = np.ones(self.num_envs, dtype=bool) if options.get("reset_mask") is None else options["reset_mask"]
        mask = np.asarray(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != bool:
            raise InputError(f"options['reset_mask'] must be bool ({self.num_envs},), got {mask.dtype} {mask.shape}")
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise InputError(f"got {len(seeds)} seeds for {self.num_envs} sub-envs")
            for i in np.flatnonzero(mask):
                self._rngs[i] = seeding.np_random(seeds[i])[0]
        if "start" in options:
            self._start = self._batched_start(options["start"])
        elif self._start is None and self.world.starts.get("frames") is None:
            raise InputError("this checkpoint ships no start contexts: pass reset(options={'start': frames})")
        rows = [int(i) for i in np.flatnonzero(mask)]
        if self._frames is None or len(rows) == self.num_envs:
            generators = [self._generator(i) for i in range(self.num_envs)]
            self._frames = self.world.reset(self._start, generator=generators)
        elif rows:
            self._restart(rows)
        self._steps[mask] = 0
        self._autoreset[mask] = False
        return self._frames.copy(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._frames is None:
            raise WorldsimError("call reset() before step()")
        # One engine call for every world; the rows that autoreset now discard theirs and start over.
        out = self.world.step(actions)
        frames = out.frames.copy()
        reward = out.reward.astype(np.float64)
        terminated = out.terminated.copy()
        self._steps += 1
        truncated = (
            self._steps >= self.max_episode_steps
            if self.max_episode_steps is not None
            else np.zeros(self.num_envs, dtype=bool)
        )
        rows = [int(i) for i in np.flatnonzero(self._autoreset)]
        if rows:
            frames[rows] = self._restart(rows)
            reward[rows] = 0.0
            terminated[rows] = False
            truncated[rows] = False
            self._steps[rows] = 0
        self._frames = frames
        self._autoreset = terminated | truncated
        return frames.copy(), reward, terminated, truncated, {}

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array" or self._frames is None:
            return None
        return tuple(f.copy() for f in self._frames)

    # ----------------------------------------------------------------- helpers
    def _generator(self, i: int) -> torch.Generator:
        # Drawn from the sub-env's np_random exactly as WorldModelEnv draws it: same seed, same world.
        return torch.Generator().manual_seed(int(self._rngs[i].integers(2**63 - 1)))

    def _restart(self, rows: list[int]) -> np.ndarray:
        generators = [self._generator(i) for i in rows]
        start = None if self._start is None else self._start[rows]
        frames = self.world.reset_worlds(rows, generators, frames=start)
        assert self._frames is not None
        self._frames[rows] = frames
        return frames

    def _batched_start(self, start: Any) -> np.ndarray:
        if isinstance(start, np.ndarray) and start.ndim == 5:
            if len(start) != self.num_envs:
                raise InputError(f"options['start'] has {len(start)} clips for {self.num_envs} sub-envs")
            return np.concatenate([self._clip(clip) for clip in start])
        return np.repeat(self._clip(start), self.num_envs, axis=0)

    def _clip(self, start: Any) -> np.ndarray:
        """One start image or clip, checked by the engine -> (1, T, H, W, 3) at the world's frame size (so clips of
        several sizes batch)."""
        return self.world.check_frames(start, what="options['start']", one_world=True).cpu().numpy()
