"""Policies: the interface (``policy``), the registry of named policies (``registry``), PPO's agent (``ppo``), behaviour
cloning's CNN (``bc``), and each world's own policies in its folder (``carracing/``, ``pusht/``).

``make_policy(name, env, seed)`` builds one by name; a new policy goes in its world's folder and gets its name in
``worldsim.agents.registry``.
"""

from __future__ import annotations

from worldsim.agents.policy import Policy, RandomPolicy, load_factory
from worldsim.agents.registry import POLICIES, SEEING_POLICIES, make_policy, make_seeing_policy

__all__ = ["POLICIES", "SEEING_POLICIES", "Policy", "RandomPolicy", "load_factory", "make_policy", "make_seeing_policy"]
