"""Record episodes of a Gymnasium env as frames + actions into a trajectory file."""

from __future__ import annotations

import concurrent.futures as cf
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldsim.agents import make_policy
from worldsim.agents.policy import load_factory
from worldsim.data.writer import TrajectoryWriter
from worldsim.envs.captions import caption_spans, make_captioner
from worldsim.envs.sources import frame_of, frame_rate, make_source_env, source_world
from worldsim.errors import InputError
from worldsim.inputs import resize_frames
from worldsim.progress import report_run


@dataclass
class RecordConfig:
    """What ``worldsim record`` records."""

    env: str = "CarRacing-v3"
    """Gymnasium id of the source env (CarRacing-v3, gym_pusht/PushT-v0, worldsim/Crafter-v0, ALE/..., any id)."""
    episodes: int = 10
    """Number of episodes to record."""
    out: str = "data/trajectories.h5"
    """Output HDF5 file (Minari layout)."""
    policy: str = "random"
    """random, a scripted policy name (carracing, pusht) or module:factory."""
    size: str = "64x64"
    """Frame size HxW the frames are resized to."""
    max_steps: int = 1000
    """Steps per episode at most (the episode is marked truncated there)."""
    seed: int = 0
    """Episode i is reset with seed + i."""
    frame_skip: int = 0
    """Env steps per recorded step (the action is repeated, rewards summed); 0 = the env's default (its source adapter's
    ``frame_skip``: an action repeat for envs too fast for real-time play, else 1)."""
    captions: bool = False
    """Caption every episode's clips from the simulator's state (``worldsim.envs.captions``; CarRacing episodes
    are then drawn in a named colour palette each)."""
    palettes: str = "train"
    """With --captions, CarRacing's (road, grass) palettes: train (all but the held-out pairs), held_out, all, or
    default (the env's own gray and green)."""
    workers: int = 1
    """Processes recording episodes in parallel."""
    overwrite: bool = False
    """Replace --out if it exists."""


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like 64x64, got {text!r}") from None
    if h < 8 or w < 8:
        raise InputError(f"--size {text} is too small (at least 8x8)")
    return h, w


def frame_skip_for(cfg: RecordConfig) -> int:
    return cfg.frame_skip or source_world(cfg.env).frame_skip


_ENVS: dict[tuple[str, bool], Any] = {}
"""One env per process, id and captioning, reused across episodes (building an env's world, e.g. a track, is not
free); a captioned env keeps the last episode's palette, so plain recordings get an env of their own."""


def _env(env_id: str, captions: bool = False) -> Any:
    if (env_id, captions) not in _ENVS:
        _ENVS[env_id, captions] = make_source_env(env_id)
    return _ENVS[env_id, captions]


def record_episode(cfg: RecordConfig, index: int) -> dict[str, Any]:
    """Run one episode and return its arrays (frames already resized)."""
    env = _env(cfg.env, cfg.captions)
    seed = cfg.seed + index
    skip = frame_skip_for(cfg)
    policy = make_policy(cfg.policy, env, seed)
    captioner = make_captioner(cfg.env, palettes=cfg.palettes) if cfg.captions else None
    episode_attrs = captioner.prepare(env, seed) if captioner else {}
    obs, info = env.reset(seed=seed)
    policy.reset(seed)
    probe = _probe(cfg.env)
    frames = [frame_of(env, obs)]
    states = [probe(env)] if probe else []
    phrases = [captioner.describe(env, None, 0.0, info)] if captioner else []
    actions, rewards, terms, truncs = [], [], [], []
    for step in range(cfg.max_steps):
        action = policy(obs)
        total, terminated, truncated = 0.0, False, False
        for _ in range(skip):
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        frames.append(frame_of(env, obs))
        if probe:
            states.append(probe(env))
        if captioner:
            phrases.append(captioner.describe(env, action, total, info))
        actions.append(np.asarray(action))
        rewards.append(total)
        terms.append(terminated)
        truncs.append(truncated or (step == cfg.max_steps - 1 and not terminated))
        if terminated or truncated:
            break
    raw = torch.from_numpy(np.stack(frames))
    return {
        "observations": resize_frames(raw, parse_size(cfg.size)).numpy(),
        "actions": np.stack(actions),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "terminations": np.asarray(terms),
        "truncations": np.asarray(truncs),
        "seed": seed,
        "infos": {k: np.asarray([st[k] for st in states], dtype=np.float32) for k in (states[0] if states else {})},
        "attrs": {**getattr(policy, "episode_attrs", {}), **episode_attrs},
        "caption": [(a, b, captioner.caption(episode_attrs, p)) for a, b, p in caption_spans(phrases)]
        if captioner
        else None,
    }


def _probe(env_id: str) -> Any:
    """The source env's state probe (``SourceWorld.probe``), or None."""
    spec = source_world(env_id).probe
    return load_factory(spec) if spec else None


def _one_thread() -> None:
    """A recording worker's torch runs on one thread: N workers already fill N cores, and policies that run a
    network (a cloned CNN) would otherwise oversubscribe them, which slows recording several-fold
    (``docs/results.md``, "PushT robotics")."""
    torch.set_num_threads(1)


def record(cfg: RecordConfig, progress: bool = True) -> dict[str, Any]:
    """Record ``cfg.episodes`` episodes into ``cfg.out``. Ctrl-C keeps the finished episodes."""
    size = parse_size(cfg.size)
    env = _env(cfg.env, cfg.captions)
    if cfg.captions:
        make_captioner(cfg.env, palettes=cfg.palettes)  # a source without a captioner fails here, before recording
    skip = frame_skip_for(cfg)
    rate = max(1, round(frame_rate(env) / skip))
    writer = TrajectoryWriter(
        cfg.out,
        env_id=cfg.env,
        frame_size=size,
        action_space=env.action_space,
        frame_rate=rate,
        overwrite=cfg.overwrite,
        attrs={"policy": cfg.policy, "frame_skip": skip, **({"palettes": cfg.palettes} if cfg.captions else {})},
    )
    start = last_log = time.perf_counter()
    frames = 0
    bar = tqdm(total=cfg.episodes, unit="episode", desc=f"recording {cfg.env}", disable=not progress)
    pool = cf.ProcessPoolExecutor(cfg.workers, initializer=_one_thread) if cfg.workers > 1 else None
    interrupted = False
    try:
        episodes = (
            pool.map(record_episode, [cfg] * cfg.episodes, range(cfg.episodes))
            if pool
            else (record_episode(cfg, i) for i in range(cfg.episodes))
        )
        for ep in episodes:
            writer.add_episode(**ep)
            frames += len(ep["observations"])
            bar.update(1)
            speed = frames / (time.perf_counter() - start)  # recording speed, not the data's frame rate
            bar.set_postfix(frames=frames, fps=f"{speed:.0f}")
            if not progress and time.perf_counter() - last_log > 60:  # background runs: a line a minute
                print(f"recorded {writer.episodes}/{cfg.episodes} episodes, {speed:.0f} frames/s", file=sys.stderr)
                last_log = time.perf_counter()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if pool:
            # After a normal finish, wait for the workers to exit: leaving them to the interpreter's exit hooks printed
            # an "Exception ignored ... Bad file descriptor" traceback after every recording with --workers.
            pool.shutdown(wait=not interrupted, cancel_futures=True)
        bar.close()
        path = writer.close()
    seconds = time.perf_counter() - start
    return {
        "out": str(path) if path else None,
        "episodes": writer.episodes,
        "steps": writer.steps,
        "frames": frames,
        "seconds": seconds,
        "frames_per_second": frames / max(seconds, 1e-9),
        "frame_rate": rate,
        "interrupted": interrupted,
        "path": Path(cfg.out),
    }


def run(cfg: RecordConfig) -> int:
    """``worldsim record``: record, then print what was written (Ctrl-C keeps the finished episodes)."""
    result = record(cfg, progress=sys.stderr.isatty())
    summary = (
        f"{result['episodes']} episodes, {result['steps']} steps -> {result['out']} "
        f"({result['frames_per_second']:.0f} frames/s, world frame rate {result['frame_rate']} fps)"
    )
    return report_run("record", summary, result["interrupted"], kept="kept ")
