"""The worker thread that owns the world (and the real env with ``--compare``), and the commands it runs.

The UI thread ``send``s commands and ``collect``s one ``Result`` per command, in order; only the worker touches the
envs, so a slow model never blocks the window.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from worldsim.envs.sources import frame_of
from worldsim.envs.world import WorldModelEnv
from worldsim.errors import WorldsimError


class Reset(NamedTuple):
    """A new start context (and a new episode of the real env), chosen by ``seed``, under ``prompt`` (if any)."""

    seed: int
    prompt: str | None = None


class Step(NamedTuple):
    """One frame of the world (and of the real env) under ``action``."""

    action: Any


class SetSampler(NamedTuple):
    """Euler steps per frame from now on."""

    steps: int


class SetPrompt(NamedTuple):
    """The prompt from the next frame on (worlds trained with text)."""

    prompt: str


Command = Reset | Step | SetSampler | SetPrompt


class RealStep(NamedTuple):
    """The real env beside the dream (``--compare``), after the same command."""

    frame: np.ndarray
    """uint8 (h, w, 3)."""
    observation: Any
    """What policies that drive the real env read."""
    done: bool = False
    """Terminated or truncated: the real env cannot go on."""


class Result(NamedTuple):
    """The world after one command."""

    command: Command
    frame_index: int
    sampler_steps: int
    frame: np.ndarray | None = None
    """The dream's newest frame, uint8 (H, W, 3); None after ``SetSampler``."""
    reward: float = 0.0
    terminated: bool = False
    real: RealStep | None = None
    """With --compare, after ``Reset`` and ``Step``."""
    seconds: float = 0.0
    """Time the world took for this command (the real env not included)."""


class Worker(threading.Thread):
    """Owns the world env (and the real env): runs commands in order, posts one ``Result`` per command."""

    def __init__(self, env: WorldModelEnv, real_env: Any = None, threads: int = 0) -> None:
        super().__init__(name="worldsim-play-worker", daemon=True)
        self.env = env
        self.real_env = real_env
        self.threads = threads
        """Torch threads to run the world with (0: leave torch's setting)."""
        self.commands: queue.Queue[Command | None] = queue.Queue()
        self.results: queue.Queue[Result | BaseException] = queue.Queue()
        self.pending = 0
        """Commands sent whose results have not been collected (read and written by the UI thread only)."""
        self.actions: list[Any] = []
        """Every action the world was stepped with, in order (what tests check)."""
        self.torch_threads = 0
        """Torch threads the world actually runs with, once the worker has started."""

    # ----------------------------------------------------------------- UI thread side
    def send(self, command: Command) -> None:
        self.pending += 1
        self.commands.put(command)

    def collect(self, wait: bool, grace: float = 0.0) -> Iterator[Result]:
        """Results of the commands sent, in order: all outstanding ones when ``wait`` (including those sent while
        iterating), else those ready within ``grace`` seconds. An exception of the worker is raised here."""
        while self.pending:
            try:
                if wait:
                    r = self.results.get(timeout=1.0)
                else:
                    r = self.results.get(timeout=grace) if grace > 0 else self.results.get_nowait()
                    grace = 0.0  # the grace is for the first result only; later ones must already be there
            except queue.Empty:
                if wait and self.is_alive():
                    continue
                if wait:
                    raise WorldsimError("the world's worker thread stopped unexpectedly") from None
                return
            self.pending -= 1
            if isinstance(r, BaseException):
                raise r
            yield r

    def stop(self, timeout: float = 30.0) -> None:
        self.commands.put(None)
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    # ----------------------------------------------------------------- worker thread side
    def run(self) -> None:
        before = torch.get_num_threads()  # a process-wide setting: put back when the worker ends
        if self.threads:
            torch.set_num_threads(self.threads)
        self.torch_threads = torch.get_num_threads()
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
        world = self.env.world
        if isinstance(cmd, SetSampler):
            world.set_sampler(steps=cmd.steps)
            return Result(cmd, world.frame_index, world.sampler_config.steps)
        if isinstance(cmd, SetPrompt):
            self.env.set_prompt(cmd.prompt)
            return Result(cmd, world.frame_index, world.sampler_config.steps)
        if isinstance(cmd, Reset):
            real, options = None, {}
            if self.real_env is not None:
                # Both panels start from the same real frame: the dream's context is the real env's first frame.
                observation, _ = self.real_env.reset(seed=cmd.seed)
                real = self._real(observation)
                options["start"] = real.frame
            if cmd.prompt:
                options["text"] = cmd.prompt
            t = time.perf_counter()
            frame, _ = self.env.reset(seed=cmd.seed, options=options)
            seconds = time.perf_counter() - t
            reward, terminated = 0.0, False
        else:
            self.actions.append(cmd.action)
            t = time.perf_counter()
            frame, reward, terminated, _, _ = self.env.step(cmd.action)
            seconds = time.perf_counter() - t
            real = None
            if self.real_env is not None:
                observation, _, real_terminated, real_truncated, _ = self.real_env.step(cmd.action)
                real = self._real(observation, done=bool(real_terminated or real_truncated))
        return Result(
            cmd,
            world.frame_index,
            world.sampler_config.steps,
            frame=frame,
            reward=float(reward),
            terminated=bool(terminated),
            real=real,
            seconds=seconds,
        )

    def _real(self, observation: Any, done: bool = False) -> RealStep:
        return RealStep(frame_of(self.real_env, observation), observation, done)
