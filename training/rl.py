"""PPO in the dream: a pixel policy trained entirely inside a world's native vector env (``worldsim rl train``).
The run is here; PPO's maths in ``training/ppo.py``, the dreams it collects in ``training/rollouts.py``, its config
in ``training/config.py``.

Why our own single-file PPO (cleanrl's recipe: Huang et al. 2022, "The 37 implementation details of PPO") and not
Stable-Baselines3 through ``worldsim.envs.sb3``: the rollout is one batched engine call per step either way, but
here the policy acts on a frame stack kept as one tensor (no per-env Python wrappers), the checkpoint is safetensors
+ JSON (SB3's zip pickles its optimizer and settings), and a resumed run keeps the policy, optimiser, return
normaliser and RNG (its dreams start new episodes). ``benchmarks/measure_rl_sb3.py`` times the two on the same dreams.

What PPO sees: rewards from the world's reward head, episodes ended by its termination head or by the real env's
time limit (``rl_eval.dream_episode_steps``), a truncated episode bootstrapped with the value of its last frame.
Rewards are scaled by a running std of the discounted return and clipped to +-10 (as SB3's VecNormalize and cleanrl
do).

Gap tools (``docs/rl.md`` measures each): ``--noise-levels`` draws each dream's context noise (how much the world
distrusts its own past frames) per update from a range, so the agent does not learn one sampler's quirks;
``--dream-dropout`` gives every dream its own dropout mask over the world's MLP units (``DropoutDreams``);
``--init`` starts from a trained agent, so a dream agent can be fine-tuned briefly with ``--real`` (counted);
``--eval-real-every`` scores the agent on real tracks now and then (those real steps are counted and reported).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from worldsim.agents.ppo import (
    ActorCritic,
    AgentConfig,
    agent_dir,
    check_agent_fits,
    load_agent,
    read_agent_card,
    save_agent,
)
from worldsim.errors import InputError
from worldsim.evaluation import rl_eval
from worldsim.progress import report_run
from worldsim.training.config import RLTrainConfig
from worldsim.training.loop import _deferred_interrupt, load_state_file, require_tensorboard, save_state
from worldsim.training.ppo import ppo_update
from worldsim.training.rollouts import Rollouts

STATE_FILE, AGENT_DIR, CONFIG_FILE = "state.pt", "agent", "rl_config.json"
BEST_REAL_DIR = "agent_best_real"
"""Where ``--eval-real-every`` keeps the agent at its best real check (the run's own ``agent/`` is its end)."""
STATE_VERSION = 1


def train_agent(cfg: RLTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) PPO in the dream; returns a summary. Ctrl-C saves a checkpoint and returns."""
    from torch.utils.tensorboard import SummaryWriter  # tensorboard: the train extra (checked by require_tensorboard)

    run = AgentRun.start(cfg)
    tb = SummaryWriter(str(run.out / "tb"))
    started = time.perf_counter()
    seconds_before = run.counters["seconds"]
    last_save = started
    interrupted = False
    bar = tqdm(total=cfg.steps, initial=min(run.counters["env_steps"], cfg.steps), desc=f"{run.where} steps",
               unit="step", disable=not progress, dynamic_ncols=True)  # fmt: skip
    with _deferred_interrupt() as stop:
        while run.counters["env_steps"] < cfg.steps:
            tick = time.perf_counter()
            stats, collect_s = run.update()
            run.counters["seconds"] = seconds_before + time.perf_counter() - started
            bar.update(run.per_update)
            run.log(tb, bar, stats, collect_s, tick)
            if cfg.eval_real_every and run.counters["updates"] % cfg.eval_real_every == 0:
                run.real_check(tb)
            if stop.requested or (cfg.max_minutes and time.perf_counter() - started > 60 * cfg.max_minutes):
                interrupted = stop.requested
                break
            if time.perf_counter() - last_save > 60 * cfg.save_minutes:
                run.checkpoint()
                last_save = time.perf_counter()
    bar.close()
    run.counters["seconds"] = seconds_before + time.perf_counter() - started
    run.checkpoint()
    tb.close()
    run.dreams.close()
    return run.summary(interrupted)


@dataclass
class AgentRun:
    """What a PPO run carries from update to update: its dreams, the agent and its optimiser, the generator of every
    draw, the counters (steps, updates, seconds, real checks) and its directory."""

    cfg: RLTrainConfig
    out: Path
    dreams: Rollouts
    net: ActorCritic
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    counters: dict[str, Any]

    @property
    def where(self) -> str:
        """What the episodes trained on are, in logs and the bar."""
        return "real_env" if self.cfg.real else "dream"

    @property
    def per_update(self) -> int:
        return self.cfg.num_envs * self.cfg.rollout

    @classmethod
    def start(cls, cfg: RLTrainConfig) -> AgentRun:
        """Check the run directory and the world, build (or restore, with ``cfg.resume``) the agent, and start the
        dreams; a bad run directory fails before the world loads."""
        cfg.check()
        out = Path(cfg.out)
        if not cfg.resume and (out / STATE_FILE).exists():
            raise InputError(f"{out} already holds a run: pass --resume to continue it, or another --out")
        state = load_state_file(out / STATE_FILE) if cfg.resume else None
        if state is not None and state.get("kind") != "rl":
            raise InputError(f"{out / STATE_FILE} is not a worldsim rl run")
        dreams = Rollouts(cfg)
        config = dreams.config
        if cfg.eval_real_every and not config.source_env:
            dreams.close()
            raise InputError(f"--eval-real-every: world {config.name!r} names no real env (config.source_env is empty)")
        agent_cfg = AgentConfig(frame_size=list(config.frame_size), history=cfg.history, action=config.action,
                                world=config.name)  # fmt: skip
        init_steps = {"dream": 0, "real": 0}
        if state is None and cfg.init:
            agent_cfg, start_weights, init_steps = _init_agent(cfg.init, config, cfg.history)
        net = ActorCritic(agent_cfg).eval()
        if state is None and cfg.init:
            net.load_state_dict(start_weights)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=1e-5)
        generator = torch.Generator().manual_seed(cfg.seed)
        counters = {"env_steps": 0, "updates": 0, "real_steps": 0, "seconds": 0.0, "real_evals": [],
                    "init_dream_steps": init_steps["dream"], "init_real_steps": init_steps["real"]}  # fmt: skip
        if state is not None:
            net.load_state_dict(state["net"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            counters.update(json.loads(state["counters"]))
            dreams.scale.load(json.loads(state["scale"]))
        dreams.start(cfg.seed + counters["updates"] * cfg.num_envs)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        return cls(cfg, out, dreams, net, optimizer, generator, counters)

    def update(self) -> tuple[dict[str, float], float]:
        """One PPO update (the learning rate annealed to 0 over ``cfg.steps``): collect a batch, train on it, count
        it; returns PPO's statistics and the seconds the collection took."""
        cfg, counters = self.cfg, self.counters
        tick = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * max(0.0, 1.0 - counters["env_steps"] / cfg.steps)
        batch = self.dreams.collect(self.net, self.generator)
        collect_s = time.perf_counter() - tick
        stats = ppo_update(self.net, self.optimizer, batch, cfg, self.generator)
        counters["env_steps"] += self.per_update
        counters["real_steps"] += self.per_update if cfg.real else 0
        counters["updates"] += 1
        return stats, collect_s

    def log(self, tb: Any, bar: Any, stats: dict[str, float], collect_s: float, tick: float) -> None:
        """PPO's statistics, the speed and the latest episodes' mean return, in TensorBoard and on the bar."""
        step = self.counters["env_steps"]
        for k, v in stats.items():
            tb.add_scalar(f"ppo/{k}", v, step)
        tb.add_scalar(f"speed/{self.where}_steps_per_s", self.per_update / collect_s, step)
        tb.add_scalar("speed/steps_per_s", self.per_update / (time.perf_counter() - tick), step)
        recent = self.dreams.finished[-self.cfg.num_envs :]
        if recent:
            tb.add_scalar(f"return/{self.where}", float(np.mean(recent)), step)
            bar.set_postfix(dream_return=f"{np.mean(recent):.0f}", refresh=False)

    def real_check(self, tb: Any) -> None:
        """Score the agent on a few real tracks; keep it in ``BEST_REAL_DIR`` when it beats every earlier check."""
        best = max((e["mean_return"] for e in self.counters["real_evals"]), default=-np.inf)
        real = _real_check(self.net, self.cfg, self.dreams.config, self.counters)
        tb.add_scalar("return/real", real, self.counters["env_steps"])
        if real > best:  # a checkpoint picked by real return, its real steps (so far) in its card
            save_agent(self.net, self.out / BEST_REAL_DIR, {**self.card(), "picked_by_real_return": real}, half=False)

    def card(self) -> dict[str, Any]:
        """The agent's card: how it was trained, with every dream and real step it took."""
        cfg, counters = self.cfg, self.counters
        recent = self.dreams.finished[-100:]
        return {
            "algorithm": "ppo",
            "world_checkpoint": cfg.world,
            "dream_steps": counters.get("init_dream_steps", 0) + (0 if cfg.real else counters["env_steps"]),
            "real_steps": counters.get("init_real_steps", 0) + counters["real_steps"],
            "wall_seconds": round(counters["seconds"], 1),
            "dream_return_last_100": float(np.mean(recent)) if recent else None,
            "real_evals": counters["real_evals"],
            "config": dataclasses.asdict(cfg),
        }

    def checkpoint(self) -> None:
        """The resumable state (agent, optimiser, generator, counters, return scale) and the exported agent."""
        save_state(self.out / STATE_FILE, {
            "version": STATE_VERSION, "kind": "rl", "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "counters": json.dumps(self.counters), "scale": json.dumps(self.dreams.scale.state()),
        })  # fmt: skip
        save_agent(self.net, self.out / AGENT_DIR, self.card(), half=False)

    def summary(self, interrupted: bool) -> dict[str, Any]:
        counters, recent = self.counters, self.dreams.finished[-100:]
        return {
            "env_steps": counters["env_steps"],
            "dream_steps": 0 if self.cfg.real else counters["env_steps"],
            "updates": counters["updates"],
            "real_steps": counters["real_steps"],
            "seconds": counters["seconds"],
            "dream_return_last_100": float(np.mean(recent)) if recent else None,
            "interrupted": interrupted,
            "out": str(self.out / AGENT_DIR),
        }


def _init_agent(path: str, config: Any, history: int) -> tuple[AgentConfig, dict[str, Tensor], dict[str, int]]:
    """--init: the agent's config and weights, checked against the world, and the steps its card says it took."""
    where = agent_dir(path)
    net = load_agent(where)
    check_agent_fits(net, config.action, f"world {config.name!r}", str(where))
    if list(net.cfg.frame_size) != list(config.frame_size):
        raise InputError(f"--init {path}: the agent sees {net.cfg.frame_size} frames, the world makes "
                         f"{list(config.frame_size)}")  # fmt: skip
    if net.cfg.history != history:
        raise InputError(f"--init {path}: the agent stacks {net.cfg.history} frames: pass --history {net.cfg.history}")
    card = read_agent_card(where)
    steps = {"dream": int(card.get("dream_steps") or 0), "real": int(card.get("real_steps") or 0)}
    return net.cfg, net.state_dict(), steps


def _real_check(net: ActorCritic, cfg: RLTrainConfig, config: Any, counters: dict[str, Any]) -> float:
    """Mean return over a few real tracks (seeds never used by eval's default), its steps added to the count."""
    seeds = [500_000 + counters["updates"] * 100 + i for i in range(cfg.eval_real_episodes)]
    with tempfile.TemporaryDirectory() as tmp:
        save_agent(net, tmp, half=False)
        side, _ = rl_eval.run_real(f"agent:{tmp}", config, seeds, sample=False, keep=0, workers=1, progress=False)
    counters["real_steps"] += int(sum(side.steps))
    counters["real_evals"].append({"env_steps": counters["env_steps"], "mean_return": side.mean})
    return side.mean


def run(cfg: RLTrainConfig) -> int:
    """``worldsim rl train``: train, then print the summary line; Ctrl-C saves a checkpoint and exits 130."""
    require_tensorboard()
    result = train_agent(cfg, progress=sys.stderr.isatty())
    ret = result["dream_return_last_100"]
    summary = (
        f"rl train: {result['dream_steps']} dream steps, {result['real_steps']} real steps, "
        f"{result['seconds'] / 60:.1f} min, return (last 100 episodes) "
        f"{'n/a' if ret is None else f'{ret:.1f}'} -> {result['out']}"
    )
    return report_run("rl", summary, result["interrupted"], "checkpoint saved, continue with --resume; ")
