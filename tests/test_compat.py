"""Data that does not fit a world: eval and fine-tuning refuse it in one line, before writing anything."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import tiny_config
from helpers import labelled_episode

from worldsim.checkpoint import save_autoencoder
from worldsim.cli import main
from worldsim.config import ActionSpec, AutoencoderConfig, SamplerConfig, WorldConfig, dit_config
from worldsim.data import TrajectoryReader, TrajectoryWriter
from worldsim.data.compat import check_data_matches_world, describe_space
from worldsim.engine import WorldModel
from worldsim.errors import InputError
from worldsim.models.autoencoder import FrameAutoencoder

SIZE = 16
RATE = 25


def write_recording(
    path,
    env_id: str = "Test-v0",
    frame_rate: int = RATE,
    action_space: gym.Space | None = None,
    frame_skip: int | None = None,
    lengths: tuple[int, ...] = (12, 10),
    size: int = SIZE,
):
    """A tiny trajectory file that says where it came from: env id, frame rate, action space (and frame skip)."""
    attrs = {} if frame_skip is None else {"frame_skip": frame_skip}
    action_space = action_space or gym.spaces.Discrete(5)
    with TrajectoryWriter(
        path,
        env_id=env_id,
        frame_size=(size, size),
        action_space=action_space,
        frame_rate=frame_rate,
        attrs=attrs,
        overwrite=True,
    ) as w:
        for i, n in enumerate(lengths):
            w.add_episode(**labelled_episode(i, n, size), seed=i)
    return path


def world_config(source_env: str = "Test-v0", frame_rate: int = RATE, **changes) -> WorldConfig:
    cfg = tiny_config(action=ActionSpec(kind="discrete", n=5), frame_size=(SIZE, SIZE))
    return dataclasses.replace(cfg, source_env=source_env, frame_rate=frame_rate, **changes)


def refusal(tmp_path, **recording) -> str:
    reader = TrajectoryReader(write_recording(tmp_path / "d.h5", **recording))
    with pytest.raises(InputError) as e:
        check_data_matches_world(reader, world_config(), "w", "evaluate")
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"cannot evaluate w on {tmp_path / 'd.h5'}: ")
    return message


# ----------------------------------------------------------------------------- the rule
def test_matching_data_passes_and_frame_size_is_not_checked(tmp_path):
    reader = TrajectoryReader(write_recording(tmp_path / "d.h5", size=24))  # the world is 16x16: frames are resized
    check_data_matches_world(reader, world_config(), "w", "evaluate")


def test_another_frame_rate_is_refused_naming_both_rates_and_the_fix(tmp_path):
    message = refusal(tmp_path, frame_rate=50, frame_skip=1)
    assert "recorded at 50 fps but the world runs at 25 fps" in message
    assert message.endswith("re-record it with `worldsim record --env Test-v0 --frame-skip 2`")


@pytest.mark.parametrize(
    "rate, skip, fix",
    [
        (17, 3, "--frame-skip 2"),  # 50 fps env at action repeat 3 (16.7 fps, stored as 17): repeat 2 gives 25
        (12, 4, "--frame-skip 2"),  # slower than the world (50 fps at repeat 4, stored as 12): a smaller repeat
        (50, None, "record it at 25 fps"),  # a file that does not say how it was recorded
        (30, 1, "record it at 25 fps"),  # no whole action repeat gives 25 fps from 30
    ],
)
def test_the_frame_rate_fix_is_the_frame_skip_that_gives_the_worlds_rate(tmp_path, rate, skip, fix):
    assert fix in refusal(tmp_path, frame_rate=rate, frame_skip=skip)


def test_another_action_space_is_refused_naming_both(tmp_path):
    message = refusal(tmp_path, action_space=gym.spaces.Box(-1, 1, (2,)))
    assert "the world's action space is Discrete(5) but the data's is Box(-1, 1, shape=[2])" in message
    message = refusal(tmp_path, action_space=gym.spaces.Discrete(3))
    assert "Discrete(5) but the data's is Discrete(3)" in message


def test_another_source_env_is_refused_naming_both(tmp_path):
    message = refusal(tmp_path, env_id="Other-v0")
    assert "the world is of Test-v0 but the data was recorded from Other-v0" in message
    assert message.endswith("(worldsim record --env Test-v0)")


def test_an_env_named_on_one_side_only_passes_and_aliases_are_the_same_env(tmp_path):
    no_env = TrajectoryReader(write_recording(tmp_path / "a.h5", env_id=""))
    check_data_matches_world(no_env, world_config(), "w", "evaluate")
    check_data_matches_world(no_env, world_config(source_env=""), "w", "evaluate")
    crafter = TrajectoryReader(write_recording(tmp_path / "b.h5", env_id="Crafter"))
    check_data_matches_world(crafter, world_config(source_env="worldsim/Crafter-v0"), "w", "evaluate")
    # Checks still run on a side that names no env.
    with pytest.raises(InputError, match="at 25 fps but the world runs at 12 fps"):
        check_data_matches_world(no_env, world_config(source_env="", frame_rate=12), "w", "evaluate")


def test_describe_space_names_bounds_that_differ():
    assert describe_space(ActionSpec.from_gym(gym.spaces.MultiDiscrete([3, 2]))) == "MultiDiscrete([3, 2])"
    box = gym.spaces.Box(low=np.array([-1.0, 0.0], np.float32), high=np.ones(2, np.float32))
    assert describe_space(ActionSpec.from_gym(box)) == "Box([-1, 0], 1, shape=[2])"


# ----------------------------------------------------------------------------- through the CLI
def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def eval_args(tmp_path):
    WorldModel(world_config()).save_pretrained(tmp_path / "w")
    out = tmp_path / "eval.json"
    return out, ["eval", "--checkpoint", str(tmp_path / "w"), "--context", "2", "--horizons", "1", "--json", str(out)]


@pytest.mark.parametrize(
    "recording, needle",
    [
        (dict(frame_rate=50, frame_skip=1), "recorded at 50 fps but the world runs at 25 fps; re-record it with"),
        (dict(action_space=gym.spaces.Discrete(3)), "action space is Discrete(5) but the data's is Discrete(3)"),
        (dict(env_id="Other-v0"), "the world is of Test-v0 but the data was recorded from Other-v0"),
    ],
)
def test_eval_refuses_data_that_does_not_fit(tmp_path, capsys, eval_args, recording, needle):
    out, argv = eval_args
    data = write_recording(tmp_path / "d.h5", **recording)
    assert needle in one_line_error(capsys, [*argv, "--data", str(data)])
    assert not out.exists()


def test_eval_refuses_carracing_recorded_without_its_action_repeat(tmp_path, capsys):
    """The case that used to report meaningless numbers: 50 fps CarRacing data against a 25 fps CarRacing world."""
    data = tmp_path / "car50.h5"
    record = ["record", "--env", "CarRacing-v3", "--episodes", "1", "--max-steps", "3", "--size", "16x16"]
    assert main([*record, "--frame-skip", "1", "--out", str(data)]) == 0
    capsys.readouterr()
    WorldModel(world_config(source_env="CarRacing-v3")).save_pretrained(tmp_path / "car")
    out = tmp_path / "eval.json"
    err = one_line_error(
        capsys, ["eval", "--checkpoint", str(tmp_path / "car"), "--data", str(data), "--json", str(out)]
    )
    assert "recorded at 50 fps but the world runs at 25 fps" in err
    assert err.rstrip().endswith("re-record it with `worldsim record --env CarRacing-v3 --frame-skip 2`")
    assert not out.exists()


TINY_AE = AutoencoderConfig(widths=[8, 16], latent_channels=4)


@pytest.fixture
def train_args(tmp_path):
    """A fine-tunable world (the tiny preset's XS DiT on a tiny autoencoder) and the `train world --init` argv."""
    torch.manual_seed(0)
    ae = FrameAutoencoder(TINY_AE)
    save_autoencoder(tmp_path / "ae", [SIZE, SIZE], dataclasses.asdict(TINY_AE), ae.state_dict())
    config = world_config(autoencoder=TINY_AE, dit=dit_config("XS", max_frames=4), sampler=SamplerConfig(window=3))
    WorldModel(config, autoencoder=ae).save_pretrained(tmp_path / "w")
    out = tmp_path / "run"
    argv = ["train", "world", "--preset", "tiny", "--autoencoder", str(tmp_path / "ae"), "--out", str(out)]
    return out, [*argv, "--init", str(tmp_path / "w"), "--workers", "0", "--steps", "2", "--precision", "fp32"]


@pytest.mark.parametrize(
    "recording, needle",
    [
        (dict(frame_rate=50, frame_skip=1), "recorded at 50 fps but the world runs at 25 fps; re-record it with"),
        (dict(action_space=gym.spaces.Box(-1, 1, (2,))), "action space is Discrete(5) but the data's is Box("),
        (dict(env_id="Other-v0"), "the world is of Test-v0 but the data was recorded from Other-v0"),
    ],
)
def test_fine_tuning_refuses_data_that_does_not_fit(tmp_path, capsys, train_args, recording, needle):
    out, argv = train_args
    data = write_recording(tmp_path / "d.h5", **recording)
    err = one_line_error(capsys, [*argv, "--data", str(data)])
    assert "cannot fine-tune" in err and needle in err
    assert not out.exists(), "a refused run must not create its run directory"


def test_fine_tuning_on_data_without_env_id_keeps_the_worlds_env(tmp_path, capsys, train_args):
    out, argv = train_args
    data = write_recording(tmp_path / "d.h5", env_id="")
    assert main([*argv, "--data", str(data)]) == 0, capsys.readouterr().err
    config = json.loads((out / "world" / "config.json").read_text())
    assert config["source_env"] == "Test-v0" and config["frame_rate"] == RATE
