"""The batched dreaming behind ``predict`` and ``rank``: several policies' episodes dreamed in one batch of worlds
(``run_policies``), each from a start context (shipped, from data, or the real env's own first frames), the policy
acting on frames with its actions checked (``_Actor``), and the dreams scored by the world's heads or the source
env's judge (``dream_rows``). See ``worldsim.evaluation.predict`` for what a run means; change how a batch is
dreamed here."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from worldsim.agents.policy import Policy, policy_name
from worldsim.agents.registry import make_seeing_policy
from worldsim.checkpoint import load_config
from worldsim.config import ActionSpec, WorldConfig
from worldsim.data.compat import check_data_matches_world
from worldsim.data.reader import TrajectoryReader
from worldsim.devices import resolve_device
from worldsim.engine import WorldModel
from worldsim.envs.judges import Judge, has_judge, judge_for
from worldsim.envs.sources import SourceWorld, frame_of, source_world
from worldsim.errors import ActionClippedWarning, InputError
from worldsim.evaluation.real import env_action, frame_size, intro_frames, real_repeat, source_env, to_world
from worldsim.evaluation.result import SUCCESS_TOLERANCE, PredictResult, episode_success
from worldsim.inputs import check_actions, resize_frames
from worldsim.precision import Precision, model_dtype
from worldsim.progress import progress_bar
from worldsim.worlds import DEFAULT_WORLD, resolve_world


@dataclass
class _Actor:
    """A policy name for messages and the world's action check: turns a policy's output into a checked action."""

    name: str
    spec: ActionSpec
    warned: bool = False
    """Whether this policy has been told its actions are clipped into the Box (once per policy)."""

    def __call__(self, policy: Policy, frame: np.ndarray, step: int, episode: int, where: str) -> torch.Tensor:
        """The action ``policy`` takes on ``frame``, validated; a one-line InputError says who, when and where."""
        at = f"at step {step} of episode {episode} ({where})"
        try:
            action = policy(frame)
        except Exception as e:  # user code: its failure is an input error that names the policy
            raise InputError(
                f"policy {self.name!r} failed {at}: {type(e).__name__}: {e} (a policy that drives a dream sees only "
                f"frames, uint8 {frame.shape}, not the env's state)"
            ) from e
        if self.spec.kind == "box":
            action = self._into_box(action, at)
        try:
            return check_actions(self.spec, action, ())
        except InputError as e:
            raise InputError(f"policy {self.name!r} returned {action!r} {at}: {e}") from None

    def _into_box(self, action: Any, at: str) -> Any:
        """A finite Box action outside the bounds, clipped into them (warned the first time); anything else as it
        came, for ``check_actions`` to pass or refuse (NaN, inf, a wrong shape, not a number)."""
        try:
            a = np.asarray(action)
        except (TypeError, ValueError):
            return action
        low = np.reshape(self.spec.low, self.spec.shape)
        high = np.reshape(self.spec.high, self.spec.shape)
        if a.dtype.kind not in "biuf" or a.shape != low.shape or not np.isfinite(a).all():
            return action
        if ((a >= low) & (a <= high)).all():
            return action
        if not self.warned:
            self.warned = True
            warnings.warn(
                ActionClippedWarning(
                    f"policy {self.name!r} returned {a.tolist()} {at}, outside {self.spec.to_gym()}: clipped into it "
                    "(said once per policy; its later actions outside the bounds are clipped too)"
                ),
                stacklevel=3,
            )
        return np.clip(a.astype(np.float64), low, high)


@dataclass
class _PolicyEpisodes:
    """One policy's instances, one per episode for the dream and one per real episode, and its action check."""

    act: _Actor
    dream: list[Policy]
    real: list[Policy]


def _make_policies(
    policy: str | Callable[..., Any], config: WorldConfig, seeds: list[int], real: bool
) -> _PolicyEpisodes:
    """Instance i of each side built and reset with seed ``seeds[i]``; a bad policy fails here, before any work."""
    space = config.action.to_gym()
    dream = [make_seeing_policy(policy, space, s) for s in seeds]
    twins = [make_seeing_policy(policy, space, s) for s in seeds] if real else []
    for p, s in zip(dream + twins, seeds + seeds):
        p.reset(s)
    return _PolicyEpisodes(_Actor(policy_name(policy), config.action), dream, twins)


@dataclass
class _RealEpisode:
    """One real episode after the fork."""

    frames: np.ndarray | None
    """uint8 (H+1, h, w, 3) when kept: the fork's frame first; after the end the last frame repeats."""
    ret: float
    terminated: bool
    max_reward: float
    """The highest reward of one world step (the env's rewards summed over the action repeat) after the fork."""


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
    return _Starts(resize_frames(picked, frame_size(config)).numpy(), None)


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
    return _Starts(resize_frames(torch.from_numpy(np.stack(frames)), frame_size(config)).numpy(), np.stack(actions))


def _real_starts(
    env: Any,
    config: WorldConfig,
    policies: _PolicyEpisodes,
    seeds: list[int],
    context: int,
    horizon: int,
    keep: int,
    progress: bool,
) -> _Starts:
    """Run each real episode under its policy: the intro, the context, then ``horizon`` steps past the fork; the
    frames after the fork are kept for the first ``keep`` episodes."""
    size = frame_size(config)
    repeat = real_repeat(env, config)
    intro = intro_frames(config)
    fork = intro + context - 1  # world steps before the fork: the fork's frame is the context's last
    act = policies.act
    contexts, actions, seen, real = [], [], [], []
    with progress_bar(len(seeds) * (fork + horizon), f"real env: {act.name}", progress) as bar:
        for i, (seed, policy) in enumerate(zip(seeds, policies.real)):
            obs, _ = env.reset(seed=seed)
            frames = [to_world(frame_of(env, obs), size)]
            taken: list[torch.Tensor] = []
            ret, best, terminated, ended = 0.0, -math.inf, False, False
            for t in range(fork + horizon):
                action = act(policy, frames[-1], t, i, "real env")
                reward = 0.0
                for _ in range(repeat):  # the action held for the world's one step, as the recorder does
                    obs, r, terminated, truncated, _ = env.step(env_action(action, env.action_space))
                    reward += float(r)
                    ended = bool(terminated or truncated)
                    if ended:
                        break
                frames.append(to_world(frame_of(env, obs), size))
                taken.append(action)
                if t >= fork:
                    ret += reward
                    best = max(best, reward)
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
            real.append(_RealEpisode(np.stack(after) if i < keep else None, ret, bool(terminated), best))
    return _Starts(np.stack(contexts), np.stack(actions) if context > 1 else None, seen, real)


@dataclass
class DreamRow:
    """One dream of a batched rollout: the policy instance that drives it, its seed and where it starts."""

    policy: Policy
    """The instance that acts in this dream (and only in it)."""
    act: _Actor
    """Its policy's action check (and name, for messages)."""
    episode: int
    """Its episode index within its policy's episodes, for messages."""
    seed: int
    """The seed of its dream's noise."""
    context: np.ndarray
    """uint8 (T, h, w, 3): the frames it starts from (T the same for every row of a rollout)."""
    actions: np.ndarray | None
    """(T-1, ...) actions between the context frames, or None (null actions)."""
    seen: list[np.ndarray] = field(default_factory=list)
    """Frames its policy is shown before the dream starts (what its real twin acted on before the fork)."""
    keep_frames: bool = False
    """Return this dream's frames."""


@dataclass
class HeadOutcome:
    """What the world's own reward and termination heads said of each row, up to the dream's end."""

    returns: np.ndarray
    """(N,) float: the reward head summed."""
    terminated: np.ndarray
    """(N,) bool: the termination head fired."""
    max_reward: np.ndarray
    """(N,) float: the reward head's highest per-step reward."""


@dataclass
class DreamOutcome:
    """What each row of a rollout earned, and the kept frames: by the source's judge where one scored the dream
    (the env's own rule on the state read off each dreamt frame), else by the world's heads."""

    returns: np.ndarray
    """(N,) float: rewards summed up to the termination."""
    terminated: np.ndarray
    """(N,) bool: the dream ended within the horizon (the judge saw success, or the termination head fired)."""
    max_reward: np.ndarray
    """(N,) float: the highest per-step reward up to the termination."""
    frames: list[np.ndarray | None]
    """Per row, uint8 (H+1, h, w, 3) where it keeps frames: the context's last frame, then the dream."""
    heads: HeadOutcome | None = None
    """With a judge: what the heads said beside it (without one, the fields above are the heads')."""


def dream_rows(
    wm: WorldModel,
    rows: Sequence[DreamRow],
    horizon: int,
    progress: bool = False,
    judge: Judge | None = None,
    success_reward: float | None = None,
) -> DreamOutcome:
    """All rows' dreams together, one ``step`` per time step; row i's dream depends only on row i (its own noise
    generator, start and policy instance), not on the rows beside it.

    With a ``judge`` each dreamt frame is scored by the source env's own rule on the state the judge reads off it,
    and a dream ends where that reward reaches ``success_reward`` (as a PushT episode ends on success); the heads'
    outcomes come beside it. Without one, the heads score the dream and the termination head ends it."""
    N = len(rows)
    generators = [torch.Generator().manual_seed(row.seed) for row in rows]
    contexts = np.stack([row.context for row in rows])  # (N, T, h, w, 3)
    actions = None if rows[0].actions is None else np.stack([row.actions for row in rows])  # (N, T-1, ...)
    frames = wm.reset(contexts, actions=actions, generator=generators)  # (N, h, w, 3)
    for row in rows:  # bring each dream's policy to its real twin's state at the fork
        for t, frame in enumerate(row.seen):
            row.act(row.policy, frame, t, row.episode, "real env, shown to the dream's policy")
    returns, terminated, best = np.zeros(N), np.zeros(N, bool), np.full(N, -np.inf)
    heads = HeadOutcome(np.zeros(N), np.zeros(N, bool), np.full(N, -np.inf))
    live = np.arange(N)  # the rows still dreaming, in the engine's batch order
    keep = np.array([row.keep_frames for row in rows])
    kept = [frames[keep]]
    with progress_bar(horizon, f"dream ({N} worlds)", progress) as bar:
        for t in range(horizon):
            actions = [rows[i].act(rows[i].policy, frames[i], t, rows[i].episode, "dream") for i in live]
            out = wm.step(torch.stack(actions))
            heads.returns[live] += out.reward
            heads.max_reward[live] = np.maximum(heads.max_reward[live], out.reward)
            heads.terminated[live] |= out.terminated
            reward, ended = out.reward, out.terminated
            if judge is not None:
                reward = judge.reward(out.frames)
                ended = reward >= (success_reward if success_reward is not None else np.inf) - SUCCESS_TOLERANCE
            returns[live] += reward
            best[live] = np.maximum(best[live], reward)
            terminated[live] |= ended
            frames[live] = out.frames  # an ended dream's last frame stays
            if keep.any():
                kept.append(frames[keep])
            bar.update(1)
            if ended.any():  # an ended dream leaves the batch: the rest step cheaper
                going = np.flatnonzero(~ended)
                if len(going) == 0:
                    kept += [frames[keep]] * (horizon - 1 - t) if keep.any() else []
                    bar.update(horizon - 1 - t)
                    break
                wm.keep_worlds(going.tolist())
                live = live[going]
    stacked = np.stack(kept, 1)  # (K, H+1, h, w, 3)
    where = np.cumsum(keep) - 1
    frames_kept = [stacked[where[i]] if keep[i] else None for i in range(N)]
    return DreamOutcome(returns, terminated, best, frames_kept, heads if judge is not None else None)


@dataclass
class DreamConfig:
    """The options ``worldsim predict`` and ``worldsim rank`` share (``run_policies``' own arguments): the world, how
    long and from what its dreams run, where and at what precision, and how they are scored."""

    world: str = DEFAULT_WORLD
    """World: checkpoint dir, shipped world name or Hugging Face Hub repo id (owner/name[@revision])."""
    horizon: int = 200
    """Steps each dream (and real episode) runs after its context, at the world's frame rate."""
    seed: int = 0
    """Seed of episode 0 (its dream noise, policy, real env and start context); episode i uses seed + i."""
    context: int = 4
    """Frames each dream starts from (a shipped start gives at most the frames it has)."""
    precision: Precision = "auto"
    """fp32, bf16 or auto (bf16 where the hardware has it natively)."""
    device: str = "cpu"
    """cpu or cuda (cuda:N): where the world runs; refused in one line on a machine without it."""
    judge: bool = True
    """Score the dreams by the source env's judge where it has one (PushT: the T's pose read off each dreamt frame ->
    coverage -> success, the env's own rule), the world's heads beside it; --no-judge: by the heads alone."""

    def __post_init__(self) -> None:
        resolve_device(self.device)


@dataclass
class PolicyRuns:
    """Several policies' episodes, dreamed in one rollout (and run in the real env), and what each side cost."""

    results: list[PredictResult]
    """One per policy, in the order given."""
    dream_seconds: float
    """Wall time of the one batched dream rollout (all policies)."""
    real_seconds: float
    """Wall time of every real episode (all policies, one after another); 0 without the real env."""


def run_policies(
    world: WorldModel | str,
    policies: Sequence[str | Callable[..., Any]],
    episodes: int = 8,
    horizon: int = 200,
    real: bool = False,
    data: str | None = None,
    seed: int = 0,
    context: int = 4,
    keep: int = 0,
    progress: bool = False,
    *,
    device: str = "cpu",
    precision: Precision = "fp32",
    judge: bool = True,
) -> PolicyRuns:
    """``episodes`` episodes of each policy, all dreamed in one batch of P x N worlds; episode i of every policy
    uses seed + i (the same start, dream noise, policy seed and real env seed: a paired comparison), so a policy's
    result equals ``predict`` of it alone. ``keep``: return the frames of each policy's first ``keep`` episodes.
    Inputs (every policy included) are checked before anything is loaded or run. See ``predict`` for the rest."""
    if episodes < 1 or horizon < 1 or context < 1:
        raise InputError(f"episodes ({episodes}), horizon ({horizon}) and context ({context}) must be >= 1")
    if seed < 0:
        raise InputError(f"seed must be >= 0 (episode i uses seed + i), got {seed}")
    if real and data:
        raise InputError("real and data both give the dreams their start: pick one")
    resolve_device(device)
    if isinstance(world, WorldModel):
        label, config = world.config.name, world.config
    else:
        path = resolve_world(world)
        label, config = world, load_config(path)
    visible = config.sampler.sinks + config.sampler.window
    if context > visible:
        raise InputError(f"context {context}: world {label!r} takes 1 to {visible} context frames (sinks + window)")
    seeds = [seed + i for i in range(episodes)]
    made = [_make_policies(p, config, seeds, real) for p in policies]
    source = source_world(config.source_env)
    # Where the source env has a judge, the dream is scored by the env's own rule on the state read off its frames.
    scorer = judge_for(config.source_env, label) if judge and has_judge(config.source_env) else None

    env, reader = None, None
    if real:
        env = source_env(config, label, intro_frames(config) + context - 1 + horizon)
    elif data:
        reader = TrajectoryReader(data)
        check_data_matches_world(reader, config, label, "start dreams of")
    real_seconds = 0.0
    try:
        dtype = model_dtype(precision, device)
        wm = world if isinstance(world, WorldModel) else WorldModel.from_pretrained(path, device=device, dtype=dtype)
        if env is not None:
            began = time.perf_counter()
            starts = [_real_starts(env, config, m, seeds, context, horizon, keep, progress) for m in made]
            real_seconds = time.perf_counter() - began
        elif reader is not None:
            starts = [_data_starts(reader, config, seeds, context, intro_frames(config))] * len(made)
        else:
            starts = [_shipped_starts(config, wm.starts, seeds, context)] * len(made)
    finally:
        if env is not None:
            env.close()
    rows = [
        DreamRow(
            m.dream[i],
            m.act,
            episode=i,
            seed=s,
            context=start.frames[i],
            actions=None if start.actions is None else start.actions[i],
            seen=start.seen[i] if start.seen else [],
            keep_frames=i < keep,
        )
        for m, start in zip(made, starts)
        for i, s in enumerate(seeds)
    ]
    began = time.perf_counter()
    outcome = dream_rows(wm, rows, horizon, progress, scorer, source.success_reward)
    dream_seconds = time.perf_counter() - began
    results = []
    for k, (m, start) in enumerate(zip(made, starts)):
        mine = slice(k * episodes, (k + 1) * episodes)  # policy k's rows
        heads = outcome.heads
        dream = DreamOutcome(
            outcome.returns[mine], outcome.terminated[mine], outcome.max_reward[mine], outcome.frames[mine],
            None if heads is None else HeadOutcome(heads.returns[mine], heads.terminated[mine], heads.max_reward[mine]),
        )  # fmt: skip
        results.append(
            PredictResult(**_outcomes(dream, start.real, source), seeds=seeds, world=label, policy=m.act.name,
                          horizon=horizon, frame_rate=config.frame_rate, success_reward=source.success_reward,
                          judge=type(scorer).__name__ if scorer is not None else "")
        )  # fmt: skip
    return PolicyRuns(results, dream_seconds, real_seconds)


def _outcomes(dream: DreamOutcome, real: list[_RealEpisode] | None, source: SourceWorld) -> dict[str, Any]:
    """One policy's dreams and real episodes: the per-episode fields of its ``PredictResult``."""
    kept = [f for f in dream.frames if f is not None]
    out: dict[str, Any] = {
        "dream_return": dream.returns,
        "dream_terminated": dream.terminated,
        "dream_max_reward": dream.max_reward,
        "dream_frames": np.stack(kept) if kept else None,
        "dream_success": episode_success(dream.max_reward, dream.terminated, source),
        "dream_head_return": None if dream.heads is None else dream.heads.returns,
        "dream_head_success": None
        if dream.heads is None
        else episode_success(dream.heads.max_reward, dream.heads.terminated, source),
        "real_return": None,
        "real_terminated": None,
        "real_max_reward": None,
        "real_frames": None,
        "real_success": None,
    }
    if real:
        terminated, best = np.array([r.terminated for r in real]), np.array([r.max_reward for r in real])
        out.update(
            real_return=np.array([r.ret for r in real]),
            real_terminated=terminated,
            real_max_reward=best,
            real_frames=np.stack([r.frames for r in real[: len(kept)]]) if kept else None,
            real_success=episode_success(best, terminated, source),
        )
    return out
