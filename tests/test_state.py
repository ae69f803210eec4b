"""The object-state levers of world training: the state head and its loss, and moving clips oversampled."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_training import autoencoder_dir, world_cfg  # noqa: F401  (the fixture is used by name)

from worldsim.data.writer import TrajectoryWriter
from worldsim.engine import WorldModel
from worldsim.errors import InputError
from worldsim.training.loop import Distributed, StepBatchSampler, train
from worldsim.training.objectives import diffusion_forcing_loss, draw_forcing_noise
from worldsim.training.state import StateClips, episode_features, raw_features
from worldsim.training.world import WorldStage

PUSHT = "gym_pusht/PushT-v0"
KEYS = ("block_x", "block_y", "block_angle")


def block_episode(steps: int, moves: range, size: int = 16, start: float = 100.0) -> dict:
    """An episode whose block (a bright square, drawn where its pose says) rests, moves one step right in each
    frame of ``moves`` and turns a little, then rests again; the pusher's targets are random points."""
    x = start + 20.0 * np.array([sum(1 for m in moves if m <= t) for t in range(steps + 1)])
    angle = 0.05 * (x - start) / 20.0
    frames = np.zeros((steps + 1, size, size, 3), dtype=np.uint8)
    for t in range(steps + 1):
        col = int(x[t] / 512 * (size - 3))
        frames[t, 6:9, col : col + 3] = 255
    rng = np.random.default_rng(steps)
    return {
        "observations": frames,
        "actions": rng.uniform(0, 512, (steps, 2)).astype(np.float32),
        "rewards": np.zeros(steps, dtype=np.float32),
        "terminations": np.zeros(steps, dtype=bool),
        "truncations": np.zeros(steps, dtype=bool),
        "infos": {"block_x": x, "block_y": np.full(steps + 1, 300.0), "block_angle": angle},
    }


@pytest.fixture
def pusht_data(tmp_path):
    path = tmp_path / "pusht.h5"
    space = gym.spaces.Box(0.0, 512.0, (2,), np.float32)
    with TrajectoryWriter(path, env_id=PUSHT, frame_size=(16, 16), action_space=space, frame_rate=10) as w:
        for steps, moves in ((16, range(4, 8)), (14, range(0)), (18, range(10, 16)), (12, range(2, 5))):
            w.add_episode(**block_episode(steps, moves), seed=steps)
    return path


def test_state_features_turn_angles_into_sine_and_cosine_and_standardise_over_the_episodes(pusht_data):
    from worldsim.data.reader import TrajectoryReader

    names, raw = raw_features({"block_x": np.array([1.0, 3.0]), "block_angle": np.array([0.0, np.pi / 2])}, KEYS[::2])
    assert names == ["block_x", "sin block_angle", "cos block_angle"]
    np.testing.assert_allclose(raw, [[1.0, 0.0, 1.0], [3.0, 1.0, 0.0]], atol=1e-12)
    reader = TrajectoryReader(pusht_data)
    spec, state = episode_features(reader, [0, 1, 2], KEYS, "x")
    stacked = np.concatenate([state[e] for e in (0, 1, 2)])
    np.testing.assert_allclose(stacked[:, [0, 2, 3]].mean(0), 0.0, atol=1e-5)  # block_y never changes: std floored
    np.testing.assert_allclose(stacked[:, [0, 2, 3]].std(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(state[0][:, 0] * spec.std[0] + spec.mean[0], reader.infos(0)["block_x"], rtol=1e-5)


def test_moving_clips_are_the_ones_where_the_object_travels_and_the_sampler_draws_them_at_the_share(
    tmp_path,
    pusht_data,
    autoencoder_dir,  # noqa: F811
):
    stage = WorldStage(world_cfg(pusht_data, autoencoder_dir, tmp_path / "w", clip_frames=4, moving_share=0.75))
    dataset = stage.dataset
    assert isinstance(dataset, StateClips)
    for i in range(len(dataset)):
        e, s = dataset.clips.window(i)
        x = stage.reader.infos(e)["block_x"][s : s + 4]
        assert dataset.moving[i] == (x[-1] != x[0]), (e, s)  # this data's block only ever moves forward
    assert dataset.moving.any() and not dataset.moving.all()
    item = dataset[int(np.flatnonzero(dataset.moving)[0])]
    assert item["state"].shape == (4, 4) and item["latents"].shape[0] == 4
    sampler = StepBatchSampler(len(dataset), 8, Distributed(), 0, 0, 400, dataset.buckets, dataset.bucket_weights)
    drawn = np.concatenate([sampler.global_indices(step) for step in range(400)])
    assert dataset.moving[drawn].mean() == pytest.approx(0.75, abs=0.06)
    assert dataset.moving.mean() < 0.6  # the share is the lever's, not the data's


def test_the_state_head_learns_the_pose_and_the_world_keeps_its_names(tmp_path, pusht_data, autoencoder_dir):  # noqa: F811
    cfg = world_cfg(
        pusht_data, autoencoder_dir, tmp_path / "w", clip_frames=4, state_weight=1.0, steps=60, batch_size=8, lr=3e-3
    )
    stage = WorldStage(cfg)
    assert stage.config.dit.state_dim == 4
    assert stage.config.state["names"] == ["block_x", "block_y", "sin block_angle", "cos block_angle"]
    batch = torch.utils.data.default_collate([stage.dataset[i] for i in range(0, len(stage.dataset), 3)])
    clip = stage.clip_batch(stage.model, batch)
    draw = draw_forcing_noise(len(clip.latents), 4, tuple(clip.latents.shape[2:]), stage.loss_config,
                              torch.Generator().manual_seed(1))  # fmt: skip

    def state_loss() -> float:
        with torch.no_grad():
            return diffusion_forcing_loss(stage.model, clip, stage.loss_config, draw=draw)[1]["state"]

    before = state_loss()
    assert before == pytest.approx(clip.state.pow(2).mean().item(), rel=1e-5)  # a new head says the mean, 0
    train(stage, cfg, progress=False)
    assert state_loss() < 0.5 * before
    wm = WorldModel.from_pretrained(tmp_path / "w" / "world")
    assert wm.config.state == stage.config.state and wm.dit.state_head is not None
    wm.reset(seed=0)
    assert wm.step(np.array([[100.0, 200.0]], dtype=np.float32)).frames.shape == (1, 16, 16, 3)

    # Fine-tuned without the state loss, the world keeps its head; a world without one gains a fresh head.
    kept = WorldStage(
        world_cfg(pusht_data, autoencoder_dir, tmp_path / "k", clip_frames=4, init=str(tmp_path / "w" / "world"))
    )
    assert kept.config.state == stage.config.state
    torch.testing.assert_close(kept.model.state_head.mlp[-1].weight, wm.dit.state_head.mlp[-1].weight)
    plain = WorldStage(world_cfg(pusht_data, autoencoder_dir, tmp_path / "p", clip_frames=4, steps=1))
    plain.world_model(plain.model).save_pretrained(tmp_path / "plain")
    gained = WorldStage(dataclasses.replace(cfg, out=str(tmp_path / "g"), init=str(tmp_path / "plain")))
    assert gained.model.state_head is not None and not gained.model.state_head.mlp[-1].weight.any()


def test_state_levers_say_what_they_need(tmp_path, pusht_data, autoencoder_dir):  # noqa: F811
    from helpers import write_dataset

    other = tmp_path / "other.h5"
    write_dataset(other, lengths=(14, 20, 9), size=16)
    with pytest.raises(InputError, match="names none"):
        WorldStage(world_cfg(other, autoencoder_dir, tmp_path / "a", state_weight=1.0))
    for bad in (dict(state_weight=-1.0), dict(moving_share=1.0), dict(moving_share=-0.1)):
        with pytest.raises(InputError, match="state-weight|moving-share"):
            WorldStage(world_cfg(pusht_data, autoencoder_dir, tmp_path / "b", clip_frames=4, **bad))
    unrecorded = tmp_path / "unrecorded.h5"
    space = gym.spaces.Box(0.0, 512.0, (2,), np.float32)
    with TrajectoryWriter(unrecorded, env_id=PUSHT, frame_size=(16, 16), action_space=space, frame_rate=10) as w:
        for steps in (12, 12, 12):
            episode = block_episode(steps, range(2, 4))
            del episode["infos"]["block_angle"]
            w.add_episode(**episode)
    with pytest.raises(InputError, match="block_angle"):
        WorldStage(world_cfg(unrecorded, autoencoder_dir, tmp_path / "c", clip_frames=4, moving_share=0.5))
