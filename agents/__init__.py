"""Policies: random, keyboard, scripted drivers, agents trained in imagination (issues 3-6).

``make_policy(name, env, seed)`` builds one by name; see ``worldsim.agents.policy`` for the interface.
"""

from __future__ import annotations

from worldsim.agents.policy import POLICIES, SEEING_POLICIES, Policy, RandomPolicy, load_factory, make_policy

__all__ = ["POLICIES", "SEEING_POLICIES", "Policy", "RandomPolicy", "load_factory", "make_policy"]
