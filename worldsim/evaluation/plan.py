"""``worldsim plan``: model-predictive control in a world, executed in its real env, with real success and the time
per decision.

The planner (``worldsim.planning.CEMPlanner``) sees only the world and frames: no physics copy, no privileged state.
What it plans for (``--score``): ``judge`` (the source env's rule read off the dreamt frames; PushT: coverage from
the T's pose), ``reward`` (the world's reward head) or ``goal`` (closeness of the last dreamt frame to a goal
image); ``auto`` takes the judge where the source has one, else the reward head.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tyro

from worldsim.checkpoint import atomic_path, check_output_path, load_config
from worldsim.devices import resolve_device
from worldsim.engine import WorldModel
from worldsim.envs.judges import judge_for
from worldsim.envs.sources import source_world
from worldsim.errors import InputError
from worldsim.evaluation.metrics import bootstrap_ci, json_ready
from worldsim.evaluation.real import WorldView, source_env
from worldsim.evaluation.result import episode_success
from worldsim.planning import (
    CEMConfig,
    CEMPlanner,
    PlannerPolicy,
    Score,
    default_score,
    goal_score,
    judge_score,
    reward_score,
)
from worldsim.precision import Precision, model_dtype
from worldsim.progress import progress_bar
from worldsim.worlds import DEFAULT_WORLD, resolve_world

ScoreName = Literal["auto", "judge", "reward", "goal"]


@dataclass
class PlanConfig:
    """Plan in a world, act in its real env."""

    world: str = DEFAULT_WORLD
    """Shipped world name, world checkpoint dir or Hugging Face Hub repo id."""
    episodes: int = 10
    """Real episodes to plan through."""
    seed: int = 0
    """Real env seed of episode 0; episode i uses seed + i (and --search-seed + i)."""
    max_steps: int = 300
    """World steps per episode at most (PushT's own limit is 300)."""
    score: ScoreName = "auto"
    """What the plans maximise: judge, reward (the world's reward head), goal (--goal image); auto: judge where the
    source env has one, else reward."""
    goal: str = ""
    """With --score goal: a goal frame (an image file at the world's frame size)."""
    search: tyro.conf.OmitArgPrefixes[CEMConfig] = field(default_factory=CEMConfig)
    """The CEM search: --horizon, --candidates, --elites, --iterations, --hold, --std, --min-std, --search-seed."""
    replan_every: int = 5
    """World steps of each plan executed before planning again."""
    context: int = 4
    """Latest real frames the dreams start from."""
    real: bool = True
    """Execute the plans in the world's real source env (the only way a plan is judged here: a plan executed in
    its own dream would grade the world by itself)."""
    json: str = ""
    """Also write every episode's numbers and the settings to this JSON file."""
    precision: Precision = "auto"
    """fp32, bf16 or auto (bf16 where the hardware has it natively)."""
    device: str = "cpu"
    """cpu or cuda (cuda:N): where the world dreams."""

    def __post_init__(self) -> None:
        resolve_device(self.device)
        if not self.real:
            raise InputError("plan executes its plans in the world's real env: drop --no-real")
        for name in ("episodes", "max_steps", "replan_every", "context"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise InputError(f"--seed must be >= 0, got {self.seed}")
        if (self.score == "goal") != bool(self.goal):
            raise InputError("--goal IMAGE goes with --score goal, and --score goal needs --goal IMAGE")
        if self.goal and not Path(self.goal).is_file():
            raise InputError(f"--goal {self.goal}: no such file")
        if self.json:
            check_output_path(self.json)


@dataclass
class PlanReport:
    """The episodes and what they add up to."""

    world: str
    score: str
    episodes: list[PlannedEpisode]
    settings: dict

    def summary(self) -> dict:
        decisions = sum(e.decisions for e in self.episodes)
        success = [e.success for e in self.episodes if e.success is not None]
        best = np.array([e.best_reward for e in self.episodes])
        out = {
            "episodes": len(self.episodes),
            "best_reward_mean": float(best.mean()),
            "best_reward_ci95": list(bootstrap_ci(best)),
            "return_mean": float(np.mean([e.env_return for e in self.episodes])),
            "seconds_per_decision": sum(e.plan_seconds for e in self.episodes) / max(decisions, 1),
            "decisions": decisions,
        }
        if success:
            out["success_rate"] = float(np.mean(success))
            out["success_ci95"] = list(bootstrap_ci(np.array(success, float)))
        return out


@dataclass
class PlannedEpisode:
    """One episode a planner drove."""

    seed: int
    """The real env's reset seed."""
    steps: int
    """World steps taken."""
    success: bool | None
    """By the source env's own rule (``episode_success``: PushT, it terminated); None where it has no notion of
    success."""
    env_return: float
    """The env's reward summed over the episode."""
    best_reward: float
    """The env's highest reward of one world step (PushT: coverage / 0.95, capped at 1)."""
    decisions: int
    """Plans made."""
    plan_seconds: float
    """Wall clock spent planning (dreaming and scoring), all decisions together."""
    frames: np.ndarray | None = None
    """uint8 (steps + 1, h, w, 3) at the world's frame size, when kept."""


def run_planned_episode(
    planner: CEMPlanner,
    env: Any,
    seed: int,
    max_steps: int,
    replan_every: int,
    context: int,
    keep_frames: bool = False,
) -> PlannedEpisode:
    """Reset ``env`` with ``seed`` and let ``planner`` drive it (``PlannerPolicy``): plan from the latest ``context``
    real frames (and the actions between them), execute the plan's first ``replan_every`` actions (each held for the
    world's action repeat of env steps), plan again, until the episode ends or ``max_steps`` world steps."""
    config = planner.world.config
    view = WorldView(env, config)
    policy = PlannerPolicy(planner, replan_every, context)
    frame, _ = view.reset(seed=seed)
    frames = [frame]
    env_return, best, terminated, ended, steps = 0.0, -math.inf, False, False, 0
    while not ended and steps < max_steps:
        frame, reward, terminated, truncated, _ = view.step(policy(frame))
        frames.append(frame)
        steps += 1
        env_return += reward
        best = max(best, reward)
        ended = terminated or truncated
    success = episode_success(np.array([best]), np.array([terminated]), source_world(config.source_env))
    return PlannedEpisode(
        seed=seed,
        steps=steps,
        success=None if success is None else bool(success[0]),
        env_return=env_return,
        best_reward=best,
        decisions=policy.decisions,
        plan_seconds=policy.plan_seconds,
        frames=np.stack(frames) if keep_frames else None,
    )


def _score(cfg: PlanConfig, world: WorldModel, label: str) -> tuple[Score, str]:
    if cfg.score == "auto":
        return default_score(world, label)
    if cfg.score == "judge":
        return judge_score(judge_for(world.config.source_env, label)), f"judge ({world.config.source_env})"
    if cfg.score == "goal":
        from PIL import Image

        try:
            goal = np.asarray(Image.open(cfg.goal).convert("RGB"))
        except OSError as e:
            raise InputError(f"--goal {cfg.goal}: not an image ({e})") from None
        if goal.shape[:2] != tuple(world.config.frame_size):
            raise InputError(
                f"--goal {cfg.goal} is {goal.shape[1]}x{goal.shape[0]}; world {label!r} plans in "
                f"{world.config.frame_size[1]}x{world.config.frame_size[0]} frames: give a goal frame of that size"
            )
        return goal_score(world, goal), f"goal ({cfg.goal})"
    return reward_score(world, label)


def plan(cfg: PlanConfig, progress: bool = True) -> PlanReport:
    """Run ``cfg.episodes`` real episodes, each driven by a planner dreaming in the world."""
    path = resolve_world(cfg.world)
    config = load_config(path)
    visible = config.sampler.sinks + config.sampler.window
    if cfg.context > visible:
        raise InputError(f"--context {cfg.context}: world {cfg.world!r} takes 1 to {visible} context frames")
    world = WorldModel.from_pretrained(path, device=cfg.device, dtype=model_dtype(cfg.precision, cfg.device))
    score, score_name = _score(cfg, world, cfg.world)
    env = source_env(config, cfg.world, cfg.max_steps + 1)
    episodes = []
    try:
        with progress_bar(cfg.episodes, f"planning in {cfg.world}", progress) as bar:
            for i in range(cfg.episodes):
                search = CEMConfig(**{**asdict(cfg.search), "search_seed": cfg.search.search_seed + i})
                planner = CEMPlanner(world, score, search)
                episodes.append(
                    run_planned_episode(planner, env, cfg.seed + i, cfg.max_steps, cfg.replan_every, cfg.context)
                )
                bar.update(1)
    finally:
        env.close()
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("json",)}
    return PlanReport(cfg.world, score_name, episodes, settings)


def format_plan_table(report: PlanReport) -> str:
    s = report.summary()
    lines = [
        f"{report.world}: {s['episodes']} real episodes planned by CEM in the world, scored by the {report.score}",
        "",
        "| success | highest reward (mean) | return (mean) | decisions | seconds per decision |",
        "|---|---|---|---|---|",
    ]
    rate = (
        f"{s['success_rate']:.0%} [{s['success_ci95'][0]:.0%}, {s['success_ci95'][1]:.0%}]"
        if "success_rate" in s
        else "n/a"
    )
    lines.append(
        f"| {rate} | {s['best_reward_mean']:.3f} | {s['return_mean']:.2f} | {s['decisions']} | "
        f"{s['seconds_per_decision']:.2f} |"
    )
    return "\n".join(lines)


def write_plan_json(report: PlanReport, path: str | Path) -> None:
    per_episode = [{k: v for k, v in asdict(e).items() if k != "frames"} for e in report.episodes]
    doc = {"world": report.world, "score": report.score, "summary": report.summary(), "settings": report.settings}
    doc["episodes"] = per_episode
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_ready(doc), indent=2))


def run(cfg: PlanConfig) -> int:
    began = time.perf_counter()
    report = plan(cfg)
    if cfg.json:
        write_plan_json(report, cfg.json)
    print(format_plan_table(report))
    print(f"\n{time.perf_counter() - began:.0f} s in all")
    return 0
