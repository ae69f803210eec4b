"""PushT's policies: the scripted pusher on the true poses (``pusher``, with the T's geometry), the planner that
simulates each push (``planner``), the pusher on the pose read off the frame (``pixels``), the per-episode mix behind
the shipped data (``mix``) and the frame-only family a world predicts and ranks (``family``).

A new PushT policy goes in this folder and gets its name in ``worldsim.agents.registry``.
"""

from __future__ import annotations

from worldsim.agents.pusht.family import PUSHT_FAMILY, shipped_bc
from worldsim.agents.pusht.mix import PUSHT_STYLES, PushTMix, PushTStyle, RandomWalk
from worldsim.agents.pusht.pixels import PixelPusher, read_pusht_pose
from worldsim.agents.pusht.planner import PixelPlanner, PushTPlanner
from worldsim.agents.pusht.pusher import (
    BAR,
    COG_LOCAL,
    GOAL_POSE,
    PUSHER_RADIUS,
    STEM,
    TABLE,
    PosePusher,
    PushTPose,
    PushTPusher,
    pose_of,
    pusht_state,
    toward,
    wrap_angle,
)

__all__ = [
    "BAR", "COG_LOCAL", "GOAL_POSE", "PUSHER_RADIUS", "PUSHT_FAMILY", "PUSHT_STYLES", "STEM", "TABLE", "PixelPlanner",
    "PixelPusher", "PosePusher", "PushTMix", "PushTPlanner", "PushTPose", "PushTPusher", "PushTStyle", "RandomWalk",
    "pose_of", "pusht_state", "read_pusht_pose", "shipped_bc", "toward", "wrap_angle",
]
