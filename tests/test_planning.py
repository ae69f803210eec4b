"""Planning in a world: CEM finds what the score asks for, is deterministic, keeps to the action space, and drives a
real env; bad settings are one-line errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import randomize, save_pusht_world, tiny_config
from PIL import Image

from worldsim.agents.registry import make_seeing_policy
from worldsim.config import ActionSpec
from worldsim.engine import StepOutput, WorldModel
from worldsim.errors import InputError
from worldsim.evaluation.plan import PlanConfig, plan, run_planned_episode
from worldsim.evaluation.real import source_env
from worldsim.planning import CEMConfig, CEMPlanner, PlannerPolicy, goal_score, head_score, judge_score


class ActionPainter:
    """A stand-in world whose dreamt frame t shows action t as its grey level (box: the first component scaled to
    0..255; discrete: 60 * choice): a score of the frames is then a score of the actions, so a search is checkable."""

    def __init__(self, action: ActionSpec) -> None:
        self.config = tiny_config(action=action)
        self.resets: list[tuple[int, int]] = []

    def reset(self, frames, actions=None, generator=None):
        self.resets.append((len(frames), None if actions is None else actions.shape[1]))

    def step(self, actions):
        a = np.asarray(actions, dtype=np.float64).reshape(len(actions), -1)[:, 0]
        level = a / 512 * 255 if self.config.action.kind == "box" else 60 * a
        frames = np.broadcast_to(level[:, None, None, None], (len(a), 4, 4, 3)).astype(np.uint8)
        return StepOutput(frames, np.zeros(len(a), np.float32), np.zeros(len(a), bool))


def grey_near(target: float):
    return lambda frames, rewards: -np.abs(frames[..., 0, 0, 0].astype(np.float64) - target).mean(1)


BOX = ActionSpec.from_gym(gym.spaces.Box(0, 512, (2,)))
CONTEXT = np.zeros((3, 4, 4, 3), np.uint8)


def test_cem_moves_a_box_plan_toward_what_the_score_wants_and_is_deterministic():
    world = ActionPainter(BOX)
    cfg = CEMConfig(horizon=6, candidates=24, elites=4, iterations=4, hold=2, std=0.2)
    start = np.full((2, 2), 100.0, np.float32)  # the last action taken: grey level 50, the score wants 150
    plan = CEMPlanner(world, grey_near(150), cfg).plan(CONTEXT, start)
    assert plan.shape == (6, 2) and plan.dtype == np.float32
    assert ((plan >= 0) & (plan <= 512)).all()
    assert abs(plan[:, 0].mean() / 512 * 255 - 150) < 50  # the start is 100 grey levels off
    assert (plan[0::2] == plan[1::2]).all()  # each searched action held for `hold` steps
    again = CEMPlanner(world, grey_near(150), cfg).plan(CONTEXT, start)
    np.testing.assert_array_equal(plan, again)
    assert world.resets[0] == (24, 2)  # all candidates in one batch, from the context and its actions


def test_cem_picks_the_discrete_choice_the_score_wants_and_warm_starts():
    world = ActionPainter(ActionSpec(kind="discrete", n=4))
    planner = CEMPlanner(world, grey_near(120), CEMConfig(horizon=4, candidates=16, elites=3, iterations=3, hold=1))
    plan = planner.plan(CONTEXT)
    assert plan.shape == (4,) and plan.dtype == np.int64
    assert (plan == 2).all()  # 60 * 2 = 120
    assert planner.last_score == 0.0
    planner.shift(2)
    assert planner.mean is not None and planner.mean.shape[0] == 4
    assert (planner.plan(CONTEXT) == 2).all()


def test_a_real_world_plans_in_bounds_and_a_goal_score_prefers_the_goal(tmp_path):
    world = WorldModel.from_pretrained(save_pusht_world(tmp_path / "w", frame_size=16))
    context = world.reset(seed=0)  # (1, h, w, 3): one context frame
    cfg = CEMConfig(horizon=3, candidates=4, elites=2, iterations=1, hold=1)
    plan = CEMPlanner(world, head_score, cfg).plan(context)
    assert plan.shape == (3, 2) and ((plan >= 0) & (plan <= 512)).all()
    goal = goal_score(world, context[0])
    frames = np.stack([np.repeat(context, 2, 0), np.zeros((2, 16, 16, 3), np.uint8)])
    near, far = goal(frames, np.zeros((2, 2)))
    assert near > far
    with pytest.raises(InputError, match="goal"):
        goal_score(world, np.zeros((16, 16), np.uint8))


def test_judge_score_sums_the_judged_reward_and_counts_unreadable_frames_as_zero():
    class Judge:
        def reward(self, frames):
            r = frames[:, 0, 0, 0] / 100.0
            r[frames[:, 0, 0, 1] == 1] = np.nan
            return r

    frames = np.zeros((2, 3, 4, 4, 3), np.uint8)
    frames[0, :, 0, 0, 0] = 50
    frames[1, :, 0, 0, 0] = 90
    frames[1, 2, 0, 0, 1] = 1  # unreadable
    np.testing.assert_allclose(judge_score(Judge())(frames, np.zeros((2, 3))), [1.5, 1.8])


@pytest.mark.parametrize(
    "changes, message",
    [({"elites": 9, "candidates": 4}, "cannot exceed"), ({"horizon": 0}, "--horizon"), ({"min_std": 0.5}, "spreads")],
)
def test_bad_search_settings_are_one_line_errors(changes, message):
    with pytest.raises(InputError, match=message):
        CEMConfig(**changes)


def test_a_planner_drives_a_real_env_episode(tmp_path):
    pytest.importorskip("gym_pusht")
    world = WorldModel.from_pretrained(save_pusht_world(tmp_path / "w", frame_size=16))
    randomize(world.dit, 3)
    env = source_env(world.config, "tiny")
    planner = CEMPlanner(world, head_score, CEMConfig(horizon=4, candidates=3, elites=1, iterations=1, hold=2))
    torch.manual_seed(0)
    episode = run_planned_episode(planner, env, seed=5, max_steps=6, replan_every=3, context=2, keep_frames=True)
    env.close()
    assert episode.steps == 6 and episode.decisions == 2
    assert episode.frames is not None and episode.frames.shape == (7, 16, 16, 3)
    assert episode.success is False and 0.0 <= episode.best_reward <= 1.0
    assert episode.plan_seconds > 0


def test_plan_settings_that_cannot_work_are_refused_before_any_work(tmp_path):
    with pytest.raises(InputError, match="--goal"):
        PlanConfig(score="goal")
    with pytest.raises(InputError, match="--goal"):
        PlanConfig(goal=str(tmp_path / "missing.png"), score="goal")
    with pytest.raises(InputError, match="real env"):
        PlanConfig(real=False)
    with pytest.raises(InputError, match="--replan-every"):
        PlanConfig(replan_every=0)
    world = save_pusht_world(tmp_path / "w", frame_size=16)
    wrong = tmp_path / "goal.png"
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(wrong)
    with pytest.raises(InputError, match="16x16 frames"):
        plan(PlanConfig(world=world, score="goal", goal=str(wrong)), progress=False)
    with pytest.raises(InputError, match="context"):
        plan(PlanConfig(world=world, context=99), progress=False)


def test_the_plan_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    from worldsim.cli import main

    world = save_pusht_world(tmp_path / "w", frame_size=16)
    for args, message in (
        (["--score", "goal"], "--goal"),
        (["--world", world, "--elites", "5", "--candidates", "2"], "cannot exceed"),
        (["--world", world, "--json", str(tmp_path)], "is a directory"),
    ):
        assert main(["plan", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err


def test_a_planner_policy_replans_every_k_steps_from_the_frames_and_actions_it_saw():
    world = ActionPainter(BOX)
    planner = CEMPlanner(world, grey_near(150), CEMConfig(horizon=6, candidates=8, elites=2, iterations=1, hold=2))
    policy = PlannerPolicy(planner, replan_every=3, context=2)
    policy.reset(seed=7)
    size = tuple(world.config.frame_size)
    frame = np.zeros((*size, 3), np.uint8)
    actions = [policy(frame) for _ in range(7)]
    assert policy.decisions == 3  # at steps 0, 3 and 6
    assert world.resets == [(8, None), (8, 1), (8, 1)]  # one frame at first, then two and the action between
    assert all(a.shape == (2,) for a in actions)
    big = np.zeros((2 * size[0], 2 * size[1], 3), np.uint8)  # a frame of another size is resized to the world's
    assert policy(big).shape == (2,) and policy.frames[-1].shape == (*size, 3)
    again = PlannerPolicy(CEMPlanner(ActionPainter(BOX), grey_near(150), planner.cfg), replan_every=3, context=2)
    again.reset(seed=7)
    np.testing.assert_array_equal(actions, [again(frame) for _ in range(7)])  # the episode's seed fixes the search


def test_plan_world_is_a_policy_that_drives_a_dream_and_refuses_another_action_space(tmp_path, monkeypatch):
    path = save_pusht_world(tmp_path / "w", frame_size=16)
    policy = make_seeing_policy(f"plan:{path}", gym.spaces.Box(0.0, 512.0, (2,), np.float32), seed=1)
    assert isinstance(policy, PlannerPolicy) and policy.planner.cfg.search_seed == 1
    with pytest.raises(InputError, match="plans Box"):
        make_seeing_policy(f"plan:{path}", gym.spaces.Discrete(5), seed=0)
    with pytest.raises(InputError, match="name the world"):
        make_seeing_policy("plan:", gym.spaces.Discrete(5), seed=0)
