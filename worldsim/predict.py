"""``worldsim predict``: what will a policy do? Its rollouts dreamed in a world, beside the real env with ``--real``.

Examples::

    worldsim predict --policy road --episodes 8 --horizon 200          # dreams from the world's start contexts
    worldsim predict --policy road --real --json out.json --video grid.mp4   # the real env beside each dream
    worldsim predict --policy mypkg.drivers:make --data data/heldout.h5 --horizon 100

    import worldsim
    result = worldsim.predict("carracing", "road", episodes=4, horizon=100, real=True)
    result.summary()   # {'dream_return_mean': ..., 'real_return_mean': ..., 'return_mae': ...}

The policy sees only frames (``policy(frame uint8 H×W×3) -> action``, built by a factory ``(action_space, seed)``
or ``(env, seed)``; see ``worldsim.agents.policy.make_seeing_policy``). It drives all the dreams together, one
engine call per step. Each dream starts from ``context`` frames: a start context the world ships, the start of a
recorded episode (``data``), or with ``real`` the real env's own first frames after its intro (CarRacing's zoom-in).
There the episode forks: the real env goes on under the policy, and the dream goes on from the same frames under
another instance of the same policy, which has been shown the frames the real one saw, so both sides start in the
same state. The dream's return is what its reward head predicts; an episode ends where its termination fires (the
head's in the dream, the env's in reality), as an env episode would.

Episode i has its own seed, ``seed + i``: the noise of its dream, its policy's seed, its real env's seed and its
start context (start ``(seed + i) mod S`` of the world's S, or recorded episode ``(seed + i) mod E``), so a result
does not depend on how many episodes run together.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from worldsim.agents.policy import Policy, make_seeing_policy, policy_name
from worldsim.checkpoint import atomic_path, check_output_path, load_config
from worldsim.config import ActionSpec, WorldConfig
from worldsim.engine import WorldModel, check_actions, resize_frames
from worldsim.errors import ConfigError, InputError, WorldsimError
from worldsim.precision import Precision, model_dtype
from worldsim.video import VideoWriter, check_video_path
from worldsim.worlds import DEFAULT_WORLD, resolve_world

if TYPE_CHECKING:
    from worldsim.data.reader import TrajectoryReader  # h5py: imported only where data is read


@dataclass
class PredictConfig:
    """What ``worldsim predict`` runs and writes."""

    policy: str
    """What acts, seeing only frames: a name in worldsim.agents.SEEING_POLICIES (random, idle, road, ...) or
    module:factory, a factory (action_space, seed) or (env, seed) of policy(frame) -> action (the env it gets has
    only action_space)."""
    world: str = DEFAULT_WORLD
    """World: checkpoint dir, shipped world name or Hugging Face Hub repo id (owner/name[@revision])."""
    episodes: int = 8
    """Episodes (dreams), all run together; episode i uses seed + i."""
    horizon: int = 200
    """Steps each dream (and real episode) runs after its context, at the world's frame rate."""
    real: bool = False
    """Also run the world's real source env: each dream starts from the real env's first frames after its intro,
    and the real env goes on beside it under the same policy."""
    data: str = ""
    """Start the dreams from episodes of this trajectory file instead of the world's shipped start contexts."""
    seed: int = 0
    """Seed of episode 0 (its dream noise, policy, real env and start context); episode i uses seed + i."""
    context: int = 4
    """Frames each dream starts from (a shipped start gives at most the frames it has)."""
    json: str = ""
    """Also write every number (per episode and the aggregate) as JSON to this file."""
    video: str = ""
    """Write a grid of the episodes to this .mp4 or .gif, each cell real | dream (dream only without --real)."""
    precision: Precision = "auto"
    """fp32, bf16 or auto (bf16 where the hardware has it natively)."""

    def __post_init__(self) -> None:
        if self.json:
            check_output_path(self.json)  # before the rollouts, not after
        if self.video:
            check_video_path(self.video)
        if self.real and self.data:
            raise ConfigError("--real and --data both give the dreams their start: pick one")


@dataclass
class PredictResult:
    """Per-episode outcomes of a policy's dreams (and real episodes); ``summary()`` aggregates them."""

    dream_return: np.ndarray
    """(N,) float: the reward head summed over the dreamed steps, up to its termination."""
    dream_terminated: np.ndarray
    """(N,) bool: the termination head fired within the horizon."""
    real_return: np.ndarray | None
    """(N,) float: the real env's reward over the same steps after the fork (with real=True)."""
    real_terminated: np.ndarray | None
    """(N,) bool: the real env terminated within the horizon (with real=True)."""
    dream_frames: np.ndarray | None
    """uint8 (N, H+1, h, w, 3) with keep_frames: the context's last frame, then the dream; after a termination
    the last frame repeats."""
    real_frames: np.ndarray | None
    """uint8 (N, H+1, h, w, 3) at the world's frame size, with real=True and keep_frames: the fork's frame, then
    the real env; after the episode ends the last frame repeats."""
    seeds: list[int]
    """Each episode's seed: its real env's seed and its dream's noise seed."""
    world: str = ""
    """The world, as given."""
    policy: str = ""
    """The policy, as given (a factory callable by its qualified name)."""
    horizon: int = 0
    """Steps per episode after the context."""
    frame_rate: int = 0
    """The world's frames per second."""

    def summary(self) -> dict[str, Any]:
        """Means and (population) standard deviations of the returns, termination rates, and with the real env the
        dream's return error: ``return_mae`` = mean |dream - real|, ``return_bias`` = mean (dream - real)."""
        out: dict[str, Any] = {
            "episodes": len(self.seeds),
            "dream_return_mean": float(np.mean(self.dream_return)),
            "dream_return_std": float(np.std(self.dream_return)),
            "dream_termination_rate": float(np.mean(self.dream_terminated)),
        }
        if self.real_return is not None and self.real_terminated is not None:
            error = self.dream_return - self.real_return
            out.update(
                real_return_mean=float(np.mean(self.real_return)),
                real_return_std=float(np.std(self.real_return)),
                real_termination_rate=float(np.mean(self.real_terminated)),
                return_mae=float(np.mean(np.abs(error))),
                return_bias=float(np.mean(error)),
            )
        return out

    def per_episode(self) -> list[dict[str, Any]]:
        """One dict per episode: seed, dream return and termination (and the real ones)."""
        rows = []
        for i, seed in enumerate(self.seeds):
            row: dict[str, Any] = {
                "episode": i,
                "seed": seed,
                "dream_return": float(self.dream_return[i]),
                "dream_terminated": bool(self.dream_terminated[i]),
            }
            if self.real_return is not None and self.real_terminated is not None:
                row.update(real_return=float(self.real_return[i]), real_terminated=bool(self.real_terminated[i]))
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Everything but the frames, JSON-ready: what ``worldsim predict --json`` writes."""
        head = {"world": self.world, "policy": self.policy, "horizon": self.horizon, "frame_rate": self.frame_rate}
        return {**head, **self.summary(), "per_episode": self.per_episode()}


# ----------------------------------------------------------------------------- acting
@dataclass
class _Actor:
    """A policy name for messages and the world's action check: turns a policy's output into a checked action."""

    name: str
    spec: ActionSpec

    def __call__(self, policy: Policy, frame: np.ndarray, step: int, episode: int, where: str) -> torch.Tensor:
        """The action ``policy`` takes on ``frame``, validated; a one-line InputError says who, when and where."""
        at = f"at step {step} of episode {episode} ({where})"
        try:
            action = policy(frame)
        except Exception as e:  # user code: its failure is an input error that names the policy
            raise InputError(f"policy {self.name!r} failed {at}: {type(e).__name__}: {e}") from e
        try:
            return check_actions(self.spec, action, ())
        except InputError as e:
            raise InputError(f"policy {self.name!r} returned {action!r} {at}: {e}") from None


def _env_action(action: torch.Tensor, space: Any) -> Any:
    """A checked action as the real env takes it: an int for Discrete, else an array of the space's dtype."""
    import gymnasium

    if isinstance(space, gymnasium.spaces.Discrete):
        return int(action)
    return np.asarray(action.cpu().numpy(), dtype=space.dtype)


def _frame_size(config: WorldConfig) -> tuple[int, int]:
    h, w = config.frame_size
    return h, w


def _to_world(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A real frame at the world's frame size: what the policy and the dream see."""
    return resize_frames(torch.from_numpy(np.ascontiguousarray(frame)), size).numpy()


def _bar(total: int, desc: str, progress: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not progress)


# ----------------------------------------------------------------------------- starts
@dataclass
class _RealEpisode:
    """One real episode after the fork."""

    frames: np.ndarray
    """uint8 (H+1, h, w, 3): the fork's frame first; after the end the last frame repeats."""
    ret: float
    terminated: bool


@dataclass
class _Starts:
    """The dreams' context frames, the actions between them, and (with the real env) its side of each episode."""

    frames: np.ndarray
    """uint8 (N, T, h, w, 3)."""
    actions: np.ndarray | None
    """(N, T-1, ...) or None (unknown: the context is conditioned on null actions)."""
    seen: list[list[np.ndarray]] | None = None
    """With the real env: per episode, the frames its policy acted on before the fork."""
    real: list[_RealEpisode] | None = None
    """With the real env: per episode, what happened after the fork."""


def _shipped_starts(config: WorldConfig, starts: dict[str, torch.Tensor], seeds: list[int], context: int) -> _Starts:
    """Start ``seed mod S`` of the world's S, its last ``context`` frames."""
    frames = starts.get("frames")
    if frames is None or len(frames) == 0:
        raise InputError(f"world {config.name!r} ships no start contexts: start from data=FILE.h5 or real=True")
    picked = torch.stack([frames[s % len(frames), -context:] for s in seeds])
    return _Starts(resize_frames(picked, _frame_size(config)).numpy(), None)


def _data_starts(reader: TrajectoryReader, config: WorldConfig, seeds: list[int], context: int, intro: int) -> _Starts:
    """Episode ``seed mod E`` of the file, from its first frame after the intro."""
    frames, actions = [], []
    for s in seeds:
        e = s % len(reader)
        if reader.episode_frames[e] < intro + context:
            raise InputError(
                f"episode {e} of {reader.source} has {reader.episode_frames[e]} frames, fewer than the intro "
                f"({intro}) + context ({context}) a dream starts after"
            )
        frames.append(reader.frames(e, intro, intro + context))
        actions.append(reader.steps(e)["actions"][intro : intro + context - 1])
    return _Starts(resize_frames(torch.from_numpy(np.stack(frames)), _frame_size(config)).numpy(), np.stack(actions))


def _intro_frames(config: WorldConfig) -> int:
    """Frames at the start of every episode of the world's source env that are not play (CarRacing's zoom-in): its
    adapter's ``intro_seconds`` at the world's frame rate, the frames ``worldsim eval`` skips too."""
    from worldsim.envs.sources import source_world

    return round(source_world(config.source_env).intro_seconds * config.frame_rate)


def real_repeat(env: Any, config: WorldConfig) -> int:
    """Env steps per world step: the action repeat that turns the env's native rate into the world's (the source
    adapter's frame skip for the worlds it records, e.g. 2 for CarRacing's 50 fps at 25)."""
    from worldsim.envs.sources import frame_rate

    native = frame_rate(env)
    repeat = max(1, round(native / config.frame_rate))
    if round(native / repeat) != config.frame_rate:  # the recorder's rate rounding, inverted
        raise InputError(
            f"world {config.name!r} runs at {config.frame_rate} fps, but {config.source_env} at {native} fps, which no "
            "whole action repeat turns into the world's rate"
        )
    return repeat


def _real_starts(
    env: Any,
    config: WorldConfig,
    policies: list[Policy],
    act: _Actor,
    seeds: list[int],
    context: int,
    horizon: int,
    progress: bool,
) -> _Starts:
    """Run each real episode under its policy: the intro, the context, then ``horizon`` steps past the fork."""
    from worldsim.envs.sources import frame_of

    size = _frame_size(config)
    repeat = real_repeat(env, config)
    intro = _intro_frames(config)
    fork = intro + context - 1  # world steps before the fork: the fork's frame is the context's last
    contexts, actions, seen, real = [], [], [], []
    with _bar(len(seeds) * (fork + horizon), "real env", progress) as bar:
        for i, (seed, policy) in enumerate(zip(seeds, policies)):
            obs, _ = env.reset(seed=seed)
            frames = [_to_world(frame_of(env, obs), size)]
            taken: list[torch.Tensor] = []
            ret, terminated, ended = 0.0, False, False
            for t in range(fork + horizon):
                action = act(policy, frames[-1], t, i, "real env")
                reward = 0.0
                for _ in range(repeat):  # the action held for the world's one step, as the recorder does
                    obs, r, terminated, truncated, _ = env.step(_env_action(action, env.action_space))
                    reward += float(r)
                    ended = bool(terminated or truncated)
                    if ended:
                        break
                frames.append(_to_world(frame_of(env, obs), size))
                taken.append(action)
                if t >= fork:
                    ret += reward
                if ended and t < fork:
                    raise InputError(
                        f"episode {i} of {config.source_env} (seed {seed}) ended after {t + 1} steps, before the "
                        f"intro ({intro}) and context ({context}) the dream starts from"
                    )
                bar.update(1)
                if ended:
                    bar.update(fork + horizon - len(taken))
                    break
            contexts.append(np.stack(frames[intro : intro + context]))
            actions.append(torch.stack(taken[intro:fork]).cpu().numpy() if context > 1 else None)
            seen.append(frames[:fork])
            after = frames[fork:] + [frames[-1]] * (horizon + 1 - len(frames[fork:]))
            real.append(_RealEpisode(np.stack(after), ret, bool(terminated)))
    return _Starts(np.stack(contexts), np.stack(actions) if context > 1 else None, seen, real)


# ----------------------------------------------------------------------------- the dream
def _dream(
    wm: WorldModel, starts: _Starts, policies: list[Policy], act: _Actor, seeds: list[int], horizon: int,
    keep_frames: bool, progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:  # fmt: skip
    """All dreams together, one ``step`` per time step; returns returns (N,), terminations (N,), frames or None."""
    N = len(seeds)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    frames = wm.reset(starts.frames, actions=starts.actions, generator=generators)  # (N, h, w, 3)
    for i, seen in enumerate(starts.seen or []):  # bring each dream's policy to its real twin's state at the fork
        for t, frame in enumerate(seen):
            act(policies[i], frame, t, i, "real env, shown to the dream's policy")
    returns, terminated = np.zeros(N), np.zeros(N, bool)
    active = np.ones(N, bool)
    last: list[torch.Tensor] = [torch.zeros(0)] * N
    kept = [frames] if keep_frames else []
    with _bar(horizon, "dream", progress) as bar:
        for t in range(horizon):
            # An ended dream still steps with the batch (its action repeated) but its policy and outcome rest.
            last = [act(policies[i], frames[i], t, i, "dream") if active[i] else last[i] for i in range(N)]
            out = wm.step(torch.stack(last))
            returns += np.where(active, out.reward, 0.0)
            terminated |= active & out.terminated
            frames = np.where(active[:, None, None, None], out.frames, frames)
            active &= ~out.terminated
            if keep_frames:
                kept.append(frames)
            bar.update(1)
    return returns, terminated, np.stack(kept, 1) if keep_frames else None


# ----------------------------------------------------------------------------- the whole run
def predict(
    world: WorldModel | str,
    policy: str | Callable[..., Any],
    episodes: int = 8,
    horizon: int = 200,
    real: bool = False,
    data: str | None = None,
    seed: int = 0,
    context: int = 4,
    keep_frames: bool = False,
    progress: bool = False,
    *,
    device: str = "cpu",
    precision: Precision = "fp32",
) -> PredictResult:
    """Run ``episodes`` dreams of ``horizon`` steps under ``policy`` (and with ``real`` the real env beside each).

    world: a loaded ``WorldModel`` (its current episode is replaced) or a checkpoint dir / shipped name / Hub id,
        loaded on ``device`` at ``precision``.
    policy: a name that needs only frames (``SEEING_POLICIES``: road, random), ``module:factory`` or a factory
        callable, ``(action_space, seed)`` or ``(env, seed)``; called once per episode (and once more per episode
        for the real env's side), with seed ``seed + i``.
    data: start the dreams from this trajectory file's episodes instead of the world's start contexts.
    context: frames each dream starts from.
    keep_frames: also return the frames (``dream_frames``, and ``real_frames`` with ``real``).

    Inputs are checked before anything is loaded or run: one-line InputError / ConfigError.
    """
    if episodes < 1 or horizon < 1 or context < 1:
        raise InputError(f"episodes ({episodes}), horizon ({horizon}) and context ({context}) must be >= 1")
    if seed < 0:
        raise InputError(f"seed must be >= 0 (episode i uses seed + i), got {seed}")
    if real and data:
        raise InputError("real and data both give the dreams their start: pick one")
    if isinstance(world, WorldModel):
        label, config = world.config.name, world.config
    else:
        path = resolve_world(world)
        label, config = world, load_config(path)
    visible = config.sampler.sinks + config.sampler.window
    if context > visible:
        raise InputError(f"context {context}: world {label!r} takes 1 to {visible} context frames (sinks + window)")
    seeds = [seed + i for i in range(episodes)]
    space = config.action.to_gym()
    name = policy_name(policy)
    dream_policies = [make_seeing_policy(policy, space, s) for s in seeds]
    real_policies = [make_seeing_policy(policy, space, s) for s in seeds] if real else []
    for p, s in zip(dream_policies + real_policies, seeds + seeds):
        p.reset(s)
    act = _Actor(name, config.action)

    env, reader = None, None
    if real:
        env = _source_env(config, label)
    elif data:
        from worldsim.data.compat import check_data_matches_world
        from worldsim.data.reader import TrajectoryReader

        reader = TrajectoryReader(data)
        check_data_matches_world(reader, config, label, "start dreams of")
    try:
        dtype = model_dtype(precision, device)
        wm = world if isinstance(world, WorldModel) else WorldModel.from_pretrained(path, device=device, dtype=dtype)
        if env is not None:
            starts = _real_starts(env, config, real_policies, act, seeds, context, horizon, progress)
        elif reader is not None:
            starts = _data_starts(reader, config, seeds, context, _intro_frames(config))
        else:
            starts = _shipped_starts(config, wm.starts, seeds, context)
    finally:
        if env is not None:
            env.close()
    dream_return, dream_terminated, dream_frames = _dream(
        wm, starts, dream_policies, act, seeds, horizon, keep_frames, progress
    )
    real_runs = starts.real
    return PredictResult(
        dream_return=dream_return,
        dream_terminated=dream_terminated,
        real_return=np.array([r.ret for r in real_runs]) if real_runs else None,
        real_terminated=np.array([r.terminated for r in real_runs]) if real_runs else None,
        dream_frames=dream_frames,
        real_frames=np.stack([r.frames for r in real_runs]) if real_runs and keep_frames else None,
        seeds=seeds,
        world=label,
        policy=name,
        horizon=horizon,
        frame_rate=config.frame_rate,
    )


def _source_env(config: WorldConfig, label: str) -> Any:
    """The world's real env, checked against the world's actions; one-line errors."""
    from worldsim.data.compat import describe_space
    from worldsim.envs.sources import make_source_env

    if not config.source_env:
        raise InputError(
            f"cannot run the real env beside world {label!r}: it names no real env (its config.source_env is empty)"
        )
    try:
        env = make_source_env(config.source_env)
    except WorldsimError as e:
        raise InputError(f"cannot make {label!r}'s real env {config.source_env}: {e}") from None
    try:
        env_spec = ActionSpec.from_gym(env.action_space)
    except WorldsimError:
        env_spec = None
    if env_spec != config.action:
        env.close()
        raise InputError(
            f"world {label!r} takes {describe_space(config.action)} but its real env {config.source_env} takes "
            f"{env.action_space}"
        )
    return env


# ----------------------------------------------------------------------------- reporting
def format_predict_table(result: PredictResult) -> str:
    """The markdown report ``worldsim predict`` prints: one row per episode, then the aggregate."""
    s = result.summary()
    real = result.real_return is not None
    seconds = f" ({result.horizon / result.frame_rate:.1f} s at {result.frame_rate} fps)" if result.frame_rate else ""
    lines = [f"{result.policy} in {result.world}: {s['episodes']} episodes of {result.horizon} steps{seconds}", ""]
    if real:
        lines += ["| episode | seed | dream return | real return | terminated (dream / real) |", "|" + "---|" * 5]
    else:
        lines += ["| episode | seed | dream return | terminated |", "|" + "---|" * 4]

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    for row in result.per_episode():
        cells = [str(row["episode"]), str(row["seed"]), f"{row['dream_return']:.2f}"]
        if real:
            cells += [f"{row['real_return']:.2f}", f"{yes(row['dream_terminated'])} / {yes(row['real_terminated'])}"]
        else:
            cells.append(yes(row["dream_terminated"]))
        lines.append("| " + " | ".join(cells) + " |")
    n = s["episodes"]
    dream_ended = round(s["dream_termination_rate"] * n)
    line = f"mean return: dream {s['dream_return_mean']:.2f} ± {s['dream_return_std']:.2f}"
    if real:
        line += (
            f", real {s['real_return_mean']:.2f} ± {s['real_return_std']:.2f}; MAE {s['return_mae']:.2f} "
            f"(bias {s['return_bias']:+.2f}); terminated: dream {dream_ended}/{n}, "
            f"real {round(s['real_termination_rate'] * n)}/{n}"
        )
    else:
        line += f"; terminated: {dream_ended}/{n}"
    return "\n".join([*lines, "", line])


def write_predict_json(result: PredictResult, path: str | Path) -> None:
    """``result.to_dict()`` as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2))


GAP = 2
"""Pixels between real and dream in a cell, and between cells (even, so mp4's even frame sizes hold)."""


def grid_frames(result: PredictResult, scale: int = 0) -> np.ndarray:
    """The episodes side by side in a grid, uint8 (H+1, gh, gw, 3): each cell real | dream (dream alone without the
    real env), ``scale`` screen pixels per frame pixel (0: at least 128 pixels a frame)."""
    if result.dream_frames is None:
        raise InputError("a video needs the frames: run predict with keep_frames=True")
    cells = result.dream_frames
    if result.real_frames is not None:
        gap = np.zeros((*cells.shape[:3], GAP, 3), np.uint8)
        cells = np.concatenate([result.real_frames, gap, cells], axis=3)
    N, T, h, w, _ = cells.shape
    scale = scale or max(1, math.ceil(128 / min(result.dream_frames.shape[2:4])))
    cells = cells.repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = h * scale, w * scale
    cols = math.ceil(math.sqrt(N * h / w))  # about square
    rows = math.ceil(N / cols)
    grid = np.zeros((T, rows * (h + GAP) - GAP, cols * (w + GAP) - GAP, 3), np.uint8)
    for i in range(N):
        r, c = divmod(i, cols)
        grid[:, r * (h + GAP) : r * (h + GAP) + h, c * (w + GAP) : c * (w + GAP) + w] = cells[i]
    return grid


def write_predict_video(result: PredictResult, path: str | Path) -> None:
    """The grid of episodes (``grid_frames``) as an .mp4 or .gif at the world's frame rate, atomically."""
    with VideoWriter(path, fps=result.frame_rate or 15) as video:
        for frame in grid_frames(result):
            video.append(frame)
