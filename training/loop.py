"""The training loop every stage shares.

A stage (autoencoder, world model) supplies a model, a dataset, a loss and an export; this module
does the rest the same way for all of them: AdamW with warmup + cosine, gradient clipping, EMA,
optional bf16 autocast, DistributedDataParallel under ``torchrun``, a progress bar, TensorBoard,
atomic resumable checkpoints every few minutes and on Ctrl-C.

Reproducibility is by construction rather than by saved generator state: the data order of step s
and all of its training noise are pure functions of (seed, s). A resumed run therefore sees exactly
what the uninterrupted run would have seen, and N processes see the rows of the same global batch
that one process would (each rank takes its slice of the batch and of the noise).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from worldsim.checkpoint import atomic_path
from worldsim.devices import resolve_device
from worldsim.errors import CheckpointError, ConfigError, InputError
from worldsim.precision import use_bf16
from worldsim.training.config import TrainConfig

STATE_VERSION = 1
LOG_SECONDS = 60.0


# --------------------------------------------------------------------------- distributed
@dataclass
class Distributed:
    """Where this process sits in a (possibly single-process) data-parallel job."""

    rank: int = 0
    world: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None, preset: str = "default") -> Distributed:
    """Join the process group ``torchrun`` describes in the environment (gloo on CPU, NCCL on GPU). ``device`` None:
    cuda where there is one, but the gpu preset refuses a machine without one (its settings would take days on a CPU)
    rather than fall back to the CPU."""
    if device is not None:
        resolve_device(device)
    elif preset == "gpu":
        resolve_device("cuda", asked_by="--preset gpu", instead="train with --preset default (or tiny)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if world == 1:
        return Distributed(device=torch.device(device or ("cuda" if cuda else "cpu")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    local = int(os.environ.get("LOCAL_RANK", rank))
    if cuda:
        torch.cuda.set_device(local)
    return Distributed(rank=rank, world=dist.get_world_size(), device=torch.device(f"cuda:{local}" if cuda else "cpu"))


class StepBatchSampler(Sampler[list[int]]):
    """Batches of an endless stream of seeded permutations, addressed by step.

    The global batch of step s is stream positions [s*G, (s+1)*G); epoch e of the stream is a
    permutation seeded by (seed, e). This rank yields its contiguous slice of each global batch.

    With ``buckets`` (index arrays whose items can share a batch, e.g. clips of one frame size) every global batch
    comes from one bucket: step s draws a bucket (by ``bucket_weights``, default its size) and G of its items
    without replacement, both seeded by (seed, s), so a batch is still addressed by its step alone.
    """

    def __init__(
        self,
        size: int,
        global_batch: int,
        d: Distributed,
        seed: int,
        first_step: int,
        last_step: int,
        buckets: list[np.ndarray] | None = None,
        bucket_weights: list[float] | None = None,
    ):
        if global_batch % d.world:
            raise InputError(f"--batch-size {global_batch} must be divisible by the number of processes ({d.world})")
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self.local = global_batch // d.world
        self.offset = d.rank * self.local
        self.first_step, self.last_step = first_step, last_step
        self._perms: dict[int, np.ndarray] = {}
        self.buckets = buckets
        if buckets is not None:
            weights = np.asarray(bucket_weights or [len(b) for b in buckets], dtype=np.float64)
            self.bucket_p = weights / weights.sum()

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.size)}
        return self._perms[epoch]

    def global_indices(self, step: int) -> np.ndarray:
        if self.buckets is not None:
            rng = np.random.default_rng([self.seed, step, 1])
            bucket = self.buckets[rng.choice(len(self.buckets), p=self.bucket_p)]
            return bucket[rng.choice(len(bucket), self.global_batch, replace=len(bucket) < self.global_batch)]
        pos = step * self.global_batch + np.arange(self.global_batch)
        return np.array([self._permutation(int(p // self.size))[p % self.size] for p in pos])

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.first_step, self.last_step):
            yield self.global_indices(step)[self.offset : self.offset + self.local].tolist()

    def __len__(self) -> int:
        return max(0, self.last_step - self.first_step)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of all training noise at ``step`` (identical on every rank)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


# --------------------------------------------------------------------------- stage protocol
class Stage(Protocol):
    """What a training stage supplies to :func:`train`."""

    name: str
    model: nn.Module
    dataset: Dataset
    tokens_per_sample: int

    def loss(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator, rows: slice, global_batch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss of this rank's ``rows`` of the global batch; noise drawn for the global batch from ``generator``."""
        ...

    def export(self, ema: nn.Module, out: Path, card: dict[str, Any]) -> None:
        """Write the usable checkpoint (EMA weights) into the run directory."""
        ...

    def log_samples(self, ema: nn.Module, tb: Any, step: int) -> None:
        """Write sample images / rollouts to TensorBoard."""
        ...


# --------------------------------------------------------------------------- pieces
def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Norm gains, biases, embedding tables and learned null vectors are not shrunk toward zero.
        skip = p.ndim < 2 or any(k in name for k in ("table", "embed", "null"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-8)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, step: int, decay: float) -> None:
    # Short runs would otherwise export a model that is mostly its random init.
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def require_tensorboard() -> None:
    """Fail in a second, before any work, when the ``train`` extra is missing.

    Training without its logs was the other choice: but the loss curves and the real-vs-dream samples are how a
    run is judged, and finding them missing after hours costs more than one pip command up front.
    """
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("TensorBoard (the training logs) is not installed: pip install 'worldsim[train]'") from None


# --------------------------------------------------------------------------- checkpoints
def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"nothing to resume: {path} does not exist (drop --resume to start a new run)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"{path} is truncated or corrupt ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path} is from another worldsim version; start a new run")
    return state


# --------------------------------------------------------------------------- the loop
def train(
    stage: Stage,
    cfg: TrainConfig,
    d: Distributed | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) training; returns a summary. Ctrl-C saves a checkpoint and returns."""
    require_tensorboard()
    d = d or Distributed()
    out = Path(cfg.out)
    state_path = out / "state" / f"{stage.name}.pt"  # one run directory can hold both stages
    model = stage.model.to(d.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(model, cfg)
    step, elapsed_before = restore(stage, cfg, model, ema, optimizer, state_path)
    net: nn.Module = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[d.device] if d.device.type == "cuda" else None)
    loader = step_loader(stage, cfg, d, step)
    bf16 = use_bf16(cfg.precision, d.device)
    tb = open_run_dir(stage.name, cfg) if d.is_main else None

    def checkpoint(reason: str) -> None:
        if not d.is_main:
            return
        elapsed = elapsed_before + time.perf_counter() - start
        state = {
            "version": STATE_VERSION,
            "stage": stage.name,
            "step": step,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "elapsed": elapsed,
            "config": json.dumps(dataclasses.asdict(cfg)),
        }
        save_state(state_path, state)
        stage.export(ema, out, {"step": step, "wall_seconds": round(elapsed, 1), "reason": reason})
        if tb is not None:
            stage.log_samples(ema, tb, step)
            tb.flush()

    rows = slice(d.rank * (cfg.batch_size // d.world), (d.rank + 1) * (cfg.batch_size // d.world))
    start = last_save = time.perf_counter()
    first_step = step
    metrics: dict[str, float] = {}
    speed = Speed(stage.name, stage.tokens_per_sample, cfg, tb, first_step, start, progress and d.is_main, d.is_main)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {stage.name}", unit="step", disable=not speed.shown)
    batches = iter(loader)
    with _deferred_interrupt() as stop:
        while step < cfg.steps and not stop.requested:
            try:
                batch = next(batches)
            except RuntimeError:
                if stop.requested:  # a DataLoader worker got the same Ctrl-C and died
                    break
                raise
            metrics, grad_norm = optimizer_step(stage, cfg, net, model, ema, optimizer, batch, step, rows, bf16)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            now = time.perf_counter()
            speed.log(step, metrics, optimizer.param_groups[0]["lr"], grad_norm, now)
            if on_step is not None:
                on_step(step)
            if now - last_save > cfg.save_minutes * 60:
                checkpoint("periodic")
                last_save = time.perf_counter()
            if cfg.max_minutes and now - start > cfg.max_minutes * 60:
                break
        interrupted = stop.requested
    bar.close()
    del batches
    loop_seconds = time.perf_counter() - start  # throughput excludes the final checkpoint and export
    checkpoint("interrupted" if interrupted else "end")
    if tb is not None:
        tb.close()
    seconds = time.perf_counter() - start
    done = step - first_step
    return {
        "stage": stage.name,
        "step": step,
        "steps_this_run": done,
        "seconds": seconds,
        "clips_per_s": done * cfg.batch_size / max(loop_seconds, 1e-9),
        "tokens_per_s": done * cfg.batch_size * stage.tokens_per_sample / max(loop_seconds, 1e-9),
        "precision": "bf16" if bf16 else "fp32",
        "final_metrics": metrics,
        "interrupted": interrupted,
        "out": str(out),
    }


def open_run_dir(name: str, cfg: TrainConfig) -> Any:
    """Create the run directory, write the stage's config into it, and open its TensorBoard log (main process)."""
    from torch.utils.tensorboard import SummaryWriter  # tensorboard: the train extra (checked by require_tensorboard)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    return SummaryWriter(str(out / "tb" / name))


def restore(
    stage: Stage, cfg: TrainConfig, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer, state_path: Path
) -> tuple[int, float]:
    """With ``cfg.resume``, load the run's model, EMA, optimizer and RNG from ``state_path``; returns the step and the
    seconds trained so far (0, 0.0 for a new run, which refuses a directory that already holds one)."""
    out = Path(cfg.out)
    if not cfg.resume:
        if state_path.exists():
            raise InputError(
                f"{out} already holds a {stage.name} run: pass --resume to continue it, or choose another --out"
            )
        return 0, 0.0
    state = load_state_file(state_path)
    if state["stage"] != stage.name:
        raise InputError(f"{out} holds a {state['stage']} run, not {stage.name}")
    try:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{state_path} does not match this model ({str(e).splitlines()[0][:200]}); were the size flags changed?"
        ) from None
    torch.set_rng_state(state["rng_cpu"])
    step = int(state["step"])
    if step >= cfg.steps:
        # An error, not a no-op success: nothing was trained, and a resume loop can stop on it.
        raise InputError(
            f"the run in {out} is already at step {step} of --steps {cfg.steps}; raise --steps to train further"
        )
    return step, float(state["elapsed"])


def step_loader(stage: Stage, cfg: TrainConfig, d: Distributed, step: int) -> DataLoader:
    """The stage's batches from ``step`` on, each a function of (seed, step) (``StepBatchSampler``)."""
    sampler = StepBatchSampler(
        len(stage.dataset),  # type: ignore[arg-type]
        cfg.batch_size,
        d,
        cfg.seed,
        step,
        cfg.steps,
        # A dataset of several frame sizes or clip lengths says which items can share a batch.
        getattr(stage.dataset, "buckets", None),
        getattr(stage.dataset, "bucket_weights", None),
    )
    return DataLoader(
        stage.dataset,
        batch_sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=d.device.type == "cuda",
        persistent_workers=False,
    )


def optimizer_step(
    stage: Stage, cfg: TrainConfig, net: nn.Module, model: nn.Module, ema: nn.Module,
    optimizer: torch.optim.Optimizer, batch: Any, step: int, rows: slice, bf16: bool,
) -> tuple[dict[str, float], Tensor]:  # fmt: skip
    """One step at ``step``: the learning rate, the loss (its noise a function of (seed, step)), the clipped
    gradient, the update and the EMA; returns the loss's metrics and the gradient norm."""
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * lr_factor(step, cfg)
    with torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=bf16):
        loss, metrics = stage.loss(net, batch, step_generator(cfg.seed, step), rows, cfg.batch_size)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    if not torch.isfinite(grad_norm):
        raise InputError(f"loss diverged at step {step} (gradient norm {grad_norm}); lower --lr and --resume")
    optimizer.step()
    update_ema(ema, model, step, cfg.ema_decay)
    return metrics, grad_norm


@dataclass
class Speed:
    """The run's scalars in TensorBoard every ``cfg.log_every`` steps, and where no progress bar is shown (not a
    terminal, e.g. a background run) one log line every ``LOG_SECONDS`` instead."""

    name: str
    tokens: int
    """Tokens per sample (``Stage.tokens_per_sample``)."""
    cfg: TrainConfig
    tb: Any
    first_step: int
    start: float
    shown: bool
    """A progress bar is shown (no log lines then)."""
    main: bool
    """This process is the main one (only it writes)."""

    def __post_init__(self) -> None:
        self.last_line = self.start

    def log(self, step: int, metrics: dict[str, float], lr: float, grad_norm: Tensor, now: float) -> None:
        cfg = self.cfg
        rate = (step - self.first_step) / max(now - self.start, 1e-9)
        if self.tb is not None and (step % cfg.log_every == 0 or step == cfg.steps):
            for k, v in metrics.items():
                self.tb.add_scalar(f"loss/{k}", v, step)
            self.tb.add_scalar("train/lr", lr, step)
            self.tb.add_scalar("train/grad_norm", float(grad_norm), step)
            self.tb.add_scalar("speed/clips_per_s", rate * cfg.batch_size, step)
            self.tb.add_scalar("speed/tokens_per_s", rate * cfg.batch_size * self.tokens, step)
        if self.main and not self.shown and now - self.last_line > LOG_SECONDS:
            print(f"{self.name} step {step}/{cfg.steps} loss {metrics['loss']:.4f} {rate * cfg.batch_size:.1f} clips/s",
                  file=sys.stderr, flush=True)  # fmt: skip
            self.last_line = now


class _StopFlag:
    requested = False


@contextmanager
def _deferred_interrupt() -> Iterator[_StopFlag]:
    """Turn the first Ctrl-C into a request to stop after the current step (so the saved state is whole).

    A second Ctrl-C interrupts at once. Only the main thread can own signals; elsewhere this is a no-op.
    """
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
