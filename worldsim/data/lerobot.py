"""LeRobot datasets (codebase v2.0, v2.1 and v3.0) read as a file format, without the ``lerobot`` package.

``lerobot`` pins an older torch than ours, so ``TrajectoryReader`` reads the layout itself: the tables with
``pyarrow`` (``pip install 'worldsim[lerobot]'``), the mp4 camera streams with imageio's ffmpeg
(:func:`worldsim.video.read_video_frames`). The layout, as huggingface/lerobot's ``datasets/utils.py`` and its
v2.1 -> v3.0 conversion script write it:

* ``meta/info.json``: ``codebase_version``, ``fps``, ``features`` (per column its ``dtype``, ``shape`` and
  ``names``; cameras have dtype ``video`` or ``image``), the ``data_path`` and ``video_path`` templates and
  ``chunks_size``.
* v2.x: one table per episode (``data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet``) and one mp4
  per episode and camera; ``meta/episodes.jsonl`` lists the episodes (``episode_index``, ``tasks``, ``length``).
* v3.0: many episodes per table and per mp4 (``data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet``, the
  episodes' videos concatenated in ``videos/{video_key}/chunk-.../file-....mp4``); the rows of
  ``meta/episodes/chunk-*/file-*.parquet`` say where each episode is (``data/chunk_index``, ``data/file_index``,
  ``videos/<key>/chunk_index``, ``.../file_index``, ``.../from_timestamp``) and list its ``tasks``.

A table has one row per frame: the observation at t, the ``action`` taken there and what followed it
(``next.reward``, ``next.done``). An episode of L rows is therefore L frames and L - 1 steps in this project's
convention (frame t + 1 follows ``actions[t]``): the last row's action, reward and done lead to a frame the dataset
does not hold, and are dropped. ``next.done`` (gymnasium's terminated or truncated) becomes the termination, as
robomimic's ``dones`` do; datasets with only ``next.success`` use that. An episode's ``tasks`` are its caption.

Actions, rewards, flags and timestamps are read once, when the dataset is opened (ClipDataset holds them all
anyway); frames are decoded per request, only the ones asked for, so no episode's video is ever held whole.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.errors import InputError
from worldsim.video import read_video_frames

INFO_FILE = "meta/info.json"
VERSIONS = ("v2.0", "v2.1", "v3.0")
CAMERA_DTYPES = ("video", "image")
STEP_COLUMNS = ("episode_index", "timestamp", "action", "next.reward", "next.done", "next.success")
"""The table columns read when the dataset is opened (cameras are read per request)."""

log = logging.getLogger(__name__)


@dataclass
class LeRobotEpisode:
    """One episode's per-step arrays and where its frames are."""

    index: int
    """LeRobot's ``episode_index``."""
    steps: dict[str, np.ndarray]
    """actions (N, ...), rewards, terminations, truncations (N,): the reader's convention."""
    timestamps: np.ndarray
    """(N + 1,) seconds of each frame from the start of the episode (the tables' ``timestamp``)."""
    frames_file: Path
    """The camera's mp4 holding the episode (video cameras) or the episode's table (image cameras)."""
    from_s: float = 0.0
    """Where the episode starts in ``frames_file``: v3 mp4s hold many episodes one after another."""
    task: str = ""


@dataclass
class _Location:
    """Where an episode's rows and frames are, from the dataset's metadata."""

    index: int
    data_file: Path
    frames_file: Path
    from_s: float
    task: str


def is_lerobot(path: Path) -> bool:
    """A LeRobot dataset root: a directory holding ``meta/info.json``."""
    return (path / INFO_FILE).is_file()


class LeRobotSource:
    """A LeRobot dataset's episodes for :class:`~worldsim.data.reader.TrajectoryReader`; see the module docstring.

    ``camera`` picks the image feature by its key (``observation.images.top``) or its last part (``top``); without
    one, the first camera in ``info.json`` (a warning names it when there are several).
    """

    def __init__(self, root: Path, camera: str | None, source: str) -> None:
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise InputError(
                f"{source} is a LeRobot dataset; reading it needs pyarrow: pip install 'worldsim[lerobot]'"
            ) from None
        self.root = root
        self.source = source
        info = _read_json(root / INFO_FILE)
        self.version = str(info.get("codebase_version", "unknown"))
        if self.version not in VERSIONS:
            raise InputError(
                f"{source} is a LeRobot dataset of codebase {self.version}; worldsim reads {', '.join(VERSIONS)} "
                "(lerobot's conversion scripts bring older datasets forward)"
            )
        features: dict[str, Any] = info.get("features", {})
        if "action" not in features:
            raise InputError(f"{source}: the LeRobot dataset has no 'action' feature, so nothing for a world to follow")
        self.fps = float(info["fps"])
        self.env_id = str(info.get("env_id") or "")  # not part of LeRobot's info.json; kept when a converter adds it
        self.camera, self.camera_dtype = self._pick_camera(features, camera)
        self.action_shape = tuple(int(s) for s in features["action"]["shape"])
        locations = self._locations_v3(info) if self.version == "v3.0" else self._locations_v2(info)
        if not locations:
            raise InputError(f"{source}: the LeRobot dataset lists no episodes")
        self.episodes, actions = self._load(locations)
        self.action_low, self.action_high = actions.min(axis=0), actions.max(axis=0)

    def _pick_camera(self, features: dict[str, Any], camera: str | None) -> tuple[str, str]:
        cameras = [k for k, f in features.items() if f.get("dtype") in CAMERA_DTYPES]
        if not cameras:
            raise InputError(
                f"{self.source}: the LeRobot dataset has no camera (feature of dtype video or image) among "
                f"{', '.join(features)}"
            )
        if camera is None:
            if len(cameras) > 1:
                names = ", ".join(cameras)
                log.warning("%s has cameras %s; reading %s (pick one with --camera)", self.source, names, cameras[0])
            key = cameras[0]
        else:
            matches = [k for k in cameras if camera in (k, k.rsplit(".", 1)[-1])]
            if not matches:
                raise InputError(f"{self.source}: no camera {camera!r}; its cameras are {', '.join(cameras)}")
            key = matches[0]
        return key, features[key]["dtype"]

    # ----------------------------------------------------------------- where the episodes are
    def _path(self, info: dict[str, Any], template: str, **keys: Any) -> Path:
        try:
            return self.root / str(info[template]).format(**keys)
        except (KeyError, IndexError, ValueError) as e:
            raise InputError(f"{self.source}: meta/info.json has no usable {template} ({e!r})") from None

    def _locations_v2(self, info: dict[str, Any]) -> list[_Location]:
        """v2.x: ``meta/episodes.jsonl`` lists the episodes; each has its own table and mp4."""
        listed = [json.loads(line) for line in _read_text(self.root / "meta/episodes.jsonl").splitlines() if line]
        chunk_size = int(info.get("chunks_size", 1000))
        out = []
        for item in sorted(listed, key=lambda item: int(item["episode_index"])):
            e = int(item["episode_index"])
            keys = {"episode_chunk": e // chunk_size, "episode_index": e, "video_key": self.camera}
            data = self._path(info, "data_path", **keys)
            frames = self._path(info, "video_path", **keys) if self.camera_dtype == "video" else data
            out.append(_Location(e, data, frames, 0.0, "; ".join(item.get("tasks") or [])))
        return out

    def _locations_v3(self, info: dict[str, Any]) -> list[_Location]:
        """v3.0: the rows of ``meta/episodes/*/*.parquet`` say which table and mp4 hold each episode, and where."""
        import pyarrow as pa  # optional: the lerobot extra
        import pyarrow.parquet as pq

        files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not files:
            raise InputError(f"{self.source}: a LeRobot v3.0 dataset without meta/episodes/*/*.parquet")
        video = f"videos/{self.camera}/"
        wanted = ["episode_index", "data/chunk_index", "data/file_index", "tasks"]
        if self.camera_dtype == "video":
            wanted += [video + "chunk_index", video + "file_index", video + "from_timestamp"]
        tables = []
        for f in files:
            names = pq.read_schema(f).names
            missing = [c for c in wanted if c != "tasks" and c not in names]
            if missing:
                raise InputError(f"{self.source}: {f.relative_to(self.root)} has no column {', '.join(missing)}")
            tables.append(pq.read_table(f, columns=[c for c in wanted if c in names]))
        rows = pa.concat_tables(tables, promote_options="default").to_pylist()
        out = []
        for row in sorted(rows, key=lambda row: int(row["episode_index"])):
            data = self._path(info, "data_path", chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
            frames, from_s = data, 0.0
            if self.camera_dtype == "video":
                chunk, file = row[video + "chunk_index"], row[video + "file_index"]
                frames = self._path(info, "video_path", video_key=self.camera, chunk_index=chunk, file_index=file)
                from_s = float(row[video + "from_timestamp"])
            out.append(_Location(int(row["episode_index"]), data, frames, from_s, "; ".join(row.get("tasks") or [])))
        return out

    # ----------------------------------------------------------------- the tables
    def _load(self, locations: list[_Location]) -> tuple[list[LeRobotEpisode], np.ndarray]:
        """Every episode's steps, each table read once (a v3 table holds many episodes); and all rows' actions."""
        import pyarrow.parquet as pq  # optional: the lerobot extra

        by_file: dict[Path, list[_Location]] = {}
        for loc in locations:
            by_file.setdefault(loc.data_file, []).append(loc)
        episodes: dict[int, LeRobotEpisode] = {}
        actions = []
        for path, locs in by_file.items():
            if not path.is_file():
                raise InputError(f"{self.source}: {path.relative_to(self.root)} (episode {locs[0].index}) is missing")
            names = pq.read_schema(path).names
            if "action" not in names:
                raise InputError(f"{self.source}: {path.relative_to(self.root)} has no 'action' column")
            table = pq.read_table(path, columns=[c for c in STEP_COLUMNS if c in names])
            columns = {c: _column(table, c) for c in table.column_names}
            for loc in locs:
                rows = (
                    np.flatnonzero(columns["episode_index"][:, 0] == loc.index)
                    if "episode_index" in columns
                    else np.arange(table.num_rows)
                )
                if not len(rows):
                    raise InputError(f"{self.source}: {path.relative_to(self.root)} has no rows of episode {loc.index}")
                action = columns["action"][rows].astype(np.float32).reshape(len(rows), *self.action_shape)
                actions.append(action)
                episodes[loc.index] = LeRobotEpisode(
                    index=loc.index,
                    steps=self._steps(columns, rows, action),
                    timestamps=(
                        columns["timestamp"][rows, 0].astype(np.float64)
                        if "timestamp" in columns
                        else np.arange(len(rows)) / self.fps
                    ),
                    frames_file=loc.frames_file,
                    from_s=loc.from_s,
                    task=loc.task,
                )
        return [episodes[loc.index] for loc in locations], np.concatenate(actions)

    @staticmethod
    def _steps(columns: dict[str, np.ndarray], rows: np.ndarray, action: np.ndarray) -> dict[str, np.ndarray]:
        """The episode's N = rows - 1 steps: row t's action and what followed it lead to frame t + 1."""
        n = len(rows) - 1
        done = next((columns[k] for k in ("next.done", "next.success") if k in columns), None)
        return {
            "actions": action[:n],
            "rewards": (
                columns["next.reward"][rows[:n], 0].astype(np.float32)
                if "next.reward" in columns
                else np.zeros(n, np.float32)
            ),
            "terminations": done[rows[:n], 0].astype(bool) if done is not None else np.zeros(n, bool),
            "truncations": np.zeros(n, bool),
        }

    # ----------------------------------------------------------------- frames
    def frames(self, episode: int, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) of an episode: uint8 (k, H, W, 3) from a video, or (k,) encoded images (PNG bytes,
        the reader decodes them) from an image feature."""
        ep = self.episodes[episode]
        stop = min(stop, len(ep.timestamps))
        if stop <= start:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8)
        if self.camera_dtype == "video":
            return read_video_frames(ep.frames_file, ep.from_s + float(ep.timestamps[start]), stop - start, self.fps)
        import pyarrow.parquet as pq  # optional: the lerobot extra

        # The filter lets parquet skip the row groups of a v3 table's other episodes.
        table = pq.read_table(ep.frames_file, columns=[self.camera], filters=[("episode_index", "=", ep.index)])
        images = table.column(self.camera).combine_chunks().field("bytes").slice(start, stop - start).to_pylist()
        if any(b is None for b in images):
            raise InputError(f"{self.source}: {self.camera} of episode {ep.index} holds image paths, not images")
        encoded = np.empty(len(images), dtype=object)  # one buffer per frame, never a 2-D array of equal lengths
        encoded[:] = [np.frombuffer(b, dtype=np.uint8) for b in images]
        return encoded


def _column(table: Any, name: str) -> np.ndarray:
    """A table column as (rows, values per row): list columns (``action``) flattened, scalars as one value."""
    import pyarrow as pa  # optional: the lerobot extra

    array = table.column(name).combine_chunks()
    rows = len(array)
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).reshape(rows, -1)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise InputError(f"{path} cannot be read ({e.strerror or e})") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e})") from None
