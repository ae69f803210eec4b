"""Named policies: one table from the names users type (``--policy road``) to factories ``(env, seed) -> Policy``.

To add a policy, write it in its world's folder (``agents/carracing/``, ``agents/pusht/``) or beside the interface
(``agents/policy.py``) if it knows no world, and add its name here; add it to ``SEEING_POLICIES`` too if it acts on
frames alone (then it can drive a dream). ``module:factory`` and ``agent:PATH`` need no entry.

    policy = make_policy("carracing", env, seed=0)
    policy = make_seeing_policy("road", world.action_space, seed=0)   # or "module:factory", or a factory callable
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium

from worldsim.agents.carracing import ROAD_FAMILY, CarRacingDriver, CarRacingMix, RoadFollower
from worldsim.agents.policy import IdlePolicy, Policy, RandomPolicy, Stateless, load_factory, policy_name, seen_env
from worldsim.agents.ppo import AgentPolicy, agent_dir
from worldsim.agents.pusht import PUSHT_FAMILY, PixelPusher, PushTMix, PushTPlanner, PushTPusher
from worldsim.config import ActionSpec
from worldsim.engine import WorldModel
from worldsim.errors import InputError
from worldsim.planning import CEMConfig, CEMPlanner, PlannerPolicy, default_score
from worldsim.worlds import resolve_world

POLICIES: dict[str, Callable[[gymnasium.Env, int | None], Policy]] = {
    "random": RandomPolicy,
    "idle": IdlePolicy,
    "carracing": CarRacingDriver,
    "carracing_mix": CarRacingMix,
    "road": RoadFollower,
    **ROAD_FAMILY,  # road_slow, road_fast, road_stopgo, road_weave, road_brake: worldsim.agents.carracing.family
    "pusht": PushTPusher,
    "pusht_pixels": PixelPusher,
    "pusht_planner": PushTPlanner,
    "pusht_mix": PushTMix,
    **PUSHT_FAMILY,  # frame-only PushT policies from pixel planners to cloned CNNs: worldsim.agents.pusht.family
}
"""Named policies; each entry is a factory ``(env, seed) -> Policy``, the same shape as a ``module:callable``."""
SEEING_POLICIES = ("random", "idle", "road", *ROAD_FAMILY, "pusht_pixels", *PUSHT_FAMILY)
"""Named policies that need nothing but the observation (and the action space): they can drive a dream."""

AGENT_PREFIX = "agent:"
"""``agent:PATH``: a trained agent (``worldsim rl train``'s run directory or an agent directory) as a policy."""
PLAN_PREFIX = "plan:"
"""``plan:WORLD``: model-predictive control dreamt in a world (``worldsim.planning``: CEM with its default search,
scored by the source's judge or the world's reward head) as a policy; it sees frames only."""


def _planner(spec: str, action_space: gymnasium.Space, seed: int | None) -> Policy:
    world_name = spec[len(PLAN_PREFIX) :]
    if not world_name:
        raise InputError(f"policy {spec!r}: name the world to plan in, plan:WORLD (e.g. plan:pusht)")
    world = WorldModel.from_pretrained(resolve_world(world_name))
    space = getattr(action_space, "action_space", action_space)
    if world.config.action != ActionSpec.from_gym(space):
        raise InputError(
            f"policy {spec!r} plans {world.config.action.to_gym()} actions (world {world_name!r}), but this env takes "
            f"{space}"
        )
    score, _ = default_score(world, world_name)
    search = CEMConfig(search_seed=seed or 0)
    return PlannerPolicy(CEMPlanner(world, score, search), context=min(4, world.config.sampler.window))


def _agent(spec: str, action_space: gymnasium.Space, seed: int | None) -> Policy:
    path = spec[len(AGENT_PREFIX) :]
    if not path:
        raise InputError(f"policy {spec!r}: name the agent's directory, agent:PATH")
    return AgentPolicy.from_pretrained(agent_dir(path), action_space, seed)


def make_policy(name: str, env: gymnasium.Env, seed: int | None = None) -> Policy:
    """A policy by name (see ``POLICIES``), a trained agent (``agent:PATH``) or a ``module:callable`` factory
    ``(env, seed)``."""
    if name.startswith(AGENT_PREFIX):
        return _agent(name, env.action_space, seed)
    if name.startswith(PLAN_PREFIX):
        return _planner(name, env.action_space, seed)
    if ":" in name:
        policy = load_factory(name)(env, seed)
        if not callable(policy):
            raise InputError(f"policy {name!r}: the factory returned {type(policy).__name__}, not a callable")
        return policy if isinstance(policy, Policy) else Stateless(policy)
    if name not in POLICIES:
        raise InputError(f"unknown policy {name!r}: use one of {', '.join(POLICIES)}, or module:callable")
    return POLICIES[name](env, seed)


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
    if isinstance(policy, str) and policy.startswith(PLAN_PREFIX):
        return _planner(policy, action_space, seed)
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
        made = factory(seen_env(action_space), seed)
    except Exception as e:  # user code: whatever it raises is the policy's fault, said in one line
        raise InputError(
            f"policy {name!r}: its factory failed ({type(e).__name__}: {e}); a policy that drives a dream is built "
            "from the action space alone: factory(action_space, seed), or factory(env, seed) with an env that has "
            "only action_space"
        ) from e
    if not callable(made):
        raise InputError(f"policy {name!r}: the factory returned {type(made).__name__}, not a callable")
    return made if isinstance(made, Policy) else Stateless(made)
