"""worldsim eval: the metric maths, and the protocol on a tiny world (baselines, keys, batching)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import randomize, tiny_config
from helpers import labelled_episode, write_dataset
from test_compat import write_recording

from worldsim.cli import main
from worldsim.config import ActionSpec
from worldsim.data import TrajectoryWriter
from worldsim.engine import WorldModel
from worldsim.envs.sources import source_world
from worldsim.evaluation.eval import STILL_PIXEL_CHANGE, context_is_still
from worldsim.evaluation.metrics import average_ranks, frechet_distance, pearson, psnr, spearman, ssim


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


def test_rank_correlation_matches_its_closed_forms():
    assert average_ranks(np.array([30, 10, 20, 20])).tolist() == [4, 1, 2.5, 2.5]  # ties share their mean rank
    x, y = np.array([3.0, 1.0, 4.0, 1.5, 9.0, 2.6]), np.array([2.0, 7.0, 1.0, 8.0, 2.8, 1.8])
    d = average_ranks(x) - average_ranks(y)
    n = len(x)
    assert abs(spearman(x, y) - (1 - 6 * (d**2).sum() / (n * (n * n - 1)))) < 1e-12  # no ties: 1 - 6 sum d^2 / ...
    assert spearman(x, np.exp(x)) == 1.0 and abs(spearman(x, -(x**3)) + 1) < 1e-12  # ranks only
    # With a tie: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4) correlate by 4.5 / sqrt(4.5 * 5).
    assert abs(spearman(np.array([1, 2, 2, 3]), np.arange(4)) - np.sqrt(0.9)) < 1e-12
    assert abs(pearson(x, 2 * x + 1) - 1) < 1e-12 and np.isnan(pearson(x, np.ones(n)))  # constant: undefined


def test_a_context_is_still_when_its_speed_or_its_pixels_say_so():
    frames = np.full((4, 16, 16, 3), 90, np.uint8)
    assert context_is_still(frames)
    nudged = frames.copy()
    nudged[2, 0, 0, 0] += 20  # 20 / 768 of a frame's values: less than the threshold
    assert STILL_PIXEL_CHANGE > 20 / (16 * 16 * 3) and context_is_still(nudged)
    moving = frames.copy()
    moving[3, :, :4] = 200  # a quarter of the frame changes
    assert not context_is_still(moving)
    # A logged speed decides, whatever the pixels: below 1 unit/s on every frame of the context is still (CarRacing's
    # rule, from its adapter).
    car = source_world("CarRacing-v3")
    assert context_is_still(moving, car.stands_still({"speed": np.array([0.0, 0.3, 0.99, 0.1])}))
    assert not context_is_still(frames, car.stands_still({"speed": np.array([0.0, 0.3, 1.5, 0.1])}))


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
        (["--family", "road,carracing"], "see only frames"),
        (["--family", "road"], "two or more"),
        (["--family-horizon", "0"], "must be >= 1"),
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


@pytest.mark.parametrize("logged", [True, False])
def test_open_loop_is_split_by_motion_in_the_context(tmp_path, logged):
    """Episode 0 stands still (constant frames, speed 0), episodes 1 and 2 move: from the logged speed when the file
    has it (read by the rule of the env that recorded it, CarRacing's), else from the pixels, the same split; the
    copy-last baseline of each group is its own mean."""
    episodes = [labelled_episode(i, n, 32) for i, n in enumerate((30, 34, 31))]
    episodes[0]["observations"][:] = episodes[0]["observations"][0]
    data = tmp_path / "d.h5"
    with TrajectoryWriter(
        data, env_id="CarRacing-v3", frame_size=(32, 32), action_space=gym.spaces.Discrete(5), frame_rate=12
    ) as w:
        for i, ep in enumerate(episodes):
            speed = np.full(len(ep["observations"]), 0.0 if i == 0 else 5.0, np.float32)
            w.add_episode(**ep, seed=i, infos={"speed": speed} if logged else None)
    cfg = tiny_config(action=ActionSpec.from_gym(gym.spaces.Discrete(5)), frame_size=(32, 32))
    cfg.frame_rate = 12
    WorldModel(cfg).save_pretrained(tmp_path / "w")
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(tmp_path / "w"), "--data", str(data), "--parts", "open_loop"]
    argv += ["--horizons", "1,4", "--context", "2", "--skip-frames", "3", "--starts-per-episode", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["motion_from"] == ("speed" if logged else "pixels")
    assert (result["rollouts_still"], result["rollouts_moving"]) == (1, 2)
    obs = [ep["observations"] for ep in episodes]
    assert result["baseline_psnr_h4_still"] > 90  # a still scene: copy-last is exact
    assert abs(result["baseline_psnr_h4_moving"] - np.mean([psnr(o[4], o[8]) for o in obs[1:]])) < 1e-6
    assert abs((result["psnr_h1_still"] + 2 * result["psnr_h1_moving"]) / 3 - result["psnr_h1"]) < 1e-6


def test_policy_shift_part_on_a_tiny_carracing_world(tiny_eval_setup, tmp_path, capsys):
    """A world of CarRacing: standstill drift (and the real env's, ~0) and two policies' predicted vs real returns
    on real tracks, at tiny sizes; a world with no source env skips the part with a note."""
    _, _, argv = tiny_eval_setup
    cfg = tiny_config(action=ActionSpec.from_gym(gym.spaces.Discrete(5)), frame_size=(32, 32))
    cfg.source_env, cfg.frame_rate = "CarRacing-v3", 25
    WorldModel(cfg).save_pretrained(tmp_path / "car")
    data = write_recording(tmp_path / "car.h5", env_id="CarRacing-v3", frame_rate=25, lengths=(30,), size=32)
    car = [*argv, "--checkpoint", str(tmp_path / "car"), "--data", str(data), "--parts", "policy_shift"]
    small = ["--family", "road_fast,random", "--family-episodes", "2", "--family-horizon", "3"]
    out = tmp_path / "eval.json"
    assert main([*car, *small, "--standstill-tracks", "1", "--skip-frames", "50", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["standstill_tracks"] == 1 and result["standstill_drift_h30_real"] < 0.5  # the real car stays put
    for key in ("standstill_drift_h1", "standstill_drift_h15", "standstill_drift_h30", "policy_return_mae",
                "policy_return_mae_share"):  # fmt: skip
        assert np.isfinite(result[key]), key
    # Two policies over 3 steps: a correlation, or null where one side is the same for both (undefined, not 0).
    for key in ("policy_return_pearson", "policy_return_spearman"):
        assert result[key] is None or np.isfinite(result[key]), key
    table = result["policy_returns"]
    assert [row["policy"] for row in table] == ["road_fast", "random"] and result["policy_return_tracks"] == 2
    predicted, real = (np.array([row[k] for row in table]) for k in ("predicted_return", "real_return"))
    assert abs(result["policy_return_mae"] - np.abs(predicted - real).mean()) < 1e-9
    printed = capsys.readouterr().out
    assert "Standstill" in printed and "| road_fast |" in printed and "Spearman" in printed
    assert main([*argv, "--parts", "policy_shift", "--json", str(out)]) == 0  # Test-v0: nothing to play
    assert "no source env" in json.loads(out.read_text())["policy_shift_note"]


def test_standstill_in_held_out_data(tmp_path):
    """Where a held-out episode stands still with no input (logged speed 0 in data recorded from CarRacing, whose
    rule reads it; no-op actions) for the context and 30 frames, the world is reset there and given 30 no-ops; the
    recorded frames are the reference's own drift (0 for a frozen scene). A moving episode offers no window."""
    episodes = [labelled_episode(i, n, 32) for i, n in enumerate((50, 50))]
    still = episodes[0]
    still["observations"][10:] = still["observations"][10]
    still["actions"][9:] = 0
    data = tmp_path / "d.h5"
    with TrajectoryWriter(
        data, env_id="CarRacing-v3", frame_size=(32, 32), action_space=gym.spaces.Discrete(5), frame_rate=12
    ) as w:
        for i, ep in enumerate(episodes):
            speed = np.full(len(ep["observations"]), 5.0, np.float32)
            if i == 0:
                speed[10:] = 0.0
            w.add_episode(**ep, seed=i, infos={"speed": speed})
    cfg = tiny_config(action=ActionSpec.from_gym(gym.spaces.Discrete(5)), frame_size=(32, 32))
    cfg.frame_rate = 12
    wm = WorldModel(cfg)
    randomize(wm.dit, 0)
    wm.save_pretrained(tmp_path / "w")
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(tmp_path / "w"), "--data", str(data), "--parts", "policy_shift"]
    assert main([*argv, "--context", "2", "--skip-frames", "3", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["standstill_data_windows"] == 1  # frames 10..41 of episode 0; episode 1 never stops
    assert result["standstill_drift_h30_data_real"] == 0.0
    assert result["standstill_drift_h30_data"] > 0.0  # a random world does not hold a frozen scene
    assert "no source env" in result["policy_shift_note"]


def test_state_part_scores_a_copying_world_like_copy_last(tmp_path, capsys, monkeypatch):
    """eval --parts state on real PushT frames (recorded with their state): a world that holds its last context
    frame must score exactly the copy-last overlap, and pose errors within the pose reader's error of copy-last's
    (which uses the recorded pose) — an off-by-one between dreamt and real frames would break both."""
    pytest.importorskip("gym_pusht")
    from conftest import save_pusht_world

    from worldsim.engine import StepOutput

    data = tmp_path / "pusht.h5"
    assert main(["record", "--env", "gym_pusht/PushT-v0", "--policy", "random", "--episodes", "2",
                 "--max-steps", "24", "--out", str(data)]) == 0  # fmt: skip
    world = save_pusht_world(tmp_path / "world", frame_size=64)
    held = {}
    reset = WorldModel.reset

    def remember(self, frames=None, *args, **kwargs):
        held["last"] = np.asarray(frames)[:, -1]
        return reset(self, frames, *args, **kwargs)

    def copy_last(self, actions):
        B, T = np.asarray(actions).shape[:2]
        return StepOutput(np.repeat(held["last"][:, None], T, 1), np.zeros((B, T), np.float32), np.zeros((B, T), bool))

    monkeypatch.setattr(WorldModel, "reset", remember)
    monkeypatch.setattr(WorldModel, "predict", copy_last)
    out = tmp_path / "state.json"
    argv = ["eval", "--checkpoint", world, "--data", str(data), "--parts", "state", "--state-horizons", "1,8",
            "--context", "2", "--starts-per-episode", "3", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["state_rollouts"] == 6 and result["state_horizons"] == [1, 8]
    for h in (1, 8):
        assert result[f"state_iou_h{h}"] == pytest.approx(result[f"state_iou_copy_h{h}"])
        assert 0.0 <= result[f"state_iou_h{h}"] <= 1.0 and result[f"state_readable_h{h}"] == 1.0
        assert abs(result[f"block_error_h{h}"] - result[f"block_error_copy_h{h}"]) < 6.0
    assert "State fidelity (6 open-loop rollouts" in capsys.readouterr().out
