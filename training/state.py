"""The task object's recorded state as a training signal for a world.

A source whose adapter names its object state (``SourceWorld.object_state``; PushT: the block's x, y and angle,
logged by the recorder's probe under each episode's ``infos``) gives two levers:

- **a state loss** (``--state-weight``): the DiT's state head reads each frame's pose from the frame's final
  features, at whatever noise level the frame has. At high noise the pose is not in the frame's own tokens: the
  network has to carry it from the context through the action, which is the dynamics a world that melts its object
  has not learnt;
- **moving clips oversampled** (``--moving-share``): a share of the batches drawn from the clips in which the object
  moves, which are few in data where a pusher mostly travels.

Features are standardised over the training episodes (an angle becomes its sine and cosine, standardised too), so
every feature weighs alike in the loss; the world's config keeps the names, means and scales so the head's output
can be read back in the source's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from worldsim.data.clips import ClipDataset
from worldsim.data.reader import TrajectoryReader
from worldsim.errors import InputError

MOVED = 0.05
"""A clip moves the object when a standardised feature travels more than this over the clip (summed over its
frames): about 4 table units or 3 degrees of PushT's block, a push and not a graze."""


@dataclass(frozen=True)
class StateFeatures:
    """The names, means and scales of a world's state features, in the head's output order."""

    names: list[str]
    mean: list[float]
    std: list[float]

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)


def raw_features(infos: dict[str, np.ndarray], keys: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """(names, (frames, k) array) of ``keys`` from one episode's infos; a key ending in ``angle`` becomes its sine
    and cosine (an angle's number wraps; a point on the circle does not)."""
    names, columns = [], []
    for key in keys:
        value = infos[key].astype(np.float64)
        if key.endswith("angle"):
            names += [f"sin {key}", f"cos {key}"]
            columns += [np.sin(value), np.cos(value)]
        else:
            names.append(key)
            columns.append(value)
    return names, np.stack(columns, axis=1)


def episode_features(
    reader: TrajectoryReader, episodes: list[int], keys: tuple[str, ...], source: str
) -> tuple[StateFeatures, dict[int, np.ndarray]]:
    """The standardised state of every frame of ``episodes``, and the statistics it was standardised with."""
    raw: dict[int, np.ndarray] = {}
    names: list[str] = []
    for e in episodes:
        infos = reader.infos(e)
        missing = [k for k in keys if k not in infos]
        if missing:
            raise InputError(
                f"{source}: episode {e} has no recorded {', '.join(missing)} (the object state the state levers "
                "need): record the data again with this version's recorder, or drop --state-weight/--moving-share"
            )
        names, raw[e] = raw_features(infos, keys)
    stacked = np.concatenate(list(raw.values()))
    spec = StateFeatures(names, stacked.mean(0).tolist(), np.maximum(stacked.std(0), 1e-6).tolist())
    return spec, {e: spec.standardise(v) for e, v in raw.items()}


class StateClips(Dataset):
    """``ClipDataset``'s clips with each frame's standardised state (``item["state"]``: (T, k)), and, with a
    ``moving_share``, two buckets (clips where the object moves, the others) that the step sampler draws from in
    that proportion (``training.loop.StepBatchSampler``)."""

    def __init__(self, clips: ClipDataset, state: dict[int, np.ndarray], moving_share: float = 0.0) -> None:
        self.clips = clips
        self.state = state
        T = clips.clip_frames
        travel = {e: np.abs(np.diff(v, axis=0)) for e, v in state.items()}  # (frames - 1, k) per episode
        self.moving = np.array(
            [
                travel[int(e)][s : s + T - 1].sum(0).max() > MOVED
                for e, s in zip(clips.window_episode, clips.window_start)
            ],
            dtype=bool,
        )
        if moving_share:
            moving, still = np.flatnonzero(self.moving), np.flatnonzero(~self.moving)
            if not len(moving) or not len(still):
                raise InputError(
                    f"--moving-share needs clips where the object moves and clips where it does not; this data has "
                    f"{len(moving)} and {len(still)}"
                )
            self.buckets = [moving, still]
            self.bucket_weights = [moving_share, 1.0 - moving_share]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.clips[index]
        e, s = self.clips.window(index)
        item["state"] = torch.from_numpy(self.state[e][s : s + self.clips.clip_frames])
        return item
