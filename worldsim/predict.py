"""``worldsim predict``: what will a policy do? Its rollouts dreamed in a world, beside the real env with ``--real``.

Examples::

    worldsim predict --policy road --episodes 8 --horizon 200          # dreams from the world's start contexts
    worldsim predict --policy road --real --json out.json --video grid.mp4   # the real env beside each dream
    worldsim predict --policy mypkg.drivers:make --data data/heldout.h5 --horizon 100
    worldsim predict --world runs/pusht --policy mypkg.pusht:make --episodes 50 --horizon 300 --real   # success rates

    import worldsim
    result = worldsim.predict("carracing", "road", episodes=4, horizon=100, real=True)
    result.summary()   # {'dream_return_mean': ..., 'dream_return_ci95': [low, high], 'return_mae': ...}

The policy sees only frames (``policy(frame uint8 H×W×3) -> action``, built by a factory ``(action_space, seed)``
or ``(env, seed)``; see ``worldsim.agents.policy.make_seeing_policy``). It drives all the dreams together, one
engine call per step. Each dream starts from ``context`` frames: a start context the world ships, the start of a
recorded episode (``data``), or with ``real`` the real env's own first frames after its intro (CarRacing's zoom-in).
There the episode forks: the real env goes on under the policy, and the dream goes on from the same frames under
another instance of the same policy, which has been shown the frames the real one saw, so both sides start in the
same state. The dream's return is what its reward head predicts; an episode ends where its termination fires (the
head's in the dream, the env's in reality), as an env episode would.

**Success.** Where the world's source env has a notion of success (``SourceWorld.success_reward``: PushT's reward
reaches 1.0 at 95% coverage), each episode also reports its highest per-step reward and whether it succeeded, by
one rule for both sides (``episode_success``): an env that terminates exactly when it succeeds
(``SourceWorld.success_terminates``, PushT) succeeded when the episode terminated, so in the dream when the world's
termination head fired. That head is a classifier trained on exactly the success event and it is what ends the
dream, as success ends the real episode; the reward head is a regression whose target reaches 1.0 only on that same
last frame, so a threshold on it would need a tolerance to tune. Other envs succeed when the reward reaches
``success_reward`` (less ``SUCCESS_TOLERANCE``).

**Judges.** Where the source env has a judge (``SourceWorld.judge``, ``worldsim.envs.judges``; PushT), the dream is
scored as the real env scores itself: each dreamt frame's state is read off its pixels (PushT: the T's pose) and
the env's own rule gives its reward (PushT: coverage / 0.95, capped at 1), so the dream's return, highest reward
and success are the judge's, and a dream ends where the judged reward reaches ``success_reward`` (as a PushT
episode ends on success). The heads' return and success come beside them (``dream_head_*``); ``judge=False``
(``--no-judge``) scores by the heads alone. ``summary()`` gives success rates, mean highest reward and mean
return, each with a 95% bootstrap interval over episodes.

**Actions.** A Box action outside the bounds (PushT's targets outside [0, 512]^2) is clipped into them, the same
clipped action going to the dream and the real env, with one ``ActionClippedWarning`` per policy naming it, the step
and the episode (``warnings.simplefilter("error", ActionClippedWarning)`` refuses instead). A NaN or infinite action,
a Discrete action out of range (no nearest choice means the same), or one of the wrong shape is refused: a one-line
InputError naming the policy, the step and the episode.

Episode i has its own seed, ``seed + i``: the noise of its dream, its policy's seed, its real env's seed and its
start context (start ``(seed + i) mod S`` of the world's S, or recorded episode ``(seed + i) mod E``), so a result
does not depend on how many episodes run together, nor on which other policies dream beside it
(``worldsim.rank`` dreams several policies in one batch through ``run_policies``).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from worldsim.agents.policy import Policy, policy_name
from worldsim.agents.registry import make_seeing_policy
from worldsim.checkpoint import atomic_path, check_output_path, load_config
from worldsim.config import ActionSpec, WorldConfig
from worldsim.devices import resolve_device
from worldsim.engine import WorldModel, check_actions, resize_frames
from worldsim.envs.judges import Judge, has_judge, judge_for
from worldsim.envs.sources import SourceWorld, source_world
from worldsim.errors import ActionClippedWarning, ConfigError, InputError, WorldsimError
from worldsim.precision import Precision, model_dtype
from worldsim.progress import progress_bar
from worldsim.stats import bootstrap_ci
from worldsim.video import VideoWriter, check_video_path
from worldsim.worlds import DEFAULT_WORLD, resolve_world

if TYPE_CHECKING:
    from worldsim.data.reader import TrajectoryReader  # h5py: imported only where data is read

SUCCESS_TOLERANCE = 1e-3
"""How far below ``success_reward`` a step's reward may fall and still count as reaching it (float rounding), for
envs whose success is a reward, not a termination."""


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
    device: str = "cpu"
    """cpu or cuda (cuda:N): where the world runs; refused in one line on a machine without it."""
    judge: bool = True
    """Score the dreams by the source env's judge where it has one (PushT: the T's pose read off each dreamt frame ->
    coverage -> success, the env's own rule), the world's heads beside it; --no-judge: by the heads alone."""

    def __post_init__(self) -> None:
        resolve_device(self.device)
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
    dream_max_reward: np.ndarray
    """(N,) float: the reward head's highest per-step reward over the dreamed steps, up to its termination."""
    real_return: np.ndarray | None
    """(N,) float: the real env's reward over the same steps after the fork (with real=True)."""
    real_terminated: np.ndarray | None
    """(N,) bool: the real env terminated within the horizon (with real=True)."""
    real_max_reward: np.ndarray | None
    """(N,) float: the real env's highest reward of one world step after the fork (with real=True)."""
    dream_frames: np.ndarray | None
    """uint8 (K, H+1, h, w, 3) of the first K episodes (all of them with keep_frames): the context's last frame,
    then the dream; after a termination the last frame repeats."""
    real_frames: np.ndarray | None
    """uint8 (K, H+1, h, w, 3) at the world's frame size, with real=True, of the episodes in dream_frames: the
    fork's frame, then the real env; after the episode ends the last frame repeats."""
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
    success_reward: float | None = None
    """The world's source env's success reward (``SourceWorld.success_reward``); None: no notion of success, and
    no success or highest-reward numbers in the summary."""
    dream_success: np.ndarray | None = None
    """(N,) bool where the env has a notion of success: the dream succeeded (``episode_success``)."""
    real_success: np.ndarray | None = None
    """(N,) bool with real=True where the env has a notion of success: the real episode succeeded."""
    judge: str = ""
    """The judge that scored the dreams (``worldsim.envs.judges``), or empty: the world's heads did."""
    dream_head_return: np.ndarray | None = None
    """(N,) float with a judge: the reward head's return over the same dreamt steps."""
    dream_head_success: np.ndarray | None = None
    """(N,) bool with a judge, where the env knows success: the termination head's verdict (``episode_success``)."""

    def summary(self) -> dict[str, Any]:
        """Means, (population) standard deviations and 95% bootstrap intervals over episodes (``*_ci95``: [low,
        high]) of the returns; termination rates; where the env knows success, success rates and the mean highest
        per-step reward, each with its interval; with the real env the dream's return error: ``return_mae`` = mean
        |dream - real|, ``return_bias`` = mean (dream - real)."""
        out: dict[str, Any] = {"episodes": len(self.seeds)}
        out.update(_side_summary("dream", self.dream_return, self.dream_terminated, self.dream_max_reward,
                                 self.dream_success))  # fmt: skip
        if self.dream_head_return is not None:
            out["dream_head_return_mean"] = float(np.mean(self.dream_head_return))
        if self.dream_head_success is not None:
            out["dream_head_success_rate"] = float(np.mean(self.dream_head_success))
        if self.real_return is not None and self.real_terminated is not None and self.real_max_reward is not None:
            out.update(_side_summary("real", self.real_return, self.real_terminated, self.real_max_reward,
                                     self.real_success))  # fmt: skip
            error = self.dream_return - self.real_return
            out.update(return_mae=float(np.mean(np.abs(error))), return_bias=float(np.mean(error)))
        return out

    def per_episode(self) -> list[dict[str, Any]]:
        """One dict per episode: seed, dream return and termination (and the real ones); where the env knows
        success, also each side's highest per-step reward and success."""
        rows = []
        for i, seed in enumerate(self.seeds):
            row: dict[str, Any] = {
                "episode": i,
                "seed": seed,
                "dream_return": float(self.dream_return[i]),
                "dream_terminated": bool(self.dream_terminated[i]),
            }
            if self.dream_success is not None:
                row.update(dream_max_reward=float(self.dream_max_reward[i]), dream_success=bool(self.dream_success[i]))
            if self.real_return is not None and self.real_terminated is not None:
                row.update(real_return=float(self.real_return[i]), real_terminated=bool(self.real_terminated[i]))
                if self.real_success is not None and self.real_max_reward is not None:
                    row.update(real_max_reward=float(self.real_max_reward[i]), real_success=bool(self.real_success[i]))
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Everything but the frames, JSON-ready: what ``worldsim predict --json`` writes."""
        head: dict[str, Any] = {"world": self.world, "policy": self.policy, "horizon": self.horizon,
                                "frame_rate": self.frame_rate}  # fmt: skip
        if self.success_reward is not None:
            head["success_reward"] = self.success_reward
        if self.judge:
            head["judge"] = self.judge
        return {**head, **self.summary(), "per_episode": self.per_episode()}


def _side_summary(
    side: str, returns: np.ndarray, terminated: np.ndarray, max_reward: np.ndarray, success: np.ndarray | None
) -> dict[str, Any]:
    """One side's (``dream`` or ``real``) aggregate: ``{side}_return_mean`` ... ``{side}_max_reward_ci95``."""
    out: dict[str, Any] = {
        f"{side}_return_mean": float(np.mean(returns)),
        f"{side}_return_std": float(np.std(returns)),
        f"{side}_return_ci95": list(bootstrap_ci(returns)),
        f"{side}_termination_rate": float(np.mean(terminated)),
    }
    if success is not None:
        out.update(
            {
                f"{side}_success_rate": float(np.mean(success)),
                f"{side}_success_ci95": list(bootstrap_ci(success)),
                f"{side}_max_reward_mean": float(np.mean(max_reward)),
                f"{side}_max_reward_ci95": list(bootstrap_ci(max_reward)),
            }
        )
    return out


def episode_success(max_reward: np.ndarray, terminated: np.ndarray, source: SourceWorld) -> np.ndarray | None:
    """Which episodes succeeded, (N,) bool; None where the env has no notion of success. The one rule for the real
    env and the dream: where the env terminates exactly when it succeeds (PushT), an episode that terminated (in a
    dream: whose termination head fired; see the module docstring for why not the reward head); elsewhere one whose
    highest per-step reward reached ``success_reward``."""
    if source.success_reward is None:
        return None
    if source.success_terminates:
        return np.array(terminated, bool)
    return np.asarray(max_reward) >= source.success_reward - SUCCESS_TOLERANCE


# ----------------------------------------------------------------------------- acting
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


# ----------------------------------------------------------------------------- starts
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
    policies: _PolicyEpisodes,
    seeds: list[int],
    context: int,
    horizon: int,
    keep: int,
    progress: bool,
) -> _Starts:
    """Run each real episode under its policy: the intro, the context, then ``horizon`` steps past the fork; the
    frames after the fork are kept for the first ``keep`` episodes."""
    from worldsim.envs.sources import frame_of

    size = _frame_size(config)
    repeat = real_repeat(env, config)
    intro = _intro_frames(config)
    fork = intro + context - 1  # world steps before the fork: the fork's frame is the context's last
    act = policies.act
    contexts, actions, seen, real = [], [], [], []
    with progress_bar(len(seeds) * (fork + horizon), f"real env: {act.name}", progress) as bar:
        for i, (seed, policy) in enumerate(zip(seeds, policies.real)):
            obs, _ = env.reset(seed=seed)
            frames = [_to_world(frame_of(env, obs), size)]
            taken: list[torch.Tensor] = []
            ret, best, terminated, ended = 0.0, -math.inf, False, False
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


# ----------------------------------------------------------------------------- the dream
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


# ----------------------------------------------------------------------------- the whole run
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
        env = _source_env(config, label, _intro_frames(config) + context - 1 + horizon)
    elif data:
        from worldsim.data.compat import check_data_matches_world
        from worldsim.data.reader import TrajectoryReader

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
            starts = [_data_starts(reader, config, seeds, context, _intro_frames(config))] * len(made)
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
    judge: bool = True,
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
    judge: score the dreams by the source env's judge where it has one (the env's rule on the state read off each
        dreamt frame; the heads' numbers come beside it); False: by the world's heads alone.

    Box actions outside the bounds are clipped with one ``ActionClippedWarning`` per policy; NaN or infinite actions
    are refused (see the module docstring). Inputs are checked before anything is loaded or run: one-line
    InputError / ConfigError.
    """
    runs = run_policies(world, [policy], episodes, horizon, real, data, seed, context,
                        episodes if keep_frames else 0, progress, device=device, precision=precision,
                        judge=judge)  # fmt: skip
    return runs.results[0]


def _source_env(config: WorldConfig, label: str, world_steps: int = 0) -> Any:
    """The world's real env, checked against the world's actions; one-line errors. ``world_steps``: the world steps
    one real episode must be able to run (intro, context and horizon); an env whose time limit would cut it sooner
    (PushT's 300 steps, counted from its reset, would end a 300-step horizon three steps early after a 4-frame
    context) is made with a limit that fits, so the real episode covers every step its dream does."""
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
    needed = world_steps * real_repeat(env, config)
    limit = env.spec.max_episode_steps if env.spec is not None else None
    if limit is not None and needed > limit:
        env.close()
        env = make_source_env(config.source_env, max_episode_steps=needed)
    return env


# ----------------------------------------------------------------------------- reporting
def format_ci(ci: Sequence[float], fmt: str = ".2f") -> str:
    """A 95% interval as ``[low, high]``."""
    return f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def format_predict_table(result: PredictResult) -> str:
    """The markdown report ``worldsim predict`` prints: one row per episode, then the aggregate."""
    s = result.summary()
    real = result.real_return is not None
    success = result.dream_success is not None
    seconds = f" ({result.horizon / result.frame_rate:.1f} s at {result.frame_rate} fps)" if result.frame_rate else ""
    lines = [f"{result.policy} in {result.world}: {s['episodes']} episodes of {result.horizon} steps{seconds}", ""]
    if real:
        head = ["episode", "seed", "dream return", "real return", "terminated (dream / real)"]
        head += ["max reward (dream / real)", "success (dream / real)"] if success else []
    else:
        head = ["episode", "seed", "dream return", "terminated"] + (["max reward", "success"] if success else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    for row in result.per_episode():
        cells = [str(row["episode"]), str(row["seed"]), f"{row['dream_return']:.2f}"]
        if real:
            cells += [f"{row['real_return']:.2f}", f"{yes(row['dream_terminated'])} / {yes(row['real_terminated'])}"]
            if success:
                cells += [f"{row['dream_max_reward']:.3f} / {row['real_max_reward']:.3f}",
                          f"{yes(row['dream_success'])} / {yes(row['real_success'])}"]  # fmt: skip
        else:
            cells.append(yes(row["dream_terminated"]))
            if success:
                cells += [f"{row['dream_max_reward']:.3f}", yes(row["dream_success"])]
        lines.append("| " + " | ".join(cells) + " |")
    n = s["episodes"]
    dream_ended = round(s["dream_termination_rate"] * n)
    line = f"mean return: dream {s['dream_return_mean']:.2f} ± {s['dream_return_std']:.2f} "
    line += format_ci(s["dream_return_ci95"])
    if real:
        line += (
            f", real {s['real_return_mean']:.2f} ± {s['real_return_std']:.2f} {format_ci(s['real_return_ci95'])}; "
            f"MAE {s['return_mae']:.2f} (bias {s['return_bias']:+.2f}); terminated: dream {dream_ended}/{n}, "
            f"real {round(s['real_termination_rate'] * n)}/{n}"
        )
    else:
        line += f"; terminated: {dream_ended}/{n}"
    lines += ["", line]
    if success:
        sides = ["dream", "real"] if real else ["dream"]
        lines.append(
            "success: "
            + ", ".join(
                f"{side} {s[f'{side}_success_rate']:.0%} {format_ci(s[f'{side}_success_ci95'], '.0%')}"
                for side in sides
            )  # fmt: skip
            + "; mean max reward: "
            + ", ".join(
                f"{side} {s[f'{side}_max_reward_mean']:.3f} {format_ci(s[f'{side}_max_reward_ci95'], '.3f')}"
                for side in sides
            )  # fmt: skip
        )
    lines.append("[low, high]: 95% bootstrap interval over episodes")
    return "\n".join(lines)


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
