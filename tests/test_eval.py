"""worldsim eval: the metric maths, and the protocol on a tiny world (baselines, keys, batching)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_config
from helpers import write_dataset
from test_compat import write_recording

from worldsim.cli import main
from worldsim.config import ActionSpec
from worldsim.engine import WorldModel
from worldsim.eval import frechet_distance, psnr, ssim


def test_psnr_matches_its_definition():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = a.copy()
    b[1] = 10  # MSE 100 -> 10 log10(255^2 / 100)
    out = psnr(a, b)
    assert out[0] > 90 and abs(out[1] - 10 * np.log10(255**2 / 100)) < 1e-9


def test_ssim_of_identical_constant_and_noisy_frames():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    assert np.allclose(ssim(a, a), 1.0)
    # Constant frames x and y: no variance, so SSIM is the luminance term (2xy + c1) / (x^2 + y^2 + c1).
    x, y, c1 = 100.0, 140.0, (0.01 * 255) ** 2
    out = ssim(np.full((16, 16, 3), x, np.uint8), np.full((16, 16, 3), y, np.uint8))
    assert out.shape == () and abs(out - (2 * x * y + c1) / (x * x + y * y + c1)) < 1e-9
    noisy = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert (ssim(a, noisy) < 0.99).all() and (ssim(a, noisy) > ssim(a, 255 - a)).all()


def test_frechet_distance_of_shifted_and_scaled_features():
    a = np.random.default_rng(0).normal(size=(500, 6))
    a -= a.mean(0)
    trace = np.trace(np.cov(a, rowvar=False))
    shift = np.arange(6.0)
    assert abs(frechet_distance(a, a)) < 1e-6
    assert abs(frechet_distance(a, a + shift) - (shift**2).sum()) < 1e-6  # same covariance: the mean term only
    assert abs(frechet_distance(a, 2 * a) - trace) < 1e-6  # tr A + tr 4A - 2 tr 2A


@pytest.fixture
def tiny_eval_setup(tmp_path):
    data = tmp_path / "d.h5"
    episodes = write_dataset(data, lengths=(30, 34, 31), size=32)
    cfg = tiny_config(action=ActionSpec.from_gym(gym.spaces.Discrete(5)), frame_size=(32, 32))
    cfg.frame_rate = 12  # the data's: eval refuses data at another rate
    WorldModel(cfg).save_pretrained(tmp_path / "w")
    small = ["--teacher-frames", "5", "--stability-frames", "12", "--stability-window", "4", "--skip-frames", "3"]
    argv = ["eval", "--checkpoint", str(tmp_path / "w"), "--data", str(data), "--horizons", "1,4", "--context", "2"]
    return tmp_path, episodes, [*argv, *small]


def test_eval_cli_writes_every_metric_with_its_baseline(tiny_eval_setup, capsys):
    tmp_path, episodes, argv = tiny_eval_setup
    out = tmp_path / "eval.json"
    assert main([*argv, "--starts-per-episode", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["rollouts"] == 3 and result["teacher_frames"] == 15 and result["stability_worlds"] == 3
    for key in (
        "psnr_h1", "psnr_h4", "ssim_h4", "baseline_psnr_h4", "baseline_ssim_h4", "delta_psnr_h4",
        "teacher_psnr", "teacher_ssim", "teacher_baseline_psnr", "reward_mae", "reward_baseline_mae",
        "termination_false_alarms_per_1k", "fd_early", "fd_late", "stability_ratio",
    ):  # fmt: skip
        assert np.isfinite(result[key]), key
    # auto: this world's source env names no driver
    assert len(result["fd_by_segment"]) == 3 and result["stability_policy"] == "replay"
    obs = [ep["observations"] for ep in episodes]
    # Copy-last of the open-loop rollouts (start 3 after the skipped frames, context 2): frame 4 against frame 8.
    expected = np.mean([psnr(o[4], o[8]) for o in obs])
    assert abs(result["baseline_psnr_h4"] - expected) < 1e-6
    # Teacher-forced copy-last: frames 4..8 against frames 5..9 of each episode.
    expected = np.mean([psnr(o[t - 1], o[t]) for o in obs for t in range(5, 10)])
    assert abs(result["teacher_baseline_psnr"] - expected) < 1e-6
    rewards = np.concatenate([ep["rewards"][4:9] for ep in episodes])  # rewards of transitions into frames 5..9
    assert abs(result["reward_baseline_mae"] - np.abs(rewards - np.median(rewards)).mean()) < 1e-6
    printed = capsys.readouterr().out
    assert "| 4 |" in printed and "stability_ratio" in printed and "Teacher-forced" in printed


def test_eval_does_not_depend_on_batching(tiny_eval_setup, tmp_path):
    _, _, argv = tiny_eval_setup
    results = []
    for batch in ("1", "3"):
        out = tmp_path / f"eval{batch}.json"
        assert main([*argv, "--parts", "teacher,open_loop", "--batch", batch, "--json", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    for key in ("psnr_h4", "random_action_psnr_h4", "teacher_psnr", "reward_mae"):
        assert abs(results[0][key] - results[1][key]) < 1e-3, key


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--parts", "vibes"], "unknown vibes"),
        (["--episodes", "7"], "episodes 0..2"),
        (["--horizons", "a"], "integers"),
        (["--stability-policy", "carracing"], "sees only the dream"),
    ],
)
def test_eval_bad_options_give_one_line(tiny_eval_setup, capsys, extra, message):
    _, _, argv = tiny_eval_setup
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err


def test_stability_dreams_can_be_driven_by_a_policy_that_sees_them(tiny_eval_setup, tmp_path):
    _, _, argv = tiny_eval_setup
    out = tmp_path / "eval.json"
    assert main([*argv, "--parts", "stability", "--stability-policy", "random", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["stability_policy"] == "random" and np.isfinite(result["stability_ratio"])
    assert "psnr_h1" not in result and "teacher_psnr" not in result  # only the part asked for
    assert "fd_real_policy" not in result  # this world names no real env to calibrate against


def test_stability_is_calibrated_against_real_play_with_the_same_policy(tiny_eval_setup, tmp_path):
    """A world of CarRacing: the same policy also plays the real env, giving the FD that real play has."""
    _, _, argv = tiny_eval_setup
    cfg = tiny_config(action=ActionSpec.from_gym(gym.spaces.Discrete(5)), frame_size=(32, 32))
    cfg.source_env, cfg.frame_rate = "CarRacing-v3", 25
    WorldModel(cfg).save_pretrained(tmp_path / "car")
    data = write_recording(tmp_path / "car.h5", env_id="CarRacing-v3", frame_rate=25, lengths=(30, 34, 31), size=32)
    argv[argv.index("--checkpoint") + 1] = str(tmp_path / "car")
    argv[argv.index("--data") + 1] = str(data)
    out = tmp_path / "eval.json"
    assert main([*argv, "--parts", "stability", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["stability_policy"] == "road"  # auto: the frame-only driver CarRacing's source adapter names
    assert result["fd_real_policy"] > 0
    assert abs(result["stability_ratio_vs_real_policy"] - result["fd_late"] / result["fd_real_policy"]) < 1e-9


@pytest.mark.parametrize("env, skipped", [("CarRacing-v3", 50), ("Test-v0", 0)])
def test_skipped_frames_default_to_the_intro_of_the_worlds_source_env(tmp_path, env, skipped):
    """CarRacing's source adapter names 2 s that are not play: 50 frames of a 25 fps world. Other envs: none."""
    cfg = tiny_config(action=ActionSpec.from_gym(gym.spaces.Discrete(5)), frame_size=(16, 16))
    cfg.source_env, cfg.frame_rate = env, 25
    WorldModel(cfg).save_pretrained(tmp_path / "w")
    data = write_recording(tmp_path / "d.h5", env_id=env, frame_rate=25, lengths=(60,), size=16)
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(tmp_path / "w"), "--data", str(data), "--parts", "teacher", "--context", "2"]
    assert main([*argv, "--teacher-frames", "20", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["teacher_frames"] == min(20, 61 - skipped - 2)
