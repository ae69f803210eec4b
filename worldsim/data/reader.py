"""Read trajectories from our files, Minari datasets, robomimic files and LeRobot datasets through one interface.

``TrajectoryReader(source)`` accepts

* a worldsim ``.h5`` file (or any HDF5 file in Minari's layout, e.g. a Minari ``main_data.hdf5``);
* a Minari dataset directory (holding ``metadata.json`` + ``main_data.hdf5``, or its parent with a
  ``data/`` folder) or a Minari dataset id such as ``pusht/expert-v0`` (needs ``minari`` installed and
  the dataset downloaded; JPEG-encoded frames are decoded);
* a robomimic file (``data/demo_N/obs/<camera>`` images and ``data/demo_N/actions``);
* a LeRobot dataset directory (``meta/info.json``, parquet tables, mp4 or image cameras; codebase v2.0, v2.1 and
  v3.0), read as a format without the ``lerobot`` package (see :mod:`worldsim.data.lerobot`).

Every episode is exposed as N+1 frames and N steps. Files are opened lazily and per process, so a
reader can be shared with DataLoader workers.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces
from PIL import Image

from worldsim.data.lerobot import INFO_FILE as LEROBOT_INFO_FILE
from worldsim.data.lerobot import LeRobotSource, is_lerobot
from worldsim.data.schema import CaptionSpan, check_caption_spans, episode_index, space_from_json
from worldsim.errors import InputError

DEFAULT_FRAME_RATE = 15
MINARI_DATA_FILE = "main_data.hdf5"
MINARI_METADATA_FILE = "metadata.json"


@dataclass
class _Episode:
    """Where one episode's arrays live inside the file."""

    group: str
    frames: str
    """Dataset path of the frames (N+1 of them, or N when ``last_frame`` holds the final one)."""
    steps: int
    last_frame: str | None = None
    """robomimic keeps the final frame only in ``next_obs``."""
    step_keys: dict[str, str] = field(default_factory=dict)
    seed: int | None = None


class TrajectoryReader:
    """Uniform, read-only view of a trajectory dataset; see the module docstring for the sources.

    Besides the episodes it says what the file records of where they came from: ``env_id`` (empty when unknown),
    ``frame_rate`` (frames per second), ``frame_skip`` (env steps per recorded step, None when the file does not
    say), ``action_space`` (None when unknown), ``frame_shape`` (of the stored frames) and ``captions``.
    """

    def __init__(self, source: str | Path, camera: str | None = None) -> None:
        self.source = str(source)
        self.camera = camera
        self._pid: int | None = None
        self._file: h5py.File | None = None
        self._lerobot: LeRobotSource | None = None
        if is_lerobot(Path(self.source)):
            self.kind = "lerobot"
            self._init_lerobot(Path(self.source))
        else:
            self.path, metadata = _locate(self.source)
            f = self._open()
            self.kind = "robomimic" if "data" in f and _is_robomimic(f["data"]) else "minari"
            if self.kind == "robomimic":
                self._init_robomimic(f)
            else:
                self._init_minari(f, metadata)
        if not self.episodes:
            raise InputError(f"{self.source} holds no episodes")
        self.frame_shape = self._probe_frame_shape()
        self.captions = self._caption_spans(getattr(self, "_raw_captions", {}))

    # ----------------------------------------------------------------- layout discovery
    def _init_minari(self, f: h5py.File, metadata: dict[str, Any]) -> None:
        names = sorted((i, k) for k in f if (i := episode_index(k)) is not None)
        if not names:
            raise InputError(
                f"{self.source} is HDF5 but has no episode_* groups (Minari layout) or data/demo_* (robomimic)"
            )
        attrs = dict(f.attrs)
        self.env_id = str(attrs.get("env_id", metadata.get("dataset_id", "")))
        self.frame_rate = int(attrs.get("frame_rate", DEFAULT_FRAME_RATE))
        skip = attrs.get("frame_skip")  # written by `worldsim record`
        self.frame_skip = None if skip is None else int(skip)
        space = attrs.get("action_space", metadata.get("action_space"))
        self.action_space = space_from_json(space) if space is not None else None
        self._raw_captions = json.loads(attrs.get("captions", "{}"))
        self.episodes = []
        for _, name in names:
            group = f[name]
            frames = self._frames_key(group, name)
            missing = [k for k in ("actions", "rewards", "terminations", "truncations") if k not in group]
            if missing:
                raise InputError(f"{self.source}: {name} has no {', '.join(missing)} (not Minari's layout)")
            seed = group.attrs.get("seed")
            self.episodes.append(
                _Episode(
                    group=name,
                    frames=frames,
                    steps=len(group["actions"]),
                    step_keys={k: f"{name}/{k}" for k in ("actions", "rewards", "terminations", "truncations")},
                    seed=None if seed is None else int(seed),
                )
            )

    def _frames_key(self, group: h5py.Group, name: str) -> str:
        if "observations" not in group:
            raise InputError(f"{self.source}: {name} has no observations")
        obs = group["observations"]
        if isinstance(obs, h5py.Dataset):
            return f"{name}/observations"
        keys = [k for k in obs if isinstance(obs[k], h5py.Dataset)]
        if self.camera is not None:
            if self.camera not in keys:
                raise InputError(f"{self.source}: no observation key {self.camera!r} (has: {', '.join(keys)})")
            return f"{name}/observations/{self.camera}"
        images = [k for k in keys if _looks_like_images(obs[k])]
        preferred = [k for k in images if k in ("pixels", "image", "rgb")] or images
        if not preferred:
            raise InputError(f"{self.source}: no image observations among {', '.join(keys)}; pass --camera KEY")
        return f"{name}/observations/{preferred[0]}"

    def _init_robomimic(self, f: h5py.File) -> None:
        data = f["data"]
        env_args = json.loads(data.attrs.get("env_args", "{}") or "{}")
        self.env_id = str(env_args.get("env_name", "robomimic"))
        self.frame_rate = int(env_args.get("env_kwargs", {}).get("control_freq", 20))
        self.frame_skip = None
        demos = sorted((int(k.split("_")[1]), k) for k in data if k.startswith("demo_") and k[5:].isdigit())
        first = data[demos[0][1]]
        cameras = [k for k in first["obs"] if k.endswith("image") and _looks_like_images(first["obs"][k])]
        camera = self.camera or (cameras[0] if cameras else None)
        if camera is None or camera not in first["obs"]:
            raise InputError(
                f"{self.source}: robomimic file has no camera {camera!r}; image keys: {', '.join(cameras) or 'none'}"
                " (record with camera observations, then pass --camera NAME)"
            )
        self.camera = camera
        actions = first["actions"]

        self.action_space = spaces.Box(-1.0, 1.0, actions.shape[1:], dtype=np.float32)
        self.episodes = []
        for _, name in demos:
            demo = data[name]
            steps = len(demo["actions"])
            keys = {"actions": f"data/{name}/actions"}
            if "rewards" in demo:
                keys["rewards"] = f"data/{name}/rewards"
            if "dones" in demo:
                keys["terminations"] = f"data/{name}/dones"
            self.episodes.append(
                _Episode(
                    group=f"data/{name}",
                    frames=f"data/{name}/obs/{camera}",
                    last_frame=f"data/{name}/next_obs/{camera}" if "next_obs" in demo else None,
                    steps=steps if "next_obs" in demo else steps - 1,
                    step_keys=keys,
                )
            )

    def _init_lerobot(self, root: Path) -> None:
        source = LeRobotSource(root, self.camera, self.source)
        self._lerobot = source
        # info.json stands for the dataset where a file's identity is asked for (the latent cache's fingerprint):
        # LeRobot rewrites it whenever episodes are added.
        self.path = root / LEROBOT_INFO_FILE
        self.camera = source.camera
        self.env_id = source.env_id
        self.frame_rate = round(source.fps)
        self.frame_skip = None

        # LeRobot records no action bounds: the data's own range (a Box needs finite bounds to normalise actions).
        self.action_space = spaces.Box(source.action_low, source.action_high, dtype=np.float32)
        self._raw_captions = {str(i): ep.task for i, ep in enumerate(source.episodes) if ep.task}
        self.episodes = [
            _Episode(group=f"episode {ep.index}", frames=source.camera, steps=len(ep.timestamps) - 1)
            for ep in source.episodes
        ]

    def _probe_frame_shape(self) -> tuple[int, int, int]:
        frame = self.frames(0, 0, 1)[0]
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise InputError(
                f"{self.source}: observations have shape {frame.shape}, not RGB images (H, W, 3);"
                " record pixels (worldsim record renders them) or pick an image key with --camera"
            )
        return tuple(frame.shape)  # type: ignore[return-value]

    def _caption_spans(self, raw: dict[str, Any]) -> dict[int, list[CaptionSpan]]:
        """Every episode's captions as spans (a whole-episode caption is one span), checked against the episodes."""
        spans: dict[int, list[CaptionSpan]] = {}
        frames = self.episode_frames
        for key, value in raw.items():
            e = int(key) if str(key).isdigit() else -1
            if not 0 <= e < len(frames):
                raise InputError(f"{self.source}: captions name episode {key!r}, which the file does not hold")
            where = f"{self.source}: captions of episode {e}"
            spans[e] = (
                [(0, frames[e], value)] if isinstance(value, str) else check_caption_spans(value, frames[e], where)
            )
        return spans

    def caption(self, episode: int, start: int = 0, stop: int | None = None) -> str:
        """The caption of frames [start, stop) of an episode: the span that covers most of them ("" if none)."""
        stop = self.episode_frames[episode] if stop is None else stop
        best, text = 0, ""
        for s, e, t in self.captions.get(episode, []):
            overlap = min(e, stop) - max(s, start)
            if overlap > best:
                best, text = overlap, t
        return text

    # ----------------------------------------------------------------- access
    def _open(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            # h5py handles must not cross fork(): every DataLoader worker opens its own.
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as e:
                raise InputError(f"{self.path} cannot be read as HDF5 ({str(e).splitlines()[0]})") from None
            self._pid = os.getpid()
        return self._file

    def __len__(self) -> int:
        return len(self.episodes)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    @property
    def episode_frames(self) -> list[int]:
        """Number of frames (steps + 1) of each episode."""
        return [e.steps + 1 for e in self.episodes]

    @property
    def total_steps(self) -> int:
        return sum(e.steps for e in self.episodes)

    def seed(self, episode: int) -> int | None:
        return self.episodes[episode].seed

    def frames(self, episode: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """uint8 frames [start, stop) of an episode, (k, H, W, 3)."""
        ep = self.episodes[episode]
        stop = ep.steps + 1 if stop is None else stop
        if self._lerobot is not None:
            return self._as_rgb(self._lerobot.frames(episode, start, stop))
        f = self._open()
        try:
            data = f[ep.frames]
            if ep.last_frame is None:
                out = data[start:stop]
            else:  # robomimic: obs holds frames 0..N-1, next_obs[-1] is frame N
                head = data[start : min(stop, ep.steps)]
                tail = f[ep.last_frame][-1:] if stop > ep.steps else head[:0]
                out = np.concatenate([head, tail]) if len(tail) else head
        except OSError as e:
            raise InputError(f"{self.path}: {ep.group} is corrupt ({str(e).splitlines()[0]})") from None
        return self._as_rgb(out)

    @staticmethod
    def _as_rgb(out: np.ndarray) -> np.ndarray:
        """Stored frames as uint8 (k, H, W, 3)."""
        # Encoded images, one byte string per frame: Minari's JPEG (its metadata flag is not reliable), LeRobot's PNG.
        if out.ndim != 4:
            out = _decode_images(out)
        if out.dtype != np.uint8:
            out = _to_uint8(out)
        return out

    def infos(self, episode: int) -> dict[str, np.ndarray]:
        """Per-frame values the recorder logged (N+1 each, e.g. ``speed``), from the episode's ``infos`` group;
        empty for files without one."""
        if self.kind != "minari":
            return {}
        group = self._open()[self.episodes[episode].group]
        infos = group.get("infos")
        if not isinstance(infos, h5py.Group):
            return {}
        return {k: np.asarray(v[()]) for k, v in infos.items() if isinstance(v, h5py.Dataset) and v.shape}

    def episode_attrs(self, episode: int) -> dict[str, Any]:
        """The episode's HDF5 attributes (``seed``, ``style`` of the recording policy, ...)."""
        if self.kind != "minari":
            return {}
        return {
            k: (v.item() if hasattr(v, "item") else v)
            for k, v in self._open()[self.episodes[episode].group].attrs.items()
        }

    def steps(self, episode: int) -> dict[str, np.ndarray]:
        """Per-step arrays of an episode: actions (N, ...), rewards, terminations, truncations (N,)."""
        ep = self.episodes[episode]
        if self._lerobot is not None:
            return {k: v.copy() for k, v in self._lerobot.episodes[episode].steps.items()}
        f = self._open()
        n = ep.steps
        try:
            actions = f[ep.step_keys["actions"]][:n]
            rewards = f[ep.step_keys["rewards"]][:n] if "rewards" in ep.step_keys else np.zeros(n)
            terms = f[ep.step_keys["terminations"]][:n] if "terminations" in ep.step_keys else np.zeros(n)
            truncs = f[ep.step_keys["truncations"]][:n] if "truncations" in ep.step_keys else np.zeros(n)
        except OSError as e:
            raise InputError(f"{self.path}: {ep.group} is corrupt ({str(e).splitlines()[0]})") from None
        return {
            "actions": np.asarray(actions),
            "rewards": np.asarray(rewards, dtype=np.float32).reshape(n),
            "terminations": np.asarray(terms).astype(bool).reshape(n),
            "truncations": np.asarray(truncs).astype(bool).reshape(n),
        }

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _locate(source: str) -> tuple[Path, dict[str, Any]]:
    """Resolve a file, a Minari directory or a Minari id to (HDF5 path, Minari metadata)."""
    path = Path(source)
    if not path.exists() and not source.endswith((".h5", ".hdf5")):
        minari_dir = _minari_dir_for_id(source)
        if minari_dir is not None:
            path = minari_dir
    if not path.exists():
        raise InputError(
            f"{source} does not exist (expected an .h5 file, a Minari dataset directory or id, or a LeRobot dataset)"
        )
    metadata: dict[str, Any] = {}
    if path.is_dir():
        data_dir = path / "data" if (path / "data" / MINARI_DATA_FILE).exists() else path
        if not (data_dir / MINARI_DATA_FILE).exists():
            raise InputError(
                f"{source} is a directory without {MINARI_DATA_FILE} or {LEROBOT_INFO_FILE}: "
                "neither a Minari nor a LeRobot dataset"
            )
        meta_file = data_dir / MINARI_METADATA_FILE
        if meta_file.exists():
            try:
                metadata = json.loads(meta_file.read_text())
            except json.JSONDecodeError as e:
                raise InputError(f"{meta_file} is not valid JSON ({e})") from None
        if metadata.get("data_format", "hdf5") != "hdf5":
            raise InputError(f"{source} is a Minari dataset in {metadata['data_format']!r} format; only hdf5 is read")
        path = data_dir / MINARI_DATA_FILE
    if not h5py.is_hdf5(path):
        raise InputError(f"{path} is not an HDF5 file")
    return path, metadata


def _minari_dir_for_id(dataset_id: str) -> Path | None:
    try:
        from minari.storage import get_dataset_path  # optional: the sources extra
    except ImportError:
        return None
    candidate = Path(get_dataset_path(dataset_id)) / "data"
    return candidate if candidate.exists() else None


def _is_robomimic(group: Any) -> bool:
    return isinstance(group, h5py.Group) and any(k.startswith("demo_") for k in group)


def _looks_like_images(dataset: Any) -> bool:
    return isinstance(dataset, h5py.Dataset) and dataset.ndim == 4 and dataset.shape[-1] == 3


def _decode_images(encoded: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(np.asarray(b, dtype=np.uint8).tobytes()))) for b in encoded])


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (robomimic sometimes) or [0, 255] -> uint8."""
    x = frames.astype(np.float32)
    if x.size and x.max() <= 1.0 + 1e-6:
        x = x * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
