"""The real side of real-vs-dream: a world's source env as the world sees it, and real episodes in it.

Every command that sets a world beside its real env (``predict --real``, ``rank --real``, ``rl eval``, ``eval``)
goes through here: ``source_env`` makes the env and checks its actions against the world's, ``real_repeat`` is the
action repeat that turns the env's rate into the world's, ``to_world`` brings a real frame to the world's size and
``env_action`` a checked action to the env's type; ``WorldView`` wraps all of it as a Gymnasium env, and
``real_episode`` runs one whole episode through it. World-specific knowledge (frame rates, intros, how to read a frame
off the env) comes from the source adapter, ``worldsim.envs.sources``; change it there.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium
import numpy as np
import torch

from worldsim.agents.policy import Policy
from worldsim.config import ActionSpec, WorldConfig
from worldsim.data.compat import describe_space
from worldsim.envs.sources import frame_of, frame_rate, make_source_env, source_world
from worldsim.errors import InputError, WorldsimError
from worldsim.inputs import resize_frames


def env_action(action: torch.Tensor, space: Any) -> Any:
    """A checked action as the real env takes it: an int for Discrete, else an array of the space's dtype."""
    if isinstance(space, gymnasium.spaces.Discrete):
        return int(action)
    return np.asarray(action.cpu().numpy(), dtype=space.dtype)

def frame_size(config: WorldConfig) -> tuple[int, int]:
    h, w = config.frame_size
    return h, w

def to_world(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A real frame at the world's frame size: what the policy and the dream see."""
    return resize_frames(torch.from_numpy(np.ascontiguousarray(frame)), size).numpy()

def intro_frames(config: WorldConfig) -> int:
    """Frames at the start of every episode of the world's source env that are not play (CarRacing's zoom-in): its
    adapter's ``intro_seconds`` at the world's frame rate, the frames ``worldsim eval`` skips too."""
    return round(source_world(config.source_env).intro_seconds * config.frame_rate)

def real_repeat(env: Any, config: WorldConfig) -> int:
    """Env steps per world step: the action repeat that turns the env's native rate into the world's (the source
    adapter's frame skip for the worlds it records, e.g. 2 for CarRacing's 50 fps at 25)."""
    native = frame_rate(env)
    repeat = max(1, round(native / config.frame_rate))
    if round(native / repeat) != config.frame_rate:  # the recorder's rate rounding, inverted
        raise InputError(
            f"world {config.name!r} runs at {config.frame_rate} fps, but {config.source_env} at {native} fps, which no "
            "whole action repeat turns into the world's rate"
        )
    return repeat

def source_env(config: WorldConfig, label: str, world_steps: int = 0) -> Any:
    """The world's real env, checked against the world's actions; one-line errors. ``world_steps``: the world steps
    one real episode must be able to run (intro, context and horizon); an env whose time limit would cut it sooner
    (PushT's 300 steps, counted from its reset, would end a 300-step horizon three steps early after a 4-frame
    context) is made with a limit that fits, so the real episode covers every step its dream does."""
    if not config.source_env:
        raise InputError(
            f"cannot run the real env beside world {label!r}: it names no real env (its config.source_env is empty)"
        )
    try:
        env = make_source_env(config.source_env)
    except WorldsimError as e:
        raise InputError(f"cannot make {label!r}'s real env {config.source_env}: {e}") from None
    try:
        env_spec = ActionSpec.from_gym(env.action_space)
    except WorldsimError:
        env_spec = None
    if env_spec != config.action:
        env.close()
        raise InputError(
            f"world {label!r} takes {describe_space(config.action)} but its real env {config.source_env} takes "
            f"{env.action_space}"
        )
    needed = world_steps * real_repeat(env, config)
    limit = env.spec.max_episode_steps if env.spec is not None else None
    if limit is not None and needed > limit:
        env.close()
        env = make_source_env(config.source_env, max_episode_steps=needed)
    return env

def real_env(config: WorldConfig, env_id: str | None, label: str) -> Any:
    """The world's source env (``env_id`` must name it, or be 'auto'), checked against the world's actions."""
    if not config.source_env:
        raise InputError(f"world {label!r} names no real env (its config.source_env is empty): use --dream only")
    if env_id not in (None, "auto", config.source_env):
        raise InputError(f"--real {env_id}: world {label!r} was recorded in {config.source_env}; use --real auto")
    return source_env(config, label)

class WorldView(gymnasium.Wrapper):
    """A source env as its world sees it: frames at the world's size, each action held for the world's frame skip
    (rewards summed), as ``worldsim record`` recorded the data. An agent that drives the real env through this sees
    what it saw in the dream, one step per world step."""

    def __init__(self, env: gymnasium.Env, config: WorldConfig) -> None:
        super().__init__(env)
        self.size = (int(config.frame_size[0]), int(config.frame_size[1]))
        self.repeat = real_repeat(env, config)
        self.observation_space = gymnasium.spaces.Box(0, 255, (*self.size, 3), np.uint8)

    def _frame(self, obs: Any) -> np.ndarray:
        return to_world(frame_of(self.env, obs), self.size)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._frame(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = env_action(torch.as_tensor(action), self.env.action_space)
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return self._frame(obs), total, bool(terminated), bool(truncated), info

class RealEpisode(NamedTuple):
    ret: float
    steps: int
    frames: list
    """Every frame, when kept (a video)."""
    start: np.ndarray | None
    """The first ``context`` frames (T, H, W, 3)."""
    start_return: float
    """Reward of the steps that made ``start``."""

def real_episode(
    env: gymnasium.Env, policy: Policy, config: WorldConfig, seed: int, keep: bool, context: int = 0
) -> RealEpisode:
    """One whole episode of the source env ``env`` under ``policy``; its first ``context`` frames (and the reward of
    the steps that made them) are kept for a dream to start from, all of them with ``keep`` (a video)."""
    view = WorldView(env, config)
    frame, _ = view.reset(seed=seed)
    policy.reset(seed)
    kept, first, ret, steps, ended, start_return = ([frame] if keep else []), [frame], 0.0, 0, False, 0.0
    while not ended:
        frame, reward, terminated, truncated, _ = view.step(policy(frame))
        ret += reward
        ended = terminated or truncated
        steps += 1
        if len(first) < context:
            first.append(frame)
            start_return = ret
        if keep:
            kept.append(frame)
    return RealEpisode(ret, steps, kept, np.stack(first[:context]) if context else None, start_return)
