"""LeRobot datasets (v2.1 and v3.0 layouts, written here with pyarrow and imageio) through TrajectoryReader."""

from __future__ import annotations

import io
import json
import logging

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from worldsim.data import TrajectoryReader
from worldsim.errors import InputError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FPS = 10
SIZE = 32
LENGTHS = (10, 12, 9)
TASKS = ("push the T into place", "stack the blocks", "push the T into place")
CAMERAS = {"observation.images.top": 0, "observation.images.wrist": 100}
"""Camera key -> offset of its green channel, so a frame says which camera it came from."""
TOLERANCE = 6
"""Largest pixel error of a flat-colour frame through h264 and back."""


def frame(episode: int, t: int, offset: int) -> np.ndarray:
    """A flat colour that encodes (frame index, episode, camera)."""
    return np.broadcast_to(np.array([10 + 20 * t, 30 * episode + offset, 128], np.uint8), (SIZE, SIZE, 3)).copy()


def episode_rows(episode: int, length: int, first_index: int) -> dict:
    rng = np.random.default_rng(episode)
    t = np.arange(length)
    return {
        "observation.state": rng.normal(size=(length, 2)).astype(np.float32),
        "action": rng.uniform(-2, 3, (length, 2)).astype(np.float32),
        "timestamp": (t / FPS).astype(np.float32),
        "frame_index": t,
        "episode_index": np.full(length, episode),
        "index": first_index + t,
        "task_index": np.full(length, TASKS.index(TASKS[episode])),
        "next.reward": (t + 100 * episode).astype(np.float32),
        # The env terminated after row L-2's action, and the recording kept the terminal frame (row L-1).
        "next.done": t >= length - 2,
    }


def to_table(rows: dict, image_key: str | None = None) -> pa.Table:
    """One parquet table as LeRobot writes it: vectors as fixed-size lists, images as {bytes, path} structs."""
    columns = {}
    for key, value in rows.items():
        if key == "images":
            png = []
            for image in value:
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                png.append({"bytes": buffer.getvalue(), "path": None})
            columns[image_key] = pa.array(png, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        elif value.ndim == 2:
            columns[key] = pa.FixedSizeListArray.from_arrays(pa.array(value.reshape(-1)), value.shape[1])
        else:
            columns[key] = pa.array(value)
    return pa.table(columns)


def features(cameras: dict, dtype: str) -> dict:
    scalar = {"shape": [1], "names": None}
    out = {key: {"dtype": dtype, "shape": [SIZE, SIZE, 3], "names": ["height", "width", "channels"]} for key in cameras}
    out["observation.state"] = {"dtype": "float32", "shape": [2], "names": ["x", "y"]}
    out["action"] = {"dtype": "float32", "shape": [2], "names": ["x", "y"]}
    for key, kind in [("timestamp", "float32"), ("next.reward", "float32"), ("next.done", "bool")]:
        out[key] = {"dtype": kind, **scalar}
    for key in ("frame_index", "episode_index", "index", "task_index"):
        out[key] = {"dtype": "int64", **scalar}
    return out


def write_video(path, frames) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=FPS, codec="libx264", macro_block_size=1) as writer:
        for f in frames:
            writer.append_data(f)


def write_lerobot(root, version: str = "v2.1", cameras: dict = CAMERAS, dtype: str = "video") -> list[dict]:
    """A LeRobot dataset of len(LENGTHS) episodes in the v2.1 or v3.0 layout; returns each episode's rows."""
    episodes, first = [], 0
    for e, n in enumerate(LENGTHS):
        episodes.append(episode_rows(e, n, first))
        first += n
    (root / "meta").mkdir(parents=True)
    info = {
        "codebase_version": version,
        "robot_type": "test",
        "total_episodes": len(LENGTHS),
        "total_frames": sum(LENGTHS),
        "total_tasks": 2,
        "chunks_size": 1000,
        "fps": FPS,
        "splits": {"train": f"0:{len(LENGTHS)}"},
        "features": features(cameras, dtype),
    }
    image_key = next(iter(cameras)) if dtype == "image" else None
    if image_key:  # image features live in the tables
        for e, rows in enumerate(episodes):
            rows["images"] = [frame(e, t, cameras[image_key]) for t in range(LENGTHS[e])]
    if version == "v3.0":
        info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
        (root / "data/chunk-000").mkdir(parents=True)
        pq.write_table(
            pa.concat_tables([to_table(rows, image_key) for rows in episodes]),
            root / "data/chunk-000/file-000.parquet",
        )
        meta = {
            "episode_index": list(range(len(LENGTHS))),
            "tasks": [[task] for task in TASKS],
            "length": list(LENGTHS),
            "data/chunk_index": [0] * len(LENGTHS),
            "data/file_index": [0] * len(LENGTHS),
            "dataset_from_index": [int(i) for i in np.cumsum((0, *LENGTHS[:-1]))],
            "dataset_to_index": [int(i) for i in np.cumsum(LENGTHS)],
        }
        if dtype == "video":  # all episodes in one mp4 per camera, one after another
            starts = np.cumsum((0, *LENGTHS)) / FPS
            for key, offset in cameras.items():
                frames = [frame(e, t, offset) for e, n in enumerate(LENGTHS) for t in range(n)]
                write_video(root / f"videos/{key}/chunk-000/file-000.mp4", frames)
                meta[f"videos/{key}/chunk_index"] = [0] * len(LENGTHS)
                meta[f"videos/{key}/file_index"] = [0] * len(LENGTHS)
                meta[f"videos/{key}/from_timestamp"] = starts[:-1].tolist()
                meta[f"videos/{key}/to_timestamp"] = starts[1:].tolist()
        meta["stats/action/min"] = [rows["action"].min(0).tolist() for rows in episodes]  # the reader skips stats
        (root / "meta/episodes/chunk-000").mkdir(parents=True)
        pq.write_table(pa.table(meta), root / "meta/episodes/chunk-000/file-000.parquet")
        tasks = sorted(set(TASKS), key=TASKS.index)
        pq.write_table(pa.table({"task_index": range(len(tasks)), "task": tasks}), root / "meta/tasks.parquet")
    else:
        info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
        info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
        (root / "data/chunk-000").mkdir(parents=True)
        for e, rows in enumerate(episodes):
            pq.write_table(to_table(rows, image_key), root / f"data/chunk-000/episode_{e:06d}.parquet")
            for key, offset in cameras.items() if dtype == "video" else ():
                path = root / f"videos/chunk-000/{key}/episode_{e:06d}.mp4"
                write_video(path, [frame(e, t, offset) for t in range(LENGTHS[e])])
        lines = [{"episode_index": e, "tasks": [TASKS[e]], "length": n} for e, n in enumerate(LENGTHS)]
        (root / "meta/episodes.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        tasks = sorted(set(TASKS), key=TASKS.index)
        (root / "meta/tasks.jsonl").write_text(
            "".join(json.dumps({"task_index": i, "task": task}) + "\n" for i, task in enumerate(tasks))
        )
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return episodes


def expected_frames(episode: int, offset: int) -> np.ndarray:
    return np.stack([frame(episode, t, offset) for t in range(LENGTHS[episode])])


def assert_frames_close(actual: np.ndarray, expected: np.ndarray, tolerance: int = TOLERANCE) -> None:
    assert actual.shape == expected.shape and actual.dtype == np.uint8
    error = np.abs(actual.astype(int) - expected.astype(int)).max()
    assert error <= tolerance, f"frames differ by up to {error}"


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot_round_trip(tmp_path, version, caplog):
    episodes = write_lerobot(tmp_path / "ds", version)
    with caplog.at_level(logging.WARNING):
        r = TrajectoryReader(tmp_path / "ds")
    assert r.kind == "lerobot" and r.camera == "observation.images.top"  # the first of two, and it says so
    assert "observation.images.top" in caplog.text and "--camera" in caplog.text
    assert r.episode_frames == list(LENGTHS) and r.frame_shape == (SIZE, SIZE, 3)
    assert r.frame_rate == FPS and r.env_id == "" and r.frame_skip is None
    every_action = np.concatenate([rows["action"] for rows in episodes])
    assert r.action_space.shape == (2,)
    np.testing.assert_array_equal(r.action_space.low, every_action.min(0))
    np.testing.assert_array_equal(r.action_space.high, every_action.max(0))
    for e, rows in enumerate(episodes):
        assert_frames_close(r.frames(e), expected_frames(e, 0))
        steps = r.steps(e)
        n = LENGTHS[e] - 1  # L rows are L frames and L - 1 steps: the last row's action leads nowhere recorded
        np.testing.assert_array_equal(steps["actions"], rows["action"][:n])
        np.testing.assert_array_equal(steps["rewards"], rows["next.reward"][:n])
        np.testing.assert_array_equal(steps["terminations"], np.arange(n) == n - 1)  # step L-2 ended the episode
        assert not steps["truncations"].any()
        assert r.caption(e) == TASKS[e]
    # A clip from the middle of an episode: v2.1 seeks inside the episode's mp4, v3.0 inside the shared one.
    assert_frames_close(r.frames(2, 3, 7), expected_frames(2, 0)[3:7])
    assert_frames_close(r.frames(1, 11, 12), expected_frames(1, 0)[11:12])


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot_camera_selection(tmp_path, version):
    write_lerobot(tmp_path / "ds", version)
    for name in ("observation.images.wrist", "wrist"):
        r = TrajectoryReader(tmp_path / "ds", camera=name)
        assert r.camera == "observation.images.wrist"
        assert_frames_close(r.frames(1), expected_frames(1, CAMERAS["observation.images.wrist"]))
    with pytest.raises(InputError, match="no camera 'side'") as info:
        TrajectoryReader(tmp_path / "ds", camera="side")
    assert "observation.images.top, observation.images.wrist" in str(info.value) and "\n" not in str(info.value)


def test_lerobot_image_features_are_read_exactly(tmp_path):
    write_lerobot(tmp_path / "ds", "v3.0", cameras={"observation.image": 50}, dtype="image")
    r = TrajectoryReader(tmp_path / "ds", camera="image")
    assert r.camera == "observation.image" and r.episode_frames == list(LENGTHS)
    np.testing.assert_array_equal(r.frames(1), expected_frames(1, 50))  # PNG is lossless
    np.testing.assert_array_equal(r.frames(2, 4, 6), expected_frames(2, 50)[4:6])


def test_lerobot_bad_datasets_give_one_line_errors(tmp_path):
    write_lerobot(tmp_path / "old", "v2.1")
    info = json.loads((tmp_path / "old/meta/info.json").read_text())
    (tmp_path / "old/meta/info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(InputError, match="codebase v1.6; worldsim reads v2.0, v2.1, v3.0"):
        TrajectoryReader(tmp_path / "old")
    write_lerobot(tmp_path / "gone", "v2.1")
    (tmp_path / "gone/videos/chunk-000/observation.images.top/episode_000000.mp4").unlink()
    with pytest.raises(InputError, match="episode_000000.mp4 cannot be decoded") as error:
        TrajectoryReader(tmp_path / "gone")
    assert "\n" not in str(error.value)


def test_train_autoencoder_on_a_lerobot_dataset(tmp_path, capsys):
    from worldsim.cli import main
    from worldsim.training.autoencoder import load_trained_autoencoder

    write_lerobot(tmp_path / "ds", "v2.1")
    argv = ["train", "autoencoder", "--data", str(tmp_path / "ds"), "--preset", "tiny", "--frame-size", "32x32"]
    argv += ["--steps", "2", "--batch-size", "4", "--workers", "0", "--precision", "fp32", "--holdout", "1"]
    assert main([*argv, "--camera", "side", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no camera 'side'" in err and "observation.images.wrist" in err
    assert main([*argv, "--camera", "wrist", "--out", str(tmp_path / "run")]) == 0
    _, config, autoencoder = load_trained_autoencoder(tmp_path / "run")
    assert config.latent_channels == 4
    metrics = json.loads((tmp_path / "run/autoencoder/metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["frames"] == LENGTHS[-1]  # the held-out episode, decoded from its mp4
