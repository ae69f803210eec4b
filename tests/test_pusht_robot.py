"""The PushT robotics pieces: the planning expert, the recording mix, behaviour cloning, the Box data card."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
import torch

pytest.importorskip("gym_pusht")

from worldsim.agents.pusht.planner import PushTPlanner, _keypoint_error, _read_state  # noqa: E402
from worldsim.envs.sources import make_source_env  # noqa: E402


@pytest.fixture(scope="module")
def pusht():
    env = make_source_env("gym_pusht/PushT-v0")
    yield env
    env.close()


def test_the_planners_simulator_is_the_env(pusht):
    """A push planned in the private copy of the physics ends where the real env ends after the same push: the
    block pose agrees to within 0.05 units (of a 512-unit table; the real env carries contact impulses from its
    last steps that a fresh copy does not), also from states the real env reached by pushing."""
    planner = PushTPlanner(pusht, seed=0, candidates=4)
    pusht.reset(seed=3)
    for _ in range(4):
        state = _read_state(pusht.unwrapped)
        primitive = planner._sample(state, _keypoint_error(state.block_pos, state.block_angle))
        planned = planner._simulate(state, primitive)
        for target in primitive.targets:
            pusht.step(np.asarray(target, dtype=np.float32))
        real = _read_state(pusht.unwrapped)
        np.testing.assert_allclose(planned.block_pos, real.block_pos, atol=0.05)
        assert abs(planned.block_angle - real.block_angle) < 1e-3


def test_the_expert_planner_succeeds_and_greedy_noise_does_worse(pusht):
    """The expert reaches 95% coverage on most seeds; the weakest planner of the mix does not get as close."""

    def run(policy: PushTPlanner, seed: int) -> tuple[bool, float]:
        pusht.reset(seed=seed)
        policy.reset(seed)
        best = 0.0
        for _ in range(300):
            _, _, terminated, _, info = pusht.step(policy())
            best = max(best, info["coverage"])
            if terminated:
                return True, best
        return False, best

    expert = [run(PushTPlanner(pusht, candidates=48, lookahead=4), s) for s in (1000, 1002, 1003)]
    weak = [run(PushTPlanner(pusht, candidates=4, lookahead=0, noise=0.5), s) for s in (1000, 1002, 1003)]
    assert sum(ok for ok, _ in expert) >= 2, expert
    assert np.mean([c for _, c in weak]) < np.mean([c for _, c in expert]), (weak, expert)


def test_the_pusht_mix_draws_a_style_per_episode_by_seed(pusht):
    from worldsim.agents.pusht.mix import PUSHT_STYLES, PushTMix

    assert abs(sum(s.weight for s in PUSHT_STYLES) - 1) < 1e-9
    mix = PushTMix(pusht, seed=0)
    styles = []
    for seed in range(40):
        mix.reset(seed)
        styles.append(mix.episode_attrs["style"])
    assert len(set(styles)) >= 5
    again = PushTMix(pusht, seed=0)
    assert [again.reset(s) or again.episode_attrs["style"] for s in range(40)] == styles
    pusht.reset(seed=1)
    mix.reset(1)
    action = mix()
    assert pusht.action_space.contains(np.clip(action, 0, 512)) and action.shape == (2,)


@pytest.fixture(scope="module")
def pusht_file(tmp_path_factory):
    """Four short episodes of the mix (seeded), recorded the way users record."""
    from worldsim.cli import main

    out = tmp_path_factory.mktemp("pusht") / "mix.h5"
    assert main(["record", "--env", "gym_pusht/PushT-v0", "--policy", "pusht_mix", "--episodes", "4",
                 "--max-steps", "40", "--seed", "2", "--out", str(out)]) == 0  # fmt: skip
    return out


def test_behaviour_cloning_trains_and_drives_from_frames(pusht_file, tmp_path, capsys):
    from worldsim.agents.bc import BCPolicy
    from worldsim.cli import main

    out = tmp_path / "bc"
    argv = ["train", "bc", "--data", str(pusht_file), "--preset", "tiny", "--holdout", "1", "--out", str(out)]
    assert main([*argv, "--steps", "60"]) == 0
    metrics = json.loads((out / "policy" / "metrics.json").read_text())
    assert metrics["heldout_action_mae"] > 0
    space = gymnasium.spaces.Box(0, 512, (2,), np.float32)
    policy = BCPolicy.from_pretrained(out / "policy", space, seed=0)

    # It imitates its training data better than the network it started from (the same seeded init).
    from worldsim.training.bc import BCStage
    from worldsim.training.config import BCTrainConfig, with_preset

    stage = BCStage(with_preset(BCTrainConfig, "bc", "tiny", {"data": str(pusht_file), "holdout": 1}))
    items = [stage.dataset[i] for i in range(0, len(stage.dataset), 3)]
    frames = torch.stack([it["frames"][:-1] for it in items])
    actions = torch.stack([it["actions"][-1] for it in items])
    with torch.no_grad():
        before, after = stage.model.loss(frames, actions), policy.net.loss(frames, actions)
    assert after < 0.8 * before, (after, before)
    frame = np.full((96, 96, 3), 255, np.uint8)
    first = policy(frame)
    assert first.shape == (2,) and space.contains(first)
    policy.reset(0)
    np.testing.assert_array_equal(policy(frame), first)  # deterministic without noise
    with pytest.raises(Exception, match="acts in"):
        BCPolicy.from_pretrained(out / "policy", gymnasium.spaces.Box(-1, 1, (3,), np.float32))
    # Bad input: a style no episode has is one line, exit 2, nothing written.
    capsys.readouterr()
    assert main([*argv[:-1], str(tmp_path / "none"), "--styles", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "no training episodes of style nobody" in err and err.count("\n") == 1
    assert not (tmp_path / "none").exists()


def test_the_data_card_describes_box_actions_and_outcomes(pusht_file):
    from worldsim.data.card import card_numbers, format_card
    from worldsim.data.reader import TrajectoryReader

    numbers = card_numbers(TrajectoryReader(str(pusht_file)))
    for hist in numbers["box_histogram"].values():
        assert abs(sum(hist) - 1) < 1e-6
    assert 0 <= numbers["held_share"] <= 1
    assert numbers["outcomes"][""]["episodes"] == 4
    assert sum(o["episodes"] for s, o in numbers["outcomes"].items() if s) == 4
    card = format_card(numbers, str(pusht_file))
    assert "| action dimension |" in card and "| episodes of |" in card


def test_the_pixel_planner_pushes_from_64px_frames_alone(pusht):
    """Built from the action space alone, the pixel planner reads the pose off 64x64 frames (the world's size) and
    brings the T close to its goal; given anything but PushT's action space it says so in one line."""
    import torch

    from worldsim.agents.pusht.planner import PixelPlanner
    from worldsim.envs.sources import frame_of
    from worldsim.errors import InputError
    from worldsim.inputs import resize_frames

    planner = PixelPlanner(pusht.action_space, seed=1)
    obs, _ = pusht.reset(seed=1)
    best = 0.0
    for _ in range(300):
        frame = resize_frames(torch.from_numpy(frame_of(pusht, obs))[None], (64, 64))[0].numpy()
        obs, _, terminated, _, info = pusht.step(planner(frame))
        best = max(best, info["coverage"])
        if terminated:
            break
    assert best > 0.9, best
    with pytest.raises(InputError, match="Box"):
        PixelPlanner(gymnasium.spaces.Discrete(5))


def test_the_pusht_family_sees_only_frames():
    """Every member is a seeing policy; the learned ones say where their weights should be when none ship."""
    from worldsim.agents.pusht.family import POLICY_DIR, PUSHT_FAMILY
    from worldsim.agents.registry import SEEING_POLICIES

    assert set(PUSHT_FAMILY) <= set(SEEING_POLICIES)
    space = gymnasium.spaces.Box(0, 512, (2,), np.float32)
    for name, make in PUSHT_FAMILY.items():
        if "bc" in name and not (POLICY_DIR / name.replace("_noisy", "")).is_dir():
            with pytest.raises(Exception, match="train bc"):
                make(space, 0)
            continue
        policy = make(space, 0)
        action = policy(np.full((64, 64, 3), 255, np.uint8))
        assert np.asarray(action).shape == (2,)


def test_a_categorical_head_acts_at_its_cells_centre():
    """Cells round-trip: an action's cell centre lies in the same cell, within half a cell of the action."""
    from worldsim.agents.bc import BCNet, BCNetConfig
    from worldsim.config import ActionSpec

    spec = ActionSpec.from_gym(gymnasium.spaces.Box(0, 512, (2,), np.float32))
    net = BCNet(BCNetConfig(frame_size=[16, 16], widths=[8], action=spec, bins=8))
    unit = torch.rand(100, 2) * 2 - 1
    cells = net.cell_of(unit)
    centre = net.cell_centre(cells)
    assert torch.equal(net.cell_of(centre), cells)
    assert (centre - unit).abs().max() <= 1 / 8 + 1e-6  # half a cell of [-1, 1] split in 8
    assert net(torch.zeros(3, 2, 16, 16, 3, dtype=torch.uint8)).shape == (3, 64)


def test_a_pusht_world_env_reports_success_as_the_real_env_does(tmp_path):
    """gym_pusht says info["is_success"]; a PushT world's env says the same, from its termination head."""
    from conftest import save_pusht_world

    path = save_pusht_world(tmp_path / "pusht")
    env = gymnasium.make("worldsim/WorldModel-v0", checkpoint=path)
    env.reset(seed=0)
    for _ in range(3):
        _, _, terminated, _, info = env.step(np.array([256.0, 256.0], np.float32))
        assert info["is_success"] == terminated
    car = gymnasium.make("worldsim/WorldModel-v0", checkpoint="carracing")
    car.reset(seed=0)
    assert "is_success" not in car.step(0)[-1]  # CarRacing has no notion of success


def test_a_world_of_pusht_data_reads_its_action_as_a_point(pusht_file, tmp_path):
    """PushT's adapter says its action is a point on the frame, so a world trained on its data embeds it per token,
    and the engine steps it; the cached rollout still equals the full recompute."""
    from worldsim.cli import main
    from worldsim.engine import WorldModel

    out = tmp_path / "w"
    common = ["--data", str(pusht_file), "--preset", "tiny", "--out", str(out)]
    assert main(["train", "autoencoder", *common]) == 0
    assert main(["train", "world", *common, "--steps", "3"]) == 0
    wm = WorldModel.from_pretrained(out)
    assert wm.config.dit.action_point
    frames = np.stack([wm.starts["frames"][0, :2].numpy()] * 2)
    latents = []
    decode = wm.autoencoder.decode
    wm.autoencoder.decode = lambda z, **net: (latents.append(z.clone()), decode(z, **net))[1]
    actions = np.array([[100.0, 200.0], [400.0, 30.0]], np.float32)
    runs = []
    for reference in (False, True):
        wm.reset(frames, generator=[torch.Generator().manual_seed(s) for s in (1, 2)], reference=reference)
        latents.clear()
        for _ in range(3):
            wm.step(actions)
        runs.append(torch.cat(latents, 1))
    torch.testing.assert_close(runs[0], runs[1], atol=1e-4, rtol=0)
