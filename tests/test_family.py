"""The CarRacing policy family: registered, frame-only, and each drives the real env as its name says."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_agents_road import frame_with_road

from worldsim.agents import SEEING_POLICIES
from worldsim.agents.carracing import BRAKE, LEFT, RIGHT, STILL_SPEED, car_state
from worldsim.agents.registry import make_seeing_policy
from worldsim.envs.sources import frame_of, make_source_env, source_world
from worldsim.inputs import resize_frames


def drive(name: str, steps: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Actions and speeds of ``steps`` world steps (two env steps each) of real CarRacing, the policy seeing 64x64."""
    env = make_source_env("CarRacing-v3")
    policy = make_seeing_policy(name, env.action_space, seed)
    obs, _ = env.reset(seed=seed)
    policy.reset(seed)
    actions, speeds = [], []
    for _ in range(steps):
        action = policy(resize_frames(torch.from_numpy(frame_of(env, obs)), (64, 64)).numpy())
        for _ in range(2):
            obs, *_ = env.step(action)
        actions.append(int(action))
        speeds.append(car_state(env)["speed"])
    env.close()
    return np.array(actions), np.array(speeds)


def test_carracing_lists_a_family_of_frame_only_policies():
    family = source_world("CarRacing-v3").policy_family
    assert len(family) >= 6 and len(set(family)) == len(family)
    for name in family:  # each is built from the action space alone, so it can drive a dream
        assert name in SEEING_POLICIES
        policy = make_seeing_policy(name, gym.spaces.Discrete(5), 0)
        assert policy(frame_with_road(32)) in range(5)


def test_stop_and_go_stands_still_between_drives():
    actions, speeds = drive("road_stopgo", 110)  # 60 driving, 20 braking, 30 waiting
    assert speeds[:60].max() > 10  # it drove
    assert (actions[60:80] == BRAKE).all() and (speeds[80:110] < STILL_SPEED).sum() >= 20  # then stood still


def test_fast_follower_is_faster_than_slow_one():
    fast, slow = drive("road_fast", 120)[1].mean(), drive("road_slow", 120)[1].mean()
    assert fast > 1.5 * slow


@pytest.mark.parametrize("column", [32, 40])
def test_braker_brakes_a_quarter_of_its_steps(column):
    policy = make_seeing_policy("road_brake", gym.spaces.Discrete(5), 0)
    actions = np.array([policy(frame_with_road(column)) for _ in range(120)])
    assert (actions == BRAKE).mean() == 0.25


def test_weaver_steers_both_ways_on_a_straight_road():
    policy = make_seeing_policy("road_weave", gym.spaces.Discrete(5), 0)
    actions = np.array([policy(frame_with_road(32)) for _ in range(40)])  # the road dead ahead all along
    assert (actions[:5] == RIGHT).all() and (actions[20:25] == LEFT).all()  # deliberate swerves, alternating sides
    assert not np.isin(actions[5:20], (LEFT, RIGHT)).any()  # the follower between them (the road is centred)
