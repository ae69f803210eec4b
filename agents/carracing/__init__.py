"""CarRacing's policies: the scripted driver that reads the track (``driver``), the frame-only road follower
(``road_follower``), its family of styles (``family``) and the per-episode mix behind the shipped data (``mix``).

A new CarRacing policy goes in this folder and gets its name in ``worldsim.agents.registry``.
"""

from __future__ import annotations

from worldsim.agents.carracing.driver import (
    BRAKE,
    GAS,
    LEFT,
    NOTHING,
    RIGHT,
    STILL_SPEED,
    CarRacingDriver,
    car_speed,
    car_stands_still,
    car_state,
    on_track,
)
from worldsim.agents.carracing.family import ROAD_FAMILY, Routine
from worldsim.agents.carracing.mix import DRIVING_STYLES, CarRacingMix, DrivingStyle
from worldsim.agents.carracing.road_follower import RoadFollower, road_mask

__all__ = [
    "BRAKE", "DRIVING_STYLES", "GAS", "LEFT", "NOTHING", "RIGHT", "ROAD_FAMILY", "STILL_SPEED", "CarRacingDriver",
    "CarRacingMix", "DrivingStyle", "RoadFollower", "Routine", "car_speed", "car_stands_still", "car_state", "on_track",
    "road_mask",
]
