"""Source worlds and policies: the Crafter env's Gymnasium contract, frames from every source family, the scripted
drivers doing their job, and ``make_policy``'s one-line errors."""

from __future__ import annotations

import sys
import types
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import worldsim.envs as envs  # noqa: F401  (registers worldsim/Crafter-v0)
from worldsim.agents import Policy, RandomPolicy, make_policy
from worldsim.agents.carracing import CarRacingDriver, on_track
from worldsim.agents.pusht import PushTPusher
from worldsim.envs.sources import frame_of, frame_rate, make_source_env
from worldsim.errors import InputError

SMALL_WORLD = {"area": (24, 24)}  # crafter generates a 24x24 world in ~0.1 s instead of ~0.8 s for 64x64


def crafter_rollout(seed: int, steps: int = 20) -> list[np.ndarray]:
    env = gymnasium.make("worldsim/Crafter-v0", **SMALL_WORLD)
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for t in range(steps):
        obs, *_ = env.step(t % 5)  # noop, move left/right/up/down: the view scrolls
        frames.append(obs)
    return frames


def test_crafter_passes_check_env_without_warnings():
    env = gymnasium.make("worldsim/Crafter-v0", render_mode="rgb_array", **SMALL_WORLD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gymnasium.spaces.Discrete(17)
    assert env.metadata["render_fps"] == 10


def test_crafter_is_deterministic_for_a_seed():
    a, b, c = crafter_rollout(0), crafter_rollout(0), crafter_rollout(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])  # another seed is another world


def test_crafter_frame_size_and_render():
    env = gymnasium.make("worldsim/Crafter-v0", size=(48, 80), render_mode="rgb_array", **SMALL_WORLD)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (48, 80, 3) and obs.dtype == np.uint8
    assert np.array_equal(env.render(), obs)


def test_crafter_tells_death_from_time_limit():
    env = gymnasium.make("worldsim/Crafter-v0", length=3, **SMALL_WORLD)
    env.reset(seed=0)
    outcomes = [env.step(0)[2:4] for _ in range(3)]
    assert outcomes == [(False, False), (False, False), (False, True)]

    env.reset(seed=0)
    env.unwrapped._world._player.health = 0  # crafter reports death as done with discount 0
    _, _, terminated, truncated, _ = env.step(0)
    assert (terminated, truncated) == (True, False)


@pytest.mark.parametrize(
    ("env_id", "shape", "fps"),
    [("CarRacing-v3", (96, 96, 3), 50), ("gym_pusht/PushT-v0", (96, 96, 3), 10), ("ALE/Pong-v5", (210, 160, 3), 30)],
)
def test_source_envs_give_rgb_frames(env_id, shape, fps):
    env = make_source_env(env_id, seed=0)
    obs, _ = env.reset()
    for _ in range(2):
        frame = frame_of(env, obs)
        assert frame.shape == shape and frame.dtype == np.uint8
        obs, *_ = env.step(env.action_space.sample())
    assert frame_rate(env) == fps


def test_source_env_defaults():
    car = make_source_env("CarRacing-v3")
    assert car.action_space == gymnasium.spaces.Discrete(5)  # recorded with discrete actions
    assert make_source_env("Crafter", **SMALL_WORLD).spec.id == "worldsim/Crafter-v0"


def test_frame_of_renders_when_the_observation_is_no_image():
    env = make_source_env("CartPole-v1", seed=0)
    obs, _ = env.reset()
    assert obs.shape == (4,)
    frame = frame_of(env, obs)
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    assert frame_of(env, {"pixels": frame}) is frame

    blind = gymnasium.make("CartPole-v1")  # no render mode: nothing to record
    blind.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium warns that render() without a render mode returns None
        with pytest.raises(InputError, match="rgb_array"):
            frame_of(blind, np.zeros(4))


def test_source_env_errors(monkeypatch):
    with pytest.raises(InputError, match="CarRacing-v3.*ALE/"):
        make_source_env("NoSuchWorld-v0")
    monkeypatch.setitem(sys.modules, "gym_pusht", None)  # as if gym-pusht were not installed
    with pytest.raises(InputError, match="pip install gym-pusht"):
        make_source_env("gym_pusht/PushT-v0")


def test_carracing_driver_follows_the_track():
    env = make_source_env("CarRacing-v3")
    env.reset(seed=0)
    driver = make_policy("carracing", env, seed=0)
    driver.noise, driver.excursion_prob = 0.0, 0.0
    total, off = 0.0, 0
    for _ in range(150):  # the first ~50 frames are CarRacing's zoom-in; the car already drives during them
        _, reward, terminated, truncated, _ = env.step(driver(None))
        total += reward
        off += not on_track(env)
        assert not (terminated or truncated)
    # Full gas alone scores 48-61 here and leaves the road at the first bend; random play scores about -3.
    assert off == 0
    assert total > 75


def test_carracing_driver_noise_and_excursions_change_actions():
    env = make_source_env("CarRacing-v3")
    env.reset(seed=0)
    clean = CarRacingDriver(env, seed=0, noise=0.0, excursion_prob=0.0)
    noisy = CarRacingDriver(env, seed=0, noise=0.5, excursion_prob=1.0)
    assert [clean(None) for _ in range(20)] != [noisy(None) for _ in range(20)]
    assert noisy.in_excursion and not clean.in_excursion
    noisy.reset(seed=0)
    assert not noisy.in_excursion


def test_pusht_pusher_moves_the_block():
    env = make_source_env("gym_pusht/PushT-v0", obs_type="state")
    obs, info = env.reset(seed=1)
    pusher = make_policy("pusht", env, seed=1)
    assert isinstance(pusher, PushTPusher)
    start = info["block_pose"][:2]
    for _ in range(100):
        action = pusher(obs)
        assert env.action_space.contains(action)
        obs, *_, info = env.step(action)
    assert np.hypot(*(info["block_pose"][:2] - start)) > 20.0


def test_random_policy_is_seeded():
    env = make_source_env("CarRacing-v3")
    a, b = RandomPolicy(env, seed=3), RandomPolicy(env, seed=3)
    assert [a(None) for _ in range(20)] == [b(None) for _ in range(20)]


def test_idle_policy_touches_nothing_and_can_drive_a_dream():
    from gymnasium import spaces

    from worldsim.agents.registry import make_seeing_policy

    for space, noop in [
        (spaces.Discrete(5), 0),
        (spaces.Box(np.array([-1.0, 0.5]), np.array([1.0, 1.0])), [0.0, 0.5]),  # zero clipped into the bounds
    ]:
        idle = make_seeing_policy("idle", space, seed=0)
        actions = [idle(np.zeros((8, 8, 3), np.uint8)) for _ in range(3)]
        assert all(np.array_equal(a, noop) for a in actions) and space.contains(np.asarray(actions[0], space.dtype))


def test_make_policy_errors():
    env = make_source_env("CarRacing-v3")
    with pytest.raises(InputError, match="random, idle, carracing, carracing_mix, road"):
        make_policy("nope", env, 0)
    for spec in (
        "no_such_module_xyz:make",
        "worldsim.agents.policy:no_such_factory",
        "worldsim.agents.policy:",
        ":make",
    ):
        with pytest.raises(InputError):
            make_policy(spec, env, 0)
    with pytest.raises(InputError, match="continuous=False"):
        make_policy("carracing", gymnasium.make("CarRacing-v3"), 0)
    with pytest.raises(InputError, match="PushT"):
        make_policy("pusht", env, 0)


def test_make_policy_from_module_callable(monkeypatch):
    env = make_source_env("CarRacing-v3")
    policy = make_policy("worldsim.agents.policy:RandomPolicy", env, 7)
    assert isinstance(policy, RandomPolicy)

    user = types.ModuleType("user_policies")
    user.always_gas = lambda env, seed: lambda observation: 3  # a plain function gets a no-op reset
    user.not_a_factory = 42
    monkeypatch.setitem(sys.modules, "user_policies", user)
    gas = make_policy("user_policies:always_gas", env, 0)
    assert isinstance(gas, Policy)
    gas.reset(seed=1)
    assert gas(None) == 3
    with pytest.raises(InputError, match="no callable"):
        make_policy("user_policies:not_a_factory", env, 0)
