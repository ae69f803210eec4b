"""What generic code knows of a source env comes from its adapter in envs/sources.py, and a world's from its config."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from conftest import tiny_config

from worldsim.bench_env import EnvBenchConfig, run_env_bench
from worldsim.config import ActionSpec
from worldsim.data.recorder import RecordConfig, frame_skip_for
from worldsim.engine import WorldModel
from worldsim.envs.sources import SOURCE_WORLDS, source_world


def test_source_world_entries_and_the_plain_gymnasium_default():
    car = source_world("CarRacing-v3")
    assert (car.frame_skip, car.intro_seconds, car.driver) == (2, 2.0, "road")
    assert source_world("Crafter") is source_world("worldsim/Crafter-v0") and source_world("ALE/Pong-v5").module
    plain = source_world("Test-v0")
    assert plain not in SOURCE_WORLDS and (plain.module, plain.frame_skip, plain.intro_seconds, plain.driver) == (
        "", 1, 0.0, "",
    )  # fmt: skip


def test_what_standing_still_means_comes_from_the_adapter():
    car = source_world("CarRacing-v3")
    assert car.stands_still({"speed": np.array([0.0, 0.99, 1.0, 3.0])}).tolist() == [True, True, False, False]
    assert car.stands_still({"on_track": np.ones(4)}) is None  # no speed logged: its rule cannot tell
    for other in ("gym_pusht/PushT-v0", "Test-v0"):  # no rule: eval falls back on the pixels
        assert source_world(other).stands_still({"speed": np.zeros(4)}) is None


def test_recorder_frame_skip_defaults_to_the_adapters():
    assert frame_skip_for(RecordConfig(env="CarRacing-v3")) == 2
    assert frame_skip_for(RecordConfig(env="CarRacing-v3", frame_skip=1)) == 1
    assert frame_skip_for(RecordConfig(env="CartPole-v1")) == 1


def test_bench_env_measures_the_worlds_own_source_env(tmp_path):
    cfg = tiny_config(action=ActionSpec.from_gym(gym.spaces.Discrete(2)), frame_size=(16, 16))
    starts = {"frames": torch.zeros(1, 2, 16, 16, 3, dtype=torch.uint8)}
    WorldModel(cfg, starts=starts).save_pretrained(tmp_path / "none")  # names no source env
    result = run_env_bench(EnvBenchConfig(checkpoint=str(tmp_path / "none"), num_envs="1", steps=2))
    assert result["source"] == "" and "source_env_steps_per_s" not in result["rows"][0]
    cfg.source_env = "CartPole-v1"
    WorldModel(cfg, starts=starts).save_pretrained(tmp_path / "cartpole")
    result = run_env_bench(EnvBenchConfig(checkpoint=str(tmp_path / "cartpole"), num_envs="1", steps=2))
    assert result["source"] == "CartPole-v1" and result["rows"][0]["source_env_steps_per_s"] > 0
    result = run_env_bench(EnvBenchConfig(checkpoint=str(tmp_path / "cartpole"), num_envs="1", steps=2, source=""))
    assert result["source"] == "" and "source_env_steps_per_s" not in result["rows"][0]
