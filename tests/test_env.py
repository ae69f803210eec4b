"""The world model as a Gymnasium env: ``check_env`` without warnings, seeded determinism, start contexts, one-line
errors for bad input, fresh arrays, registration, keyboard mapping, rendering, and real clients (SB3, RecordVideo).

All on tiny random-weight checkpoints (32x32 frames): the contract, not the pictures.
"""

from __future__ import annotations

import importlib
import json
import warnings

import gymnasium
import numpy as np
import pytest
from conftest import SIZE, save_world, tiny_config
from gymnasium.utils.env_checker import check_env

import worldsim
import worldsim.envs as envs
import worldsim.worlds
from worldsim import ActionSpec, WorldModel
from worldsim.envs.world import WorldModelEnv
from worldsim.errors import ConfigError, InputError, WorldsimError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rollout(env: gymnasium.Env, seed: int, actions=(3, 1, 1, 4, 0)) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for a in actions:
        obs, *_ = env.step(a)
        frames.append(obs)
    return frames


# ---------------------------------------------------------------------------------------------- contract
def test_check_env_passes_without_warnings(ckpt):
    env = gymnasium.make("worldsim/WorldModel-v0", checkpoint=ckpt, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)  # through make, so the spec lets it try the "human" mode too (SDL dummy driver)
    u = env.unwrapped
    assert u.observation_space == gymnasium.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    assert u.action_space == gymnasium.spaces.Discrete(5)
    assert u.metadata["render_fps"] == 12 and isinstance(u.metadata["render_fps"], int)
    assert WorldModelEnv.metadata["render_fps"] == 15  # per instance: the class default is untouched
    env.close()


def test_same_seed_same_frames_and_different_seeds_differ(ckpt):
    a, b = WorldModelEnv(ckpt), WorldModelEnv(ckpt)
    first, second = rollout(a, seed=3), rollout(b, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(first, second))
    other = rollout(b, seed=4)
    assert not all(np.array_equal(x, y) for x, y in zip(first[1:], other[1:]))
    # Unseeded resets continue the seeded stream, so they replay too.
    a.reset(seed=9)
    b.reset(seed=9)
    assert all(np.array_equal(x, y) for x, y in zip(rollout(a, None), rollout(b, None)))


def test_start_from_image_and_clip(ckpt):
    env = WorldModelEnv(ckpt)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    obs, info = env.reset(seed=0, options={"start": image})
    assert np.array_equal(obs, image) and info["frame_index"] == 1
    assert not np.shares_memory(obs, image)
    big = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)  # resized (and reshaped) by the engine
    assert env.reset(options={"start": big})[0].shape == (SIZE, SIZE, 3)
    clip = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    obs, info = env.reset(seed=0, options={"start": clip, "actions": [3, 3]})
    assert np.array_equal(obs, clip[-1]) and info["frame_index"] == 3
    obs, reward, terminated, truncated, info = env.step(3)
    assert obs.shape == (SIZE, SIZE, 3) and info["frame_index"] == 4
    assert type(reward) is float and type(terminated) is bool and truncated is False


@pytest.mark.parametrize(
    "start, message",
    [
        (np.zeros((SIZE, SIZE, 3), np.float32), "uint8"),
        (np.zeros((SIZE, SIZE, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((6, SIZE, SIZE, 3), np.uint8), "6 frames; this world takes 1 to 5"),
        (np.zeros((0, SIZE, SIZE, 3), np.uint8), "0 frames"),
        (np.zeros((SIZE, 3), np.uint8), r"\(H, W, 3\)"),
        ([[0, 0, 0]], "numpy uint8 array"),
        ("picture.png", "numpy uint8 array"),
    ],
)
def test_bad_start_is_a_clear_error(ckpt, start, message):
    env = WorldModelEnv(ckpt)
    with pytest.raises(InputError, match=message):
        env.reset(options={"start": start})


def test_checkpoint_without_starts_needs_a_start(tmp_path):
    cfg = tiny_config(action=ActionSpec(kind="discrete", n=5))
    WorldModel(cfg).save_pretrained(tmp_path / "bare")
    env = WorldModelEnv(str(tmp_path / "bare"))
    with pytest.raises(InputError, match="ships no start contexts: pass reset"):
        env.reset(seed=0)
    obs, _ = env.reset(seed=0, options={"start": np.full((SIZE, SIZE, 3), 7, np.uint8)})
    assert (obs == 7).all()


def test_bad_reset_options_and_actions_are_clear_errors(ckpt):
    env = WorldModelEnv(ckpt)
    with pytest.raises(InputError, match="unknown reset option"):
        env.reset(options={"strat": np.zeros((SIZE, SIZE, 3), np.uint8)})
    with pytest.raises(WorldsimError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    for action, message in [
        (7, "outside Discrete"),
        (-1, "outside Discrete"),
        (1.5, "not an integer"),
        ([1, 2], "shape"),
        ("left", "not a number"),
        (None, "not a number"),
        (np.nan, "not a number"),
    ]:
        with pytest.raises(InputError, match=message):
            env.step(action)
    for ok in (np.int64(4), np.array(2), np.array([1]), 3.0):  # what policies hand out
        env.step(ok)


def test_box_and_multi_discrete_worlds(tmp_path):
    box = ActionSpec(kind="box", shape=[2], low=[-1.0, 0.0], high=[1.0, 1.0])
    env = WorldModelEnv(save_world(tmp_path / "box", action=box))
    env.reset(seed=0)
    env.step(np.array([0.5, 0.5]))  # float64 from numpy is fine
    with pytest.raises(InputError, match="outside Box"):
        env.step([2.0, 0.5])
    with pytest.raises(InputError, match="shape"):
        env.step([0.5])
    assert np.array_equal(env.noop, np.zeros(2, np.float32)) and env.noop in env.action_space
    with pytest.raises(ConfigError, match="key_map"):
        env.get_keys_to_action()

    env = WorldModelEnv(save_world(tmp_path / "md", action=ActionSpec(kind="multi_discrete", nvec=[3, 2])))
    env.reset(seed=0)
    env.step([2, 1])
    with pytest.raises(InputError, match="outside MultiDiscrete"):
        env.step([2, 2])
    assert env.noop.tolist() == [0, 0] and env.noop in env.action_space


def test_returned_arrays_are_fresh(ckpt):
    env = WorldModelEnv(ckpt, render_mode="rgb_array")
    obs0, _ = env.reset(seed=0)
    obs1, *_ = env.step(1)
    snapshot = obs1.copy()
    obs1[:] = 0  # a user writing into what they got must not touch the env
    shown = env.render()
    assert np.array_equal(shown, snapshot)
    shown[:] = 255
    assert np.array_equal(env.render(), snapshot)
    obs2, *_ = env.step(1)
    arrays = [obs0, obs1, obs2, shown]
    assert not any(np.shares_memory(x, y) for i, x in enumerate(arrays) for y in arrays[i + 1 :])


# ---------------------------------------------------------------------------------------------- registration
def test_make_registered_id_truncates_at_max_episode_steps(ckpt):
    spec = gymnasium.spec("worldsim/WorldModel-v0")
    assert spec.entry_point == "worldsim.envs.world:WorldModelEnv" and spec.max_episode_steps == 1000
    env = gymnasium.make("worldsim/WorldModel-v0", checkpoint=ckpt, max_episode_steps=3, sampler_steps=1)
    assert env.unwrapped.world.sampler_config.steps == 1
    env.reset(seed=0)
    assert [env.step(0)[3] for _ in range(3)] == [False, False, True]
    direct = WorldModelEnv(ckpt, max_episode_steps=2)  # without make there is no TimeLimit: the env truncates
    direct.reset(seed=0)
    assert [direct.step(0)[3] for _ in range(2)] == [False, True]


def test_registration_is_idempotent_and_lazy():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(envs)
        importlib.reload(worldsim)
    assert "worldsim/WorldModel-v0" in gymnasium.registry and "worldsim/Crafter-v0" in gymnasium.registry
    assert gymnasium.spec("worldsim/Crafter-v0").entry_point == "worldsim.envs.crafter:CrafterEnv"


def test_one_id_per_shipped_world(tmp_path, monkeypatch, ckpt):
    monkeypatch.setattr(worldsim.worlds, "ASSETS", tmp_path / "none")
    assert envs.shipped_world_ids() == {}  # nothing shipped yet: nothing extra registered
    monkeypatch.setattr(worldsim.worlds, "ASSETS", tmp_path)
    save_world(tmp_path / "carracing")
    config = json.loads((tmp_path / "carracing" / "config.json").read_text())
    config["name"] = "CarRacing"  # the world's own casing of its name
    (tmp_path / "carracing" / "config.json").write_text(json.dumps(config))
    backbone = '{"name": "text-to-video", "text_to_video": true}'
    for name, text in [("crafter", '{"name": "Crafter"}'), ("push_t", "{}"), ("broken", "{no"), ("t2v", backbone)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(text)
    ids = envs.shipped_world_ids()
    assert ids == {
        "worldsim/CarRacing-v0": "carracing",
        "worldsim/CrafterWorld-v0": "crafter",  # worldsim/Crafter-v0 is the real Crafter
        "worldsim/PushT-v0": "push_t",
        "worldsim/Broken-v0": "broken",  # reported when made, not at import
    }  # and no id for the text-to-video backbone
    assert envs.world_env_name("pusht", {"name": "PushT", "source_env": "gym_pusht/PushT-v0"}) == "PushT"
    assert envs.world_env_name("pong", {"name": "pong", "source_env": "ALE/Pong-v5"}) == "Pong"
    assert envs.world_env_name("my_world", {}) == "MyWorld"
    assert envs.world_env_name("myworld", {"name": "Something else"}) == "Myworld"  # a name that is not the world's
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            envs.register_envs()
            envs.register_envs()
        assert gymnasium.spec("worldsim/CarRacing-v0").kwargs == {"checkpoint": "carracing"}
        env = gymnasium.make("worldsim/CarRacing-v0")
        assert env.observation_space.shape == (SIZE, SIZE, 3)
        assert env.spec.max_episode_steps == 1000
    finally:
        for env_id in ids:
            gymnasium.registry.pop(env_id, None)


# ---------------------------------------------------------------------------------------------- play and render
def test_keys_to_action_defaults_and_key_map(ckpt, tmp_path):
    import pygame

    env = WorldModelEnv(ckpt)
    keys = env.get_keys_to_action()
    assert keys[(pygame.K_0,)] == 0 and keys[(pygame.K_4,)] == 4
    assert (pygame.K_RIGHT,) not in keys  # arrows are a world's choice (its key_map), not a default of the env
    for combo, action in keys.items():  # what gymnasium.utils.play.play checks before playing
        assert isinstance(combo, tuple) and all(isinstance(k, int) for k in combo) and action in env.action_space
    assert env.noop == 0

    mapped = WorldModelEnv(save_world(tmp_path / "keys", key_map={"up": 3, "up+left": 2, "space": 4}))
    keys = mapped.get_keys_to_action()
    assert keys == {(pygame.K_UP,): 3, tuple(sorted((pygame.K_UP, pygame.K_LEFT))): 2, (pygame.K_SPACE,): 4}
    with pytest.raises(ConfigError, match="not a pygame key name"):
        WorldModelEnv(save_world(tmp_path / "bad", key_map={"upp": 3})).get_keys_to_action()
    with pytest.raises(ConfigError, match="'up'"):
        WorldModelEnv(save_world(tmp_path / "bad2", key_map={"up": 9})).get_keys_to_action()


def test_gymnasium_play_drives_it_from_the_keyboard(tmp_path):
    import pygame

    ckpt = save_world(tmp_path / "arrows", key_map={"right": 1, "left": 2, "up": 3, "down": 4})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # play warns at import when matplotlib (for PlayPlot) is missing
        from gymnasium.utils.play import play

    env = gymnasium.make("worldsim/WorldModel-v0", checkpoint=ckpt, render_mode="rgb_array", max_episode_steps=3)
    actions = []

    def press_up_then_quit(obs_t, obs_tp1, action, reward, terminated, truncated, info):
        actions.append(action)
        if len(actions) == 1:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_UP))
        if len(actions) == 5:
            pygame.event.post(pygame.event.Event(pygame.QUIT))

    play(env, zoom=2, fps=1000, callback=press_up_then_quit, noop=env.unwrapped.noop)
    assert actions == [0, 3, 3, 3, 3]  # noop, then gas (arrow up) held across the reset after 3 steps


def test_render_modes(ckpt):
    env = WorldModelEnv(ckpt, render_mode="human")  # the SDL dummy driver (conftest) stands in for a display
    env.reset(seed=0)
    env.step(3)
    assert env.render() is None and env._window is not None
    assert env._window.get_size() == (SIZE * 12, SIZE * 12)
    env.close()
    env.close()
    quiet = WorldModelEnv(ckpt)
    quiet.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert quiet.render() is None
    with pytest.raises(ValueError, match="render_mode"):
        WorldModelEnv(ckpt, render_mode="ansi")


# ---------------------------------------------------------------------------------------------- real clients
def test_stable_baselines3_ppo_learns_on_it(tmp_path):
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    # 64x64 like the real worlds: SB3's NatureCNN (CnnPolicy) needs at least 36x36.
    ckpt = save_world(tmp_path / "w64", size=64)
    env = gymnasium.make("worldsim/WorldModel-v0", checkpoint=ckpt, max_episode_steps=20, sampler_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env.unwrapped)
    model = sb3.PPO("CnnPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)  # 2 rollouts, 3 episodes: resets and truncation included
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    env.step(action)


def test_record_video(ckpt, tmp_path):
    pytest.importorskip("moviepy")  # RecordVideo writes through moviepy
    from gymnasium.wrappers import RecordVideo

    env = gymnasium.make("worldsim/WorldModel-v0", checkpoint=ckpt, render_mode="rgb_array", max_episode_steps=5)
    env = RecordVideo(env, str(tmp_path / "videos"), episode_trigger=lambda episode: True, disable_logger=True)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    env.close()
    assert list((tmp_path / "videos").glob("*.mp4"))
