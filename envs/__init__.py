"""Gymnasium environments built on the engine, and adapters for source envs (issue 4).

Importing ``envs`` registers ``worldsim/Crafter-v0`` with Gymnasium, the way ``gym_pusht`` and ``ale_py`` register
theirs; the entry point is a string, so crafter itself is imported only when the env is made.
"""

from __future__ import annotations

import gymnasium

CRAFTER_ID = "worldsim/Crafter-v0"

if CRAFTER_ID not in gymnasium.registry:  # re-importing (or reloading) this module must not warn about re-registering
    gymnasium.register(id=CRAFTER_ID, entry_point="envs.crafter:CrafterEnv")
