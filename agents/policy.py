"""The policy interface every recorder and evaluator drives, and the world-free policies (random, idle).

A policy is a callable ``policy(observation) -> action`` with ``reset(seed)`` called at each episode start. Scripted
policies may read the env's internals (the true car pose, the block pose) rather than the observation: they exist
to record varied, competent data, not to be learned from.

    policy = make_policy("carracing", env, seed=0)
    obs, info = env.reset(seed=0)
    policy.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(policy(obs))

Policies are built by name in ``worldsim.agents.registry`` (``make_policy``, ``make_seeing_policy``); a world's own
policies live in its folder (``agents/carracing/``, ``agents/pusht/``). Add a policy there and name it in the
registry.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import gymnasium
import numpy as np

from worldsim.envs.world import noop_action
from worldsim.errors import InputError


@runtime_checkable
class Policy(Protocol):
    """Maps an observation to an action in the env's action space; ``reset`` starts a new episode."""

    def __call__(self, observation: Any) -> Any: ...

    def reset(self, seed: int | None = None) -> None: ...


class RandomPolicy:
    """Uniform samples from the env's action space, from its own seeded copy (the env's space is left alone)."""

    def __init__(self, env: gymnasium.Env, seed: int | None = None) -> None:
        self.space = copy.deepcopy(env.action_space)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.space.seed(seed)

    def __call__(self, observation: Any) -> Any:
        return self.space.sample()


class IdlePolicy:
    """Touches nothing: the action space's no-op every step (0, zeros, or zero clipped into a Box). In the real env a
    car left alone stands still; a faithful world must keep it there."""

    def __init__(self, env: gymnasium.Env, seed: int | None = None) -> None:
        self.action = noop_action(env.action_space)

    def reset(self, seed: int | None = None) -> None:
        pass

    def __call__(self, observation: Any) -> Any:
        return copy.copy(self.action)


class StyleDraw(NamedTuple):
    """One episode's draw from a mix of styles: the style, the steps it first holds still, its policy's seed, and the
    generator the draw came from (for anything else the style draws)."""

    style: Any
    still_left: int
    sub_seed: int
    rng: np.random.Generator


def check_style_weights(styles: Sequence[Any], what: str) -> None:
    """A mix's styles (each with a ``weight``) must be non-empty with weights summing to 1."""
    total = sum(s.weight for s in styles)
    if not styles or abs(total - 1.0) > 1e-6:
        raise InputError(f"{what} weights must sum to 1, got {total}")


def draw_style(styles: Sequence[Any], seed: int | None) -> StyleDraw:
    """Draw an episode's style by ``weight`` from the episode's seed, the steps it first stands still (uniform in its
    inclusive ``start_still`` range) and a seed for its policy: the rule every per-episode mix (CarRacing's,
    PushT's) follows, so an episode's style is a function of its seed alone."""
    rng = np.random.default_rng(seed)
    style = styles[rng.choice(len(styles), p=[s.weight for s in styles])]
    still_left = int(rng.integers(style.start_still[0], style.start_still[1] + 1))
    return StyleDraw(style, still_left, int(rng.integers(2**31)), rng)


class Stateless:
    """Gives a plain ``fn(observation)`` from a user factory the ``reset`` the interface promises."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def reset(self, seed: int | None = None) -> None:
        pass

    def __call__(self, observation: Any) -> Any:
        return self.fn(observation)


def load_factory(spec: str) -> Callable[..., Any]:
    """``"package.module:callable"`` -> the callable, with one-line errors for every way the spec can be wrong."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"policy {spec!r} is not of the form module:callable")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"policy {spec!r}: cannot import {module_name} ({e})") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"policy {spec!r}: {module_name} has no callable {attr}")
    return factory


def policy_name(policy: str | Callable[..., Any]) -> str:
    """How messages name a policy: its name or ``module:factory`` as given, or a factory callable's qualified name."""
    if isinstance(policy, str):
        return policy
    module, name = getattr(policy, "__module__", None), getattr(policy, "__qualname__", None)
    return f"{module}:{name}" if module and name else repr(policy)


def seen_env(action_space: gymnasium.Space) -> gymnasium.Space:
    """All a policy that drives a dream may know of its env: a copy of the action space that also answers
    ``.action_space`` (with itself), so factories of both shapes work: ``(action_space, seed)`` gets a space, and
    ``(env, seed)`` reads ``env.action_space``. A factory that reaches for anything else fails at once."""
    seen = copy.deepcopy(action_space)
    seen.action_space = seen  # type: ignore[attr-defined]
    return seen
