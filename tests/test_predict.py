"""``worldsim.predict`` / ``worldsim predict``: a frame-only policy's dreams (and real episodes) on tiny random worlds.

Contracts: shapes, seeded determinism, batching that changes no dream, one policy instance per episode, both factory
shapes, one-line errors that name the policy, step and episode (before any work), the CLI's table, JSON and video;
and with ``--real`` a real CarRacing-v3 run beside the dream.
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
from test_env import save_world
from test_vector_env import close

import worldsim
from worldsim import ActionSpec, PredictResult, WorldModel
from worldsim.cli import main
from worldsim.engine import resize_frames
from worldsim.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    """32x32, Discrete(5), 12 fps, 3 shipped 2-frame starts, no source env."""
    return save_world(tmp_path_factory.mktemp("world") / "w")


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
    assert set(s) == {"episodes", "dream_return_mean", "dream_return_std", "dream_termination_rate"}
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
    assert {"real_return_mean", "real_return_std", "real_termination_rate", "return_bias"} <= set(s)


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
