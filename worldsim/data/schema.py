"""The trajectory file format: Minari's HDF5 layout, so Minari reads what we write and vice versa.

One file per dataset::

    /                         attrs: format, env_id, frame_rate, observation_space, action_space (JSON,
                              Minari's space serialisation), total_episodes, total_steps, captions (JSON,
                              below)
    /episode_{i}/             attrs: id, total_steps, seed
        observations          uint8 (N+1, H, W, 3), chunked, shuffle + gzip (lossless)
        actions               (N, ...) int64 for Discrete / MultiDiscrete, float32 for Box
        rewards               float32 (N,)
        terminations          bool (N,)
        truncations           bool (N,)

Step t of an episode goes from observation t to observation t+1 with ``actions[t]``; the world model
sees it per frame: frame t+1 is conditioned on ``actions[t]`` and carries ``rewards[t]`` and
``terminations[t]``, and frame 0 has the null action.

``captions`` maps an episode's index (a string) to its caption: one text for the whole episode, or a list of
``[start, end, text]`` spans of its frames (``end`` exclusive, ordered, not overlapping), as ``worldsim record
--captions`` writes them::

    {"0": "a red car", "1": [[0, 40, "a car on a gray road through green grass, accelerating"], [40, 90, "..."]]}
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from gymnasium import spaces

from worldsim.errors import InputError

FORMAT_NAME = "worldsim-trajectories"
FORMAT_VERSION = 1
EPISODE_PREFIX = "episode_"
STEP_KEYS = ("actions", "rewards", "terminations", "truncations")
FRAME_CHUNK = 16
"""Frames per HDF5 chunk: about one training clip, so a random window touches one or two chunks."""


def episode_name(index: int) -> str:
    return f"{EPISODE_PREFIX}{index}"


def episode_index(name: str) -> int | None:
    """``episode_12`` -> 12; anything else -> None."""
    if not name.startswith(EPISODE_PREFIX):
        return None
    tail = name[len(EPISODE_PREFIX) :]
    return int(tail) if tail.isdigit() else None


def space_to_json(space: Any) -> str:
    """Serialise a Box / Discrete / MultiDiscrete space exactly as ``minari.serialization`` does."""
    if isinstance(space, spaces.Box):
        data = {
            "type": "Box",
            "dtype": str(space.dtype),
            "shape": list(space.shape),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    elif isinstance(space, spaces.Discrete):
        data = {"type": "Discrete", "dtype": "int64", "start": int(space.start), "n": int(space.n)}
    elif isinstance(space, spaces.MultiDiscrete):
        data = {
            "type": "MultiDiscrete",
            "dtype": str(space.dtype),
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
        }
    else:
        raise TypeError(f"cannot serialise space {space!r}: use Box, Discrete or MultiDiscrete")
    return json.dumps(data)


def space_from_json(text: str | dict[str, Any]) -> Any:
    """Inverse of :func:`space_to_json` (also reads Minari's metadata)."""
    data = json.loads(text) if isinstance(text, str | bytes) else text
    kind = data.get("type")
    if kind == "Box":
        shape = tuple(data["shape"])
        dtype = np.dtype(data["dtype"])
        low = np.asarray(data["low"], dtype=dtype).reshape(shape) if np.ndim(data["low"]) else data["low"]
        high = np.asarray(data["high"], dtype=dtype).reshape(shape) if np.ndim(data["high"]) else data["high"]
        return spaces.Box(low, high, shape=shape, dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if kind == "MultiDiscrete":
        nvec = np.asarray(data["nvec"], dtype=np.int64)
        start = np.asarray(data.get("start", np.zeros_like(nvec)), dtype=np.int64)
        return spaces.MultiDiscrete(nvec, start=start)
    if kind == "Dict":
        return spaces.Dict({k: space_from_json(v) for k, v in data["subspaces"].items()})
    raise ValueError(f"unsupported space type {kind!r}")


def image_space(height: int, width: int) -> Any:
    return spaces.Box(0, 255, (height, width, 3), dtype=np.uint8)


CaptionSpan = tuple[int, int, str]
"""(start, end, text) over an episode's frames, ``end`` exclusive."""


def check_caption_spans(spans: Any, frames: int, where: str = "caption") -> list[CaptionSpan]:
    """Spans as ``(start, end, text)`` tuples, checked against an episode of ``frames`` frames (InputError)."""
    out: list[CaptionSpan] = []
    previous_end = 0
    for span in spans:
        if not (isinstance(span, list | tuple) and len(span) == 3 and isinstance(span[2], str)):
            raise InputError(f"{where}: a span must be [start, end, text], got {span!r}")
        start, end, text = int(span[0]), int(span[1]), span[2]
        if not (previous_end <= start < end <= frames):
            raise InputError(f"{where}: span [{start}, {end}) is out of order or outside the episode's {frames} frames")
        out.append((start, end, text))
        previous_end = end
    return out
