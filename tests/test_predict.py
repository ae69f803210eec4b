"""``worldsim.predict`` / ``worldsim predict``: a frame-only policy's dreams (and real episodes) on tiny random worlds.

Contracts: shapes, seeded determinism, batching that changes no dream, one policy instance per episode, both factory
shapes, one-line errors that name the policy, step and episode (before any work), the CLI's table, JSON and video;
with ``--real`` a real CarRacing-v3 run beside the dream; on a tiny PushT world (Box(2) in [0, 512]^2) success from
the termination head, Box actions clipped with one warning per policy, NaN and inf refused, and the real PushT env.
"""

from __future__ import annotations

import json
import sys
import types

import gymnasium
import numpy as np
import pytest
import torch
from conftest import tiny_config
from helpers import write_dataset
from test_vector_env import close

import worldsim
from worldsim import ActionSpec, PredictResult, WorldModel
from worldsim.cli import main
from worldsim.envs.sources import SourceWorld, source_world
from worldsim.errors import ActionClippedWarning, InputError
from worldsim.evaluation.report import format_predict_table
from worldsim.evaluation.result import episode_success
from worldsim.inputs import resize_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def carracing_world(tmp_path_factory) -> str:
    """A tiny 64x64 random world that names CarRacing-v3 as its real env, at its 25 fps, Discrete(5)."""
    cfg = tiny_config(action=ActionSpec(kind="discrete", n=5), frame_size=(64, 64))
    cfg.frame_rate, cfg.source_env, cfg.name = 25, "CarRacing-v3", "TinyCarRacing"
    wm = WorldModel(cfg)
    path = tmp_path_factory.mktemp("world") / "car"
    wm.save_pretrained(path)
    return str(path)


class Counter:
    """A stateful policy: its action is how many frames it has seen (mod 5)."""

    made: list[Counter] = []

    def __init__(self, action_space: gymnasium.Space, seed: int | None) -> None:
        self.seed, self.calls = seed, 0
        Counter.made.append(self)

    def reset(self, seed: int | None = None) -> None:
        pass

    def __call__(self, frame: np.ndarray) -> int:
        assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
        self.calls += 1
        return self.calls % 5


# ---------------------------------------------------------------------------------------------- results
def test_shapes_summary_and_determinism(ckpt):
    r = worldsim.predict(ckpt, "random", episodes=3, horizon=4, keep_frames=True)
    assert isinstance(r, PredictResult) and r.seeds == [0, 1, 2]
    assert r.dream_return.shape == (3,) and r.dream_terminated.shape == (3,) and r.dream_terminated.dtype == bool
    assert r.dream_frames.shape == (3, 5, 32, 32, 3) and r.dream_frames.dtype == np.uint8
    assert r.real_return is None and r.real_terminated is None and r.real_frames is None
    s = r.summary()
    assert s["episodes"] == 3 and s["dream_return_mean"] == pytest.approx(r.dream_return.mean())
    # No source env, so no notion of success: returns (with a bootstrap interval) and terminations only.
    assert set(s) == {
        "episodes",
        "dream_return_mean",
        "dream_return_std",
        "dream_return_ci95",
        "dream_termination_rate",
    }
    low, high = s["dream_return_ci95"]
    assert low <= s["dream_return_mean"] <= high
    assert r.dream_max_reward.shape == (3,) and r.dream_success is None and r.success_reward is None
    # Episode i starts from shipped start (seed + i) mod 3: the context's last frame comes first.
    starts = WorldModel.from_pretrained(ckpt).starts["frames"]
    assert all(np.array_equal(r.dream_frames[i, 0], starts[i % 3, -1].numpy()) for i in range(3))
    again = worldsim.predict(WorldModel.from_pretrained(ckpt), "random", episodes=3, horizon=4, keep_frames=True)
    assert np.array_equal(r.dream_frames, again.dream_frames) and np.array_equal(r.dream_return, again.dream_return)
    other = worldsim.predict(ckpt, "random", episodes=3, horizon=4, seed=5)
    assert not np.array_equal(r.dream_return, other.dream_return)
    assert worldsim.predict(ckpt, "random", episodes=2, horizon=3).dream_frames is None


def test_batching_does_not_change_a_dream(ckpt):
    batch = worldsim.predict(ckpt, "random", episodes=3, horizon=4, seed=0, keep_frames=True)
    alone = worldsim.predict(ckpt, "random", episodes=1, horizon=4, seed=2, keep_frames=True)
    assert alone.seeds == [2]
    assert close(alone.dream_frames[0], batch.dream_frames[2])
    assert alone.dream_return[0] == pytest.approx(batch.dream_return[2], abs=1e-4)


def test_each_episode_gets_its_own_policy_instance(ckpt):
    Counter.made = []
    worldsim.predict(ckpt, Counter, episodes=3, horizon=4, seed=10)
    assert [p.seed for p in Counter.made] == [10, 11, 12]
    assert [p.calls for p in Counter.made] == [4, 4, 4]  # one shared instance would have seen 12 frames


def test_an_ended_dream_rests(ckpt):
    """After its termination head fires, a dream's return, frame and policy stop; the others go on."""
    wm = WorldModel.from_pretrained(ckpt)
    step, t = wm.step, [0]

    def fire_at_step_1(actions):
        out = step(actions)
        out.terminated[:] = False
        out.reward[:] = 1.0
        out.terminated[0] = t[0] == 1
        t[0] += 1
        return out

    wm.step = fire_at_step_1
    Counter.made = []
    r = worldsim.predict(wm, Counter, episodes=2, horizon=4, keep_frames=True)
    assert r.dream_terminated.tolist() == [True, False] and r.dream_return.tolist() == [2.0, 4.0]
    assert [p.calls for p in Counter.made] == [2, 4]
    assert all(np.array_equal(r.dream_frames[0, k], r.dream_frames[0, 2]) for k in (3, 4))
    assert r.summary()["dream_termination_rate"] == 0.5


# ---------------------------------------------------------------------------------------------- policies
def test_both_factory_shapes_and_module_factories(ckpt, monkeypatch):
    def by_space(action_space, seed):
        assert isinstance(action_space, gymnasium.spaces.Discrete)
        return lambda frame: action_space.n - 1

    def by_env(env, seed):
        n = env.action_space.n
        return lambda frame: np.int64(n - 1)  # a plain function: it gets a no-op reset

    a = worldsim.predict(ckpt, by_space, episodes=2, horizon=3)
    b = worldsim.predict(ckpt, by_env, episodes=2, horizon=3)
    assert np.array_equal(a.dream_return, b.dream_return)
    user = types.ModuleType("user_predict_policies")
    user.by_space, user.by_env = by_space, by_env
    monkeypatch.setitem(sys.modules, "user_predict_policies", user)
    c = worldsim.predict(ckpt, "user_predict_policies:by_env", episodes=2, horizon=3)
    assert np.array_equal(a.dream_return, c.dream_return) and c.policy == "user_predict_policies:by_env"
    assert worldsim.predict(ckpt, "road", episodes=1, horizon=2).dream_return.shape == (1,)


def _returns(value):
    return lambda space, seed: lambda frame: value


def _raises(space, seed):
    raise RuntimeError("no weights here")


def _reads_internals(env, seed):
    return lambda frame, car=env.unwrapped.car: 0


class _LateBadAction:
    """Fine until step 2 of episode 1 (seed 1)."""

    def __init__(self, space, seed):
        self.seed, self.t = seed, 0

    def __call__(self, frame):
        self.t += 1
        return 9 if (self.seed, self.t) == (1, 3) else 0


@pytest.mark.parametrize(
    "policy, message",
    [
        ("nope", "unknown policy 'nope': use one of random, idle, road"),
        ("carracing", "'carracing' reads the real env's internals, so it cannot drive a dream"),
        ("no_such_module:make", "cannot import no_such_module"),
        (_raises, r"test_predict:_raises': its factory failed \(RuntimeError: no weights here\)"),
        (_reads_internals, r"its factory failed \(AttributeError: .*unwrapped.*only action_space"),
        (_returns(7), r"returned 7 at step 0 of episode 0 \(dream\): actions 7 out of range: outside Discrete\(5\)"),
        (_returns("left"), r"returned 'left' at step 0 of episode 0 \(dream\): action 'left' is not a number"),
        (_returns([1, 2]), r"returned \[1, 2\] at step 0 of episode 0 \(dream\): actions have shape \(2,\)"),
        (_LateBadAction, r"returned 9 at step 2 of episode 1 \(dream\)"),
        (lambda space, seed: lambda frame: 1 / 0, r"failed at step 0 of episode 0 \(dream\): ZeroDivisionError"),
        (
            lambda space, seed: lambda obs: obs["agent_pos"],  # wants PushT's state, gets a frame
            r"failed at step 0 of episode 0 \(dream\): IndexError: .* sees only frames, uint8 \(32, 32, 3\)",
        ),
        (lambda space, seed: 3, "the factory returned int, not a callable"),
    ],
)
def test_bad_policies_are_one_line_errors_naming_them(ckpt, policy, message):
    with pytest.raises(InputError, match=message) as e:
        worldsim.predict(ckpt, policy, episodes=2, horizon=3)
    assert "\n" not in str(e.value)


def test_bad_input_fails_before_the_world_is_loaded(ckpt, monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise AssertionError("loaded the world before checking the input")

    monkeypatch.setattr(WorldModel, "from_pretrained", boom)
    for kwargs, message in [
        ({"policy": "nope"}, "unknown policy"),
        ({"policy": _raises}, "factory failed"),
        ({"policy": "random", "real": True}, "names no real env"),
        ({"policy": "random", "context": 6}, "takes 1 to 5 context frames"),
        ({"policy": "random", "episodes": 0}, "must be >= 1"),
        ({"policy": "random", "real": True, "data": "x.h5"}, "pick one"),
    ]:
        with pytest.raises(InputError, match=message):
            worldsim.predict(ckpt, **kwargs)


# ---------------------------------------------------------------------------------------------- data starts
def test_starts_from_data_episodes(ckpt, carracing_world, tmp_path):
    episodes = write_dataset(tmp_path / "d.h5", lengths=(12, 5, 20))  # 16x16 frames, 12 fps, Discrete(5)
    r = worldsim.predict(ckpt, "random", episodes=2, horizon=2, data=str(tmp_path / "d.h5"), seed=1, context=3,
                         keep_frames=True)  # fmt: skip
    for i, e in enumerate((1, 2)):  # episode (seed + i) mod 3, its context's last frame at the world's size
        want = resize_frames(torch.from_numpy(episodes[e]["observations"][2]), (32, 32)).numpy()
        assert np.array_equal(r.dream_frames[i, 0], want)
    with pytest.raises(InputError, match="recorded at 12 fps but the world runs at 25 fps|CarRacing-v3"):
        worldsim.predict(carracing_world, "random", data=str(tmp_path / "d.h5"))


# ---------------------------------------------------------------------------------------------- real env
def test_real_carracing_beside_the_dream(carracing_world):
    r = worldsim.predict(carracing_world, "road", episodes=2, horizon=5, real=True, keep_frames=True)
    assert r.real_return.shape == (2,) and np.isfinite(r.real_return).all()
    assert r.real_terminated.tolist() == [False, False]
    assert r.real_frames.shape == r.dream_frames.shape == (2, 6, 64, 64, 3)
    assert np.array_equal(r.real_frames[:, 0], r.dream_frames[:, 0])  # the fork: both from the same real frame
    assert not np.array_equal(r.real_frames[:, 1:], r.dream_frames[:, 1:])
    assert not np.array_equal(r.real_frames[0], r.real_frames[1])  # seeds 0 and 1: two tracks
    # Real CarRacing after the zoom-in: mostly green grass and grey road, a black HUD bar at the bottom.
    f = r.real_frames.astype(int)
    grass = (f[..., 1] > f[..., 0] + 40) & (f[..., 1] > f[..., 2] + 40)
    assert grass[:, :, :48].mean() > 0.3 and f[:, :, 58:].mean() < 40
    s = r.summary()
    assert s["return_mae"] == pytest.approx(np.abs(r.dream_return - r.real_return).mean())
    assert {"real_return_mean", "real_return_std", "real_return_ci95", "real_termination_rate", "return_bias"} <= set(s)
    # CarRacing has no notion of success: no success or highest-reward numbers.
    assert r.dream_success is None and r.real_success is None and not any("success" in k for k in s)


class Watcher:
    """Records the frames it acts on; always presses gas."""

    made: list[Watcher] = []

    def __init__(self, action_space: gymnasium.Space, seed: int | None) -> None:
        self.frames: list[np.ndarray] = []
        Watcher.made.append(self)

    def __call__(self, frame: np.ndarray) -> int:
        self.frames.append(frame.copy())
        return 3


def test_real_fork_puts_both_policies_in_the_same_state(carracing_world):
    """The dream's policy is shown every frame its real twin acted on before the fork, then the fork's frame."""
    Watcher.made = []
    worldsim.predict(carracing_world, Watcher, episodes=1, horizon=2, real=True)
    dream, real = Watcher.made  # dream policies are made first
    fork = 50 + 4 - 1  # CarRacing's 2 s intro at 25 fps, then the context
    assert len(dream.frames) == len(real.frames) == fork + 2
    assert all(np.array_equal(d, r) for d, r in zip(dream.frames[: fork + 1], real.frames[: fork + 1]))
    assert not np.array_equal(dream.frames[-1], real.frames[-1])


# ---------------------------------------------------------------------------------------------- success, Box actions
def test_episode_success_is_one_rule_from_the_source_adapter():
    pusht = source_world("gym_pusht/PushT-v0")
    assert pusht.success_reward == 1.0 and pusht.success_terminates
    # PushT terminates exactly when it succeeds: the termination decides, whatever the highest reward.
    assert episode_success(np.array([1.0, 0.5]), np.array([False, True]), pusht).tolist() == [False, True]
    by_reward = SourceWorld(("Reach-v0",), "", "", success_reward=1.0)  # success is a reward, not a termination
    got = episode_success(np.array([1.0, 0.9995, 0.99]), np.array([False, False, True]), by_reward)
    assert got.tolist() == [True, True, False]
    assert episode_success(np.ones(2), np.ones(2, bool), source_world("CarRacing-v3")) is None


def test_a_pusht_dream_succeeds_when_its_termination_head_fires(pusht_world):
    """Dream 0's head fires at step 1 (reward 0.5): a success. Dream 1's reward reaches 1.0 but its head never fires:
    no success, its highest reward 1.0. After the termination dream 0 leaves the batch and its rewards no longer
    count."""
    wm = WorldModel.from_pretrained(pusht_world)
    step, keep, t, live = wm.step, wm.keep_worlds, [0], [0, 1]
    rewards = np.array([[0.3, 0.5, 0.9, 0.9], [0.2, 0.4, 1.0, 0.7]], np.float32)

    def heads(actions):
        out = step(actions)
        out.reward[:] = rewards[live, t[0]]
        out.terminated[:] = [t[0] == 1 and i == 0 for i in live]
        t[0] += 1
        return out

    def keep_worlds(rows):
        live[:] = [live[r] for r in rows]
        keep(rows)

    wm.step, wm.keep_worlds = heads, keep_worlds
    r = worldsim.predict(wm, "random", episodes=2, horizon=4, judge=False)  # the heads alone
    assert live == [1]  # the ended dream left the batch
    assert r.success_reward == 1.0 and r.dream_success.tolist() == [True, False]
    assert r.dream_max_reward.tolist() == pytest.approx([0.5, 1.0]) and r.dream_return == pytest.approx([0.8, 2.3])
    s = r.summary()
    assert s["dream_success_rate"] == 0.5 and s["dream_max_reward_mean"] == pytest.approx(0.75)
    assert s["dream_success_ci95"] == [0.0, 1.0] and s["dream_max_reward_ci95"] == pytest.approx([0.5, 1.0])
    assert [row["dream_success"] for row in r.per_episode()] == [True, False]
    assert r.to_dict()["success_reward"] == 1.0
    table = format_predict_table(r)
    assert "| max reward | success |" in table and "success: dream 50% [0%, 100%]" in table


class _LateNaN:
    """Targets on the table, but NaN in episode 1 (seed 1; its first step: the tiny world's head may end a dream at
    once)."""

    def __init__(self, space, seed):
        self.seed, self.t = seed, 0

    def __call__(self, frame):
        self.t += 1
        return [float("nan"), 3.0] if (self.seed, self.t) == (1, 1) else [256.0, 256.0]


def test_box_actions_outside_the_bounds_are_clipped_with_one_warning(pusht_world):
    with pytest.warns(ActionClippedWarning) as caught:
        far = worldsim.predict(pusht_world, _returns([600.0, -5.0]), episodes=2, horizon=3)
    clipped = [w for w in caught if issubclass(w.category, ActionClippedWarning)]
    assert len(clipped) == 1  # once per policy, not once per step or episode
    assert str(clipped[0].message).startswith(
        "policy 'test_predict:_returns.<locals>.<lambda>' returned [600.0, -5.0] at step 0 of episode 0 (dream), "
        "outside Box(0.0, 512.0, (2,), float32): clipped into it"
    )
    edge = worldsim.predict(pusht_world, _returns([512.0, 0.0]), episodes=2, horizon=3)
    assert np.array_equal(far.dream_return, edge.dream_return)  # the dream got the clipped action


@pytest.mark.parametrize(
    "policy, message",
    [
        (
            _returns([float("nan"), 1.0]),
            r"returned \[nan, 1.0\] at step 0 of episode 0 \(dream\): .*not a number \(NaN",
        ),
        (_returns([np.inf, 600.0]), r"returned \[inf, 600.0\] at step 0 of episode 0 \(dream\): .*\(NaN or inf\)"),
        (_LateNaN, r"_LateNaN' returned \[nan, 3.0\] at step 0 of episode 1 \(dream\)"),
        (_returns([1.0, 2.0, 3.0]), r"actions have shape \(3,\)"),
    ],
)
def test_nan_and_inf_actions_are_refused_naming_policy_step_and_episode(pusht_world, policy, message):
    with pytest.raises(InputError, match=message) as e:
        worldsim.predict(pusht_world, policy, episodes=2, horizon=3)
    assert "\n" not in str(e.value)


def test_real_pusht_beside_the_dream(pusht_world):
    r = worldsim.predict(pusht_world, "random", episodes=2, horizon=3, real=True, keep_frames=True)
    assert r.real_frames.shape == r.dream_frames.shape == (2, 4, 32, 32, 3)
    assert r.real_max_reward.shape == (2,) and ((r.real_max_reward >= 0) & (r.real_max_reward <= 1)).all()
    assert np.array_equal(r.real_success, r.real_terminated)  # PushT: terminated = success
    s = r.summary()
    for side in ("dream", "real"):
        assert {
            f"{side}_success_rate",
            f"{side}_success_ci95",
            f"{side}_max_reward_mean",
            f"{side}_max_reward_ci95",
        } <= set(s)
    assert "success (dream / real)" in format_predict_table(r)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_table_json_and_video(ckpt, tmp_path, capsys):
    out, video = tmp_path / "out" / "r.json", tmp_path / "grid.mp4"
    code = main(["predict", "--world", ckpt, "--policy", "random", "--episodes", "3", "--horizon", "3",
                 "--precision", "fp32", "--json", str(out), "--video", str(video)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "| episode | seed | dream return | terminated |" in printed and "mean return: dream" in printed
    result = json.loads(out.read_text())
    assert result["episodes"] == 3 and result["horizon"] == 3 and result["policy"] == "random"
    assert [row["seed"] for row in result["per_episode"]] == [0, 1, 2]
    import imageio.v3 as iio

    frames = iio.imread(video)
    assert frames.shape[0] == 4 and frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0
    assert not list(tmp_path.glob(".*"))  # written atomically: no temp files left


def test_cli_warns_of_clipped_actions_in_one_line(pusht_world, capsys, monkeypatch):
    user = types.ModuleType("user_pusht_policies")
    user.far = _returns([600.0, -5.0])
    monkeypatch.setitem(sys.modules, "user_pusht_policies", user)
    code = main(["predict", "--world", pusht_world, "--policy", "user_pusht_policies:far", "--episodes", "2",
                 "--horizon", "2", "--precision", "fp32"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0 and "success: dream" in captured.out
    assert captured.err.count("\n") == 1 and captured.err.startswith(
        "worldsim predict: warning: policy 'user_pusht_policies:far' returned [600.0, -5.0] at step 0 of episode 0"
    ), captured.err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--policy", "nope"], "unknown policy 'nope'"),
        (["--policy", "random", "--real"], "names no real env"),
        (["--policy", "random", "--video", "grid.avi"], "use a file ending in .mp4 or .gif"),
        (["--policy", "random", "--real", "--data", "x.h5"], "--real and --data both"),
        ([], "--policy"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(ckpt, capsys, flags, message):
    code = main(["predict", "--world", ckpt, "--horizon", "2", *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("worldsim predict: error: ") and message in err, err


def test_a_judged_dream_is_scored_and_ended_by_the_judge_with_the_heads_beside_it(pusht_world, monkeypatch):
    """Where the source has a judge, the dream's rewards are the judge's (the env's rule on the frames) and a dream
    ends where the judged reward reaches success; the heads' return and success are reported beside it."""
    wm = WorldModel.from_pretrained(pusht_world)
    t, live = [0], [0, 1]
    judged = np.array([[0.3, 1.0, 0.2, 0.2], [0.1, 0.2, 0.4, 0.6]])

    class ScheduledJudge:
        success_score = 0.95

        def reward(self, frames: np.ndarray) -> np.ndarray:
            assert len(frames) == len(live)
            out = judged[live, t[0]]
            t[0] += 1
            return out

    keep = wm.keep_worlds

    def keep_worlds(rows):
        live[:] = [live[r] for r in rows]
        keep(rows)

    wm.keep_worlds = keep_worlds
    monkeypatch.setattr(sys.modules["worldsim.evaluation.dream"], "judge_for", lambda env_id, label: ScheduledJudge())
    r = worldsim.predict(wm, "random", episodes=2, horizon=4)
    assert live == [1] and r.judge == "ScheduledJudge"
    assert r.dream_success.tolist() == [True, False] and r.dream_terminated.tolist() == [True, False]
    assert r.dream_return == pytest.approx([1.3, 1.3]) and r.dream_max_reward == pytest.approx([1.0, 0.6])
    assert r.dream_head_return is not None and r.dream_head_success is not None  # the heads, beside the judge
    s = r.summary()
    assert "dream_head_return_mean" in s and "dream_head_success_rate" in s
    assert r.to_dict()["judge"] == "ScheduledJudge"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_predict_rank_and_eval_refuse_a_missing_gpu_in_one_line(tmp_path, capsys):
    for argv in [
        ("predict", "--policy", "random", "--device", "cuda"),
        ("rank", "--policies", "random,idle", "--device", "cuda"),
        ("eval", "--data", str(tmp_path / "d.h5"), "--device", "cuda"),
    ]:
        code = main(list(argv))
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "--device cuda: this machine has no CUDA GPU" in err, err


def test_eval_state_needs_a_judge_and_says_so_in_one_line(tmp_path, capsys):
    """--parts state on a world whose source has no judge (the default CarRacing world): refused before loading."""
    code = main(["eval", "--data", str(tmp_path / "d.h5"), "--parts", "state"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "has no judge" in err, err
