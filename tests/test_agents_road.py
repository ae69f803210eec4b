"""The pixel road follower: steers toward the road it sees, and drives the real CarRacing from frames alone."""

from __future__ import annotations

import numpy as np
import torch

from worldsim.agents.carracing import GAS, LEFT, NOTHING, RIGHT, on_track
from worldsim.agents.carracing.road_follower import RoadFollower
from worldsim.envs.sources import frame_of, make_source_env
from worldsim.inputs import resize_frames

GRASS, ROAD = (100, 202, 100), (102, 102, 102)


def frame_with_road(column: int | None) -> np.ndarray:
    f = np.zeros((64, 64, 3), np.uint8)
    f[:] = GRASS
    if column is not None:
        f[:56, column - 6 : column + 6] = ROAD
    f[56:] = 0  # HUD bar
    return f


def test_steers_toward_the_road_and_drives_straight_on_it():
    driver = RoadFollower()
    assert driver(frame_with_road(50)) == RIGHT
    assert driver(frame_with_road(12)) == LEFT
    straight = [driver(frame_with_road(32)) for _ in range(4)]
    assert set(straight) == {GAS, NOTHING} and straight.count(GAS) == 2  # gas on half the straight steps
    assert driver(frame_with_road(None)) == LEFT  # lost: keeps turning the way it last turned
    driver(frame_with_road(50))
    assert driver(frame_with_road(None)) == RIGHT


def test_drives_real_carracing_from_pixels():
    env = make_source_env("CarRacing-v3")
    obs, _ = env.reset(seed=101)
    driver = RoadFollower()
    total, on_road = 0.0, 0
    for _ in range(150):  # 150 frames at the world's action repeat 2
        action = driver(resize_frames(torch.from_numpy(frame_of(env, obs)), (64, 64)).numpy())
        for _ in range(2):
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
        on_road += on_track(env)
    env.close()
    assert on_road >= 120 and total > 50  # it follows the road and collects tiles (random driving: < 0)
