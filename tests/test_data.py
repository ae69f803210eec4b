"""Trajectory files: layout, readers (ours, Minari both ways, robomimic), clip windows, latent cache, recorder."""

from __future__ import annotations

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
from helpers import labelled_episode, write_dataset

from worldsim.config import AutoencoderConfig
from worldsim.data import TrajectoryReader, TrajectoryWriter
from worldsim.data.clips import ClipDataset
from worldsim.data.latents import build_latent_cache
from worldsim.errors import InputError
from worldsim.models.autoencoder import FrameAutoencoder


def test_layout_round_trip(tmp_path):
    path = tmp_path / "d.h5"
    episodes = write_dataset(path)
    with h5py.File(path) as f:
        assert f.attrs["env_id"] == "Test-v0" and f.attrs["frame_rate"] == 12
        assert f.attrs["total_episodes"] == 3 and f.attrs["total_steps"] == 12 + 5 + 20
        assert json.loads(f.attrs["action_space"]) == {"type": "Discrete", "dtype": "int64", "start": 0, "n": 5}
        assert json.loads(f.attrs["observation_space"])["shape"] == [16, 16, 3]
        obs = f["episode_2/observations"]
        assert obs.shape == (21, 16, 16, 3) and obs.dtype == np.uint8
        assert obs.chunks is not None and obs.compression == "gzip"
        assert dict(f["episode_1"].attrs) == {"id": 1, "total_steps": 5, "seed": 41}
        for key in ("actions", "rewards", "terminations", "truncations"):
            assert len(f[f"episode_0/{key}"]) == 12
    assert not (tmp_path / "d.h5.partial").exists()
    r = TrajectoryReader(path)
    assert r.episode_frames == [13, 6, 21] and r.frame_rate == 12 and r.action_space == gym.spaces.Discrete(5)
    assert r.env_id == "Test-v0" and r.frame_skip is None  # a file that does not say how it was recorded
    for i, ep in enumerate(episodes):
        np.testing.assert_array_equal(r.frames(i), ep["observations"])
        steps = r.steps(i)
        for key in ("actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(steps[key], ep[key])
        assert r.seed(i) == 40 + i


def test_writer_refuses_to_overwrite_and_keeps_finished_episodes(tmp_path):
    path = tmp_path / "d.h5"
    write_dataset(path, lengths=(4,))
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        TrajectoryWriter(path, env_id="x", frame_size=(16, 16), action_space=gym.spaces.Discrete(5), frame_rate=1)
    assert path.read_bytes() == before
    # An exception mid-recording: the finished episodes are kept under the final name.
    out = tmp_path / "partial.h5"
    with (
        pytest.raises(KeyboardInterrupt),
        TrajectoryWriter(out, env_id="x", frame_size=(16, 16), action_space=gym.spaces.Discrete(5), frame_rate=1) as w,
    ):
        w.add_episode(**labelled_episode(0, 3))
        w.add_episode(**labelled_episode(1, 4))
        raise KeyboardInterrupt
    assert TrajectoryReader(out).episode_frames == [4, 5]
    assert not (tmp_path / "partial.h5.partial").exists()


def test_minari_loads_our_file(tmp_path):
    minari = pytest.importorskip("minari")
    from worldsim.data.minari_export import export_minari

    path = tmp_path / "d.h5"
    episodes = write_dataset(path)
    data_dir = export_minari(path, "worldsim/test-v0", root=tmp_path / "minari")
    dataset = minari.MinariDataset(data_dir)
    assert dataset.total_episodes == 3 and dataset.total_steps == 37
    assert dataset.action_space == gym.spaces.Discrete(5)
    for ep, ours in zip(dataset.iterate_episodes(), episodes):
        np.testing.assert_array_equal(ep.observations, ours["observations"])
        np.testing.assert_array_equal(ep.actions, ours["actions"])
        np.testing.assert_array_equal(ep.rewards, ours["rewards"])


class PixelEnv(gym.Env):
    """Tiny image-observation env whose frames encode the step count (for Minari round trips)."""

    observation_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(action), False, self.t >= 7, {}

    def _obs(self):
        return np.full((16, 16, 3), self.t * 10, dtype=np.uint8)


@pytest.mark.parametrize("jpeg", [False, True])
def test_we_load_a_minari_dataset(tmp_path, monkeypatch, jpeg):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    from minari.data_collector import EpisodeBuffer

    # Minari's DataCollector needs jax; create_dataset_from_buffers is Minari's own writer without it.
    env = PixelEnv()
    buffers = []
    for seed in range(2):
        obs = [env.reset(seed=seed)[0]]
        rewards, terms, truncs = [], [], []
        for a in range(7):
            o, r, te, tr, _ = env.step(a % 3)
            obs.append(o), rewards.append(r), terms.append(te), truncs.append(tr)
        buffers.append(
            EpisodeBuffer(
                id=seed,
                seed=seed,
                observations=np.stack(obs),
                actions=np.arange(7) % 3,
                rewards=rewards,
                terminations=terms,
                truncations=truncs,
            )
        )
    minari.create_dataset_from_buffers(
        "test/pixels-v0",
        buffers,
        observation_space=env.observation_space,
        action_space=env.action_space,
        algorithm_name="scripted",
        data_format="hdf5",
        jpeg_encoding=jpeg,
    )
    r = TrajectoryReader("test/pixels-v0")  # by id
    assert len(r) == 2 and r.episode_frames == [8, 8] and r.action_space == gym.spaces.Discrete(3)
    frames = r.frames(1)
    assert frames.shape == (8, 16, 16, 3) and frames.dtype == np.uint8
    tolerance = 3 if jpeg else 0  # JPEG is lossy
    assert np.abs(frames[:, 0, 0, 0].astype(int) - np.arange(8) * 10).max() <= tolerance
    np.testing.assert_array_equal(r.steps(0)["actions"], np.arange(7) % 3)
    assert r.steps(0)["truncations"][-1]


def test_robomimic_import(tmp_path):
    path = tmp_path / "robo.hdf5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "env_kwargs": {"control_freq": 20}})
        for d, n in enumerate((6, 9)):
            demo = data.create_group(f"demo_{d}")
            images = rng.integers(0, 256, (n + 1, 12, 12, 3), dtype=np.uint8)
            demo.create_dataset("obs/agentview_image", data=images[:n])
            demo.create_dataset("obs/robot0_eef_pos", data=rng.normal(size=(n, 3)))
            demo.create_dataset("next_obs/agentview_image", data=images[1:])
            demo.create_dataset("actions", data=rng.uniform(-1, 1, (n, 7)))
            demo.create_dataset("rewards", data=np.zeros(n))
            demo.create_dataset("dones", data=np.arange(n) == n - 1)
            if d == 1:
                expected = images
    r = TrajectoryReader(path)
    assert r.kind == "robomimic" and r.camera == "agentview_image" and r.env_id == "Lift"
    assert r.episode_frames == [7, 10] and r.action_space.shape == (7,)
    np.testing.assert_array_equal(r.frames(1), expected)
    np.testing.assert_array_equal(r.frames(1, 8, 10), expected[8:10])  # the last frame comes from next_obs
    assert r.steps(1)["terminations"][-1] and r.steps(1)["actions"].shape == (9, 7)
    with pytest.raises(InputError, match="no camera"):
        TrajectoryReader(path, camera="wrist_image")


def test_clip_windows_never_cross_episodes(tmp_path):
    path = tmp_path / "d.h5"
    episodes = write_dataset(path, lengths=(12, 5, 20))
    ds = ClipDataset(TrajectoryReader(path), clip_frames=8)
    assert ds.episodes == [0, 2]  # episode 1 has 6 frames < 8
    assert len(ds) == (13 - 8 + 1) + (21 - 8 + 1)
    for k in range(len(ds)):
        item = ds[k]
        frames = item["frames"].numpy()
        episode, start = ds.window(k)
        assert (frames[..., 0] == episode).all(), "a clip mixes episodes"
        np.testing.assert_array_equal(frames[:, 0, 0, 1], np.arange(start, start + 8))
        # Per-frame convention: frame j carries the step that produced it; the episode's frame 0 has none.
        null = item["action_null"].numpy()
        np.testing.assert_array_equal(null, np.arange(start, start + 8) == 0)
        ep = episodes[episode]
        for j in range(8):
            if not null[j]:
                assert item["actions"][j] == ep["actions"][start + j - 1]
                assert item["rewards"][j] == ep["rewards"][start + j - 1]
                assert item["terminations"][j] == ep["terminations"][start + j - 1]


def test_clip_dataset_is_worker_safe(tmp_path):
    path = tmp_path / "d.h5"
    write_dataset(path, lengths=(12, 20))
    ds = ClipDataset(TrajectoryReader(path), clip_frames=4, frame_size=(8, 8))
    ds.reader.frames(0, 0, 1)  # open the file in the parent first: workers must not reuse the handle
    serial = [ds[i]["frames"] for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    parallel = torch.cat([b["frames"] for b in loader])
    assert parallel.shape == (len(ds), 4, 8, 8, 3)
    assert torch.equal(parallel, torch.stack(serial))


def test_latent_cache_matches_encoder_and_detects_staleness(tmp_path):
    path = tmp_path / "d.h5"
    write_dataset(path, lengths=(6, 9))
    reader = TrajectoryReader(path)
    ae = FrameAutoencoder(AutoencoderConfig(widths=[8, 16], latent_channels=4)).eval()
    store = build_latent_cache(reader, ae, tmp_path / "lat.h5", (16, 16), batch_size=4, progress=False)
    expected = ae.encode(torch.from_numpy(reader.frames(1))).numpy()
    np.testing.assert_allclose(store.latents(1, 0, 10), expected, atol=2e-3, rtol=1e-2)  # fp16 storage
    mtime = (tmp_path / "lat.h5").stat().st_mtime_ns
    build_latent_cache(reader, ae, tmp_path / "lat.h5", (16, 16), progress=False)
    assert (tmp_path / "lat.h5").stat().st_mtime_ns == mtime, "an up-to-date cache was rebuilt"
    with torch.no_grad():
        ae.decoder.conv_out.bias.add_(1.0)
    store = build_latent_cache(reader, ae, tmp_path / "lat.h5", (16, 16), progress=False)
    assert (tmp_path / "lat.h5").stat().st_mtime_ns != mtime, "a stale cache was reused"
    ds = ClipDataset(reader, 4, (16, 16), latents=store)
    assert ds[0]["latents"].shape == (4, 4, 8, 8) and "frames" not in ds[0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b"not an hdf5 file at all"), "not an HDF5 file"),
        (lambda p: h5py.File(p, "w").create_group("stuff"), "no episode_"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, make, message):
    path = tmp_path / "bad.h5"
    make(path)
    with pytest.raises(InputError, match=message) as info:
        TrajectoryReader(path)
    assert "\n" not in str(info.value)


def test_episodes_shorter_than_clip(tmp_path):
    path = tmp_path / "d.h5"
    write_dataset(path, lengths=(3, 4))
    with pytest.raises(InputError, match="shorter than a clip of 16 frames"):
        ClipDataset(TrajectoryReader(path), clip_frames=16)


def test_record_cli_writes_a_readable_file(tmp_path, capsys):
    from worldsim.cli import main

    out = tmp_path / "car.h5"
    argv = ["record", "--env", "CarRacing-v3", "--episodes", "2", "--max-steps", "6", "--size", "32x32", "--out"]
    assert main([*argv, str(out)]) == 0
    assert "world frame rate 25 fps" in capsys.readouterr().out  # the data's rate, not the recording speed
    r = TrajectoryReader(out)
    assert r.episode_frames == [7, 7] and r.frame_shape == (32, 32, 3)
    assert r.frame_rate == 25 and r.action_space == gym.spaces.Discrete(5)  # CarRacing 50 fps, action repeat 2
    assert r.frame_skip == 2 and r.env_id == "CarRacing-v3"
    assert [r.seed(i) for i in range(2)] == [0, 1]
    assert r.steps(0)["truncations"][-1], "an episode cut at --max-steps must be marked truncated"
    # Existing output: exit 2, one line, file untouched.
    before = out.read_bytes()
    assert main([*argv, str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert out.read_bytes() == before
    assert main(["record", "--env", "NoSuchEnv-v9", "--out", str(tmp_path / "x.h5")]) == 2
    assert "unknown source world" in capsys.readouterr().err


def test_record_interrupted_keeps_finished_episodes(tmp_path, monkeypatch):
    from worldsim.data import recorder

    real = recorder.record_episode

    def ctrl_c_on_third(cfg, index):
        if index == 2:
            raise KeyboardInterrupt
        return real(cfg, index)

    monkeypatch.setattr(recorder, "record_episode", ctrl_c_on_third)
    cfg = recorder.RecordConfig(env="CarRacing-v3", episodes=5, max_steps=4, size="16x16", out=str(tmp_path / "c.h5"))
    result = recorder.record(cfg, progress=False)
    assert result["interrupted"] and result["episodes"] == 2
    assert TrajectoryReader(tmp_path / "c.h5").episode_frames == [5, 5]
    assert not (tmp_path / "c.h5.partial").exists()


def test_data_merge_keeps_every_episode_in_order_and_refuses_mismatches(tmp_path, capsys):
    from helpers import write_dataset

    from worldsim.cli import main
    from worldsim.data.reader import TrajectoryReader

    a, b, out = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "ab.h5"
    first = write_dataset(a, lengths=(6, 4), captions=True)
    second = write_dataset(b, lengths=(5,), captions=True)
    assert main(["data-merge", "--data", f"{a},{b}", "--out", str(out)]) == 0
    merged = TrajectoryReader(str(out))
    assert len(merged) == 3 and merged.total_steps == 15
    for e, ep in enumerate(first + second):
        np.testing.assert_array_equal(merged.frames(e), ep["observations"])
        np.testing.assert_array_equal(merged.steps(e)["actions"], ep["actions"])
    assert merged.seed(2) == 40 and merged.caption(2) == "episode 0"  # b's first episode, its seed and caption
    capsys.readouterr()
    other = tmp_path / "other.h5"
    write_dataset(other, lengths=(5,), size=8)
    bad = tmp_path / "bad.h5"
    for argv in (["--data", f"{a},{other}", "--out", str(bad)], ["--data", str(a), "--out", str(bad)],
                 ["--data", f"{a},{b}", "--out", str(a)]):  # fmt: skip
        assert main(["data-merge", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
    assert not bad.exists()
