"""RL in the dream: the PPO pieces by their properties, a tiny run that learns and resumes, agents on disk, the
real and dream sides of ``worldsim rl eval``, and its one-line errors."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
import torch
from conftest import save_world

from worldsim.agents.ppo import ActorCritic, AgentConfig, AgentPolicy, FrameStack, load_agent, save_agent
from worldsim.cli import main
from worldsim.config import ActionSpec
from worldsim.errors import CheckpointError, InputError
from worldsim.training.ppo import ReturnScale, gae, ppo_update
from worldsim.training.rl import RLTrainConfig, train_agent

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 40  # the Atari convolutions need at least 36x36


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> str:
    return save_world(tmp_path_factory.mktemp("world") / "w", size=SIZE)


def small_agent(seed: int = 0, n: int = 5) -> ActorCritic:
    torch.manual_seed(seed)
    return ActorCritic(AgentConfig(frame_size=[SIZE, SIZE], history=2, action=ActionSpec(kind="discrete", n=n)))


def test_gae_is_the_discounted_sum_of_td_errors_and_stops_at_an_episode_end():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [0.25], [1.0]])
    last = torch.tensor([4.0])
    no_end = gae(rewards, values, torch.zeros(3, 1), last, gamma=1.0, lam=1.0)
    # lambda = gamma = 1: the advantage is the return to the end (with the last value) minus the value
    assert torch.allclose(no_end[:, 0], torch.tensor([10.0, 9.0, 7.0]) - values[:, 0])
    ended = gae(rewards, values, torch.tensor([[0.0], [1.0], [0.0]]), last, gamma=1.0, lam=1.0)
    assert torch.allclose(ended[:, 0], torch.tensor([3.0 - 0.5, 2.0 - 0.25, 7.0 - 1.0]))


def test_return_scale_makes_rewards_unit_free_and_forgets_at_episode_ends():
    small, large = ReturnScale(8, gamma=0.9), ReturnScale(8, gamma=0.9)
    rng = np.random.default_rng(0)
    for _ in range(300):
        reward, done = rng.normal(1.0, 2.0, 8), rng.random(8) < 0.05
        a, b = small(reward, done), large(1000 * reward, done)
    assert np.allclose(a, b, rtol=1e-3)  # points or thousandths of a point: PPO sees the same rewards
    assert 0.05 < float(np.abs(a).mean()) < 2.0
    small(np.ones(8), np.array([True] * 4 + [False] * 4))
    assert (small.running[:4] == 0).all() and (small.running[4:] != 0).all()
    fresh = ReturnScale(32, gamma=0.99)  # the first step of 32 real tracks: every car gets -0.1, variance ~0
    assert np.abs(fresh(np.full(32, -0.1), np.zeros(32, bool))).max() <= 10.0


def test_frame_stack_starts_rows_with_their_first_frame_and_pushes_the_newest_last():
    stack = FrameStack(2, 3, (8, 8))
    first = np.stack([np.full((8, 8, 3), 10, np.uint8), np.full((8, 8, 3), 20, np.uint8)])
    stack.start(first)
    assert (stack.frames[0] == 10).all() and (stack.frames[1] == 20).all()
    stack.push(first + 1)
    assert stack.frames[0, -1].max() == 11 and stack.frames[0, 0].max() == 10
    stack.start(first[1:] + 5, np.array([1]))
    assert (stack.frames[1] == 25).all() and stack.frames[0, -1].max() == 11  # the other row is untouched
    big = np.zeros((2, 16, 16, 3), np.uint8)
    assert stack.push(big).shape == (2, 3, 8, 8, 3)  # other sizes are resized


def test_a_ppo_update_makes_the_advantaged_action_likelier():
    net = small_agent()
    frames = torch.randint(0, 255, (64, 2, SIZE, SIZE, 3), dtype=torch.uint8)
    actions = torch.randint(0, 5, (64,))
    with torch.no_grad():
        logits, value = net(frames)
        logp = torch.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1)
    good = (actions == 2).float()
    batch = {"frames": frames, "actions": actions, "logp": logp, "advantages": good * 2 - 1, "returns": value}
    cfg = RLTrainConfig(epochs=4, minibatch=32, lr=1e-3, ent_coef=0.0)
    ppo_update(net, torch.optim.Adam(net.parameters(), lr=1e-3), batch, cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = torch.softmax(logits, -1)[:, 2].mean()
        after = torch.softmax(net(frames)[0], -1)[:, 2].mean()
    assert after > before + 0.02


def test_agents_round_trip_through_safetensors_and_act_the_same(tmp_path):
    net = small_agent(3)
    save_agent(net, tmp_path / "a", card={"world_checkpoint": "w"}, half=False)
    frames = np.random.default_rng(0).integers(0, 255, (6, SIZE, SIZE, 3), dtype=np.uint8)
    space = gymnasium.spaces.Discrete(5)
    one, two = AgentPolicy(net.eval()), AgentPolicy.from_pretrained(tmp_path / "a", space)
    assert [one(f) for f in frames] == [two(f) for f in frames]
    sampled = [AgentPolicy.from_pretrained(tmp_path / "a", space, seed=s, sample=True) for s in (1, 1)]
    assert [sampled[0](f) for f in frames] == [sampled[1](f) for f in frames]  # the seed decides the draws
    with pytest.raises(InputError, match="acts in Discrete"):
        AgentPolicy.from_pretrained(tmp_path / "a", gymnasium.spaces.Discrete(3))
    from worldsim.agents.registry import make_seeing_policy

    by_name = make_seeing_policy(f"agent:{tmp_path / 'a'}", space, seed=0)  # play --policy agent:PATH
    fresh = AgentPolicy(net)
    assert [by_name(f) for f in frames] == [fresh(f) for f in frames]
    (tmp_path / "a" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(CheckpointError):
        load_agent(tmp_path / "a")
    with pytest.raises(CheckpointError, match="not an agent directory"):
        load_agent(tmp_path / "missing")


def test_a_tiny_dream_run_trains_exports_and_resumes(world, tmp_path):
    cfg = RLTrainConfig(world=world, out=str(tmp_path / "run"), steps=64, num_envs=4, rollout=8, minibatch=16,
                        epochs=1, history=2, episode_steps=6, precision="fp32")  # fmt: skip
    first = train_agent(cfg, progress=False)
    assert first["env_steps"] == 64 and first["real_steps"] == 0 and not first["interrupted"]
    assert first["dream_return_last_100"] is not None  # episodes of 6 steps ended and restarted within rollouts
    card = json.loads((tmp_path / "run" / "agent" / "config.json").read_text())["card"]
    assert card["dream_steps"] == 64 and card["world_checkpoint"] == world
    with pytest.raises(InputError, match="--resume"):
        train_agent(cfg, progress=False)
    cfg.resume, cfg.steps = True, 96
    second = train_agent(cfg, progress=False)
    assert second["env_steps"] == 96 and second["updates"] == 3


def test_init_starts_from_an_agent_and_carries_its_steps_into_the_card(world, tmp_path):
    save_agent(small_agent(seed=3), tmp_path / "a", card={"dream_steps": 1000, "real_steps": 7})
    cfg = RLTrainConfig(
        world=world,
        out=str(tmp_path / "run"),
        steps=32,
        num_envs=4,
        rollout=8,
        minibatch=16,
        epochs=1,
        history=2,
        episode_steps=6,
        precision="fp32",
        lr=0.0,
        init=str(tmp_path / "a"),
        dream_dropout=0.3,
    )  # fmt: skip  (dropout dreams run end to end)
    train_agent(cfg, progress=False)
    card = json.loads((tmp_path / "run" / "agent" / "config.json").read_text())["card"]
    assert card["dream_steps"] == 1000 + 32 and card["real_steps"] == 7
    started, trained = load_agent(tmp_path / "a").state_dict(), load_agent(tmp_path / "run" / "agent").state_dict()
    assert all(torch.equal(started[k], trained[k]) for k in started)  # lr 0: the weights are the agent's
    cfg.out, cfg.history = str(tmp_path / "run2"), 3
    with pytest.raises(InputError, match="--history 2"):
        train_agent(cfg, progress=False)


def test_real_checks_are_counted_and_keep_the_agent_at_its_best_real_score(world, tmp_path, monkeypatch):
    import shutil

    from worldsim.evaluation import rl_eval

    with pytest.raises(InputError, match="names no real env"):
        train_agent(RLTrainConfig(world=world, out=str(tmp_path / "x"), steps=32, num_envs=4, rollout=8, minibatch=16,
                                  history=2, precision="fp32", eval_real_every=1), progress=False)  # fmt: skip
    real_world = tmp_path / "w"
    shutil.copytree(world, real_world)
    config = json.loads((real_world / "config.json").read_text())
    (real_world / "config.json").write_text(json.dumps({**config, "source_env": "CarRacing-v3"}))
    scores, seen = iter([10.0, 50.0, 20.0]), []

    def scripted_real(policy, config, seeds, **kw):  # the real env's part is tested above; here, the bookkeeping
        seen.append(load_agent(policy.removeprefix("agent:")).state_dict())
        return rl_eval.SideResult(returns=[next(scores)] * len(seeds), steps=[7] * len(seeds), seconds=0.0), []

    monkeypatch.setattr(rl_eval, "run_real", scripted_real)
    cfg = RLTrainConfig(world=str(real_world), out=str(tmp_path / "run"), steps=96, num_envs=4, rollout=8,
                        minibatch=16, epochs=1, history=2, episode_steps=6, precision="fp32", eval_real_every=1,
                        eval_real_episodes=2)  # fmt: skip
    summary = train_agent(cfg, progress=False)
    assert summary["real_steps"] == 3 * 2 * 7  # three checks of two episodes, every step counted
    card = json.loads((tmp_path / "run" / "agent" / "config.json").read_text())["card"]
    assert card["real_steps"] == 42 and [e["mean_return"] for e in card["real_evals"]] == [10.0, 50.0, 20.0]
    best = tmp_path / "run" / "agent_best_real"
    assert json.loads((best / "config.json").read_text())["card"]["picked_by_real_return"] == 50.0
    kept = load_agent(best).state_dict()
    assert all(torch.equal(kept[k], seen[1][k]) for k in kept)  # the weights that scored 50, not the last ones
    assert not all(torch.equal(kept[k], seen[2][k]) for k in kept)


def test_dropout_dreams_give_each_dream_its_own_world_and_come_off_cleanly(world):
    from worldsim.engine import WorldModel
    from worldsim.training.rollouts import DropoutDreams

    wm = WorldModel.from_pretrained(world)
    x = torch.randn(3, 5, wm.dit.blocks[0].mlp[0].in_features)
    block = wm.dit.blocks[0].mlp
    with torch.no_grad():
        clean = block(x)
        dropout = DropoutDreams(wm.dit, 0.5, rows=3)
        dropout.redraw(torch.Generator().manual_seed(0))
        assert torch.allclose(block(x), clean)  # off until a dream step turns it on
        dropout.on = True
        masked = block(x)
        assert not torch.allclose(masked, clean)
        rows_alike = block(x[:1].expand(3, -1, -1))  # the same input in every row: each dream's own mask
        assert not torch.allclose(rows_alike[0], rows_alike[1])
        assert torch.allclose(block(torch.cat([x, x]))[3:], masked)  # a guided pass: each copy masked as its dream
        with pytest.raises(RuntimeError, match="not a multiple"):
            block(x[:2])
        dropout.remove()
        assert torch.allclose(block(x), clean)


def test_dream_side_of_eval_scores_every_episode(world, tmp_path):
    from worldsim.evaluation.rl_eval import run_dream

    result = run_dream(small_agent(), world, [0, 1, 2], sample=False, precision="fp32", episode_steps=5, batch=2)
    assert len(result.returns) == 3 and all(1 <= n <= 5 for n in result.steps)
    again = run_dream(small_agent(), world, [0, 1, 2], sample=False, precision="fp32", episode_steps=5, batch=2)
    assert result.returns == again.returns  # seeded dreams, argmax actions: the same episodes


def test_paired_dreams_start_from_the_given_frames_and_are_scored_against_the_real_returns(world):
    from worldsim.evaluation.rl_eval import RLEvalResult, SideResult, run_dream

    g = np.random.default_rng(0)
    a, b = (g.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8) for _ in range(2))

    def dream(*clips):
        return run_dream(small_agent(), world, [7] * len(clips), sample=False, precision="fp32", episode_steps=5,
                         starts=np.stack(clips)).returns  # fmt: skip

    same, other = dream(a, a), dream(a, b)
    assert same[0] == same[1] and other[0] == same[0]  # same start, same seed: the same dream, whatever its neighbours
    assert other[1] != other[0]  # another start, another dream

    real, predicted = [100.0, 300.0, 250.0, 900.0], [150.0, 280.0, 400.0, 800.0]
    result = RLEvalResult("a", "w", [0, 1, 2, 3], real=SideResult(real, [1] * 4, 0.0),
                          paired=SideResult(predicted, [1] * 4, 0.0))  # fmt: skip
    pairing = result.pairing()
    assert pairing["pearson_r"] == pytest.approx(np.corrcoef(real, predicted)[0, 1])
    assert pairing["mean_abs_error"] == pytest.approx(80.0) and pairing["mean_error"] == pytest.approx(20.0)


def test_real_side_plays_whole_episodes_of_the_source_env():
    pytest.importorskip("Box2D")
    from worldsim.config import WorldConfig
    from worldsim.evaluation.rl_eval import real_episode

    config = WorldConfig(frame_size=[64, 64], action=ActionSpec(kind="discrete", n=5), frame_rate=25,
                         source_env="CarRacing-v3")  # fmt: skip
    env = gymnasium.make("CarRacing-v3", continuous=False, max_episode_steps=20)
    net = ActorCritic(AgentConfig(frame_size=[64, 64], history=2))
    taken: list[int] = []

    class Recording(AgentPolicy):
        def __call__(self, frame):
            taken.append(super().__call__(frame))
            return taken[-1]

    ret, steps, frames, start, start_return = real_episode(env, Recording(net), config, seed=5, keep=True, context=3)
    assert steps == 10 and len(frames) == 11 and frames[0].shape == (64, 64, 3)  # 20 env steps, 2 per world step
    assert np.array_equal(start, np.stack(frames[:3]))  # the first frames, for --paired to dream from
    replay = gymnasium.make("CarRacing-v3", continuous=False, max_episode_steps=20)
    replay.reset(seed=5)
    rewards = [float(replay.step(a)[1]) for a in np.repeat(taken, 2)]  # each action held for 2 env steps
    assert ret == pytest.approx(sum(rewards)) and start_return == pytest.approx(sum(rewards[:4]))  # 2 world steps
    replay.close()
    env.close()


def test_real_side_takes_agents_and_named_drivers_on_the_same_view(tmp_path):
    pytest.importorskip("Box2D")
    from worldsim.config import WorldConfig
    from worldsim.errors import InputError
    from worldsim.evaluation.rl_eval import WorldView, _real_policy

    config = WorldConfig(frame_size=[64, 64], action=ActionSpec(kind="discrete", n=5), frame_rate=25,
                         source_env="CarRacing-v3")  # fmt: skip
    view = WorldView(gymnasium.make("CarRacing-v3", continuous=False, max_episode_steps=20), config)
    frame, _ = view.reset(seed=3)
    save_agent(small_agent(), tmp_path / "a")
    for spec in (f"agent:{tmp_path / 'a'}", "road", "carracing"):  # frames only; and the env's internals
        policy = _real_policy(spec, view, sample=False)
        policy.reset(3)
        assert view.action_space.contains(np.int64(policy(frame)))
    with pytest.raises(InputError, match="unknown policy"):
        _real_policy("no_such_driver", view, sample=False)
    view.close()


@pytest.mark.parametrize("name", ["carracing_ppo", "carracing_ppo_v2"])
def test_the_shipped_agents_load_by_name_and_drive_the_shipped_world(name):
    from worldsim.agents.ppo import agent_dir
    from worldsim.agents.registry import make_seeing_policy
    from worldsim.checkpoint import load_config
    from worldsim.worlds import resolve_world

    path = agent_dir(name)
    card = json.loads((path / "config.json").read_text())["card"]
    assert (card["real_steps"] == 0) == (not card["real_evals"])  # real steps only in counted scoring checks
    assert card["dream_steps"] > 0 and card["real_eval"]["episodes"] == 50
    assert card["config"]["real"] is False and card["config"]["init"] is None  # the weights learnt only in the dream
    space = load_config(resolve_world("carracing")).action.to_gym()
    policy = make_seeing_policy(f"agent:{name}", space, seed=0)
    policy.reset(0)
    assert space.contains(np.int64(policy(np.zeros((64, 64, 3), np.uint8))))


def test_cli_errors_are_one_line(world, tmp_path, capsys):
    assert main(["rl", "eval", "--agent", str(tmp_path / "none"), "--dream"]) == 2
    assert "not an agent directory" in capsys.readouterr().err
    save_agent(small_agent(), tmp_path / "a", card={"world_checkpoint": world})
    assert main(["rl", "eval", "--agent", str(tmp_path / "a"), "--real", "auto"]) == 2
    assert "names no real env" in capsys.readouterr().err  # the test world has no source env
    save_agent(small_agent(n=3), tmp_path / "b", card={"world_checkpoint": world})
    assert main(["rl", "eval", "--agent", str(tmp_path / "b"), "--dream"]) == 2
    assert "acts in Discrete(3)" in capsys.readouterr().err
    assert main(["rl", "eval", "--agent", str(tmp_path / "a")]) == 2
    assert "nothing to score" in capsys.readouterr().err
    assert main(["rl", "eval", "--agent", str(tmp_path / "a"), "--dream", "--drivers", "road"]) == 2
    assert "scored in the real env" in capsys.readouterr().err
    assert main(["rl", "eval", "--agent", str(tmp_path / "a"), "--dream", "--paired"]) == 2
    assert "--paired dreams each real track" in capsys.readouterr().err
    assert main(["rl", "train", "--world", world, "--dream-dropout", "1.5", "--out", str(tmp_path / "r")]) == 2
    assert "--dream-dropout must be in [0, 1)" in capsys.readouterr().err
    assert main(["rl", "train", "--world", world, "--minibatch", "4096", "--out", str(tmp_path / "r")]) == 2
    assert "more than a batch" in capsys.readouterr().err


def test_real_envs_step_like_the_dream_and_restart_marked_rows_on_new_tracks():
    pytest.importorskip("Box2D")
    from worldsim.config import WorldConfig
    from worldsim.training.rollouts import RealEnvs

    config = WorldConfig(frame_size=[64, 64], action=ActionSpec(kind="discrete", n=5), frame_rate=25,
                         source_env="CarRacing-v3")  # fmt: skip
    envs = RealEnvs(config, 2)
    first, _ = envs.reset(seed=7)
    assert first.shape == (2, 64, 64, 3) and not np.array_equal(first[0], first[1])  # tracks 7 and 8
    for _ in range(3):
        frames, reward, terminated, truncated, _ = envs.step(np.array([3, 0]))
    assert frames.shape == (2, 64, 64, 3) and reward.shape == (2,) and terminated.dtype == bool
    restarted, _ = envs.reset(options={"reset_mask": np.array([True, False])})
    assert envs.next_seed == 10 and np.array_equal(restarted[1], frames[1])  # row 1 goes on; row 0 is track 9
    envs.close()
