"""The one check of a torch device a user asked for: every command that takes ``--device`` (and the Python API behind
them) refuses a device this machine lacks with the same one-line ``InputError`` (exit 2 in the CLI), before any
world is loaded, instead of a traceback from deep inside torch (``Torch not compiled with CUDA enabled``)."""

from __future__ import annotations

import torch

from worldsim.errors import InputError


def resolve_device(
    name: str | torch.device,
    asked_by: str | None = None,
    instead: str = "run with --device cpu",
) -> torch.device:
    """``name`` (cpu, cuda or cuda:N) as a ``torch.device`` this machine has, or an ``InputError`` in one line.

    asked_by: what asked for the device, for the message (default ``--device NAME``; the gpu training preset says
        ``--preset gpu``).
    instead: what to do instead on a machine without it.
    """
    asked_by = asked_by or f"--device {name}"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda (or cuda:N), got {str(name)!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "torch finds no GPU or driver"
            raise InputError(f"{asked_by}: this machine has no CUDA GPU that torch can use ({why}); {instead}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InputError(f"{asked_by}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return device
