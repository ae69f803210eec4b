"""Training steps/s of PPO in the CarRacing dream: worldsim's own PPO (``worldsim rl train``) beside
Stable-Baselines3's PPO on the same native vector env through ``worldsim.envs.sb3.SB3VecEnv``, same batch (32 dreams x
64 steps), same 4 epochs of minibatch 512, same Nature-CNN policy on 3 stacked frames, bf16 world. Run it alone:

    python benchmarks/measure_rl_sb3.py [--updates 3]

Prints one line per side: env steps/s over the timed updates (the first update, with its warm-up, is not timed).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

UPDATE = 32 * 64


def ours(updates: int) -> float:
    from worldsim.training.rl import RLTrainConfig, train_agent

    with tempfile.TemporaryDirectory() as out:
        warm = RLTrainConfig(world="carracing", out=out, steps=UPDATE, save_minutes=1e9)
        train_agent(warm, progress=False)
        warm.steps, warm.resume = UPDATE * (1 + updates), True
        start = time.perf_counter()
        train_agent(warm, progress=False)
        return UPDATE * updates / (time.perf_counter() - start)


def sb3(updates: int) -> float:
    import gymnasium
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    import worldsim  # noqa: F401  (registers the ids)
    from worldsim.envs.sb3 import SB3VecEnv

    venv = gymnasium.make_vec("worldsim/CarRacing-v0", num_envs=32, precision="auto")
    env = VecTransposeImage(VecFrameStack(SB3VecEnv(venv), 3, channels_order="last"))
    model = PPO("CnnPolicy", env, n_steps=64, batch_size=512, n_epochs=4, learning_rate=2.5e-4, clip_range=0.1,
                ent_coef=0.01, device="cpu", seed=0, verbose=0)  # fmt: skip
    model.learn(UPDATE)  # warm-up update
    start = time.perf_counter()
    model.learn(UPDATE * updates, reset_num_timesteps=False)
    seconds = time.perf_counter() - start
    env.close()
    return UPDATE * updates / seconds


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"worldsim PPO: {ours(args.updates):.1f} env steps/s")
    print(f"SB3 PPO:      {sb3(args.updates):.1f} env steps/s")
