"""Pre-encoded latent cache: every frame of a dataset encoded once by a trained autoencoder.

Stored as fp16 ``episode_{i}`` datasets (N+1, C, h, w) in one HDF5 file with a fingerprint of the
source data and the autoencoder weights, so a stale cache is detected and rebuilt, never silently used.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from worldsim.data.reader import TrajectoryReader
from worldsim.data.schema import episode_name
from worldsim.inputs import resize_frames
from worldsim.models.autoencoder import FrameAutoencoder


def fingerprint(reader: TrajectoryReader, autoencoder: FrameAutoencoder, frame_size: tuple[int, int]) -> str:
    """Hash of the data file's identity and the autoencoder's weights."""
    h = hashlib.sha1()
    stat = os.stat(reader.path)
    h.update(f"{Path(reader.path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{reader.camera}|{frame_size}".encode())
    for key, value in sorted(autoencoder.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


class LatentStore:
    """Read side of the cache (opened lazily per process, like the reader)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def _open(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        return {"path": self.path, "_file": None, "_pid": None}

    def latents(self, episode: int, start: int, stop: int) -> np.ndarray:
        return self._open()[episode_name(episode)][start:stop]

    @staticmethod
    def matches(path: str | Path, key: str) -> bool:
        try:
            with h5py.File(path, "r") as f:
                return f.attrs.get("fingerprint") == key
        except OSError:
            return False


@torch.no_grad()
def build_latent_cache(
    reader: TrajectoryReader,
    autoencoder: FrameAutoencoder,
    path: str | Path,
    frame_size: tuple[int, int],
    batch_size: int = 256,
    progress: bool = True,
) -> LatentStore:
    """Encode every frame (posterior mean, scaled) unless an up-to-date cache is already at ``path``."""
    path = Path(path)
    key = fingerprint(reader, autoencoder, frame_size)
    if path.exists() and LatentStore.matches(path, key):
        return LatentStore(path)
    device = next(autoencoder.parameters()).device
    tmp = path.with_name(path.name + ".partial")
    with (
        h5py.File(tmp, "w") as f,
        tqdm(total=sum(reader.episode_frames), unit="frame", desc="encoding latents", disable=not progress) as bar,
    ):
        for e in range(len(reader)):
            n = reader.episode_frames[e]
            out = None
            for s in range(0, n, batch_size):
                frames = resize_frames(torch.from_numpy(reader.frames(e, s, min(n, s + batch_size))), frame_size)
                z = autoencoder.encode(frames.to(device)).float().cpu().numpy().astype(np.float16)
                if out is None:
                    out = f.create_dataset(episode_name(e), shape=(n, *z.shape[1:]), dtype=np.float16)
                out[s : s + len(z)] = z
                bar.update(len(z))
        f.attrs["fingerprint"] = key
    os.replace(tmp, path)
    return LatentStore(path)
