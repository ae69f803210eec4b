"""``worldsim play``: a real-time pygame window onto a generated world.

Examples::

    worldsim play                                   # the default world; arrow keys drive
    worldsim play --checkpoint runs/carracing/world --record play.mp4
    worldsim play --compare                         # the real env beside the dream, same actions
    worldsim play --headless --steps 200 --policy random --record out.mp4   # no display, as fast as it goes

Keys: R new start (new seed), P pause, [ / ] fewer / more denoising steps, H HUD and help, S screenshot,
Esc quit. Actions come from the world's key map (``WorldModelEnv.get_keys_to_action``): held keys give the
action of each frame, no key the do-nothing action; 2-D Box worlds (PushT) take the mouse position instead.

Threads: a worker thread owns the world (and the real env with ``--compare``) and runs one command at a
time from a queue (reset, step, sampler change); the UI thread polls input, draws the newest frame and keeps the
world's frame rate with a pygame Clock, so the window stays responsive however slow the model is. Headless play
is lock-step (each frame waits for its step) and unpaced unless ``--realtime``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces

from worldsim.envs.world import WINDOW_PIXELS, WorldModelEnv, _pygame
from worldsim.errors import ConfigError, InputError, WorldsimError
from worldsim.video import VideoWriter, check_video_path
from worldsim.worlds import DEFAULT_WORLD

MAX_SAMPLER_STEPS = 16
"""Upper bound for ``]`` (more Euler steps per frame)."""


@dataclass
class PlayConfig:
    """What ``worldsim play`` shows and how."""

    world: str | None = None
    """Shipped world name (default: carracing); use --checkpoint for a directory."""
    checkpoint: str | None = None
    """Checkpoint directory to play instead of a shipped world."""
    headless: bool = False
    """Play without a display (SDL dummy driver), actions from --policy, unpaced unless --realtime."""
    steps: int = 0
    """Frames to show (and record), the start frame included; 0 = until Esc. Needed with --headless."""
    policy: str = ""
    """Where actions come from: keyboard, random, road (drives CarRacing from the frames it sees), carracing, pusht
    or module:callable (default: keyboard, or random when headless). carracing and pusht read the real env's
    internals and need --compare."""
    seed: int = 0
    """Seed of the first start context and noise; R moves on to seed+1, seed+2, ..."""
    sampler_steps: int | None = None
    """Euler steps per frame at the start (default: the checkpoint's)."""
    record: str | None = None
    """Write the frames shown (the window, HUD included) to this .mp4 or .gif."""
    out_dir: str = "."
    """Folder for S screenshots."""
    compare: bool = False
    """Run the world's real source env beside the dream with the same actions."""
    realtime: bool = False
    """Pace headless play at the world's frame rate too."""
    scale: int = 0
    """Window pixels per frame pixel (0: fit the frame to 384 pixels, 6x for 64x64)."""
    hud: bool = True
    """Show the HUD at the start (H toggles it)."""
    device: str = "cpu"
    """Torch device of the world."""
    precision: str = "auto"
    """fp32, bf16 or auto (bf16 where the hardware has it natively: faster play)."""
    model_threads: int = 1
    """Torch threads of the worker that runs the world (0: torch's default). Torch ops called from a thread other
    than the main one lose from a second intra-op thread: on the 2-core reference machine the shipped world steps
    at 31 fps with 1 thread and 22 fps with 2 (40 fps with 2 on the main thread, where the UI must stay)."""

    def __post_init__(self) -> None:
        if self.world and self.checkpoint:
            raise ConfigError("give --world or --checkpoint, not both")
        if self.steps < 0 or self.scale < 0:
            raise ConfigError("--steps and --scale must be >= 0")
        if self.headless and self.steps == 0:
            raise ConfigError("--headless needs --steps N (frames to play)")
        if self.sampler_steps is not None and not 1 <= self.sampler_steps <= MAX_SAMPLER_STEPS:
            raise ConfigError(f"--sampler-steps must be in 1..{MAX_SAMPLER_STEPS}")
        if self.record:
            check_video_path(self.record)

    @property
    def source(self) -> str:
        return self.checkpoint or self.world or DEFAULT_WORLD


class Command(NamedTuple):
    kind: str
    """"reset" (arg: seed), "step" (arg: action) or "sampler" (arg: Euler steps)."""
    arg: Any


class Result(NamedTuple):
    kind: str
    frame: np.ndarray | None
    """The dream's newest frame, uint8 (H, W, 3); None after a sampler change."""
    real: np.ndarray | None
    """The real env's frame (with --compare), uint8 (h, w, 3)."""
    real_obs: Any
    """The real env's observation, for policies that drive it."""
    reward: float
    terminated: bool
    real_done: bool
    frame_index: int
    sampler_steps: int
    seconds: float
    """Time the world took for this command (the real env not included)."""


@dataclass
class Stats:
    """Counters the HUD shows and ``run`` returns."""

    shown: int = 0
    """New frames displayed (each one recorded with --record)."""
    model_steps: int = 0
    model_seconds: float = 0.0
    episode_return: float = 0.0
    reward: float = 0.0
    terminated: bool = False
    frame_index: int = 0
    sampler_steps: int = 0
    resets: int = 0
    shown_at: deque = field(default_factory=lambda: deque(maxlen=30))
    """perf_counter of the last frames displayed, for the HUD's displayed fps."""
    step_seconds: deque = field(default_factory=lambda: deque(maxlen=30))
    """Durations of the last world steps, for the HUD's model fps."""

    @property
    def display_fps(self) -> float:
        t = self.shown_at
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    @property
    def model_fps(self) -> float:
        total = sum(self.step_seconds)
        return len(self.step_seconds) / total if total > 0 else 0.0


class Worker(threading.Thread):
    """Owns the world env (and the real env): runs commands in order, posts one ``Result`` per command."""

    def __init__(self, env: WorldModelEnv, real_env: Any = None, threads: int = 0) -> None:
        super().__init__(name="worldsim-play-worker", daemon=True)
        self.env = env
        self.real_env = real_env
        self.threads = threads
        self.commands: queue.Queue[Command | None] = queue.Queue()
        self.results: queue.Queue[Result | BaseException] = queue.Queue()
        self.actions: list[Any] = []
        """Every action the world was stepped with, in order (what tests check)."""

    def stop(self, timeout: float = 30.0) -> None:
        self.commands.put(None)
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run(self) -> None:
        before = torch.get_num_threads()  # a process-wide setting: put back when the worker ends
        if self.threads:
            torch.set_num_threads(self.threads)
        self.torch_threads = torch.get_num_threads()  # what the world actually runs with
        try:
            while (cmd := self.commands.get()) is not None:
                try:
                    self.results.put(self._run(cmd))
                except BaseException as e:  # handed to the UI thread, which raises it there
                    self.results.put(e)
                    return
        finally:
            torch.set_num_threads(before)

    def _run(self, cmd: Command) -> Result:
        from worldsim.envs.sources import frame_of

        world = self.env.world
        real = real_obs = None
        reward, terminated, real_done = 0.0, False, False
        if cmd.kind == "sampler":
            world.set_sampler(steps=cmd.arg)
            return Result(
                "sampler", None, None, None, 0.0, False, False, world.frame_index, world.sampler_config.steps, 0.0
            )
        t = time.perf_counter()
        if cmd.kind == "reset":
            options = None
            if self.real_env is not None:
                # Both panels start from the same real frame: the dream's context is the real env's first frame.
                real_obs, _ = self.real_env.reset(seed=cmd.arg)
                real = frame_of(self.real_env, real_obs)
                options = {"start": real}
                t = time.perf_counter()
            frame, _ = self.env.reset(seed=cmd.arg, options=options)
            seconds = time.perf_counter() - t
        else:
            self.actions.append(cmd.arg)
            frame, reward, terminated, _, _ = self.env.step(cmd.arg)
            seconds = time.perf_counter() - t
            if self.real_env is not None:
                real_obs, _, real_term, real_trunc, _ = self.real_env.step(cmd.arg)
                real, real_done = frame_of(self.real_env, real_obs), bool(real_term or real_trunc)
        return Result(
            cmd.kind, frame, real, real_obs, float(reward), bool(terminated), real_done, world.frame_index,
            world.sampler_config.steps, seconds,
        )  # fmt: skip


class Viewer:
    """The play loop: input -> actions -> worker, newest frame -> window (+ HUD, video).

    Drive it with ``open()``, then ``tick()`` per displayed frame (or ``run()``), then ``close()``; or use it as a
    context manager. Events posted with ``pygame.event.post`` are read on the next ``tick``.
    """

    def __init__(
        self, env: WorldModelEnv, config: PlayConfig, real_env: Any = None, policy: Any = None, policy_on_real=False
    ) -> None:
        self.env = env
        self.cfg = config
        self.real_env = real_env
        self.policy = policy
        self.policy_on_real = policy_on_real
        self.space = env.action_space
        self.mouse = isinstance(self.space, spaces.Box) and self.space.shape == (2,) and not env.world.config.key_map
        self.keys = {} if self.mouse else env.get_keys_to_action()
        self.action_keys = {k for chord in self.keys for k in chord}
        self.fps = int(env.world.config.frame_rate)
        self.paced = not config.headless or config.realtime
        self.worker = Worker(env, real_env, config.model_threads)
        self.stats = Stats()
        self.show_hud = config.hud
        self.paused = False
        self.quit = False
        self.interrupted = False
        self.held: set[int] = set()
        self.mouse_pos: tuple[int, int] | None = None
        """Last pointer position in the window (from MOUSEMOTION events); None: the dream panel's centre."""
        self.seed = config.seed
        self.sampler_steps = config.sampler_steps or env.world.sampler_config.steps
        """Euler steps asked for (the HUD shows what the world last reported)."""
        self.frame: np.ndarray | None = None
        self.real_frame: np.ndarray | None = None
        self.real_obs: Any = None
        self.screenshots: list[Path] = []
        self.pending = 0
        self.video: VideoWriter | None = None
        self.window: Any = None

    # ----------------------------------------------------------------- lifecycle
    def open(self) -> Viewer:
        pygame = self.pygame = _pygame()
        H, W = self.env.world.frame_size
        scale = self.cfg.scale or max(1, WINDOW_PIXELS // max(H, W))
        self.panel = (W * scale, H * scale)
        panels = 2 if self.real_env is not None else 1
        try:
            pygame.display.init()
            pygame.font.init()
            self.window = pygame.display.set_mode((self.panel[0] * panels, self.panel[1]))
        except pygame.error as e:
            raise WorldsimError(f"cannot open a window ({e}); without a display use --headless") from None
        pygame.display.set_caption(f"worldsim play: {self.env.world.config.name}")
        self.font = pygame.font.Font(None, 20)
        self.clock = pygame.time.Clock()
        if self.cfg.record:
            self.video = VideoWriter(self.cfg.record, self.fps).__enter__()
        self.worker.start()
        if self.cfg.sampler_steps is not None:
            self._send(Command("sampler", self.cfg.sampler_steps))
        self._reset()
        self._collect(wait=True)
        self._draw()
        return self

    def close(self) -> None:
        """Stop and join the worker, finish the video, close the window. Safe to call twice."""
        self.worker.stop()
        if self.video is not None:
            video, self.video = self.video, None
            video.__exit__(None, None, None)
        if self.window is not None:
            self.window = None
            self.pygame.display.quit()

    def __enter__(self) -> Viewer:
        try:
            return self.open()
        except BaseException as e:  # a world that fails its first reset: stop the worker, drop the video
            self.__exit__(type(e), e, e.__traceback__)
            raise

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None and self.video is not None:
            video, self.video = self.video, None
            video.__exit__(*exc)  # a failed run leaves no video behind
        self.close()

    def run(self, frames: int | None = None) -> dict[str, Any]:
        """Tick until Esc / window close, or until ``frames`` frames have been shown. Ctrl-C stops cleanly."""
        start, shown = time.perf_counter(), self.stats.shown
        try:
            while not self.quit and (frames is None or self.stats.shown < frames):
                self.tick()
        except KeyboardInterrupt:
            self.interrupted = self.quit = True
        return self.summary(time.perf_counter() - start, self.stats.shown - shown)

    def summary(self, seconds: float, shown: int) -> dict[str, Any]:
        s = self.stats
        return {
            "frames": s.shown,
            "model_steps": s.model_steps,
            "display_fps": shown / seconds if seconds > 0 else 0.0,
            "model_fps": s.model_steps / s.model_seconds if s.model_seconds > 0 else 0.0,
            "episode_return": s.episode_return,
            "record": self.cfg.record if self.cfg.record and s.shown else None,
            "interrupted": self.interrupted,
        }

    # ----------------------------------------------------------------- one frame of the UI
    def tick(self) -> None:
        """Read input, ask for the next frame if the worker is idle, draw the newest one, keep the frame rate."""
        for event in self.pygame.event.get():
            self.handle(event)
        if self.quit:
            return
        if self.cfg.headless:  # lock-step: every tick shows the frame of the action it sent
            self._request_step()
            if self._collect(wait=True):
                self._draw()
        else:  # show what is ready, then let the worker generate the next frame while the clock waits
            # A frame a little late waits up to a quarter tick rather than a whole tick; input stays live.
            if self._collect(wait=False, grace=0.25 / self.fps):
                self._draw()
            self._request_step()
        self.clock.tick(self.fps if self.paced else 0)

    def _request_step(self) -> None:
        if not self.paused and self.pending == 0:
            self._send(Command("step", self._action()))

    def feed(self, events: list[Any]) -> None:
        """Post events (pygame ``Event`` objects) to be read on the next ``tick``."""
        for event in events:
            self.pygame.event.post(event)

    def handle(self, event: Any) -> None:
        pygame = self.pygame
        if event.type == pygame.QUIT:
            self.quit = True
        elif event.type == pygame.KEYUP:
            self.held.discard(event.key)
        elif event.type == pygame.MOUSEMOTION:
            self.mouse_pos = tuple(event.pos)
        elif event.type == pygame.WINDOWFOCUSLOST:
            self.held.clear()  # a key released in another window would otherwise stay held
        elif event.type == pygame.KEYDOWN:
            self.held.add(event.key)
            key = event.key
            if key == pygame.K_ESCAPE:
                self.quit = True
            elif key == pygame.K_r:
                self.seed += 1
                self._reset()
            elif key == pygame.K_p:
                self.paused = not self.paused
            elif key in (pygame.K_LEFTBRACKET, pygame.K_RIGHTBRACKET):
                step = 1 if key == pygame.K_RIGHTBRACKET else -1
                self.sampler_steps = min(MAX_SAMPLER_STEPS, max(1, self.sampler_steps + step))
                self._send(Command("sampler", self.sampler_steps))
            elif key == pygame.K_h:
                self.show_hud = not self.show_hud
                self._draw(record=False)
            elif key == pygame.K_s:
                self.screenshot()

    def screenshot(self) -> Path:
        from worldsim.checkpoint import atomic_path

        name = f"worldsim-{self.env.world.config.name}-{time.strftime('%Y%m%d-%H%M%S')}-{self.stats.shown:05d}.png"
        path = Path(self.cfg.out_dir) / name
        with atomic_path(path) as tmp:
            self.pygame.image.save(self.window, str(tmp))
        self.screenshots.append(path)
        return path

    # ----------------------------------------------------------------- actions
    def _action(self) -> Any:
        if self.policy is not None:
            return self.policy(self.real_obs if self.policy_on_real else self.frame)
        if self.mouse:
            return self._mouse_action()
        pressed = tuple(sorted(self.held & self.action_keys))
        if pressed in self.keys:
            return self.keys[pressed]
        # Extra keys held: the longest chord among them wins ("up+left" over "up").
        chords = [c for c in self.keys if c and set(c) <= set(pressed)]
        return self.keys[max(chords, key=len)] if chords else self.env.noop

    def _mouse_action(self) -> np.ndarray:
        """Mouse position over the dream panel -> the Box linearly (x to dimension 0, y down to dimension 1)."""
        x0 = self.panel[0] if self.real_env is not None else 0
        x, y = self.mouse_pos or (x0 + self.panel[0] // 2, self.panel[1] // 2)
        frac = np.clip([(x - x0) / self.panel[0], y / self.panel[1]], 0.0, 1.0)
        low, high = self.space.low, self.space.high
        return (low + frac * (high - low)).astype(self.space.dtype)

    # ----------------------------------------------------------------- worker traffic
    def _send(self, cmd: Command) -> None:
        self.pending += 1
        self.worker.commands.put(cmd)

    def _reset(self) -> None:
        if self.policy is not None and hasattr(self.policy, "reset"):
            self.policy.reset(self.seed)
        self._send(Command("reset", self.seed))

    def _collect(self, wait: bool, grace: float = 0.0) -> bool:
        """Take the worker's results: all outstanding ones when ``wait``, else those ready within ``grace`` seconds.
        True when a new frame arrived."""
        new = False
        while self.pending:
            try:
                if wait:
                    r = self.worker.results.get(timeout=1.0)
                else:
                    r = self.worker.results.get(timeout=grace) if grace > 0 else self.worker.results.get_nowait()
                    grace = 0.0
            except queue.Empty:
                if wait and self.worker.is_alive():
                    continue
                if wait:
                    raise WorldsimError("the world's worker thread stopped unexpectedly") from None
                break
            self.pending -= 1
            if isinstance(r, BaseException):
                raise r
            new |= self._apply(r)
        return new

    def _apply(self, r: Result) -> bool:
        s = self.stats
        s.sampler_steps, s.frame_index = r.sampler_steps, r.frame_index
        if r.frame is None:
            return False
        self.frame, self.real_frame, self.real_obs = r.frame, r.real, r.real_obs
        s.reward, s.terminated = r.reward, r.terminated
        if r.kind == "reset":
            s.episode_return, s.resets = 0.0, s.resets + 1
        else:
            s.episode_return += r.reward
            s.model_steps += 1
            s.model_seconds += r.seconds
            s.step_seconds.append(r.seconds)
        if r.real_done:  # the real env cannot go on: start both panels over
            self.seed += 1
            self._reset()
        return True

    # ----------------------------------------------------------------- drawing
    def _draw(self, record: bool = True) -> None:
        if self.frame is None:
            return
        pygame = self.pygame
        self.window.fill((0, 0, 0))
        panels = [("dream", self.frame)]
        if self.real_env is not None and self.real_frame is not None:
            panels.insert(0, ("real", self.real_frame))
        for i, (label, frame) in enumerate(panels):
            surface = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))  # surfaces are (W, H)
            x = i * self.panel[0]
            self.window.blit(pygame.transform.scale(surface, self.panel), (x, 0))  # nearest neighbour
            if len(panels) > 1:
                self._text([label], (x + 4, self.panel[1] - 20))
        if self.show_hud:
            self._text(self._hud_lines(), (4, 4))
        pygame.display.flip()
        if record:
            self.stats.shown += 1
            self.stats.shown_at.append(time.perf_counter())
            if self.video is not None:
                self.video.append(pygame.surfarray.array3d(self.window).swapaxes(0, 1))

    def _hud_lines(self) -> list[str]:
        s = self.stats
        state = "  PAUSED" if self.paused else ("  terminated" if s.terminated else "")
        return [
            f"{s.display_fps:5.1f} fps shown  {s.model_fps:5.1f} fps model{state}",
            f"frame {s.frame_index}  reward {s.reward:+.3f}  return {s.episode_return:+.2f}",
            f"sampler steps {s.sampler_steps}  seed {self.seed}",
            "R reset  P pause  [ ] steps  S shot  H hud  Esc quit",
        ]

    def _text(self, lines: list[str], at: tuple[int, int]) -> None:
        pygame = self.pygame
        rendered = [self.font.render(line, True, (255, 255, 255)) for line in lines]
        w = max(r.get_width() for r in rendered) + 6
        h = sum(r.get_height() for r in rendered) + 4
        box = pygame.Surface((w, h), pygame.SRCALPHA)
        box.fill((0, 0, 0, 150))
        self.window.blit(box, (at[0] - 3, at[1] - 2))
        y = at[1]
        for r in rendered:
            self.window.blit(r, (at[0], y))
            y += r.get_height()


def build_viewer(cfg: PlayConfig) -> Viewer:
    """Load the world (and the real env with ``--compare``) and pick the action source; errors are one line."""
    from worldsim.agents import SEEING_POLICIES, make_policy

    if cfg.headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"  # before pygame opens its display
    env = WorldModelEnv(cfg.source, device=cfg.device, precision=cfg.precision)
    real_env = None
    if cfg.compare:
        from worldsim.envs.sources import make_source_env

        source = env.world.config.source_env
        if not source:
            raise InputError(f"--compare: world {env.world.config.name!r} names no real env (config.source_env)")
        try:
            real_env = make_source_env(source)
        except WorldsimError as e:
            raise InputError(f"--compare: cannot make the real env {source}: {e}") from None
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
