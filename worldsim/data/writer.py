"""Write trajectory files. Episodes are appended whole, so the file on disk is valid after each one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces

from worldsim.data.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    FRAME_CHUNK,
    check_caption_spans,
    episode_name,
    image_space,
    space_to_json,
)
from worldsim.errors import InputError


class TrajectoryWriter:
    """Appends episodes to ``path`` in Minari's HDF5 layout.

    The data goes to ``path + ".partial"`` and is renamed over ``path`` by :meth:`close`, which also
    runs when the writer is left through an exception (Ctrl-C included): the finished episodes are
    kept and nothing half-written ever carries the final name.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        env_id: str,
        frame_size: tuple[int, int],
        action_space: Any,
        frame_rate: int,
        overwrite: bool = False,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise InputError(f"{self.path} already exists: pass --overwrite or choose another --out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.frame_size = tuple(frame_size)
        self.action_space = action_space
        self._file = h5py.File(self.partial, "w", track_order=True)
        root = self._file.attrs
        root["format"] = FORMAT_NAME
        root["format_version"] = FORMAT_VERSION
        root["env_id"] = env_id
        root["frame_rate"] = int(frame_rate)
        root["observation_space"] = space_to_json(image_space(*self.frame_size))
        root["action_space"] = space_to_json(action_space)
        for key, value in (attrs or {}).items():
            root[key] = value
        self.episodes = 0
        self.steps = 0
        self._captions: dict[str, Any] = {}
        self._update_totals()

    def add_episode(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminations: np.ndarray,
        truncations: np.ndarray,
        seed: int | None = None,
        caption: str | list[tuple[int, int, str]] | None = None,
        infos: dict[str, np.ndarray] | None = None,
        attrs: dict[str, str | int | float] | None = None,
    ) -> int:
        """Append one episode (N+1 frames, N steps); returns its index.

        ``infos``: per-frame values (N+1 each, Minari's ``infos`` group: the reset's, then every step's);
        ``attrs``: extra attributes of the episode (e.g. the driving style that recorded it);
        ``caption``: one for the whole episode, or ``(start, end, text)`` spans of frames (``end`` exclusive).
        """
        obs = np.asarray(observations)
        n = len(obs) - 1
        if obs.dtype != np.uint8 or obs.ndim != 4 or obs.shape[1:] != (*self.frame_size, 3):
            raise InputError(
                f"observations must be uint8 (N+1, {self.frame_size[0]}, {self.frame_size[1]}, 3), "
                f"got {obs.dtype} {obs.shape}"
            )
        if n < 1:
            raise InputError("an episode needs at least one step")
        steps = {
            "actions": np.asarray(actions, dtype=np.int64 if _is_integer_space(self.action_space) else np.float32),
            "rewards": np.asarray(rewards, dtype=np.float32),
            "terminations": np.asarray(terminations, dtype=bool),
            "truncations": np.asarray(truncations, dtype=bool),
        }
        for key, value in steps.items():
            if len(value) != n:
                raise InputError(f"{key} has {len(value)} entries for {n} steps (observations hold N+1 frames)")
        if caption is not None and not isinstance(caption, str):
            caption = [list(span) for span in check_caption_spans(caption, n + 1)]
        index = self.episodes
        group = self._file.create_group(episode_name(index))
        group.attrs["id"] = index
        group.attrs["total_steps"] = n
        if seed is not None:
            group.attrs["seed"] = int(seed)
        group.create_dataset(
            "observations",
            data=obs,
            chunks=(min(FRAME_CHUNK, n + 1), *obs.shape[1:]),
            shuffle=True,
            compression="gzip",
            compression_opts=4,
        )
        for key, value in steps.items():
            # Minari appends to these, so they are resizable along time.
            group.create_dataset(key, data=value, chunks=True, maxshape=(None, *value.shape[1:]))
        for key, value in (infos or {}).items():
            value = np.asarray(value)
            if len(value) != n + 1:
                raise InputError(f"infos[{key!r}] has {len(value)} entries for {n + 1} frames")
            group.create_dataset(f"infos/{key}", data=value)
        for key, value in (attrs or {}).items():
            group.attrs[key] = value
        if caption:
            self._captions[str(index)] = caption
        self.episodes += 1
        self.steps += n
        self._update_totals()
        self._file.flush()
        return index

    def _update_totals(self) -> None:
        root = self._file.attrs
        root["total_episodes"] = self.episodes
        root["total_steps"] = self.steps
        root["captions"] = json.dumps(self._captions)

    def close(self) -> Path | None:
        """Finish the file; returns its path, or None when no episode was written (nothing is left)."""
        if self._file is None:
            return self.path
        self._file.close()
        self._file = None
        if self.episodes == 0:
            self.partial.unlink(missing_ok=True)
            return None
        os.replace(self.partial, self.path)
        return self.path

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_integer_space(space: Any) -> bool:
    return isinstance(space, spaces.Discrete | spaces.MultiDiscrete)
