"""On a GPU: the shipped world's frames through the fused Triton kernels and through compiled CUDA-graph passes,
each against the plain PyTorch path (``docs/measure_gpu.sh`` runs it; the CPU tests cover the same code interpreted).

    python3 docs/check_gpu.py
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from worldsim.bench import psnr_per_horizon, rollout_frames
from worldsim.engine import WorldModel


def frames(wm: WorldModel, triton: bool) -> np.ndarray:
    """16 frames of 8 worlds (``rollout_frames``), with the fused kernels on or off."""
    if triton:
        os.environ.pop("WORLDSIM_NO_TRITON", None)
    else:
        os.environ["WORLDSIM_NO_TRITON"] = "1"
    try:
        return rollout_frames(wm)
    finally:
        os.environ.pop("WORLDSIM_NO_TRITON", None)


def report(name: str, a: np.ndarray, b: np.ndarray) -> None:
    psnr = psnr_per_horizon(a, b)
    print(f"{name}: PSNR h1 / h4 / h16 {psnr[0]:.1f} / {psnr[3]:.1f} / {psnr[15]:.1f} dB, "
          f"max difference {np.abs(a - b).max():.0f} grey levels", flush=True)  # fmt: skip


def main() -> None:
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    for dtype in (torch.float32, torch.bfloat16):
        wm = WorldModel.from_pretrained("carracing", device="cuda", dtype=dtype)
        plain = frames(wm, triton=False)
        report(f"{dtype}, Triton kernels against PyTorch", frames(wm, triton=True), plain)
        wm.compile()
        start = time.perf_counter()
        compiled = frames(wm, triton=False)
        print(f"{dtype}: compiled rollout (graphs built in it) {time.perf_counter() - start:.1f} s", flush=True)
        report(f"{dtype}, compiled CUDA-graph passes against eager", compiled, plain)


if __name__ == "__main__":
    main()
