"""Captions read off the simulators: spans, each source's captioner, the file format and ``record --captions``."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import labelled_episode

from worldsim.data import TrajectoryReader, TrajectoryWriter
from worldsim.envs.captions import (
    GRASS_COLOURS,
    HELD_OUT_PALETTES,
    ROAD_COLOURS,
    AtariCaptioner,
    caption_spans,
    crafter_achievement,
    make_captioner,
    palette_pairs,
)
from worldsim.envs.sources import make_source_env
from worldsim.errors import InputError


def test_spans_cover_every_frame_and_absorb_flicker():
    phrases = ["a"] * 20 + ["b"] * 3 + ["a"] * 10 + ["c"] * 12
    spans = caption_spans(phrases, min_frames=8)
    assert spans == [(0, 33, "a"), (33, 45, "c")]  # the 3-frame "b" is noise inside "a"
    noisy = ["walks" if i % 3 else "stands" for i in range(40)]  # no run is long, "walks" is most of it
    assert caption_spans(noisy, min_frames=8) == [(0, 40, "walks")]
    assert caption_spans(["x"] * 3, min_frames=8) == [(0, 3, "x")]  # a short episode is one span


def test_palettes_hold_out_combinations_not_colours():
    train, held = set(palette_pairs("train")), set(palette_pairs("held_out"))
    assert not train & held and len(train) + len(held) == len(ROAD_COLOURS) * len(GRASS_COLOURS)
    # Every colour is seen in training; the held-out pairs are combinations never seen together.
    assert {r for r, _ in train} == set(ROAD_COLOURS) and {g for _, g in train} == set(GRASS_COLOURS)
    assert sorted(r for r, _ in HELD_OUT_PALETTES) == sorted(ROAD_COLOURS)
    assert sorted(g for _, g in HELD_OUT_PALETTES) == sorted(GRASS_COLOURS)
    with pytest.raises(InputError, match="--palettes"):
        palette_pairs("rainbow")


def _run(env_id: str, actions, seed: int = 3, **kwargs):
    env = make_source_env(env_id)
    captioner = make_captioner(env_id, **kwargs)
    attrs = captioner.prepare(env, seed)
    obs, info = env.reset(seed=seed)
    phrases = [captioner.describe(env, None, 0.0, info)]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        phrases.append(captioner.describe(env, a, float(reward), info))
    return env, captioner, attrs, obs, phrases


def test_carracing_palette_colours_the_frames_and_motion_follows_the_pedals():
    actions = [0] * 60 + [3] * 60 + [4] * 30  # wait (the zoom-in), gas, brake to a stop
    env, captioner, attrs, _, phrases = _run("CarRacing-v3", actions, palettes="held_out")
    assert (attrs["road_colour"], attrs["grass_colour"]) in HELD_OUT_PALETTES
    frame = env.render()  # 400x600 after the zoom: the car sits on the road in the middle
    road = np.asarray(ROAD_COLOURS[attrs["road_colour"]])
    centre = frame[frame.shape[0] * 2 // 3 - 30 : frame.shape[0] * 2 // 3 - 10, 290:310].reshape(-1, 3)
    assert np.abs(np.median(centre, axis=0) - road).max() < 12, (np.median(centre, axis=0), road)
    assert phrases[30] == "standing still"
    assert "accelerating" in phrases[70:120]
    assert "braking" in phrases[120:]
    assert phrases[-1] == "standing still"
    text = captioner.caption(attrs, "braking")
    assert attrs["road_colour"] in text and attrs["grass_colour"] in text and "braking" in text


def test_pusht_pushing_and_crafter_and_atari_describe_what_happens():
    # PushT: drive the pusher into the block and watch it move.
    env = make_source_env("gym_pusht/PushT-v0")
    env.reset(seed=0)
    block = np.asarray(env.unwrapped.block.position)
    target = np.clip(block + np.array([200.0, 0.0]), 0, 512)
    env, _, _, _, phrases = _run(
        "gym_pusht/PushT-v0", [np.array([block[0] - 60, block[1]])] * 20 + [target] * 40, seed=0
    )
    assert any(p.startswith("the pusher pushes the T") or "rotates" in p for p in phrases[20:]), phrases
    # Crafter: an achievement names itself.
    assert crafter_achievement("collect_wood") == "collects wood"
    assert crafter_achievement("make_wood_pickaxe") == "makes a wood pickaxe"
    _, captioner, attrs, _, phrases = _run("worldsim/Crafter-v0", [0] * 5 + [3] * 5)
    assert phrases[2].endswith("the player stands still") and phrases[-1].endswith("the player walks")
    assert "by day" in phrases[0]  # a fresh world starts in daylight
    assert captioner.caption(attrs, phrases[0]).startswith("Crafter, ")
    # Atari: events from rewards and lives, held for a few frames.
    atari = AtariCaptioner()
    atari.lives = 3
    said = [atari.describe(None, 0, r, {"lives": 3}) for r in (0, 1, 0)]
    assert said == ["the game goes on", "the player scores", "the player scores"]
    assert atari.describe(None, 0, 0, {"lives": 2}) == "the player loses a life"


def test_caption_spans_round_trip_and_bad_spans_are_refused(tmp_path):
    import gymnasium as gym

    path = tmp_path / "c.h5"
    with TrajectoryWriter(
        path, env_id="T-v0", frame_size=(16, 16), action_space=gym.spaces.Discrete(5), frame_rate=10
    ) as w:
        w.add_episode(**labelled_episode(0, 9), caption=[(0, 4, "a red car"), (4, 10, "a blue car")])
        w.add_episode(**labelled_episode(1, 5), caption="whole episode")
        with pytest.raises(InputError, match="outside the episode"):
            w.add_episode(**labelled_episode(2, 5), caption=[(0, 9, "too long")])
    r = TrajectoryReader(path)
    assert r.captions[0] == [(0, 4, "a red car"), (4, 10, "a blue car")]
    assert r.caption(0, 0, 3) == "a red car" and r.caption(0, 2, 9) == "a blue car"
    assert r.caption(1, 2, 4) == "whole episode" and len(r) == 2


def test_record_captions_cli(tmp_path, capsys):
    from worldsim.cli import main

    out = tmp_path / "cap.h5"
    argv = ["record", "--env", "CarRacing-v3", "--episodes", "2", "--max-steps", "12", "--size", "16x16"]
    assert main([*argv, "--captions", "--palettes", "held_out", "--out", str(out)]) == 0
    r = TrajectoryReader(out)
    for e, frames in enumerate(r.episode_frames):
        spans = r.captions[e]
        assert spans[0][0] == 0 and spans[-1][1] == frames  # every frame has a caption
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert all("road through" in text for _, _, text in spans)
    capsys.readouterr()
    # A bad palette set and a source with no captioner fail before anything is recorded.
    assert main([*argv, "--captions", "--palettes", "rainbow", "--out", str(tmp_path / "x.h5")]) == 2
    assert "--palettes" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_captions_that_do_not_match_the_episodes_are_refused(tmp_path):
    import json

    import gymnasium as gym
    import h5py

    path = tmp_path / "c.h5"
    with TrajectoryWriter(
        path, env_id="T-v0", frame_size=(16, 16), action_space=gym.spaces.Discrete(5), frame_rate=10
    ) as w:
        w.add_episode(**labelled_episode(0, 5), caption="fine")
    for captions, message in (
        ({"0": "fine", "3": "no such episode"}, "episode '3'"),
        ({"0": [[0, 9, "longer than the episode"]]}, "outside the episode's 6 frames"),
        ({"0": [[0, 4, "a"], [2, 6, "overlaps"]]}, "out of order"),
    ):
        with h5py.File(path, "r+") as f:
            f.attrs["captions"] = json.dumps(captions)
        with pytest.raises(InputError, match=message):
            TrajectoryReader(path)
