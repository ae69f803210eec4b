"""fp32 or bf16: one rule for training (autocast) and inference (DiT weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import torch

from worldsim.errors import InputError

Precision = Literal["fp32", "bf16", "auto"]
"""fp32, bf16 or auto: a type, so the CLI shows the choices."""
PRECISIONS: tuple[str, ...] = get_args(Precision)


def use_bf16(precision: str, device: str | torch.device) -> bool:
    """Whether ``precision`` (fp32, bf16 or auto) means bf16 on ``device``.

    auto picks bf16 only where it is native and pays: CUDA GPUs that support it, and CPUs with
    AVX-512 BF16 or AMX (elsewhere bf16 matmuls are emulated and slower than fp32).
    """
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if precision != "auto":
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()) and _cpu_has_native_bf16()


def model_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    return torch.bfloat16 if use_bf16(precision, device) else torch.float32


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
