"""Training clips: windows of T consecutive frames that never cross an episode boundary.

A clip starting at frame s of an episode holds frames s..s+T-1 and, per frame (the project's
convention), the action that led to it, that transition's reward and termination; frame 0 of an
episode has the null action and zero reward. With a :class:`LatentStore` the clip carries
pre-encoded latents instead of pixels, so world training does not re-run the encoder every epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from worldsim.data.latents import LatentStore
from worldsim.data.reader import TrajectoryReader
from worldsim.errors import InputError
from worldsim.inputs import resize_frames


class ClipDataset(Dataset):
    """Map-style dataset over every window of ``clip_frames`` frames (every ``stride``-th start, none in the first
    ``skip`` frames of an episode)."""

    def __init__(
        self,
        reader: TrajectoryReader,
        clip_frames: int,
        frame_size: tuple[int, int] | None = None,
        episodes: list[int] | None = None,
        stride: int = 1,
        skip: int = 0,
        latents: LatentStore | None = None,
    ) -> None:
        if clip_frames < 1:
            raise InputError("clip_frames must be at least 1")
        self.reader = reader
        self.clip_frames = clip_frames
        self.frame_size = tuple(frame_size or reader.frame_shape[:2])
        self.latents = latents
        chosen = list(range(len(reader))) if episodes is None else list(episodes)
        lengths = reader.episode_frames
        self.episodes = [e for e in chosen if lengths[e] >= skip + clip_frames]
        if not self.episodes:
            longest = max((lengths[e] for e in chosen), default=0)
            skipped = f"{skip} skipped frames + " if skip else ""
            raise InputError(
                f"{reader.source}: all {len(chosen)} episodes are shorter than {skipped}a clip of {clip_frames} frames "
                f"(longest has {longest}); record longer episodes or lower --clip-frames"
            )
        # (episode, start) of every window, as two flat arrays (cheap to share with workers).
        eps, starts = [], []
        for e in self.episodes:
            s = np.arange(skip, lengths[e] - clip_frames + 1, stride)
            eps.append(np.full(len(s), e))
            starts.append(s)
        self.window_episode = np.concatenate(eps)
        self.window_start = np.concatenate(starts)
        # Per-step arrays are small: load them once.
        self._steps = {e: reader.steps(e) for e in self.episodes}
        self.has_captions = bool(reader.captions)

    def __len__(self) -> int:
        return len(self.window_start)

    def __getitem__(self, index: int) -> dict[str, Any]:
        e, s = int(self.window_episode[index]), int(self.window_start[index])
        T = self.clip_frames
        steps = self._steps[e]
        item: dict[str, Any] = {}
        if self.latents is not None:
            item["latents"] = torch.from_numpy(self.latents.latents(e, s, s + T).astype(np.float32))
        else:
            frames = torch.from_numpy(self.reader.frames(e, s, s + T))
            item["frames"] = resize_frames(frames, self.frame_size)
        # Frame j (episode frame s+j) was produced by step s+j-1; frame 0 of the episode by none.
        step_idx = np.arange(s - 1, s + T - 1)
        null = step_idx < 0
        safe = np.maximum(step_idx, 0)
        actions = steps["actions"][safe].copy()
        actions[null] = 0
        item["actions"] = torch.from_numpy(actions)
        item["action_null"] = torch.from_numpy(null)
        item["rewards"] = torch.from_numpy(np.where(null, 0.0, steps["rewards"][safe]).astype(np.float32))
        item["terminations"] = torch.from_numpy(np.where(null, False, steps["terminations"][safe]).astype(np.float32))
        if self.has_captions:
            item["caption"] = self.reader.caption(e, s, s + T)
        return item

    def window(self, index: int) -> tuple[int, int]:
        """(episode, first frame) of window ``index``."""
        return int(self.window_episode[index]), int(self.window_start[index])
