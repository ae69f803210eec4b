"""Fast paths that prove themselves on first use: each is run beside the plain PyTorch path on the same inputs before
it serves a world, and dropped for it, with one warning line, where the two disagree.

Two fast paths stand in for PyTorch ops at inference: the fused Triton kernels (``worldsim.kernels``, CUDA only) and
compiled graphs (``worldsim.kernels.compiled.FrozenGraphs``: CUDA graphs on a GPU, inductor's C++ on a CPU). The CPU
suite holds both to PyTorch, the kernels only under Triton's interpreter in fp32; a kernel or a graph can still be
wrong on a real GPU (bf16 rounding, a stride the interpreter tolerated, a graph replayed against stale addresses), and
a wrong dream looks like a dream. So on first use both ways run, ``mismatch`` compares them within ``TOLERANCE``, and
on a mismatch the plain result is returned and that fast path is not used again (per op, device and dtype for a
kernel; per world's graphs for a graph), with one ``SelfCheckWarning`` that says what differed.

``WORLDSIM_KERNELS`` picks the path (read when a kernel is called, and when a world's graphs are built):

* unset: check the fast paths no machine of this project has run, those on CUDA; a CPU world's compiled graphs run
  unchecked (``tests/test_compile.py`` holds them to eager on every change, on the kind of machine they run on);
* ``check``: check every fast path, compiled CPU graphs too;
* ``fused``: the fast paths, unchecked;
* ``torch``: the plain PyTorch path: no fused kernels, no compiled graphs (``WorldModel.compile`` then changes nothing).

``WORLDSIM_NO_TRITON=1``, the older switch, still turns the fused kernels (only them) off.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from worldsim.errors import ConfigError, WorldsimWarning

KernelPath = Literal["torch", "fused", "check"]
KERNEL_PATHS: tuple[str, ...] = get_args(KernelPath)

TOLERANCE: dict[torch.dtype, float] = {torch.float32: 1e-2, torch.float16: 1 / 32, torch.bfloat16: 1 / 8}
"""Largest difference allowed between a fast and a plain output, as a fraction of the plain output's largest magnitude
(or of 1, if that is smaller), by the dtype the module computes in. Two correct paths differ by their rounding alone:
what a bf16 DiT pass of the shipped world differs by from the same weights in fp32 is in ``docs/results.md`` (issue
38), and two bf16 paths differ by up to about twice that; fp32 leaves room for TF32 convolutions and reordered sums.
A wrong kernel or graph is off by about the size of the values themselves."""

CHECKED_CALLS = 3
"""Calls of each input shape a compiled graph is checked on: a CUDA graph's first call warms up, the second records
it, the third is its first replay, and each can go wrong on its own."""

REPORT = "please report it (a worldsim issue) with this line and the gpu_check.json of `bash benchmarks/gpu_check.sh`"
"""How to report a mismatch: the script's JSON holds the GPU, the versions and the self-check's numbers."""


class SelfCheckWarning(WorldsimWarning):
    """A fast path disagreed with the PyTorch path on this machine and was dropped for it."""


def kernel_path() -> KernelPath | None:
    """``WORLDSIM_KERNELS`` (None where unset), checked."""
    path = os.environ.get("WORLDSIM_KERNELS") or None
    if path is not None and path not in KERNEL_PATHS:
        raise ConfigError(f"WORLDSIM_KERNELS must be one of {', '.join(KERNEL_PATHS)} or unset, got {path!r}")
    return path  # type: ignore[return-value]


def checks(device: torch.device) -> bool:
    """Whether fast paths on ``device`` are checked on first use (module doc)."""
    path = kernel_path()
    return path == "check" or (path is None and device.type == "cuda")


def _leaves(out: Any, name: str = "output") -> Iterator[tuple[str, Tensor]]:
    """The tensors of a (nested) output, each with where it sits: ``output.velocity``, ``output.k``, ``output[1]``."""
    if isinstance(out, Tensor):
        yield name, out
    elif isinstance(out, tuple) and hasattr(out, "_fields"):  # a NamedTuple (DiTOutput)
        for field, value in zip(out._fields, out):
            yield from _leaves(value, f"{name}.{field}")
    elif isinstance(out, dict):
        for key, value in out.items():
            yield from _leaves(value, f"{name}.{key}")
    elif isinstance(out, (tuple, list)):
        for i, value in enumerate(out):
            yield from _leaves(value, f"{name}[{i}]")


def mismatch(fast: Any, plain: Any, dtype: torch.dtype) -> str | None:
    """Where ``fast`` differs from ``plain`` (the same structure of tensors) by more than ``TOLERANCE`` for ``dtype``,
    in words; None where every tensor agrees."""
    tolerance = TOLERANCE.get(dtype, TOLERANCE[torch.float32])
    for (name, a), (_, b) in zip(_leaves(fast), _leaves(plain)):
        if a.shape != b.shape:
            return f"{name} has shape {tuple(a.shape)}, not {tuple(b.shape)}"
        a, b = a.double(), b.double()
        finite = torch.isfinite(b)
        if (~torch.isfinite(a) & finite).any():
            return f"{name} has NaN or infinite values where the PyTorch path has none"
        a, b = a[finite], b[finite]
        if b.numel() == 0:
            continue
        scale = max(b.abs().max().item(), 1.0)
        diff = (a - b).abs().max().item()
        if diff > tolerance * scale:
            return f"{name} is off by up to {diff:.3g} (tolerance {tolerance:.3g} x {scale:.3g})"
    return None


def report(what: str, device: torch.device, dtype: torch.dtype, difference: str) -> str:
    """Warn, in one line, that ``what`` differed from the PyTorch path and was dropped for it; returns the line."""
    line = (
        f"{what} differs from the PyTorch path on {device} in {str(dtype).removeprefix('torch.')}: {difference}; "
        f"using the PyTorch path instead: {REPORT}"
    )
    warnings.warn(line, SelfCheckWarning, stacklevel=3)
    return line


class KernelChecks:
    """Which fused kernels were checked (per op, device, dtype and input shape) and which failed (per op, device and
    dtype). The kernels are functions of the process, so what they showed holds for every world in it:
    ``worldsim.kernels.KERNEL_CHECKS`` is the one record."""

    def __init__(self) -> None:
        self.checked: set[tuple[str, torch.device, torch.dtype, tuple[int, ...]]] = set()
        self.failed: dict[tuple[str, torch.device, torch.dtype], str] = {}
        """The warning line of each kernel that disagreed, by (op, device, dtype): the PyTorch ops serve it."""

    def trusted(self, op: str, t: Tensor) -> bool:
        """Whether ``op`` may run fused on tensors like ``t`` (it has not disagreed on their device and dtype)."""
        return not self.failed or (op, t.device, t.dtype) not in self.failed

    def due(self, op: str, t: Tensor) -> bool:
        """Whether this call of ``op`` on ``t`` is to be checked: the first of its shape on its device and dtype, where
        ``checks`` says so. Counts it as checked."""
        key = (op, t.device, t.dtype, tuple(t.shape))
        if key in self.checked or not checks(t.device):
            return False
        self.checked.add(key)
        return True

    def agree(self, op: str, t: Tensor, fused: Any, plain: Any) -> bool:
        """Whether the fused outputs of ``op`` on ``t`` agree with the PyTorch ones; if not, say so and stop using it
        on ``t``'s device and dtype."""
        difference = mismatch(fused, plain, t.dtype)
        if difference is None:
            return True
        self.failed[(op, t.device, t.dtype)] = report(f"the fused {op} kernel", t.device, t.dtype, difference)
        return False
