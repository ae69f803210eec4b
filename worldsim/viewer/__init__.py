"""``worldsim play``: a real-time pygame window onto a generated world.

Examples::

    worldsim play                                   # the default world; arrow keys drive
    worldsim play --checkpoint runs/carracing/world --record play.mp4
    worldsim play --compare                         # the real env beside the dream, same actions
    worldsim play --headless --steps 200 --policy random --record out.mp4   # no display, as fast as it goes

Keys: R new start (new seed), P pause, [ / ] fewer / more denoising steps, H HUD and help, S screenshot,
T type a new prompt (worlds trained with text; Enter applies it, Esc cancels), Esc quit. ``--prompt`` starts
with a prompt, ``--prompts FILE`` of ``FRAME: prompt`` lines switches it at those frames (headless runs).
Actions come from the world's key map (``WorldModelEnv.get_keys_to_action``): held keys give the action of each
frame, no key the do-nothing action; 2-D Box worlds (PushT) take the mouse position instead.

Threads: a worker thread owns the world (and the real env with ``--compare``) and runs one command at a
time from a queue (reset, step, sampler change, prompt change); the UI thread polls input, draws the newest
frame and keeps the world's frame rate with a pygame Clock, so the window stays responsive however slow the model
is. Headless play is lock-step (each frame waits for its step) and unpaced unless ``--realtime``.

The package, one concern a module: ``config`` (``PlayConfig``, the flags), ``controls`` (events -> held keys,
pointer, the action of each frame, UI intents), ``worker`` (the thread that owns the envs, its commands and
results), ``stats`` (the counters), ``screen`` (window, panels, HUD, screenshots, the clock). ``Viewer`` here
composes them into the play loop; recording is ``worldsim.video.VideoWriter`` fed the window's pixels.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.agents import SEEING_POLICIES, make_policy
from worldsim.display import import_pygame
from worldsim.envs.sources import make_source_env
from worldsim.envs.world import WorldModelEnv
from worldsim.errors import InputError, WorldsimError
from worldsim.progress import report_run
from worldsim.video import VideoWriter
from worldsim.viewer.config import MAX_SAMPLER_STEPS, PlayConfig
from worldsim.viewer.controls import Controls, Intent
from worldsim.viewer.screen import Panel, Screen, hud_lines
from worldsim.viewer.stats import Stats
from worldsim.viewer.worker import Reset, Result, SetPrompt, SetSampler, Step, Worker

__all__ = ["PlayConfig", "Viewer", "build_viewer", "play"]


class Viewer:
    """The play loop: input -> actions -> worker, newest frame -> window (+ HUD, video).

    Drive it with ``open()``, then ``tick()`` per displayed frame (or ``run()``), then ``close()``; or use it as a
    context manager. Events posted with ``feed`` are read on the next ``tick``. A ``policy`` in place of the player
    sees the dream's frames, or the real env's observations when ``policy_on_real`` (scripted drivers that read the
    real env's internals, with ``--compare``).
    """

    def __init__(
        self, env: WorldModelEnv, config: PlayConfig, real_env: Any = None, policy: Any = None, policy_on_real=False
    ) -> None:
        self.env = env
        self.cfg = config
        self.policy = policy
        self.policy_on_real = policy_on_real
        self.controls = Controls.for_env(env)
        self.worker = Worker(env, real_env, config.model_threads)
        self.stats = Stats()
        self.screen: Screen | None = None
        """The window, from ``open()`` on."""
        self.video: VideoWriter | None = None
        self.latest: Result | None = None
        """The newest result with a frame: what the window shows and a policy sees."""
        self.seed = config.seed
        self.sampler_steps = config.sampler_steps or env.world.sampler_config.steps
        """Euler steps asked for (the HUD shows what the world last reported)."""
        self.show_hud = config.hud
        self.prompt: str | None = config.prompt or config.prompt_schedule.get(0) or None
        """The prompt the world follows now (worlds trained with text)."""
        self.typing: str | None = None
        """The prompt being typed after T (None: not typing); the world keeps going with the no-op."""
        self.paused = False
        self.quit = False
        # What open() started, undone in reverse by close(): the worker stops before the video is finished, and an
        # exception on the way out reaches the VideoWriter, which then leaves no file behind.
        self._opened = contextlib.ExitStack()

    @property
    def fps(self) -> int:
        return int(self.env.world.config.frame_rate)

    @property
    def real_env(self) -> Any:
        return self.worker.real_env

    @property
    def frame(self) -> np.ndarray | None:
        """The dream's frame on screen, uint8 (H, W, 3)."""
        return self.latest.frame if self.latest is not None else None

    @property
    def real_frame(self) -> np.ndarray | None:
        """The real env's frame on screen (with --compare), uint8 (h, w, 3)."""
        return self.latest.real.frame if self.latest is not None and self.latest.real is not None else None

    # ----------------------------------------------------------------- lifecycle
    def open(self) -> Viewer:
        world = self.env.world
        panels = 1 if self.real_env is None else 2
        self.screen = Screen(f"worldsim play: {world.config.name}", world.frame_size, self.cfg.scale, panels)
        self._opened.callback(self.screen.close)
        if self.cfg.record:
            self.video = self._opened.enter_context(VideoWriter(self.cfg.record, self.fps))
        self.worker.start()
        self._opened.callback(self.worker.stop)
        if self.cfg.sampler_steps is not None:
            self.worker.send(SetSampler(self.cfg.sampler_steps))
        self._reset()
        self._collect(wait=True)
        self._show()
        return self

    def close(self) -> None:
        """Stop and join the worker, finish the video, close the window. Safe to call twice."""
        self._opened.close()

    def __enter__(self) -> Viewer:
        try:
            return self.open()
        except BaseException as e:  # a world that fails its first reset: stop the worker, drop the video
            self.__exit__(type(e), e, e.__traceback__)
            raise

    def __exit__(self, *exc: Any) -> None:
        self._opened.__exit__(*exc)  # a failed run leaves no video behind

    def run(self, frames: int | None = None) -> dict[str, Any]:
        """Tick until Esc / window close, or until ``frames`` frames have been shown. Ctrl-C stops cleanly."""
        start, shown, interrupted = time.perf_counter(), self.stats.shown, False
        try:
            while not self.quit and (frames is None or self.stats.shown < frames):
                self.tick()
        except KeyboardInterrupt:
            interrupted = self.quit = True
        return self.summary(time.perf_counter() - start, self.stats.shown - shown, interrupted)

    def summary(self, seconds: float, shown: int, interrupted: bool = False) -> dict[str, Any]:
        s = self.stats
        return {
            "frames": s.shown,
            "model_steps": s.model_steps,
            "display_fps": shown / seconds if seconds > 0 else 0.0,
            "model_fps": s.model_steps / s.model_seconds if s.model_seconds > 0 else 0.0,
            "episode_return": s.episode_return,
            "record": self.cfg.record if self.cfg.record and s.shown else None,
            "interrupted": interrupted,
        }

    # ----------------------------------------------------------------- one frame of the UI
    def tick(self) -> None:
        """Read input, ask for the next frame if the worker is idle, draw the newest one, keep the frame rate."""
        for event in self.screen.events():
            self.handle(event)
        if self.quit:
            return
        if self.cfg.headless:  # lock-step: every tick shows the frame of the action it sent
            self._request_step()
            if self._collect(wait=True):
                self._show()
        else:  # show what is ready, then let the worker generate the next frame while the clock waits
            # A frame a little late waits up to a quarter tick rather than a whole tick; input stays live.
            if self._collect(wait=False, grace=0.25 / self.fps):
                self._show()
            self._request_step()
        paced = not self.cfg.headless or self.cfg.realtime
        self.screen.tick(self.fps if paced else 0)

    def feed(self, events: list[Any]) -> None:
        """Post events (pygame ``Event`` objects) to be read on the next ``tick``."""
        self.screen.post(events)

    def handle(self, event: Any) -> None:
        if self.typing is not None:
            self._type(event)
            return
        match self.controls.handle(event):
            case Intent.QUIT:
                self.quit = True
            case Intent.RESET:
                self.seed += 1
                self._reset()
            case Intent.PAUSE:
                self.paused = not self.paused
            case Intent.FEWER_STEPS | Intent.MORE_STEPS as intent:
                step = 1 if intent is Intent.MORE_STEPS else -1
                self.sampler_steps = min(MAX_SAMPLER_STEPS, max(1, self.sampler_steps + step))
                self.worker.send(SetSampler(self.sampler_steps))
            case Intent.HUD:
                self.show_hud = not self.show_hud
                self.redraw()
            case Intent.SCREENSHOT:
                self.screenshot()
            case Intent.PROMPT:
                if not self.env.world.config.dit.text_dim:
                    print("worldsim play: this world was trained without text: no prompts", file=sys.stderr)
                    return
                self.typing = ""
                self.controls.held.clear()
                self.redraw()

    def set_prompt(self, prompt: str) -> None:
        """Follow ``prompt`` from the next frame on."""
        self.prompt = prompt
        self.worker.send(SetPrompt(prompt))

    def _type(self, event: Any) -> None:
        """A key while typing a prompt: Enter applies it, Esc cancels, Backspace deletes, text is typed."""
        pygame = import_pygame()
        if event.type == pygame.QUIT:
            self.quit = True
        elif event.type == pygame.KEYDOWN:
            if event.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
                typed, self.typing = self.typing.strip(), None
                if typed:
                    self.set_prompt(typed)
            elif event.key == pygame.K_ESCAPE:
                self.typing = None
            elif event.key == pygame.K_BACKSPACE:
                self.typing = self.typing[:-1]
            elif event.unicode and event.unicode.isprintable():
                self.typing += event.unicode
            self.redraw()

    def screenshot(self) -> Path:
        name = f"worldsim-{self.env.world.config.name}-{time.strftime('%Y%m%d-%H%M%S')}-{self.stats.shown:05d}.png"
        return self.screen.screenshot(Path(self.cfg.out_dir) / name)

    # ----------------------------------------------------------------- actions and worker traffic
    def _request_step(self) -> None:
        if not self.paused and self.worker.pending == 0:
            scheduled = self.cfg.prompt_schedule.get(self.stats.shown)
            if scheduled and self.stats.shown > 0 and scheduled != self.prompt:
                self.set_prompt(scheduled)  # before the step: the frame shown next follows it
            self.worker.send(Step(self._action()))

    def _action(self) -> Any:
        if self.typing is not None:
            return self.env.noop  # the keys are typing, not driving
        if self.policy is None:
            return self.controls.action(self.screen.dream_area)
        latest = self.latest
        return self.policy(latest.real.observation if self.policy_on_real else latest.frame)

    def _reset(self) -> None:
        if self.policy is not None and hasattr(self.policy, "reset"):
            self.policy.reset(self.seed)
        self.worker.send(Reset(self.seed, self.prompt))

    def _collect(self, wait: bool, grace: float = 0.0) -> bool:
        """Take the worker's results (see ``Worker.collect``); True when a new frame arrived."""
        new = False
        for r in self.worker.collect(wait, grace):
            self.stats.add(r)
            if r.frame is None:
                continue
            self.latest, new = r, True
            if r.real is not None and r.real.done:  # the real env cannot go on: start both panels over
                self.seed += 1
                self._reset()
        return new

    # ----------------------------------------------------------------- drawing
    def redraw(self) -> None:
        """Draw the newest frame again (after the HUD was toggled): not a new frame, so neither counted nor
        recorded."""
        if self.latest is None:
            return
        panels = [Panel("dream", self.latest.frame)]
        if self.latest.real is not None:
            panels.insert(0, Panel("real", self.latest.real.frame))
        hud = hud_lines(self.stats, self.paused, self.seed, self.prompt) if self.show_hud else None
        if self.typing is not None:
            hud = [*(hud or []), f"prompt> {self.typing}_   (Enter: apply, Esc: cancel)"]
        self.screen.draw(panels, hud)

    def _show(self) -> None:
        """Draw a new frame, count it, and record the window as shown (HUD included)."""
        self.redraw()
        self.stats.add_shown()
        if self.video is not None:
            self.video.append(self.screen.pixels())


def build_viewer(cfg: PlayConfig) -> Viewer:
    """Load the world (and the real env with ``--compare``) and pick the action source; errors are one line."""
    if cfg.headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"  # before pygame opens its display
    env = WorldModelEnv(cfg.source, device=cfg.device, precision=cfg.precision)
    real_env = None
    if cfg.compare:
        source = env.world.config.source_env
        if not source:
            raise InputError(f"--compare: world {env.world.config.name!r} names no real env (config.source_env)")
        try:
            real_env = make_source_env(source)
        except WorldsimError as e:
            raise InputError(f"--compare: cannot make the real env {source}: {e}") from None
    if (cfg.prompt or cfg.prompts) and not env.world.config.dit.text_dim:
        raise InputError(f"world {env.world.config.name!r} was trained without text: drop --prompt / --prompts")
    name = cfg.policy or ("random" if cfg.headless else "keyboard")
    policy, on_real = None, False
    if name in SEEING_POLICIES:
        policy = make_policy(name, env, cfg.seed)
    elif name != "keyboard":
        if real_env is not None:
            policy, on_real = make_policy(name, real_env, cfg.seed), True
        elif ":" in name:
            policy = make_policy(name, env, cfg.seed)
        else:
            raise InputError(
                f"policy {name!r} drives the real env (it reads its internals): add --compare, or use one that "
                f"drives the dream from its frames: {', '.join(SEEING_POLICIES)}"
            )
    return Viewer(env, cfg, real_env, policy, on_real)


def play(cfg: PlayConfig) -> dict[str, Any]:
    """Open the window, play until Esc (or ``cfg.steps`` frames), close; returns the run's summary."""
    viewer = build_viewer(cfg)
    try:
        with viewer:
            return viewer.run(cfg.steps or None)
    finally:
        if viewer.real_env is not None:
            viewer.real_env.close()


def run(cfg: PlayConfig) -> int:
    """``worldsim play``: play, then print what was shown (frames, rates, the recording)."""
    result = play(cfg)
    summary = (
        f"{result['frames']} frames shown ({result['model_steps']} model steps), {result['display_fps']:.1f} fps "
        f"displayed, {result['model_fps']:.1f} fps model" + (f" -> {result['record']}" if result["record"] else "")
    )
    return report_run("play", summary, result["interrupted"])
