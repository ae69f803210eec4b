"""``worldsim play``: the viewer driven by posted pygame events under SDL's dummy driver, on a tiny random-weight
checkpoint (32x32, Discrete(5), the arrows in CarRacing's order as its key map): keys reach the world, HUD / reset /
sampler keys, clean quit, the recorded video, the CLI smoke run and its one-line errors; the input mapping alone."""

from __future__ import annotations

import importlib.util
import json
import time

import gymnasium
import imageio.v3 as iio
import numpy as np
import pygame
import pytest
from conftest import save_world

from worldsim import ActionSpec
from worldsim.cli import main
from worldsim.viewer import PlayConfig, Viewer, build_viewer
from worldsim.viewer.controls import Area, Controls, Intent

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARROWS = {"right": 1, "left": 2, "up": 3, "down": 4}
"""The shipped CarRacing world's key map (assets/carracing/config.json)."""


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return save_world(tmp_path_factory.mktemp("world") / "w", key_map=ARROWS)


def key(kind: int, k: int) -> pygame.event.Event:
    return pygame.event.Event(kind, key=k, mod=0, unicode="", scancode=0)


def viewer(ckpt: str, **kw) -> Viewer:
    kw = {"checkpoint": ckpt, "headless": True, "steps": 100, "policy": "keyboard", **kw}
    return build_viewer(PlayConfig(**kw))


def drive(ckpt: str, held: int) -> tuple[list, list[np.ndarray]]:
    """Hold ``held`` for 3 frames, then nothing for 2: the actions the worker got and the frames shown."""
    with viewer(ckpt) as v:
        frames = [v.frame]
        v.feed([key(pygame.KEYDOWN, held)])
        for _ in range(3):
            v.tick()
            frames.append(v.frame)
        v.feed([key(pygame.KEYUP, held)])
        for _ in range(2):
            v.tick()
            frames.append(v.frame)
        return [int(a) for a in v.worker.actions], frames


def test_held_keys_become_actions(ckpt):
    right, right_frames = drive(ckpt, pygame.K_RIGHT)
    left, left_frames = drive(ckpt, pygame.K_LEFT)
    assert right == [1, 1, 1, 0, 0]
    assert left == [2, 2, 2, 0, 0]
    np.testing.assert_array_equal(right_frames[0], left_frames[0])  # same seed, same start
    assert any(not np.array_equal(a, b) for a, b in zip(right_frames[1:], left_frames[1:]))


def test_hud_reset_sampler_and_quit(ckpt, tmp_path):
    with viewer(ckpt, out_dir=str(tmp_path)) as v:
        for _ in range(3):
            v.tick()
        assert v.stats.frame_index > 3
        with_hud = pygame.surfarray.array3d(v.screen.window).copy()
        v.feed([key(pygame.KEYDOWN, pygame.K_h)])
        v.tick()
        assert not v.show_hud
        v.feed([key(pygame.KEYDOWN, pygame.K_h)])
        v.tick()
        assert v.show_hud
        v.show_hud = False
        v.redraw()
        assert not np.array_equal(with_hud, pygame.surfarray.array3d(v.screen.window))  # the HUD draws pixels

        before = v.stats.frame_index
        v.feed([key(pygame.KEYDOWN, pygame.K_r)])
        v.tick()  # the reset, then one step from the new start
        assert v.stats.resets == 2 and v.seed == 1
        assert v.stats.frame_index < before and v.stats.episode_return == pytest.approx(v.stats.reward)

        steps = v.stats.sampler_steps
        v.feed([key(pygame.KEYDOWN, pygame.K_RIGHTBRACKET)] * 2)
        v.tick()
        assert v.stats.sampler_steps == steps + 2 == v.env.world.sampler_config.steps
        v.feed([key(pygame.KEYDOWN, pygame.K_LEFTBRACKET)] * 40)
        v.tick()
        assert v.stats.sampler_steps == 1

        v.feed([key(pygame.KEYDOWN, pygame.K_s)])
        v.tick()
        assert len(list(tmp_path.glob("*.png"))) == 1

        v.feed([key(pygame.KEYDOWN, pygame.K_ESCAPE)])
        result = v.run()  # returns at once on Esc
        assert v.quit and not result["interrupted"]
    assert not v.worker.is_alive()


def test_slow_world_does_not_block_the_window(ckpt, monkeypatch):
    """Interactive play: the UI thread keeps ticking at the frame rate while the worker is still generating."""
    with viewer(ckpt, headless=False, steps=0) as v:
        step = v.env.step

        def slow_step(action):
            time.sleep(0.5)
            return step(action)

        monkeypatch.setattr(v.env, "step", slow_step)
        shown = v.stats.shown
        t = time.perf_counter()
        v.tick()  # sends a step and draws nothing new yet
        v.tick()
        assert time.perf_counter() - t < 0.45 and v.stats.shown == shown and v.worker.pending == 1
        deadline = time.perf_counter() + 10
        while v.stats.shown == shown and time.perf_counter() < deadline:
            v.tick()
        assert v.stats.shown == shown + 1
        v.feed([key(pygame.KEYDOWN, pygame.K_ESCAPE)])
        v.run()
    assert not v.worker.is_alive()


def test_mouse_drives_box_worlds(tmp_path):
    box = ActionSpec(kind="box", shape=[2], low=[-1.0, 0.0], high=[1.0, 4.0])
    with viewer(save_world(tmp_path / "box", action=box)) as v:
        v.tick()  # no pointer yet: the panel's centre
        v.feed([pygame.event.Event(pygame.MOUSEMOTION, pos=(0, 0), rel=(0, 0), buttons=(0, 0, 0))])
        v.tick()
        v.feed([pygame.event.Event(pygame.MOUSEMOTION, pos=(384, 96), rel=(0, 0), buttons=(0, 0, 0))])
        v.tick()
        actions = np.stack(v.worker.actions)
    np.testing.assert_allclose(actions, [[0.0, 2.0], [-1.0, 0.0], [1.0, 1.0]])


def test_controls_map_events_without_a_window():
    """Chords, focus loss and UI intents from plain events; the pointer over the dream panel (right of the real)."""
    up, left = pygame.K_UP, pygame.K_LEFT
    c = Controls({(up,): 3, tuple(sorted((up, left))): 5}, noop=0)
    assert c.action(Area(0, 0, 10, 10)) == 0
    assert c.handle(key(pygame.KEYDOWN, up)) is None and c.action(Area(0, 0, 10, 10)) == 3
    c.handle(key(pygame.KEYDOWN, left))
    c.handle(key(pygame.KEYDOWN, pygame.K_SPACE))  # an unmapped extra key: the longest chord held still wins
    assert c.action(Area(0, 0, 10, 10)) == 5
    c.handle(pygame.event.Event(pygame.WINDOWFOCUSLOST))
    assert c.action(Area(0, 0, 10, 10)) == 0
    assert c.handle(key(pygame.KEYDOWN, pygame.K_RIGHTBRACKET)) is Intent.MORE_STEPS
    assert c.handle(pygame.event.Event(pygame.QUIT)) is Intent.QUIT

    box = Controls({}, noop=None, pointer=gymnasium.spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, 4.0])))
    dream = Area(100, 0, 100, 50)
    np.testing.assert_allclose(box.action(dream), [0.0, 2.0])  # no pointer yet: the panel's centre
    box.handle(pygame.event.Event(pygame.MOUSEMOTION, pos=(50, 60), rel=(0, 0), buttons=(0, 0, 0)))
    np.testing.assert_allclose(box.action(dream), [-1.0, 4.0])  # outside the panel: clipped to the bounds


@pytest.mark.skipif(not importlib.util.find_spec("Box2D"), reason="CarRacing needs box2d")
def test_compare_runs_the_real_env_beside_the_dream(tmp_path):
    path = save_world(tmp_path / "w")
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    (tmp_path / "w" / "config.json").write_text(json.dumps({**cfg, "source_env": "CarRacing-v3"}))
    with viewer(path, compare=True, policy="carracing") as v:
        start_real = v.real_frame
        v.run(4)
        actions = [int(a) for a in v.worker.actions]
        assert v.screen.window.get_size() == (768, 384)  # "real" | "dream"
        assert v.real_frame.shape == (96, 96, 3) and not np.array_equal(start_real, v.real_frame)
    assert len(actions) == 3 and set(actions) <= set(range(5))


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_record_writes_exactly_the_frames_shown(ckpt, tmp_path, suffix):
    out = tmp_path / f"play{suffix}"
    with viewer(ckpt, record=str(out), steps=6) as v:
        result = v.run(6)
    video = iio.imread(out, index=None)
    assert result["frames"] == 6 == len(video)
    assert video.shape[1:] == (384, 384, 3)  # 32x32 at 12x
    assert not list(tmp_path.glob(".*"))  # the temp folder is gone


def test_failed_run_leaves_no_video(ckpt, tmp_path):
    out = tmp_path / "broken.gif"
    with pytest.raises(RuntimeError), viewer(ckpt, record=str(out)) as v:
        v.tick()
        raise RuntimeError("boom")
    assert not out.exists() and not list(tmp_path.iterdir())
    assert not v.worker.is_alive()


def test_failed_start_stops_the_worker(ckpt, tmp_path, monkeypatch):
    out = tmp_path / "never.mp4"
    v = viewer(ckpt, record=str(out))
    monkeypatch.setattr(v.env, "reset", lambda **kw: 1 / 0)
    with pytest.raises(ZeroDivisionError), v:
        pass
    assert not v.worker.is_alive() and not list(tmp_path.iterdir())


def test_cli_headless_smoke(ckpt, tmp_path, capsys):
    out = tmp_path / "x.gif"
    assert main(["play", "--headless", "--steps", "5", "--checkpoint", ckpt, "--record", str(out)]) == 0
    assert len(iio.imread(out, index=None)) == 5
    line = capsys.readouterr().out.strip()
    assert line.startswith("5 frames shown (4 model steps)") and "fps model" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checkpoint", "no/such/dir"], "no checkpoint at no/such/dir"),
        (["--compare"], "names no real env"),
        (["--policy", "carracing"], "add --compare"),
        (["--record", "x.avi"], ".mp4 or .gif"),
    ],
)
def test_cli_errors_are_one_line(ckpt, capsys, argv, message):
    argv = ["--checkpoint", ckpt, *argv] if "--checkpoint" not in argv else argv
    assert main(["play", "--headless", "--steps", "2", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("worldsim play: error:") and message in err and "\n" not in err


def test_road_policy_drives_the_dream_and_the_worker_thread_count_is_put_back(ckpt):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with viewer(ckpt, policy="road", model_threads=1) as v:
            for _ in range(3):
                v.tick()
            seen = v.worker.torch_threads
            actions = list(v.worker.actions)
        assert seen == 1 and len(actions) == 3 and all(int(a) in range(5) for a in actions)
        v.worker.join(5)
        assert torch.get_num_threads() == 2  # the worker's setting is process-wide: it is undone at the end
    finally:
        torch.set_num_threads(before)
