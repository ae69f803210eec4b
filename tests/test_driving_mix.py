"""The CarRacing driving-style mix that records data for worlds that must follow any policy, the recorder's
per-frame state and episode style, and the data card built from them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worldsim.agents.carracing import BRAKE, DRIVING_STYLES, NOTHING, CarRacingDriver, CarRacingMix, car_state
from worldsim.cli import main
from worldsim.data.card import card_numbers
from worldsim.data.reader import TrajectoryReader
from worldsim.envs.sources import make_source_env
from worldsim.errors import InputError


def drive(policy, env, steps: int) -> tuple[list[int], list[float]]:
    actions, speeds = [], []
    obs = env.unwrapped.state
    for _ in range(steps):
        a = policy(obs)
        for _ in range(2):  # the world's action repeat
            obs, *_ = env.step(a)
        actions.append(int(a))
        speeds.append(car_state(env)["speed"])
    return actions, speeds


def test_styles_are_a_distribution_and_each_is_drawn():
    assert abs(sum(s.weight for s in DRIVING_STYLES) - 1.0) < 1e-9
    env = make_source_env("CarRacing-v3", seed=0)
    drawn = {CarRacingMix(env, seed).style.name for seed in range(400)}
    assert drawn == {s.name for s in DRIVING_STYLES}
    assert CarRacingMix(env, 5).style == CarRacingMix(env, 5).style  # the episode's seed decides


def test_stop_excursions_bring_the_car_to_a_standstill():
    env = make_source_env("CarRacing-v3", seed=1)
    driver = CarRacingDriver(env, 0, noise=0.0, excursion_prob=0.0)
    drive(driver, env, 80)  # zoom-in, then up to speed
    assert car_state(env)["speed"] > 10
    driver.excursion_kinds, driver.excursion_steps = ("stop",), (60, 60)
    driver._start_excursion()
    actions, speeds = drive(driver, env, 55)
    assert set(actions) <= {BRAKE, NOTHING} and BRAKE in actions and NOTHING in actions
    assert speeds[-1] < 1.0


def test_bad_driver_settings_are_clear_errors():
    env = make_source_env("CarRacing-v3", seed=0)
    with pytest.raises(InputError, match="excursion_kinds"):
        CarRacingDriver(env, 0, excursion_kinds=("cartwheel",))


def test_recorder_logs_state_and_style_and_the_card_counts_them(tmp_path, capsys):
    out = tmp_path / "mix.h5"
    args = ["record", "--env", "CarRacing-v3", "--policy", "carracing_mix", "--episodes", "3", "--max-steps", "40"]
    assert main([*args, "--out", str(out)]) == 0
    reader = TrajectoryReader(str(out))
    for e in range(len(reader)):
        infos = reader.infos(e)
        assert set(infos) == {"speed", "on_track"} and len(infos["speed"]) == reader.episodes[e].steps + 1
        assert reader.episode_attrs(e)["style"] in {s.name for s in DRIVING_STYLES}
    numbers = card_numbers(reader)
    assert numbers["episodes"] == 3 and sum(numbers["styles"].values()) == 3
    assert abs(sum(numbers["action_share"].values()) - 1.0) < 1e-9
    assert abs(sum(numbers["speed_share"].values()) - 1.0) < 1e-9
    assert numbers["still_share"] > 0.3  # the first second is the zoom-in, standing still
    capsys.readouterr()
    card = tmp_path / "card.md"
    assert main(["data-card", "--data", str(out), "--out", str(card)]) == 0
    assert "Standing still" in card.read_text() and capsys.readouterr().out == card.read_text()
    assert main(["data-card", "--data", str(out), "--out", str(out / "x.md")]) == 2  # a file is no folder
    assert json.dumps(numbers)  # plain numbers, JSON-able
    assert np.isfinite(numbers["off_track_share"])
