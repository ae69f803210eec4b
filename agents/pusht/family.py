"""The PushT policy family: frame-only robot policies of very different skill, for a world to predict and rank.

Every member sees only the frame (a factory ``(action_space, seed)``), so each drives the real env and a dream
alike; ``worldsim rank --world pusht --policies ...`` takes their names. Which of them produced any of the PushT
world's training data is in the world's model card (``assets/pusht/README.md``).

==================== ===============================================================================================
``pusht_planner_px`` ``PixelPlanner``: the pose read off the frame, each push planned in PushT's own physics
                     (48 candidates, lookahead of the best 4): the strongest member
``pusht_planner_px_good``   the same, 24 candidates, lookahead of the best 2
``pusht_planner_px_shaky``  the strongest with every target shaken by 12 units (std)
``pusht_planner_px_greedy`` 16 candidates, greedy: near misses
``pusht_planner_px_weak``   8 candidates, greedy, a random push in 30% of the decisions: mostly failures
``pusht_bc``         a CNN cloned from the recorded expert and good planners' episodes (``worldsim train bc``,
                     a categorical head over a 32x32 grid of targets, 3,000 steps)
``pusht_bc_early``   the same run after 300 of its steps
``pusht_bc_small``   cloned from 15 expert episodes only
``pusht_bc_noisy``   ``pusht_bc`` with Gaussian noise of 0.1 (a twentieth of the table) on every action
``pusht_pixels``     ``PixelPusher``: the hand-written push-from-behind rule on the pose read off the frame
``random``, ``idle`` registered in ``worldsim.agents.policy``
==================== ===============================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from worldsim.agents.bc import BCPolicy
from worldsim.agents.pusht.planner import PixelPlanner
from worldsim.errors import InputError
from worldsim.worlds import POLICY_DIR


def shipped_bc(name: str, env: Any, seed: int | None = None, noise: float = 0.0) -> Any:
    """The cloned policy shipped as ``assets/policies/<name>``, for ``env``'s action space."""
    path = POLICY_DIR / name
    if not (path / "config.json").is_file():
        raise InputError(f"no shipped policy {name!r} (looked in {path}); train one with `worldsim train bc`")
    return BCPolicy.from_pretrained(path, getattr(env, "action_space", env), seed, noise)


def _planner(**kwargs: Any) -> Callable[[Any, int | None], Any]:
    def make(env: Any, seed: int | None = None) -> Any:
        return PixelPlanner(env, seed, **kwargs)

    return make


PUSHT_FAMILY: dict[str, Callable[[Any, int | None], Any]] = {
    "pusht_planner_px": _planner(candidates=48, lookahead=4),
    "pusht_planner_px_good": _planner(candidates=24, lookahead=2),
    "pusht_planner_px_shaky": _planner(candidates=48, lookahead=4, jitter=12.0),
    "pusht_planner_px_greedy": _planner(candidates=16, lookahead=0),
    "pusht_planner_px_weak": _planner(candidates=8, lookahead=0, noise=0.3),
    "pusht_bc": partial(shipped_bc, "pusht_bc"),
    "pusht_bc_early": partial(shipped_bc, "pusht_bc_early"),
    "pusht_bc_small": partial(shipped_bc, "pusht_bc_small"),
    "pusht_bc_noisy": partial(shipped_bc, "pusht_bc", noise=0.1),
}
"""The family's members by name, as ``(env or action space, seed)`` factories (``pusht_pixels``, ``random`` and
``idle`` are registered beside them in ``worldsim.agents.policy``)."""
