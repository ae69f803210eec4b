"""``worldsim bench``: measure the engine on this machine.

Examples::

    worldsim bench                              # default 64x64 world size, table on stdout
    worldsim bench --json > bench.json          # one JSON object
    worldsim bench --precision bf16 --batch 8   # other settings
    worldsim bench --device cuda --batch 256    # on a GPU (its Triton kernels in the step)
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces as gym_spaces
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula
from tqdm import tqdm

from worldsim.config import ActionSpec, ModelSize, WorldConfig, dit_config
from worldsim.devices import resolve_device
from worldsim.engine import WorldModel
from worldsim.kernels import packed_linear
from worldsim.precision import Precision, model_dtype

PROMPT_FRAMES = 220
"""Frames stepped under the prompt (the first 20 are warm-up)."""


@dataclass
class BenchConfig:
    """What ``worldsim bench`` measures."""

    checkpoint: str | None = None
    """Checkpoint dir or world name; None benchmarks a randomly initialised model of ``size``."""
    size: ModelSize = "S"
    """Model size from the registry, when no checkpoint is given."""
    precision: Precision = "fp32"
    """fp32 or bf16 weights and activations of the DiT; auto: bf16 where this CPU has it natively."""
    batch: int = 1
    """Worlds stepped together."""
    steps: int | None = None
    """Euler steps per frame (default: the checkpoint's sampler default)."""
    frames: int = 1010
    """Frames rolled out for the latency-over-time measurement (>= 1010 for frame 1000)."""
    recompute_context: int = 32
    """Frames of context for the full-recompute comparison."""
    seed: int = 0
    """Seed for weights, context and noise."""
    prompt: str = ""
    """Also step the world under this prompt (text-capable checkpoints) and report what the prompt costs."""
    device: str = "cpu"
    """cpu, or cuda (a GPU: the fused Triton kernels run in the step; each timed step ends with the frames on the
    host, so the times include the GPU's work)."""
    compile: bool = False
    """Run the DiT's passes as compiled graphs (torch.compile; not under a prompt; CUDA graphs on a GPU): a faster
    step after ~20-25 s of compiling on a CPU, reported as compile_seconds and not
    timed as steps."""
    json: bool = False
    """Print one JSON object instead of a table."""


def measure_matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10, device: str = "cpu") -> float:
    """The machine's peak: best-of-``repeats`` n^3 matmul throughput in GFLOP/s (a GPU gets n = 8192). n = 2048 on a
    CPU: on a 2-core Xeon with AMX, bf16 1024^3 gave 843-1693 GFLOP/s from run to run and 2048^3 ~3000, which the
    world's own packed linear layers reach at 32 worlds (``docs/results.md``), so 1024^3 understated the peak."""
    cuda = torch.device(device).type == "cuda"
    n = 8192 if cuda else n
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def mean_call_us(fn: Callable[[], Any], calls: int = 2000, warmup: int = 50) -> float:
    """Mean microseconds of ``fn()`` over ``calls`` calls after ``warmup``: the kernel timings of the
    benchmarks/measure_*.py scripts."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def alternating_rates(
    wm: WorldModel,
    variants: dict[str, Callable[[], None]],
    batch: int = 1,
    rounds: int = 3,
    steps: int = 100,
    warmup: int = 10,
) -> dict[str, list[float]]:
    """Frames/s of ``wm`` under each variant, rounds alternating between them: each round resets ``batch`` worlds,
    calls the variant's set-up (after the reset, so it may change the fresh rollout) and takes the median of
    ``steps`` timed steps (random actions, the decode included) after ``warmup``. This VM's speed drifts by tens of
    percent within minutes, so A/B numbers come from side-by-side rounds (the benchmarks/measure_*.py scripts)."""
    space = wm.action_space
    space.seed(0)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, set_up in variants.items():
            wm.reset(seed=0, batch_size=batch)
            set_up()
            seconds = []
            for _ in range(warmup + steps):
                actions = np.stack([space.sample() for _ in range(batch)])
                t = time.perf_counter()
                wm.step(actions)
                seconds.append(time.perf_counter() - t)
            rates[name].append(batch / statistics.median(seconds[warmup:]))
    return rates


def print_rates(rates: dict[str, list[float]], baseline: str, label: str = "") -> None:
    """One line per variant of ``alternating_rates``: the median of its rounds, its ratio to ``baseline``'s median,
    and every round (the benchmarks/measure_*.py scripts' report)."""
    base = statistics.median(rates[baseline])
    for name, runs in rates.items():
        med = statistics.median(runs)
        rounds = [round(x, 1) for x in runs]
        print(f"{label}{name}: median {med:.1f} frames/s (x{med / base:.2f}), rounds {rounds}", flush=True)


def report_json(result: dict[str, Any], path: str = "") -> None:
    """A measurement script's result (benchmarks/*.py): as indented JSON on stdout and, with ``path``, in that file."""
    print(json.dumps(result, indent=2))
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)


def report_alternating(
    variants: dict[str, Callable[[], None]],
    baseline: str,
    batches: tuple[int, ...] = (1, 32),
    rounds: int = 5,
    steps: int = 60,
    world: str = "carracing",
    dtype: torch.dtype = torch.bfloat16,
) -> None:
    """``print_rates`` of ``alternating_rates`` on a freshly loaded ``world`` (bf16 unless told) at each batch size:
    the A/B run of a benchmarks/measure_*.py script whose variants patch the engine (they need no handle on the
    world)."""
    for batch in batches:
        wm = WorldModel.from_pretrained(world, dtype=dtype)
        rates = alternating_rates(wm, variants, batch=batch, rounds=rounds, steps=steps)
        print_rates(rates, baseline, f"batch {batch}, ")


def rollout_frames(wm: WorldModel, frames: int = 16, batch: int = 8, seed: int = 3) -> np.ndarray:
    """(batch, frames, H, W, 3) float64 frames of ``wm`` from a fixed start, noise and random actions: what the
    benchmarks/measure_*.py scripts compare between two variants of the engine (PSNR per horizon)."""
    wm.reset(seed=seed, batch_size=batch)
    if isinstance(wm.action_space, gym_spaces.Discrete):  # the draws the earlier measurements made
        actions = np.random.default_rng(seed).integers(0, wm.action_space.n, (frames, batch))
    else:
        space = wm.action_space
        space.seed(seed)
        actions = np.stack([[space.sample() for _ in range(batch)] for _ in range(frames)])
    return np.stack([wm.step(a).frames for a in actions], 1).astype(np.float64)


def psnr_per_horizon(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """PSNR (dB) of ``rollout_frames`` against a reference's, per horizon (frame 1 first), over the batch."""
    mse = ((frames - reference) ** 2).mean(axis=(0, 2, 3, 4))
    return 10 * np.log10(255**2 / np.maximum(mse, 1e-10))


@functools.cache
def _count_cpu_kernel_flops() -> None:
    """Teach FlopCounterMode the CPU calls of a step it does not know, which it would count as none: the packed
    linear calls (``worldsim.kernels.packed_linear``, oneDNN's and MKL's) and PyTorch's CPU flash attention (SDPA at
    batch 1; a batch of bf16 worlds attends through matrix products, which it counts). Attention is counted as SDPA
    is elsewhere: the two matrix products, 2 * L * S * (E + Ev) per head."""

    def linear(x_shape, w_shape) -> int:
        return 2 * math.prod(x_shape[:-1]) * w_shape[0] * w_shape[1]

    @register_flop_formula(torch.ops.mkldnn._linear_pointwise)
    def _onednn_linear_flops(x_shape, w_shape, *args, **kwargs) -> int:
        return linear(x_shape, w_shape)

    if packed_linear.mkl_packs():  # MKL's packed sgemm: (x, packed weight, the weight itself, bias, rows)

        @register_flop_formula(torch.ops.mkl._mkl_linear)
        def _mkl_linear_flops(x_shape, packed_shape, w_shape, *args, **kwargs) -> int:
            return linear(x_shape, w_shape)

    @register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
    def _attention_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
        return 2 * math.prod(q_shape[:-1]) * k_shape[-2] * (q_shape[-1] + v_shape[-1])


def default_world_config(size: str = "S") -> WorldConfig:
    """The architecture meant for the default 64x64 world (CarRacing, Discrete(5))."""
    return WorldConfig(frame_size=[64, 64], action=ActionSpec(kind="discrete", n=5), dit=dit_config(size))


def _load(cfg: BenchConfig, dtype: torch.dtype) -> WorldModel:
    if cfg.checkpoint:
        return WorldModel.from_pretrained(cfg.checkpoint, device=cfg.device, dtype=dtype)
    torch.manual_seed(cfg.seed)
    wm = WorldModel(default_world_config(cfg.size), device=cfg.device, dtype=dtype)
    # Untrained weights are zero in places; fill them so every kernel does its real work.
    with torch.no_grad():
        for p in wm.dit.parameters():
            p.normal_(0, 0.02)
    return wm


def _prepare(cfg: BenchConfig, dtype: torch.dtype) -> WorldModel:
    """The world to measure, at the sampler steps asked for, compiled with ``cfg.compile``."""
    wm = _load(cfg, dtype)
    # Nothing here trains. A parameter that asks for gradients and enters a block as an input (the null prompt's
    # token) makes FlopCounterMode's module tracker hook it for backward, which fails under inference mode.
    wm.dit.requires_grad_(False)
    if cfg.steps:
        wm.set_sampler(steps=cfg.steps)
    if cfg.compile:
        wm.compile()
    return wm


def step_flops(wm: WorldModel, actions: np.ndarray, compiled: bool) -> int:
    """FLOPs of one cached step (matmuls, convs, attention), for MFU."""
    _count_cpu_kernel_flops()
    # The counter sees PyTorch ops, not inside a compiled graph: count the same step run eagerly.
    eager = torch.compiler.set_stance("force_eager") if compiled else contextlib.nullcontext()
    with FlopCounterMode(display=False) as counter, eager:
        wm.step(actions)
    return counter.get_total_flops()


def run_bench(cfg: BenchConfig, progress: bool = True) -> dict[str, Any]:
    resolve_device(cfg.device, instead="bench with --device cpu")
    dtype = model_dtype(cfg.precision, cfg.device)
    wm = _prepare(cfg, dtype)
    rng = np.random.default_rng(cfg.seed)
    H, W = wm.frame_size
    context = rng.integers(0, 255, (cfg.batch, 2, H, W, 3), dtype=np.uint8)
    space = wm.action_space
    space.seed(cfg.seed)

    def actions() -> np.ndarray:
        return np.stack([space.sample() for _ in range(cfg.batch)])

    def timed_steps(n: int, desc: str | None = None) -> list[float]:
        seconds = []
        for _ in tqdm(range(n), desc=desc, disable=not progress or desc is None, leave=False):
            t = time.perf_counter()
            wm.step(actions())
            seconds.append(time.perf_counter() - t)
        return seconds

    def fps_at_context(frames: int, reference: bool) -> float:
        wm.reset(context, seed=cfg.seed, reference=reference)
        timed_steps(frames - context.shape[1], "full recompute warm-up" if reference else None)
        return cfg.batch / statistics.median(timed_steps(3))

    # 0. Compiling happens in the first steps of the cache's steady state: a rollout of its own, timed as a whole.
    compile_seconds = None
    if cfg.compile:
        wm.reset(context, seed=cfg.seed)
        t = time.perf_counter()
        timed_steps(wm.sampler_config.steps_to_steady_state, "compiling")
        compile_seconds = time.perf_counter() - t

    # 1. Cached steps: per-frame latency over a long rollout (constant cost is the point).
    wm.reset(context, seed=cfg.seed)
    latencies = timed_steps(cfg.frames, "cached rollout")
    fps = cfg.batch / statistics.median(latencies[20:])

    def latency_at(frame: int) -> float:
        window = latencies[frame : frame + 10]
        return 1e3 * statistics.median(window) if window else float("nan")

    # 1b. The same under a prompt: what text costs per frame.
    prompt_fps = None
    if cfg.prompt:
        wm.reset(context, seed=cfg.seed, text=cfg.prompt)
        prompt_fps = cfg.batch / statistics.median(timed_steps(PROMPT_FRAMES, "with the prompt")[20:])

    # 2. Full recompute of the whole history vs the cache, both at ``recompute_context`` frames.
    fps_full = fps_at_context(cfg.recompute_context, reference=True)
    fps_cached_at_ctx = fps_at_context(cfg.recompute_context, reference=False)

    # 3. FLOPs of one cached step, for MFU.
    flops = step_flops(wm, actions(), cfg.compile)
    peak = measure_matmul_gflops(dtype, device=cfg.device)
    params_dit = sum(p.numel() for p in wm.dit.parameters())
    params_ae = sum(p.numel() for p in wm.autoencoder.parameters())
    return {
        "fps": fps,
        "compiled": cfg.compile,
        "compile_seconds": compile_seconds,
        "fps_prompt": prompt_fps,
        "prompt_cost": None if prompt_fps is None else 1.0 - prompt_fps / fps,
        "fps_full_recompute": fps_full,
        "cache_speedup_at_context": fps_cached_at_ctx / fps_full,
        "recompute_context_frames": cfg.recompute_context,
        "latency_ms_frame10": latency_at(10),
        "latency_ms_frame1000": latency_at(1000),
        "params": params_dit + params_ae,
        "params_dit": params_dit,
        "params_autoencoder": params_ae,
        "gflops_per_step": flops / 1e9,
        "matmul_gflops": peak,
        "mfu": flops * fps / cfg.batch / (peak * 1e9),
        "batch": cfg.batch,
        "precision": cfg.precision,
        "dtype": "bf16" if dtype == torch.bfloat16 else "fp32",
        "sampler_steps": wm.sampler_config.steps,
        "frame_size": list(wm.frame_size),
        "tokens_per_frame": wm._rollout.tokens,
        "checkpoint": cfg.checkpoint or f"random init, size {cfg.size}",
        "threads": torch.get_num_threads(),
        "device": cfg.device,
        "machine": _machine(cfg.device),
        "torch": torch.__version__,
    }


def _machine(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def cpu_name() -> str:
    """The CPU's model name (and AMX, which decides bf16 matmul speed), e.g. 'Intel(R) Xeon(R) Processor with AMX': the
    VMs this project measures on change CPU between days, so every speed number says which it came from."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.machine()} {platform.processor()}".strip()
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    name = names[0] if names else platform.machine()
    return name + (" with AMX" if " amx_bf16" in info else "")


def format_table(r: dict[str, Any]) -> str:
    compiled = ", compiled" if r.get("compiled") else ""
    rows = [
        (f"step fps (batch {r['batch']}, {r['sampler_steps']} Euler steps{compiled})", f"{r['fps']:.1f}"),
        *([("compiling (s)", f"{r['compile_seconds']:.1f}")] if r.get("compile_seconds") is not None else []),
        *(
            [("step fps with the prompt", f"{r['fps_prompt']:.1f} ({100 * r['prompt_cost']:+.1f}% cost)")]
            if r.get("fps_prompt")
            else []
        ),
        (f"full-recompute fps at {r['recompute_context_frames']} frames", f"{r['fps_full_recompute']:.2f}"),
        (f"cache speed-up at {r['recompute_context_frames']} frames", f"{r['cache_speedup_at_context']:.1f}x"),
        ("latency at frame 10 (ms)", f"{r['latency_ms_frame10']:.1f}"),
        ("latency at frame 1000 (ms)", f"{r['latency_ms_frame1000']:.1f}"),
        ("parameters (DiT + autoencoder)", f"{r['params'] / 1e6:.2f} M"),
        ("GFLOP per step", f"{r['gflops_per_step']:.3f}"),
        (f"matmul peak (GFLOP/s, {r['dtype']})", f"{r['matmul_gflops']:.0f}"),
        ("MFU of the step", f"{100 * r['mfu']:.1f}%"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
    lines.append(f"\n{r['checkpoint']}, {r['machine']}, torch {r['torch']}")
    return "\n".join(lines)


def run(cfg: BenchConfig) -> int:
    """``worldsim bench``: measure, then print the table (or with ``json`` one JSON object)."""
    return measure_and_print(run_bench, format_table, cfg)


def measure_and_print(measure: Callable[..., dict[str, Any]], table: Callable[[dict[str, Any]], str], cfg: Any) -> int:
    """A bench command's run: ``measure(cfg)`` (a progress bar on a terminal, none under ``--json``), then the result
    as ``table`` or with ``cfg.json`` as one JSON object on stdout."""
    result = measure(cfg, progress=not cfg.json and sys.stderr.isatty())
    print(json.dumps(result) if cfg.json else table(result))
    return 0
