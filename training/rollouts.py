"""What PPO trains on: the dreams (a world's native vector env; with ``--real`` its source env, ``RealEnvs``), the
frame stack over them and the episode bookkeeping (``Rollouts``), and Dropout's Dream Land over the world
(``DropoutDreams``).

Every draw (actions, the context noise level, dropout masks) comes from the run's generator, in a fixed order, so a
run is a function of its seed: a gap tool that changes the dream per update draws from it in ``Rollouts.collect``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from worldsim.agents.ppo import ActorCritic, FrameStack
from worldsim.checkpoint import load_config
from worldsim.envs.world_vector import WorldModelVectorEnv
from worldsim.evaluation.real import WorldView, real_env
from worldsim.evaluation.rl_eval import dream_episode_steps, start_context
from worldsim.training.config import RLTrainConfig
from worldsim.training.ppo import ReturnScale, gae
from worldsim.worlds import resolve_world


class DropoutDreams:
    """Dropout's Dream Land (Wellmer & Kwok 2021) on a trained world: while ``on``, hooks on every DiT block's MLP
    activation multiply dream i's rows by its own fixed mask of kept units (scaled by 1/(1-p)); ``redraw`` draws new
    masks. Rollouts turn it on for the dream steps only, so restarts' start contexts are encoded by the world as it
    is. A guided pass (the batch stacked k times) masks each copy of a dream alike."""

    def __init__(self, dit: torch.nn.Module, p: float, rows: int) -> None:
        self.p, self.rows, self.on = p, rows, False
        self.masks: list[Tensor] = []
        self.handles = []
        for block in dit.blocks:
            activation, hidden = block.mlp[1], block.mlp[0].out_features
            self.masks.append(torch.ones(rows, hidden))
            self.handles.append(activation.register_forward_hook(self._hook(len(self.masks) - 1)))

    def _hook(self, index: int) -> Any:
        def apply(module: torch.nn.Module, args: Any, out: Tensor) -> Tensor | None:
            if not self.on:
                return None
            copies, rest = divmod(out.shape[0], self.rows)
            if rest:
                raise RuntimeError(f"dropout dreams: a pass over {out.shape[0]} rows, not a multiple of {self.rows}")
            mask = self.masks[index].to(out.device, out.dtype).repeat(copies, 1)
            return out * mask.view(out.shape[0], *([1] * (out.dim() - 2)), -1)

        return apply

    def redraw(self, generator: torch.Generator) -> None:
        for mask in self.masks:
            mask.copy_((torch.rand(mask.shape, generator=generator) >= self.p).float() / (1 - self.p))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class RealEnvs:
    """N copies of a world's source env stepped as the dream's vector env is (``WorldView`` frames, ended rows
    restarted through ``reset(options={"reset_mask": ...})``): the real-env baseline, every step a real one. Episode
    i of the run is track ``seed + i``."""

    def __init__(self, config: Any, num_envs: int) -> None:
        self.envs = [WorldView(real_env(config, None, config.name), config) for _ in range(num_envs)]
        self.frames = np.zeros((num_envs, *config.frame_size, 3), np.uint8)
        self.next_seed = 0

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        mask = (options or {}).get("reset_mask")
        if seed is not None:
            self.next_seed = seed
        for i in range(len(self.envs)) if mask is None else np.flatnonzero(mask):
            self.frames[i] = self.envs[i].reset(seed=self.next_seed)[0]
            self.next_seed += 1
        return self.frames.copy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        out = [env.step(int(a)) for env, a in zip(self.envs, actions)]
        self.frames = np.stack([o[0] for o in out])
        reward, terminated, truncated = (np.array([o[k] for o in out]) for k in (1, 2, 3))
        return self.frames.copy(), reward.astype(np.float64), terminated.astype(bool), truncated.astype(bool), {}

    def close(self) -> None:
        for env in self.envs:
            env.close()


class Rollouts:
    """The vector env (dreams, or the real env for the baseline), the frame stack over it and the episode
    bookkeeping; ``collect`` fills one batch."""

    def __init__(self, cfg: RLTrainConfig) -> None:
        self.cfg = cfg
        self.venv: Any
        if cfg.real:
            self.config = load_config(resolve_world(cfg.world))
            self.venv = RealEnvs(self.config, cfg.num_envs)  # the env's own time limit ends its episodes
        else:
            self.venv = WorldModelVectorEnv(
                cfg.world, num_envs=cfg.num_envs, device=cfg.device, sampler_steps=cfg.sampler_steps,
                precision=cfg.precision, compile=cfg.compile,
            )  # fmt: skip
            self.config = self.venv.world.config
            context = start_context(self.venv.world)
            self.venv.max_episode_steps = cfg.episode_steps or dream_episode_steps(self.config, context)
        self.dropout = None
        if cfg.dream_dropout:
            self.dropout = DropoutDreams(self.venv.world.dit, cfg.dream_dropout, cfg.num_envs)
        self.scale = ReturnScale(cfg.num_envs, cfg.gamma)
        self.episode_return = np.zeros(cfg.num_envs)
        self.finished: list[float] = []
        self.stack: FrameStack | None = None

    def start(self, seed: int) -> None:
        obs, _ = self.venv.reset(seed=seed)
        self.stack = FrameStack(self.cfg.num_envs, self.cfg.history, self.config.frame_size)
        self.stack.start(obs)

    def collect(self, net: ActorCritic, generator: torch.Generator) -> dict[str, Tensor]:
        cfg, stack = self.cfg, self.stack
        assert stack is not None
        if cfg.noise_levels is not None and not cfg.real:
            low, high = cfg.noise_levels
            level = low + (high - low) * float(torch.rand((), generator=generator))
            self.venv.world.set_sampler(context_noise=level)
        if self.dropout is not None:
            self.dropout.redraw(generator)
        R, N = cfg.rollout, cfg.num_envs
        frames = torch.zeros(R, *stack.frames.shape, dtype=torch.uint8)
        actions = torch.zeros(R, N, dtype=torch.long)
        logps, values, rewards, dones = (torch.zeros(R, N) for _ in range(4))
        for t in range(R):
            frames[t] = stack.frames
            with torch.no_grad():
                logits, value = net(stack.frames)
            logp_all = F.log_softmax(logits, -1)
            action = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(-1)
            if self.dropout is not None:
                self.dropout.on = True
            obs, reward, terminated, truncated, _ = self.venv.step(action.numpy())
            if self.dropout is not None:
                self.dropout.on = False
            done = terminated | truncated
            self.episode_return += reward
            shaped = self.scale(reward, done)
            after = stack.push(obs)
            cut = np.flatnonzero(truncated & ~terminated)
            if len(cut):  # a time limit is not the world's end: bootstrap from the value of where it stopped
                with torch.no_grad():
                    _, tail = net(after[torch.as_tensor(cut)])
                shaped[cut] += cfg.gamma * tail.numpy()
            if done.any():
                self.finished += self.episode_return[done].tolist()
                self.episode_return[done] = 0.0
                restarted, _ = self.venv.reset(options={"reset_mask": done})
                stack.start(restarted[done], np.flatnonzero(done))
            actions[t], values[t] = action, value
            logps[t] = logp_all.gather(1, action[:, None]).squeeze(1)
            rewards[t] = torch.as_tensor(shaped, dtype=torch.float32)
            dones[t] = torch.as_tensor(done, dtype=torch.float32)
        with torch.no_grad():
            _, last_value = net(stack.frames)
        advantages = gae(rewards, values, dones, last_value, cfg.gamma, cfg.gae_lambda)
        flat = {
            "frames": frames.flatten(0, 1),
            "actions": actions.flatten(),
            "logp": logps.flatten(),
            "advantages": advantages.flatten(),
            "returns": (advantages + values).flatten(),
        }
        return flat

    def close(self) -> None:
        self.venv.close()
