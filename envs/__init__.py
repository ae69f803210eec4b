"""Gymnasium environments built on the engine, and adapters for source envs.

Importing ``envs`` (which ``import worldsim`` does) registers with Gymnasium, the way ``gym_pusht`` and ``ale_py``
register theirs:

* ``worldsim/Crafter-v0``: the Crafter source env behind the Gymnasium API (``worldsim.envs.crafter``);
* ``worldsim/WorldModel-v0``: any world model checkpoint as an env, ``gymnasium.make(id, checkpoint=path_or_name)``;
* ``worldsim/<World>-v0``: one id per world shipped in ``assets/`` (``worldsim/CarRacing-v0`` for ``carracing``).

Entry points are strings, so neither crafter nor a model is loaded until an env is made, and registering only lists
``assets/`` and reads each shipped world's small ``config.json``.

    import gymnasium, worldsim
    env = gymnasium.make("worldsim/WorldModel-v0", checkpoint="runs/world", render_mode="rgb_array")
"""

from __future__ import annotations

import json
import re

import gymnasium

from worldsim.worlds import ASSETS, shipped_worlds

CRAFTER_ID = "worldsim/Crafter-v0"
WORLD_MODEL_ID = "worldsim/WorldModel-v0"
WORLD_ENTRY_POINT = "worldsim.envs.world:WorldModelEnv"
WORLD_VECTOR_ENTRY_POINT = "worldsim.envs.world_vector:WorldModelVectorEnv"
MAX_EPISODE_STEPS = 1000
"""TimeLimit of the registered world-model ids (``gymnasium.make(..., max_episode_steps=n)`` overrides it)."""

SOURCE_IDS = frozenset({CRAFTER_ID})
"""Ids of real envs in our namespace: a shipped world model whose name would take one gets ``<Name>World-v0``."""


def world_env_name(world: str, config: dict) -> str:
    """The ``<World>`` of a shipped world's id, from its directory name and ``config.json``.

    A directory name like ``carracing`` has lost its word boundaries, so a world says how its name is written
    with its config's ``name`` (``"CarRacing"``) when that spells the same word; otherwise the directory name is
    capitalised per word (``push_t`` -> ``PushT``).
    """
    name = str(config.get("name") or "")
    if name and _squash(name).lower() == _squash(world).lower():
        return _squash(name[:1].upper() + name[1:])
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", world) if part)


def _squash(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "", text)


def shipped_world_ids() -> dict[str, str]:
    """Gymnasium id -> shipped world name, for every world in ``assets/``."""
    ids = {}
    for world in shipped_worlds():
        try:
            config = json.loads((ASSETS / world / "config.json").read_text())
        except (OSError, ValueError):
            config = {}  # a broken asset must not break ``import worldsim``; making the env reports it
        if isinstance(config, dict) and config.get("text_to_video"):
            continue  # a text-to-video backbone has no controls: `worldsim generate` uses it, not Gymnasium
        name = world_env_name(world, config if isinstance(config, dict) else {})
        env_id = f"worldsim/{name}-v0"
        if env_id in SOURCE_IDS or env_id == WORLD_MODEL_ID:
            env_id = f"worldsim/{name}World-v0"
        ids[env_id] = world
    return ids


def register_envs() -> None:
    """Register every ``worldsim/*`` id that is not registered yet (re-importing must not warn)."""
    if CRAFTER_ID not in gymnasium.registry:
        gymnasium.register(id=CRAFTER_ID, entry_point="worldsim.envs.crafter:CrafterEnv")
    worlds = {WORLD_MODEL_ID: None, **shipped_world_ids()}
    for env_id, world in worlds.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(
            id=env_id,
            entry_point=WORLD_ENTRY_POINT,
            vector_entry_point=WORLD_VECTOR_ENTRY_POINT,
            max_episode_steps=MAX_EPISODE_STEPS,
            kwargs={} if world is None else {"checkpoint": world},
        )


register_envs()
