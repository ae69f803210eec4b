"""Helpers the training stages share: opening data, rollout images for TensorBoard."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from worldsim.config import comma_list
from worldsim.data.clips import ClipDataset
from worldsim.data.latents import LatentStore, build_latent_cache
from worldsim.data.reader import TrajectoryReader
from worldsim.envs.sources import source_world
from worldsim.errors import InputError
from worldsim.models.autoencoder import FrameAutoencoder
from worldsim.training.config import TrainConfig
from worldsim.training.loop import Distributed


def open_training_data(cfg: TrainConfig) -> tuple[TrajectoryReader, list[int]]:
    """The reader and the episode indices used for training (the last ``holdout`` are kept out)."""
    sources = open_training_files(cfg)
    if len(sources) > 1:
        raise InputError(f"--data takes one file for this stage, got {len(sources)}: {cfg.data}")
    return sources[0]


def open_training_files(cfg: TrainConfig, holdout_flag: str = "--holdout") -> list[tuple[TrajectoryReader, list[int]]]:
    """Every file of a comma-separated ``--data``: its reader and training episodes (the last ``holdout`` of each
    are kept out; ``holdout_flag`` is the option an error names)."""
    files = comma_list(cfg.data)
    if not files:
        raise InputError(
            "--data is required: a trajectory file from `worldsim record`, a Minari dataset, robomimic or LeRobot"
        )
    sources = []
    for f in files:
        reader = TrajectoryReader(f.strip(), camera=cfg.camera)
        n = len(reader)
        if cfg.holdout >= n:
            raise InputError(f"{holdout_flag} {cfg.holdout} leaves no training episodes ({n} in {f})")
        sources.append((reader, list(range(n - cfg.holdout))))
    return sources


def add_rollout(tb: Any, tag: str, frames: np.ndarray, step: int) -> None:
    """Log uint8 frames (T, H, W, 3) to TensorBoard's Images tab as one grid, 8 frames a row in time order.

    An animated GIF would need a private SummaryWriter method: the public ``add_video`` encodes through
    ``moviepy.editor``, which moviepy 2 removed (torch then logs nothing). A grid of frames is public API
    (``add_images``), needs no extra package, and shows the whole rollout at once, drift included.
    """
    if len(frames):
        tb.add_images(tag, frames, step, dataformats="NHWC")


def cached_latents(
    reader: TrajectoryReader, autoencoder: FrameAutoencoder, path: Path, frame_size: tuple[int, int], d: Distributed
) -> LatentStore:
    """The data's latents, encoded once into ``path`` by the main process (the others wait, then read it)."""
    if d.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        build_latent_cache(reader, autoencoder, path, frame_size, progress=sys.stderr.isatty())
    if d.world > 1:
        torch.distributed.barrier()
    return LatentStore(path)


class BucketedClips(Dataset):
    """Several datasets behind one index; ``buckets`` says which items may share a batch (one part each: one frame
    size, clip length and kind), ``bucket_weights`` how often each part's batches come (``StepBatchSampler``)."""

    def __init__(self, parts: list[Dataset], weights: list[float]) -> None:
        self.parts = parts
        sizes = np.array([len(p) for p in parts])  # type: ignore[arg-type]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.buckets = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in range(len(parts))]
        self.bucket_weights = list(weights)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[part][index - int(self.offsets[part])]


def share_weights(parts: list[ClipDataset], is_special: list[bool], share: float) -> list[float]:
    """Bucket weights giving the ``is_special`` parts (images, text-only clips) ``share`` of the steps together and
    the others the rest, each part in proportion to its number of clips."""
    sizes = [len(p) for p in parts]
    special = sum(n for n, x in zip(sizes, is_special) if x)
    plain = sum(n for n, x in zip(sizes, is_special) if not x)
    share = share if special else 0.0
    return [(share * n / special if x else (1 - share) * n / max(plain, 1)) for n, x in zip(sizes, is_special)]


def open_captioned(cfg: TrainConfig, holdout_flag: str = "--holdout") -> list[tuple[TrajectoryReader, list[int]]]:
    """Each file's reader and training episodes; every file must carry captions."""
    sources = open_training_files(cfg, holdout_flag)
    for reader, _ in sources:
        if not reader.captions:
            raise InputError(f"{reader.source} has no captions: record it with `worldsim record --captions`")
    return sources


def captioned_part(reader: TrajectoryReader, episodes: list[int], frames: int, latents: LatentStore) -> ClipDataset:
    """Clips of ``frames`` frames of one captioned file at its own size. A source's intro (CarRacing's zoom-in) is
    not what its captions describe: left out."""
    skip = round(source_world(reader.env_id).intro_seconds * reader.frame_rate)
    size = tuple(reader.frame_shape[:2])
    return ClipDataset(reader, frames, size, episodes=episodes, skip=skip, latents=latents)
