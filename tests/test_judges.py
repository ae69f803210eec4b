"""Judges read task state off frames and score it by the env's own rule: checked against the real PushT env."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldsim.agents.pusht import GOAL_POSE, pusht_state
from worldsim.envs.judges import PushTJudge, judge_for, pusht_coverage
from worldsim.errors import InputError
from worldsim.inputs import resize_frames

pytest.importorskip("gym_pusht")
from worldsim.envs.sources import frame_of, make_source_env  # noqa: E402


def _frames_and_truth(states: list[list[float]]) -> tuple[np.ndarray, np.ndarray, list[dict[str, float]]]:
    """64x64 frames of PushT set to each (agent x, y, block x, y, angle), the env's own coverage, its true state."""
    env = make_source_env("gym_pusht/PushT-v0")
    frames, coverage, truth = [], [], []
    core = env.unwrapped
    for state in states:
        env.reset(seed=0)
        core.agent.position = tuple(state[:2])
        core.block.angle = state[4]  # first: pymunk turns a body about its centre of gravity, moving its origin
        core.block.position = tuple(state[2:4])
        core.space.step(core.dt)  # shapes take the bodies' new poses (the pusher is clear of the block: no contact)
        frames.append(frame_of(env, core.get_obs()))
        coverage.append(env.unwrapped._get_coverage())
        truth.append(pusht_state(env))
    env.close()
    small = resize_frames(torch.from_numpy(np.stack(frames)), (64, 64)).numpy()
    return small, np.array(coverage), truth


def _near_goal_states(n: int, rng: np.random.Generator) -> list[list[float]]:
    """Block poses from on the goal to well off it (the coverage band where success is decided), the pusher
    clear of the block."""
    gx, gy, angle = GOAL_POSE
    states = []
    for i in range(n):
        spread = 40.0 * i / n
        states.append(
            [100.0, 450.0, gx + rng.normal(0, spread), gy + rng.normal(0, spread), angle + rng.normal(0, spread / 80)]
        )
    return states


def test_pusht_coverage_is_the_envs_own():
    """Our polygon clipping gives gym_pusht's (shapely) coverage for any pose."""
    rng = np.random.default_rng(0)
    states = _near_goal_states(12, rng) + [[100, 100, *rng.uniform(150, 350, 2), rng.uniform(-3, 3)] for _ in range(8)]
    _, coverage, truth = _frames_and_truth(states)
    ours = [pusht_coverage(np.array([t["block_x"], t["block_y"]]), t["block_angle"]) for t in truth]
    np.testing.assert_allclose(ours, coverage, atol=1e-9)


def test_the_judge_reads_coverage_and_success_off_real_frames():
    """On 64x64 real frames near the goal the judge's coverage is within 0.05 of the env's, and its success
    (coverage >= 0.95) agrees with the env's except within 0.02 of the threshold."""
    judge = judge_for("gym_pusht/PushT-v0")
    frames, coverage, truth = _frames_and_truth(_near_goal_states(24, np.random.default_rng(1)))
    read = judge.score(frames)
    assert np.abs(read - coverage).max() < 0.05
    clear = np.abs(coverage - judge.success_score) > 0.02
    assert coverage[clear].max() > judge.success_score  # the check covers successes, not only failures
    assert np.array_equal((read >= judge.success_score)[clear], (coverage >= judge.success_score)[clear])
    state = judge.state(frames)
    recorded = {k: np.array([t[k] for t in truth]) for k in judge.STATE}
    errors = judge.state_errors(state, recorded)
    assert errors["block"].max() < 6.0 and errors["angle"].max() < 4.0 and errors["agent"].max() < 4.0


def test_mask_and_errors_of_a_lost_block():
    """A frame without the T: an empty mask, an unreadable state (infinitely wrong), no coverage."""
    judge = PushTJudge()
    frames, _, _ = _frames_and_truth([[100, 100, 256, 256, math.pi / 4]])
    blank = np.full_like(frames, 255)
    assert judge.mask(frames).sum() > 20 and judge.mask(blank).sum() == 0
    errors = judge.state_errors(judge.state(blank), judge.state(frames))
    assert np.isinf(errors["block"]).all() and judge.score(blank)[0] == 0.0


def test_a_source_without_a_judge_is_refused_in_one_line():
    with pytest.raises(InputError, match="no judge"):
        judge_for("CarRacing-v3", "carracing")


def test_the_t_is_read_without_the_pusher():
    """A dream may draw the pusher too faintly to see: the judge still reads the T (its pusher NaN), while a policy
    that needs the pusher gets no pose from the same frame."""
    from worldsim.agents.pusht.pixels import read_pusht_pose

    frames, _, truth = _frames_and_truth([[100.0, 450.0, 256.0, 256.0, 0.3]])
    faded = frames.copy()
    f = faded.astype(np.int16)
    faded[(f[..., 2] - f[..., 0]) > 60] = 255  # the pusher's blue painted over with the table's white
    assert read_pusht_pose(faded[0]) is None
    state = PushTJudge().state(faded)
    assert np.isnan(state["agent_x"][0])
    recorded = {k: np.array([truth[0][k]]) for k in PushTJudge.STATE}
    errors = PushTJudge().state_errors(state, recorded)
    assert errors["block"][0] < 6.0 and errors["angle"][0] < 4.0
