"""Prompts while a world runs: the Gymnasium env's text start and mid-episode change, and ``worldsim play``'s
--prompt, --prompts schedule and the T text box."""

from __future__ import annotations

import numpy as np
import pygame
import pytest
from conftest import save_world

from worldsim.cli import main
from worldsim.envs.world import WorldModelEnv
from worldsim.errors import WorldsimError
from worldsim.viewer import PlayConfig, build_viewer
from worldsim.viewer.config import read_prompt_schedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def text_world(tmp_path_factory) -> str:
    return save_world(tmp_path_factory.mktemp("tw") / "w", text_dim=384, key_map={"up": 3})


def test_env_starts_from_text_alone_and_changes_prompt_mid_episode(tmp_path, text_world):
    backbone = WorldModelEnv(save_world(tmp_path / "b", text_dim=384, starts=False))
    with pytest.raises(WorldsimError, match="reset"):
        backbone.set_prompt("a desert")
    a, _ = backbone.reset(seed=0, options={"text": "a desert"})
    b, _ = backbone.reset(seed=0, options={"text": "snow at night"})
    assert a.shape == (32, 32, 3) and not np.array_equal(a, b)  # the opening frame comes from the prompt

    def run(switch: bool) -> list[np.ndarray]:
        env = WorldModelEnv(text_world)
        env.reset(seed=1, options={"text": "a desert"})
        frames = []
        for t in range(4):
            if switch and t == 2:
                env.unwrapped.set_prompt("snow at night")
            frames.append(env.step(3)[0])
        return frames

    same, switched = run(False), run(True)
    assert all(np.array_equal(x, y) for x, y in zip(same[:2], switched[:2]))  # before the switch: identical
    assert not np.array_equal(same[2], switched[2])  # from the switch on, the new prompt


def test_play_prompt_schedule_and_text_box(text_world, tmp_path, monkeypatch):
    calls: list[tuple[int, str]] = []
    real = WorldModelEnv.set_prompt

    def spy(self, text):
        calls.append((self.world.frame_index, text))
        real(self, text)

    monkeypatch.setattr(WorldModelEnv, "set_prompt", spy)
    schedule = tmp_path / "prompts.txt"
    schedule.write_text("# frame: prompt\n0: a desert\n3: snow at night\n")
    cfg = PlayConfig(checkpoint=text_world, headless=True, steps=6, policy="keyboard", prompts=str(schedule))
    with build_viewer(cfg) as v:
        assert v.prompt == "a desert"
        v.run(6)
        assert [t for _, t in calls] == ["snow at night"] and v.prompt == "snow at night"
        shown = v.stats.shown

        # T opens the text box: keys type instead of driving, Enter applies the prompt.
        def key(k: int, text: str = "") -> pygame.event.Event:
            return pygame.event.Event(pygame.KEYDOWN, key=k, mod=0, unicode=text, scancode=0)

        v.feed([key(pygame.K_t, "t"), key(pygame.K_UP), key(pygame.K_l, "l"), key(pygame.K_a, "a")])
        v.feed([key(pygame.K_BACKSPACE), key(pygame.K_o, "o"), key(pygame.K_RETURN)])
        v.tick()
        v.tick()
        assert v.prompt == "lo" and calls[-1][1] == "lo" and v.typing is None
        assert all(int(a) == 0 for a in v.worker.actions[shown - 1 :])  # the up arrow typed, it did not drive


def test_prompt_files_and_text_less_worlds_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("ten: a desert\n")
    with pytest.raises(Exception, match="line 1: expected 'FRAME: prompt'"):
        read_prompt_schedule(str(bad))
    plain = save_world(tmp_path / "plain")
    assert main(["play", "--checkpoint", plain, "--headless", "--steps", "2", "--prompt", "a desert"]) == 2
    err = capsys.readouterr().err
    assert "trained without text" in err and err.count("\n") == 1
