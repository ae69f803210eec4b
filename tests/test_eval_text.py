"""``worldsim eval-text``: the pixel readers it scores with, and a run end to end on a tiny backbone."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import randomize, tiny_config
from helpers import labelled_episode

from worldsim.cli import main
from worldsim.data import TrajectoryWriter
from worldsim.engine import WorldModel
from worldsim.envs.captions import BACKGROUND_SHADE, GRASS_COLOURS, ROAD_COLOURS, carracing_caption
from worldsim.evaluation.eval_text import SourceClassifier, palette_in_prompt, read_palette
from worldsim.models.conditioning import TextEncoder


def painted(road: str, grass: str) -> np.ndarray:
    """A 64x64 CarRacing-like frame: a checkerboard of grass and field, a road down the middle, a car, a HUD."""
    frame = np.zeros((64, 64, 3), np.uint8)
    g = np.array(GRASS_COLOURS[grass])
    checker = (np.add.outer(np.arange(64) // 8, np.arange(64) // 8) % 2).astype(bool)
    frame[checker] = g
    frame[~checker] = np.round(g * BACKGROUND_SHADE)
    frame[:, 24:40] = ROAD_COLOURS[road]
    frame[42:50, 30:34] = (204, 0, 0)  # the car
    frame[56:] = 0  # the dashboard
    return frame


@pytest.mark.parametrize("road", list(ROAD_COLOURS))
def test_palette_reader_reads_every_road_and_grass(road):
    for grass in GRASS_COLOURS:
        assert read_palette(painted(road, grass)) == (road, grass)
    assert palette_in_prompt(carracing_caption(road, "pink", "braking")) == (road, "pink")
    assert palette_in_prompt("the Atari game Pong: the game goes on") is None


def test_source_classifier_tells_sources_apart():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 60, (20, 16, 16, 3), dtype=np.uint8)
    bright = rng.integers(180, 255, (20, 16, 16, 3), dtype=np.uint8)
    classify = SourceClassifier.fit({"dark": dark[:10], "bright": bright[:10]})
    assert classify(np.concatenate([dark[10:], bright[10:]])) == ["dark"] * 10 + ["bright"] * 10


def test_eval_text_runs_end_to_end(tmp_path, capsys):
    wm = WorldModel(dataclasses.replace(tiny_config(text_dim=TextEncoder.dim), text_to_video=True))
    randomize(wm.dit)
    wm.save_pretrained(tmp_path / "t2v")
    data = []
    for name, value in (("dark", 20), ("bright", 220)):
        path = tmp_path / f"{name}.h5"
        space = gym.spaces.Discrete(3)
        with TrajectoryWriter(path, env_id=f"{name}-v0", frame_size=(32, 32), action_space=space, frame_rate=10) as w:
            for i in range(3):
                ep = labelled_episode(i, 8, size=32, n_actions=3)
                ep["observations"][:] = value
                w.add_episode(**ep, caption=[(0, 9, f"a {name} world")])
        data.append(str(path))
    out = tmp_path / "text.json"
    argv = ["eval-text", "--checkpoint", str(tmp_path / "t2v"), "--data", ",".join(data), "--holdout", "1"]
    assert main([*argv, "--clips", "2", "--frames", "3", "--batch", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["meter"]["source_accuracy"] == 1.0  # the reader tells the two real sources apart
    assert result["text_following"]["clips"] == 2 and 0.0 <= result["text_following"]["accuracy"] <= 1.0
    assert set(result["realism"]) == {"dark-v0", "bright-v0"}
    assert result["unseen_combinations"] == {"skipped": "no CarRacing data"}
    assert "text_following" in capsys.readouterr().out


def test_prompt_switch_while_driving_measures_action_following_in_the_same_runs(tmp_path):
    """A world with actions and text: switches start from real held-out CarRacing contexts, driven by the
    recorded actions, and report delta PSNR with the switch beside the same world with no prompt."""
    from worldsim.config import ActionSpec
    from worldsim.evaluation.eval_text import EvalTextConfig, TextEvaluator

    action = ActionSpec(kind="box", shape=[3], low=[-1.0, 0.0, 0.0], high=[1.0, 1.0, 1.0])
    wm = WorldModel(tiny_config(action=action, text_dim=TextEncoder.dim))
    randomize(wm.dit)
    wm.save_pretrained(tmp_path / "world")
    space = gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32))
    path = tmp_path / "car.h5"
    with TrajectoryWriter(path, env_id="CarRacing-v3", frame_size=(32, 32), action_space=space, frame_rate=10) as w:
        for i, (road, grass) in enumerate([("gray", "green"), ("red", "yellow"), ("blue", "white")]):
            frame = painted(road, grass)[::2, ::2]
            ep = labelled_episode(i, 40, size=32)
            ep["observations"][:] = frame
            ep["actions"] = np.stack([space.sample() for _ in range(40)])
            w.add_episode(**ep, caption=carracing_caption(road, grass, "cruising"))
    cfg = EvalTextConfig(checkpoint=str(tmp_path / "world"), data=str(path), holdout=1, clips=2, switch_frames=4)
    result = TextEvaluator(cfg, progress=False).prompt_switch()
    assert len(result["rows"]) == 2 and 0.0 <= result["share_within"] <= 1.0
    assert all(palette_in_prompt(r["prompt"]) != ("blue", "white") for r in result["rows"])  # a real switch
    delta = result["delta_psnr"]
    assert delta["horizon"] == 8  # 4 frames before the switch + 4 after, shorter than 16
    assert np.isfinite([delta["with_switch"], delta["no_prompt"]]).all()
