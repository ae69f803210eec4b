"""``worldsim rank``: which policy is best? Several policies' episodes dreamed in one batch, ranked by predicted
success, beside their real success with ``--real``.

Examples::

    worldsim rank --world runs/pusht --policies a:make,b:make,random,idle --episodes 50 --horizon 300
    worldsim rank --world runs/pusht --policies a:make,b:make,random --episodes 50 --real --json rank.json \\
        --video-dir rank_videos        # real beside predicted: correlations, MMRV, a real | dream grid per policy

    import worldsim
    result = worldsim.rank("runs/pusht", ["mypkg.pusht:make", "random", "idle"], episodes=50, real=True)
    result.summary()   # {'success_pearson': ..., 'success_spearman': ..., 'success_mmrv': ..., ...}

Every policy's episodes run in one batched engine rollout (P policies x N episodes = P*N worlds stepping together,
``dream.run_policies``). Episode i of every policy uses seed + i: the same start context, dream noise,
policy seed and real env seed, so the policies are compared on the same starts (a paired comparison), and a
policy's numbers equal ``worldsim.predict`` of it alone. Success, clipping of Box actions and the refusal of NaN
actions are ``worldsim.predict``'s. Policies are ranked by predicted success rate, ties broken by the predicted mean
highest per-step reward, then the predicted mean return (by predicted mean return alone where the world's env has
no notion of success). With the real env, the predicted and real numbers are compared across policies by Pearson
and Spearman correlation and by MMRV, the mean maximum rank violation of SIMPLER (Li et al. 2024, "Evaluating
Real-World Robot Manipulation Policies in Simulation"; ``worldsim.evaluation.metrics.mmrv``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.agents.policy import policy_name
from worldsim.checkpoint import atomic_path, check_output_path
from worldsim.config import comma_list
from worldsim.engine import WorldModel
from worldsim.errors import ConfigError, InputError
from worldsim.evaluation.dream import DreamConfig, run_policies
from worldsim.evaluation.metrics import format_correlation, json_ready, mmrv, pearson, spearman
from worldsim.evaluation.report import format_ci, write_predict_video
from worldsim.evaluation.result import PredictResult
from worldsim.precision import Precision
from worldsim.video import check_video_path


@dataclass(kw_only=True)
class RankConfig(DreamConfig):
    """What ``worldsim rank`` runs and writes (the world and the dreams' options: ``DreamConfig``)."""

    policies: str
    """Two or more policies that see only frames, comma-separated: names in worldsim.agents.SEEING_POLICIES
    (random, idle, road, ...) or module:factory, a factory (action_space, seed) or (env, seed) of
    policy(frame) -> action."""
    episodes: int = 8
    """Episodes per policy; episode i of every policy uses seed + i (the same start for all)."""
    real: bool = False
    """Also run each policy's episodes in the world's real source env (one after another), forked as in
    worldsim predict --real, and compare the predicted ranking with the real one."""
    json: str = ""
    """Also write every number (per policy, per episode, the correlations and the times) as JSON to this file."""
    video_dir: str = ""
    """Write one grid video per policy into this folder (POLICY.mp4), each cell real | dream (dream only without
    --real)."""
    video_episodes: int = 8
    """Episodes (the first ones) in each policy's video grid."""

    def __post_init__(self) -> None:
        super().__post_init__()
        names = check_policies(comma_list(self.policies))  # before the rollouts, not after
        if self.video_episodes < 1:
            raise ConfigError(f"--video-episodes must be >= 1, got {self.video_episodes}")
        if self.json:
            check_output_path(self.json)
        if self.video_dir:
            video_paths(self.video_dir, names)


def check_policies(policies: Sequence[str | Callable[..., Any]]) -> list[str]:
    """The policies' names (``policy_name``), if there are two or more and no two share one; else a one-line
    ConfigError."""
    names = [policy_name(p) for p in policies]
    if len(names) < 2:
        raise ConfigError(f"ranking needs two or more policies, got {len(names)}: {', '.join(names) or 'none'}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"policies given more than once: {', '.join(twice)} (each policy once)")
    return names


def video_paths(video_dir: str | Path, names: Sequence[str]) -> dict[str, Path]:
    """Each policy's video file in ``video_dir`` (``POLICY.mp4``, characters other than letters, digits, ``._-``
    as ``_``), checked writable before any work; a one-line ConfigError otherwise. Creates nothing."""
    folder = Path(video_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"cannot write videos into {folder}: it is a file, not a directory")
    paths = {name: folder / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}.mp4" for name in names}
    by_file: dict[Path, str] = {}
    for name, path in paths.items():
        if path in by_file:
            raise ConfigError(f"policies {by_file[path]!r} and {name!r} would both write {path}: rename one")
        by_file[path] = name
        check_video_path(path)
    return paths


@dataclass
class RankResult:
    """Every policy's ``PredictResult`` (dreamed together), how long each side took, and the ranking."""

    results: list[PredictResult]
    """One per policy, in the order given."""
    dream_seconds: float
    """Wall time of the one batched dream rollout of every policy's episodes."""
    real_seconds: float
    """Wall time of every policy's real episodes, run one after another; 0 without the real env."""
    seed: int = 0
    """Seed of episode 0."""

    @property
    def has_real(self) -> bool:
        return self.results[0].real_return is not None

    @property
    def has_success(self) -> bool:
        return self.results[0].dream_success is not None

    def ranked(self) -> list[PredictResult]:
        """The policies, best predicted first: by predicted success rate, then mean highest per-step reward, then
        mean return (by mean return alone where the env has no notion of success)."""

        def score(r: PredictResult) -> tuple[float, ...]:
            ret = float(np.mean(r.dream_return))
            if r.dream_success is None:
                return (ret,)
            return float(np.mean(r.dream_success)), float(np.mean(r.dream_max_reward)), ret

        return sorted(self.results, key=score, reverse=True)  # stable: equal scores keep the order given

    def summary(self) -> dict[str, Any]:
        """How well the predicted numbers order and size the real ones across policies (with the real env): Pearson,
        Spearman and MMRV of the policies' success rates (``success_*``) and mean highest per-step rewards
        (``max_reward_*``; PushT: highest coverage / 0.95), where the env knows success, and mean returns
        (``return_*``; MMRV in return units); and the times. A correlation where one side is the same for every
        policy (no dream succeeds) is undefined: NaN here, null in the JSON, "undefined" in the table."""
        out: dict[str, Any] = {
            "policies": len(self.results),
            "episodes": len(self.results[0].seeds),
            "dream_worlds": len(self.results) * len(self.results[0].seeds),
            "dream_seconds": self.dream_seconds,
        }
        if not self.has_real:
            return out
        out["real_seconds"] = self.real_seconds
        pairs = {"return": ("dream_return", "real_return")}
        if self.has_success:
            pairs = {
                "success": ("dream_success", "real_success"),
                "max_reward": ("dream_max_reward", "real_max_reward"),
                **pairs,
            }
        for what, (dream_field, real_field) in pairs.items():
            predicted = np.array([np.mean(getattr(r, dream_field)) for r in self.results])
            real = np.array([np.mean(getattr(r, real_field)) for r in self.results])
            out[f"{what}_pearson"] = pearson(predicted, real)
            out[f"{what}_spearman"] = spearman(predicted, real)
            out[f"{what}_mmrv"] = mmrv(predicted, real)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything but the frames, JSON-ready: what ``worldsim rank --json`` writes. ``per_policy`` is in ranked
        order, each entry its rank, ``PredictResult.to_dict()`` and (real env, success) ``success_abs_error``."""
        first = self.results[0]
        head: dict[str, Any] = {"world": first.world, "horizon": first.horizon, "frame_rate": first.frame_rate,
                                "seed": self.seed}  # fmt: skip
        if first.success_reward is not None:
            head["success_reward"] = first.success_reward
        by_success = ["dream_success_rate", "dream_max_reward_mean"] if self.has_success else []
        head["ranked_by"] = [*by_success, "dream_return_mean"]
        head["ranking"] = [r.policy for r in self.ranked()]
        per_policy = []
        for k, r in enumerate(self.ranked(), 1):
            entry = {"rank": k, **r.to_dict()}
            for key in ("world", "horizon", "frame_rate", "success_reward"):
                entry.pop(key, None)  # said once, at the top
            if r.dream_success is not None and r.real_success is not None:
                entry["success_abs_error"] = abs(float(np.mean(r.dream_success)) - float(np.mean(r.real_success)))
            per_policy.append(entry)
        return json_ready({**head, **self.summary(), "per_policy": per_policy})


def rank(
    world: WorldModel | str,
    policies: Sequence[str | Callable[..., Any]],
    episodes: int = 8,
    horizon: int = 200,
    real: bool = False,
    seed: int = 0,
    context: int = 4,
    keep_frames: int = 0,
    progress: bool = False,
    *,
    device: str = "cpu",
    precision: Precision = "fp32",
    judge: bool = True,
) -> RankResult:
    """Dream ``episodes`` episodes of each of two or more ``policies`` in one batch (and with ``real`` run them in
    the real env) and rank the policies; see the module docstring.

    world: a loaded ``WorldModel`` or a checkpoint dir / shipped name / Hub id, loaded on ``device`` at
        ``precision``.
    policies: names that need only frames, ``module:factory`` strings or factory callables (as ``predict`` takes),
        each once.
    keep_frames: keep the frames of each policy's first ``keep_frames`` episodes (for ``write_rank_videos``).
    judge: score the dreams by the source env's judge where it has one (see ``worldsim.predict``).

    Every input is checked before anything is loaded or run (fewer than two policies, a name given twice, an unknown
    policy, ``real`` for a world without a real env): a one-line ConfigError / InputError.
    """
    check_policies(policies)
    if keep_frames < 0:
        raise InputError(f"keep_frames must be >= 0, got {keep_frames}")
    runs = run_policies(world, policies, episodes, horizon, real, None, seed, context, min(keep_frames, episodes),
                        progress, device=device, precision=precision, judge=judge)  # fmt: skip
    return RankResult(runs.results, runs.dream_seconds, runs.real_seconds, seed)


# ----------------------------------------------------------------------------- reporting
def format_rank_table(result: RankResult) -> str:
    """The markdown report ``worldsim rank`` prints: one row per policy, best predicted first, then how well the
    prediction orders the real policies and what each side cost."""
    first, real, success = result.results[0], result.has_real, result.has_success
    n = len(first.seeds)
    seconds = f" ({first.horizon / first.frame_rate:.1f} s at {first.frame_rate} fps)" if first.frame_rate else ""
    lines = [f"{len(result.results)} policies in {first.world}: {n} episodes each of {first.horizon} steps{seconds}",
             ""]  # fmt: skip
    head = ["#", "policy"]
    if success:
        head += ["predicted success", "real success", "success abs. error"] if real else ["predicted success"]
        head += ["predicted / real max reward" if real else "predicted max reward"]
    head += ["predicted / real return" if real else "predicted return"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, r in enumerate(result.ranked(), 1):
        s = r.summary()
        cells = [str(k), r.policy]
        if success:
            cells.append(f"{s['dream_success_rate']:.0%} {format_ci(s['dream_success_ci95'], '.0%')}")
            if real:
                cells.append(f"{s['real_success_rate']:.0%} {format_ci(s['real_success_ci95'], '.0%')}")
                cells.append(f"{abs(s['dream_success_rate'] - s['real_success_rate']):.0%}")
                cells.append(f"{s['dream_max_reward_mean']:.3f} / {s['real_max_reward_mean']:.3f}")
            else:
                cells.append(f"{s['dream_max_reward_mean']:.3f}")
        if real:
            cells.append(f"{s['dream_return_mean']:.2f} / {s['real_return_mean']:.2f}")
        else:
            cells.append(f"{s['dream_return_mean']:.2f} {format_ci(s['dream_return_ci95'])}")
        lines.append("| " + " | ".join(cells) + " |")
    summary = result.summary()
    lines.append("")
    for what, label in (("success", "success rate"), ("max_reward", "mean highest reward"), ("return", "mean return")):
        if f"{what}_pearson" in summary:
            lines.append(
                f"predicted vs real {label} across policies: Pearson {format_correlation(summary[f'{what}_pearson'])}"
                f", Spearman {format_correlation(summary[f'{what}_spearman'])}, MMRV {summary[f'{what}_mmrv']:.3f}"
            )
    if first.judge:
        head_rates = ", ".join(
            f"{r.policy} {r.summary()['dream_head_success_rate']:.0%}"
            for r in result.ranked()
            if "dream_head_success_rate" in r.summary()
        )
        lines.append(f"dreams scored by {first.judge} (state read off the dreamt frames); the termination head's "
                     f"success beside it: {head_rates}")  # fmt: skip
    time = f"time: dream {result.dream_seconds:.1f} s ({summary['dream_worlds']} worlds in one batch)"
    if real:
        time += f", real env {result.real_seconds:.1f} s (one episode after another)"
    lines += [time, "[low, high]: 95% bootstrap interval over episodes"]
    return "\n".join(lines)


def write_rank_json(result: RankResult, path: str | Path) -> None:
    """``result.to_dict()`` as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2))


def write_rank_videos(result: RankResult, video_dir: str | Path) -> dict[str, Path]:
    """One grid video per policy (``report.grid_frames``: real | dream cells) into ``video_dir``, named by
    ``video_paths``; returns them. Needs the frames (``rank(..., keep_frames=K)``)."""
    paths = video_paths(video_dir, [r.policy for r in result.results])
    for r in result.results:
        write_predict_video(r, paths[r.policy])
    return paths


def run(cfg: RankConfig) -> int:
    """``worldsim rank``: dream (and with ``real`` play) every policy's episodes, print the table, write the JSON and
    videos."""
    outputs = ("json", "video_dir", "video_episodes", "policies")  # the config's other fields are rank()'s own
    settings = {name: value for name, value in vars(cfg).items() if name not in outputs}
    keep_frames = cfg.video_episodes if cfg.video_dir else 0
    result = rank(**settings, policies=comma_list(cfg.policies), keep_frames=keep_frames, progress=True)
    if cfg.json:
        write_rank_json(result, cfg.json)
    if cfg.video_dir:
        write_rank_videos(result, cfg.video_dir)
    print(format_rank_table(result))
    return 0
