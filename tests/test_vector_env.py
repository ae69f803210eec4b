"""The native VectorEnv: one engine call per step, equal to N single envs, NEXT_STEP autoreset, partial resets."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from conftest import save_world
from gymnasium.vector import AutoresetMode

from worldsim.envs.world import WorldModelEnv
from worldsim.envs.world_vector import WorldModelVectorEnv
from worldsim.errors import InputError

N = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Batched and single passes round differently at the 1e-6 level; a pixel may move by one level."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b).max()) <= 1


def test_make_vec_builds_the_native_vector_env(ckpt):
    venv = gymnasium.make_vec("worldsim/WorldModel-v0", num_envs=N, checkpoint=ckpt, max_episode_steps=7)
    assert isinstance(venv, WorldModelVectorEnv) and venv.max_episode_steps == 7
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert venv.single_action_space == gymnasium.spaces.Discrete(5)
    assert venv.single_observation_space.shape == (32, 32, 3)
    assert venv.action_space.shape == (N,) and venv.observation_space.shape == (N, 32, 32, 3)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (N, 32, 32, 3) and obs.dtype == np.uint8 and obs in venv.observation_space


def test_vector_env_equals_single_envs_with_the_same_seeds(ckpt):
    venv = WorldModelVectorEnv(ckpt, num_envs=N)
    singles = [WorldModelEnv(ckpt) for _ in range(N)]
    rng = np.random.default_rng(1)
    actions = rng.integers(0, 5, (8, N))
    obs, _ = venv.reset(seed=10)
    for i, env in enumerate(singles):
        assert close(obs[i], env.reset(seed=10 + i)[0])
    for t in range(8):
        obs, reward, terminated, _, _ = venv.step(actions[t])
        for i, env in enumerate(singles):
            o, r, term, _, _ = env.step(int(actions[t, i]))
            assert close(obs[i], o), f"sub-env {i} differs at step {t}"
            assert abs(reward[i] - r) < 1e-4 and terminated[i] == term
    # Sub-envs really differ from one another (each has its own seed and noise).
    assert not np.array_equal(obs[0], obs[1])


def test_autoreset_next_step_and_partial_reset_match_single_envs(ckpt):
    venv = WorldModelVectorEnv(ckpt, num_envs=N, max_episode_steps=3)
    singles = [WorldModelEnv(ckpt) for _ in range(N)]
    venv.reset(seed=20)
    for i, env in enumerate(singles):
        env.reset(seed=20 + i)
    for _ in range(3):
        obs, reward, terminated, truncated, _ = venv.step(np.full(N, 3))
        for env in singles:
            env.step(3)
    assert truncated.all() and not terminated.any()
    # NEXT_STEP: this step's actions are ignored, every sub-env starts over (its np_random goes on).
    obs, reward, terminated, truncated, _ = venv.step(np.full(N, 1))
    assert (reward == 0).all() and not terminated.any() and not truncated.any()
    for i, env in enumerate(singles):
        assert close(obs[i], env.reset()[0])
    obs, *_ = venv.step(np.full(N, 2))
    for i, env in enumerate(singles):
        assert close(obs[i], env.step(2)[0])
    # Restart only sub-env 1 (seeded); the others continue their episodes untouched.
    obs, _ = venv.reset(seed=[None, 99, None], options={"reset_mask": np.array([False, True, False])})
    assert close(obs[1], singles[1].reset(seed=99)[0])
    obs, *_ = venv.step(np.array([4, 0, 3]))
    for i, (env, a) in enumerate(zip(singles, (4, 0, 3))):
        assert close(obs[i], env.step(a)[0]), f"sub-env {i} after a partial reset"


def test_vector_env_errors(ckpt):
    venv = WorldModelVectorEnv(ckpt, num_envs=2)
    venv.reset(seed=0)
    with pytest.raises(InputError, match="out of range"):
        venv.step(np.array([1, 7]))
    with pytest.raises(InputError, match="shape"):
        venv.step(np.array([1, 2, 3]))
    with pytest.raises(InputError, match="2 sub-envs"):
        venv.reset(seed=[1, 2, 3])
    with pytest.raises(InputError, match="uint8"):
        venv.reset(options={"start": np.zeros((32, 32, 3), np.float32)})
    start = np.random.default_rng(0).integers(0, 256, (2, 2, 40, 40, 3), dtype=np.uint8)
    obs, _ = venv.reset(options={"start": start})  # one clip per sub-env, resized
    assert obs.shape == (2, 32, 32, 3)


def test_stable_baselines3_ppo_learns_on_the_vector_env(tmp_path):
    sb3 = pytest.importorskip("stable_baselines3")
    from worldsim.envs.sb3 import SB3VecEnv

    ckpt = save_world(tmp_path / "w64", size=64)  # SB3's NatureCNN needs at least 36x36
    venv = SB3VecEnv(
        gymnasium.make_vec("worldsim/WorldModel-v0", num_envs=2, checkpoint=ckpt, max_episode_steps=10, sampler_steps=1)
    )
    model = sb3.PPO("CnnPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)  # 2 rollouts of 2 x 16 steps: episodes end and restart inside them
    obs = venv.reset()
    action, _ = model.predict(obs, deterministic=True)
    obs, reward, done, infos = venv.step(action)
    assert obs.shape == (2, 64, 64, 3) and reward.shape == (2,)
