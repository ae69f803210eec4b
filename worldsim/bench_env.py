"""``worldsim bench-env``: env steps/s of a world model as a Gymnasium (vector) env beside its real source env.

worldsim bench-env                         # random-init size-S 64x64 world vs the default world's env, 1/8/32 envs
worldsim bench-env --checkpoint carracing --json
worldsim bench-env --checkpoint runs/pusht/world --source ""   # the world alone
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch

from worldsim.bench import BenchConfig, _load, cpu_name, measure_and_print
from worldsim.checkpoint import load_config
from worldsim.devices import resolve_device
from worldsim.envs.sources import make_source_env
from worldsim.errors import InputError
from worldsim.precision import Precision, model_dtype
from worldsim.worlds import ASSETS, DEFAULT_WORLD, resolve_world


@dataclass
class EnvBenchConfig:
    """What ``worldsim bench-env`` measures."""

    checkpoint: str | None = None
    """Checkpoint dir or world name; None: a randomly initialised size-S 64x64 world."""
    num_envs: str = "1,8,32,128"
    """Comma-separated vector sizes to measure."""
    source: str | None = None
    """Real env measured beside it (gymnasium SyncVectorEnv of N copies); default: the world's own source env (the
    default world's for the random one); empty to skip."""
    steps: int = 50
    """Vector steps timed per size (after 5 warm-up steps; with --compile, after the cache's steady state)."""
    precision: Precision = "auto"
    """The world's precision (fp32, bf16, or auto: bf16 where the CPU has it natively, as play and rl train use)."""
    sampler_steps: int | None = None
    """Euler steps per frame (default: the world's)."""
    compile: bool = False
    """Run the world's passes compiled (torch.compile; not under a prompt); the graphs are built in the warm-up
    steps of each size (an autoreset's masked pass builds one more where it first happens)."""
    seed: int = 0
    """Seed of weights, starts and actions."""
    device: str = "cpu"
    """cpu, or cuda (the world's device; the real env runs on the CPU either way)."""
    json: bool = False
    """Print one JSON object instead of a table."""


def _timed(step, actions: np.ndarray, steps: int, warmup: int = 5) -> float:
    for t in range(warmup):
        step(actions[t % len(actions)])
    start = time.perf_counter()
    for t in range(steps):
        step(actions[t % len(actions)])
    return steps / (time.perf_counter() - start)


def run_env_bench(cfg: EnvBenchConfig, progress: bool = False) -> dict[str, Any]:
    device = resolve_device(cfg.device)  # a bad --device or --precision fails here, before any world is built
    model_dtype(cfg.precision, device)
    try:
        sizes = [int(n) for n in cfg.num_envs.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise InputError(f"--num-envs must be comma-separated counts of 1 or more (e.g. 1,8,32), got {cfg.num_envs!r}")
    rng = np.random.default_rng(cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = cfg.checkpoint
        if checkpoint is None:  # a random S world with one start context, like the default world's shape and env
            wm = _load(BenchConfig(seed=cfg.seed), torch.float32)  # saved, then loaded on the device below
            wm.starts = {"frames": torch.from_numpy(rng.integers(0, 255, (1, 2, 64, 64, 3), dtype=np.uint8))}
            shipped = ASSETS / DEFAULT_WORLD
            wm.config.source_env = load_config(shipped).source_env if shipped.is_dir() else ""
            wm.save_pretrained(f"{tmp}/world")
            checkpoint = f"{tmp}/world"
        source = load_config(resolve_world(checkpoint)).source_env if cfg.source is None else cfg.source
        rows = []
        for n in sizes:
            venv = gymnasium.make_vec(
                "worldsim/WorldModel-v0",
                num_envs=n,
                checkpoint=checkpoint,
                precision=cfg.precision,
                sampler_steps=cfg.sampler_steps,
                compile=cfg.compile,
                device=cfg.device,
            )
            venv.reset(seed=cfg.seed)
            actions = np.stack([venv.action_space.sample() for _ in range(16)])
            # A compiled world builds its graphs once its cache is full (after the window's frames): warm up past that.
            warmup = venv.unwrapped.world.sampler_config.steps_to_steady_state if cfg.compile else 5
            world = _timed(venv.step, actions, cfg.steps, warmup)
            row = {"num_envs": n, "world_vector_steps_per_s": world, "world_env_steps_per_s": world * n}
            if source:
                real = gymnasium.vector.SyncVectorEnv([lambda: make_source_env(source) for _ in range(n)])
                real.reset(seed=cfg.seed)
                real_actions = np.stack([real.action_space.sample() for _ in range(16)])
                rate = _timed(real.step, real_actions, cfg.steps)
                row.update(source_vector_steps_per_s=rate, source_env_steps_per_s=rate * n)
                real.close()
            rows.append(row)
            if progress:
                print(row, flush=True)
    return {
        "checkpoint": cfg.checkpoint or "random size-S 64x64",
        "source": source,
        "threads": torch.get_num_threads(),
        "machine": cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "precision": cfg.precision,
        "compiled": cfg.compile,
        "rows": rows,
    }


def format_env_table(result: dict[str, Any]) -> str:
    compiled = ", compiled" if result.get("compiled") else ""
    lines = [
        f"world: {result['checkpoint']} ({result['precision']}{compiled}), source: {result['source'] or 'none'}, "
        f"torch threads {result['threads']}, {result['machine']}",
        "| num_envs | world env steps/s | source env steps/s |",
        "|---|---|---|",
    ]
    for r in result["rows"]:
        src = f"{r['source_env_steps_per_s']:.1f}" if "source_env_steps_per_s" in r else "-"
        lines.append(f"| {r['num_envs']} | {r['world_env_steps_per_s']:.1f} | {src} |")
    return "\n".join(lines)


def run(cfg: EnvBenchConfig) -> int:
    """``worldsim bench-env``: measure, then print the table (or with ``json`` one JSON object)."""
    return measure_and_print(run_env_bench, format_env_table, cfg)
