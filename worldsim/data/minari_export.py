"""Expose a worldsim trajectory file as a Minari dataset (metadata.json + main_data.hdf5)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py

from worldsim.errors import InputError

MINARI_FALLBACK_VERSION = "0.5.4"


def export_minari(h5_path: str | Path, dataset_id: str, root: str | Path | None = None) -> Path:
    """Make ``<root>/<dataset_id>/data`` hold our file; returns that directory.

    ``root`` defaults to Minari's datasets folder (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``),
    after which ``minari.load_dataset(dataset_id)`` opens it. The file is hard-linked when possible.
    """
    src = Path(h5_path)
    if not h5py.is_hdf5(src):
        raise InputError(f"{src} is not an HDF5 file")
    with h5py.File(src, "r") as f:
        attrs = dict(f.attrs)
    if "observation_space" not in attrs or "action_space" not in attrs:
        raise InputError(f"{src} was not written by worldsim record (no spaces in its root attributes)")
    if root is None:
        root = os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets")
    data_dir = Path(root) / dataset_id / "data"
    if data_dir.exists():
        raise InputError(f"{data_dir} already exists: delete it or choose another dataset id")
    data_dir.mkdir(parents=True)
    target = data_dir / "main_data.hdf5"
    try:
        os.link(src, target)
    except OSError:
        shutil.copyfile(src, target)
    try:
        from minari import __version__ as minari_version  # optional: the sources extra
    except ImportError:
        minari_version = MINARI_FALLBACK_VERSION
    metadata = {
        "dataset_id": dataset_id,
        "minari_version": minari_version,
        "total_episodes": int(attrs["total_episodes"]),
        "total_steps": int(attrs["total_steps"]),
        "data_format": "hdf5",
        "jpeg_encoding": False,
        "observation_space": str(attrs["observation_space"]),
        "action_space": str(attrs["action_space"]),
        "dataset_size": round(target.stat().st_size / 1e6, 1),
        "description": f"Recorded from {attrs.get('env_id', '?')} by worldsim at {attrs.get('frame_rate', '?')} fps",
    }
    (data_dir / "metadata.json").write_text(json.dumps(metadata))
    return data_dir
