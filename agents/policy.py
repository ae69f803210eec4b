"""The policy interface every recorder and evaluator drives, the random policy, and ``make_policy`` by name.

A policy is a callable ``policy(observation) -> action`` with ``reset(seed)`` called at each episode start. Scripted
policies may read the env's internals (the true car pose, the block pose) rather than the observation: they exist
to record varied, competent data, not to be learned from.

    policy = make_policy("carracing", env, seed=0)
    obs, info = env.reset(seed=0)
    policy.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(policy(obs))

A policy that drives a dream sees only frames; ``make_seeing_policy`` builds one from the action space alone:

    policy = make_seeing_policy("road", world.action_space, seed=0)   # or "module:factory", or a factory callable
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import gymnasium

from worldsim.agents.family import ROAD_FAMILY
from worldsim.agents.pusht_family import PUSHT_FAMILY
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
        from worldsim.envs.world import noop_action

        self.action = noop_action(env.action_space)

    def reset(self, seed: int | None = None) -> None:
        pass

    def __call__(self, observation: Any) -> Any:
        return copy.copy(self.action)


class _Stateless:
    """Gives a plain ``fn(observation)`` from a user factory the ``reset`` the interface promises."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def reset(self, seed: int | None = None) -> None:
        pass

    def __call__(self, observation: Any) -> Any:
        return self.fn(observation)


def _carracing(env: gymnasium.Env, seed: int | None) -> Policy:
    from worldsim.agents.carracing import CarRacingDriver

    return CarRacingDriver(env, seed)


def _carracing_mix(env: gymnasium.Env, seed: int | None) -> Policy:
    from worldsim.agents.carracing import CarRacingMix

    return CarRacingMix(env, seed)


def _pusht(env: gymnasium.Env, seed: int | None) -> Policy:
    from worldsim.agents.pusht import PushTPusher

    return PushTPusher(env, seed)


def _pusht_planner(env: gymnasium.Env, seed: int | None) -> Policy:
    from worldsim.agents.pusht_planner import PushTPlanner

    return PushTPlanner(env, seed)


def _pusht_mix(env: gymnasium.Env, seed: int | None) -> Policy:
    from worldsim.agents.pusht_mix import PushTMix

    return PushTMix(env, seed)


def _pusht_pixels(env: gymnasium.Env, seed: int | None) -> Policy:
    from worldsim.agents.pusht_pixels import PixelPusher

    return PixelPusher(env, seed)


def _road(env: gymnasium.Env, seed: int | None) -> Policy:
    from worldsim.agents.road_follower import RoadFollower

    return RoadFollower(env, seed)


POLICIES: dict[str, Callable[[gymnasium.Env, int | None], Policy]] = {
    "random": RandomPolicy,
    "idle": IdlePolicy,
    "carracing": _carracing,
    "carracing_mix": _carracing_mix,
    "road": _road,
    **ROAD_FAMILY,  # road_slow, road_fast, road_stopgo, road_weave, road_brake: worldsim.agents.family
    "pusht": _pusht,
    "pusht_pixels": _pusht_pixels,
    "pusht_planner": _pusht_planner,
    "pusht_mix": _pusht_mix,
    **PUSHT_FAMILY,  # frame-only PushT policies from pixel planners to cloned CNNs: worldsim.agents.pusht_family
}
"""Named policies; each entry is a factory ``(env, seed) -> Policy``, the same shape as a ``module:callable``."""
SEEING_POLICIES = ("random", "idle", "road", *ROAD_FAMILY, "pusht_pixels", *PUSHT_FAMILY)
"""Named policies that need nothing but the observation (and the action space): they can drive a dream."""


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


AGENT_PREFIX = "agent:"
"""``agent:PATH``: a trained agent (``worldsim rl train``'s run directory or an agent directory) as a policy."""


def _agent(spec: str, action_space: gymnasium.Space, seed: int | None) -> Policy:
    from worldsim.agents.ppo import AgentPolicy
    from worldsim.rl_eval import agent_dir

    path = spec[len(AGENT_PREFIX) :]
    if not path:
        raise InputError(f"policy {spec!r}: name the agent's directory, agent:PATH")
    return AgentPolicy.from_pretrained(agent_dir(path), action_space, seed)


def make_policy(name: str, env: gymnasium.Env, seed: int | None = None) -> Policy:
    """A policy by name (see ``POLICIES``), a trained agent (``agent:PATH``) or a ``module:callable`` factory
    ``(env, seed)``."""
    if name.startswith(AGENT_PREFIX):
        return _agent(name, env.action_space, seed)
    if ":" in name:
        policy = load_factory(name)(env, seed)
        if not callable(policy):
            raise InputError(f"policy {name!r}: the factory returned {type(policy).__name__}, not a callable")
        return policy if isinstance(policy, Policy) else _Stateless(policy)
    if name not in POLICIES:
        raise InputError(f"unknown policy {name!r}: use one of {', '.join(POLICIES)}, or module:callable")
    return POLICIES[name](env, seed)


def policy_name(policy: str | Callable[..., Any]) -> str:
    """How messages name a policy: its name or ``module:factory`` as given, or a factory callable's qualified name."""
    if isinstance(policy, str):
        return policy
    module, name = getattr(policy, "__module__", None), getattr(policy, "__qualname__", None)
    return f"{module}:{name}" if module and name else repr(policy)


def _seen_env(action_space: gymnasium.Space) -> gymnasium.Space:
    """All a policy that drives a dream may know of its env: a copy of the action space that also answers
    ``.action_space`` (with itself), so factories of both shapes work: ``(action_space, seed)`` gets a space, and
    ``(env, seed)`` reads ``env.action_space``. A factory that reaches for anything else fails at once."""
    seen = copy.deepcopy(action_space)
    seen.action_space = seen  # type: ignore[attr-defined]
    return seen


def make_seeing_policy(
    policy: str | Callable[..., Any], action_space: gymnasium.Space, seed: int | None = None
) -> Policy:
    """A policy that acts on frames alone, so it can drive a dream: a name in ``SEEING_POLICIES``, a trained agent
    (``agent:PATH``), a ``module:factory`` or a factory callable, of the shape ``(action_space, seed)`` or
    ``(env, seed)`` (it gets an env that has nothing but ``action_space``). Every way this goes wrong is a one-line
    InputError naming the policy.
    """
    name = policy_name(policy)
    if isinstance(policy, str) and policy.startswith(AGENT_PREFIX):
        return _agent(policy, action_space, seed)
    if not isinstance(policy, str):
        factory = policy
    elif ":" in policy:
        factory = load_factory(policy)
    elif policy in SEEING_POLICIES:
        factory = POLICIES[policy]
    elif policy in POLICIES:
        raise InputError(
            f"policy {policy!r} reads the real env's internals, so it cannot drive a dream; use one that sees only "
            f"frames: {', '.join(SEEING_POLICIES)} or module:factory"
        )
    else:
        raise InputError(f"unknown policy {policy!r}: use one of {', '.join(SEEING_POLICIES)}, or module:factory")
    try:
        made = factory(_seen_env(action_space), seed)
    except Exception as e:  # user code: whatever it raises is the policy's fault, said in one line
        raise InputError(
            f"policy {name!r}: its factory failed ({type(e).__name__}: {e}); a policy that drives a dream is built "
            "from the action space alone: factory(action_space, seed), or factory(env, seed) with an env that has "
            "only action_space"
        ) from e
    if not callable(made):
        raise InputError(f"policy {name!r}: the factory returned {type(made).__name__}, not a callable")
    return made if isinstance(made, Policy) else _Stateless(made)
