"""The Python half of ``benchmarks/gpu_check.sh``: the self-check of the GPU's fast paths, a dreamed dataset for the
training smoke run, and the report of the whole run.

    python3 benchmarks/check_gpu.py selfcheck --json selfcheck.json   # fused kernels and CUDA graphs vs PyTorch
    python3 benchmarks/check_gpu.py dream-data dream.h5               # trajectories dreamed by the shipped world
    python3 benchmarks/check_gpu.py report DIR                        # DIR/gpu_check.json and DIR/gpu_check.md

``selfcheck`` rolls the shipped world out on the GPU with the plain PyTorch ops (``WORLDSIM_KERNELS=torch``), with
the fused kernels unchecked (``fused``), and as a user gets it (checked, the default), eager in fp32 and bf16 and
compiled in bf16 (the benchmark's precision): frames against the plain ones (PSNR per horizon, largest difference)
and every ``SelfCheckWarning``, whose absence is the verdict.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldsim.bench import psnr_per_horizon, rollout_frames
from worldsim.data import TrajectoryWriter
from worldsim.engine import WorldModel
from worldsim.kernels.selfcheck import SelfCheckWarning

BATCHES = (1, 32, 256)
"""Worlds per bench run (``gpu_check.sh`` runs each eager and compiled)."""
WORLD = "carracing"


# ----------------------------------------------------------------- selfcheck
def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def frames_on(wm: WorldModel, path: str | None) -> tuple[np.ndarray, list[str]]:
    """``rollout_frames`` of ``wm`` with ``WORLDSIM_KERNELS=path`` (None: unset, the checked default), and the
    self-check's warning lines."""
    before = os.environ.pop("WORLDSIM_KERNELS", None)
    if path is not None:
        os.environ["WORLDSIM_KERNELS"] = path
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SelfCheckWarning)
            frames = rollout_frames(wm)
    finally:
        os.environ.pop("WORLDSIM_KERNELS", None)
        if before is not None:
            os.environ["WORLDSIM_KERNELS"] = before
    return frames, [str(w.message) for w in caught if issubclass(w.category, SelfCheckWarning)]


def against(frames: np.ndarray, plain: np.ndarray) -> dict[str, float]:
    psnr = psnr_per_horizon(frames, plain)
    return {
        "psnr_h1": float(psnr[0]),
        "psnr_h4": float(psnr[3]),
        "psnr_h16": float(psnr[-1]),
        "max_grey_levels": float(np.abs(frames - plain).max()),
    }


def selfcheck() -> dict[str, Any]:
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton"),
        "gpu": torch.cuda.get_device_name(),
        "runs": [],
    }
    for dtype, compiled in ((torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)):
        wm = WorldModel.from_pretrained(WORLD, device="cuda", dtype=dtype)
        plain, _ = frames_on(wm, "torch")
        run: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch."), "compiled": compiled}
        if compiled:
            wm.compile()  # graphs built under the default path: checked on their first calls
            start = time.perf_counter()
            checked, run["warnings"] = frames_on(wm, None)
            run["seconds_with_compiling"] = time.perf_counter() - start
        else:
            fused, fused_warnings = frames_on(wm, "fused")  # unchecked: how far the kernels themselves are
            run["fused_unchecked"] = against(fused, plain)
            checked, run["warnings"] = frames_on(wm, None)
            run["warnings"] += fused_warnings
        run["checked"] = against(checked, plain)
        run["passed"] = not run["warnings"]
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    result["passed"] = all(r["passed"] for r in result["runs"])
    return result


# ----------------------------------------------------------------- dream-data
def dream_data(path: str, episodes: int = 64, steps: int = 60, seed: int = 0) -> None:
    """``episodes`` trajectories of ``steps`` random actions dreamed by the shipped world: real-looking frames for a
    training smoke run where no recorded data is at hand."""
    wm = WorldModel.from_pretrained(WORLD, device="cuda" if torch.cuda.is_available() else "cpu")
    space = wm.action_space
    rng = np.random.default_rng(seed)
    first = wm.reset(seed=seed, batch_size=episodes)
    actions = rng.integers(0, space.n, (steps, episodes))
    outs = [wm.step(a) for a in actions]
    frames = np.stack([first, *[o.frames for o in outs]], 1)  # (episodes, steps + 1, H, W, 3)
    rewards = np.stack([o.reward for o in outs], 1)
    with TrajectoryWriter(
        path, env_id=wm.config.source_env or WORLD, frame_size=wm.frame_size, action_space=space,
        frame_rate=wm.config.frame_rate, overwrite=True,
    ) as writer:  # fmt: skip
        for e in range(episodes):
            writer.add_episode(
                frames[e], actions[:, e], rewards[e], np.zeros(steps, bool), np.arange(steps) == steps - 1, seed=e
            )


# ----------------------------------------------------------------- report
def _json_or_error(path: Path) -> dict[str, Any]:
    """The JSON object a part wrote, or what went wrong, from its log's last line."""
    try:
        text = path.read_text().strip()
        return json.loads(text.splitlines()[-1])
    except (OSError, ValueError, IndexError):
        log = path.with_suffix(".log")
        tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
        return {"error": tail[0] if tail else "no result (the part did not run, or ran out of time)"}


def _warnings_in(folder: Path) -> list[str]:
    """Every self-check warning line any part printed."""
    lines = []
    for log in sorted(folder.glob("*.log")):
        lines += [line for line in log.read_text(errors="replace").splitlines() if "from the PyTorch path" in line]
    return lines


def report(folder: Path) -> dict[str, Any]:
    """``gpu_check.json`` (every number) and ``gpu_check.md`` (a README-ready table) from the parts' files."""
    machine = (folder / "machine.txt").read_text().strip() if (folder / "machine.txt").exists() else "unknown GPU"
    tests = (folder / "tests.log").read_text().strip().splitlines() if (folder / "tests.log").exists() else []
    summary = next((line for line in reversed(tests) if re.search(r"passed|failed|error|skipped", line)), "not run")
    result: dict[str, Any] = {
        "machine": machine,
        "tests": summary.strip("= "),
        "selfcheck": _json_or_error(folder / "selfcheck.json"),
        "selfcheck_warnings": _warnings_in(folder),
        "bench": {
            f"{kind}_b{batch}": _json_or_error(folder / f"bench_{kind}_b{batch}.json")
            for kind in ("eager", "compiled")
            for batch in BATCHES
        },
        "train": _json_or_error(folder / "train.json"),
    }
    (folder / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (folder / "gpu_check.md").write_text(format_table(result))
    return result


def format_table(r: dict[str, Any]) -> str:
    hardware = r["machine"].split(",")[0]
    check = r["selfcheck"]
    if "error" in check:
        verdict = f"did not finish: {check['error']}"
    else:
        verdict = "passed" if check.get("passed") and not r["selfcheck_warnings"] else "**failed**"
        psnr = [f"{run['dtype']}{' compiled' if run['compiled'] else ''} h16 {run['checked']['psnr_h16']:.1f} dB"
                for run in check.get("runs", [])]  # fmt: skip
        verdict += f" (frames against the PyTorch path: {', '.join(psnr)})"
    if r["selfcheck_warnings"]:
        verdict += "; " + " / ".join(r["selfcheck_warnings"])
    rows = [
        ("GPU tests (`tests/test_cuda.py` and the kernel tests)", r["tests"], "`bash benchmarks/gpu_check.sh`"),
        ("self-check of the fused kernels and CUDA graphs", verdict, "`python3 benchmarks/check_gpu.py selfcheck`"),
    ]
    for key, b in r["bench"].items():
        kind, batch = key.split("_b")
        if "error" in b:
            number = f"did not finish: {b['error']}"
        else:
            peak = f"{b['matmul_gflops']:,.0f} GFLOP/s {b['dtype']} matmul peak"
            number = f"**{b['fps']:.1f} frames/s**, MFU {100 * b['mfu']:.1f}% of a {peak}"
            if b.get("compile_seconds") is not None:
                number += f", compiling {b['compile_seconds']:.0f} s"
        flag = " --compile" if kind == "compiled" else ""
        rows.append(
            (f"engine, shipped world, bf16, batch {batch}, {kind}", number,
             f"`worldsim bench --checkpoint {WORLD} --device cuda --precision bf16 --frames 120 --recompute-context 16 "
             f"--batch {batch}{flag} --json`")
        )  # fmt: skip
    t = r["train"]
    if "error" in t:
        number = f"did not finish: {t['error']}"
    else:
        number = (
            f"{t['clips_per_s']:.1f} clips/s, {t['tokens_per_s']:,.0f} tokens/s, {t['step']} steps, "
            f"final loss {t['final_metrics'].get('loss', float('nan')):.4f}"
        )
    rows.append(
        ("`train world --preset gpu`, 2 minutes on data the shipped world dreamed (beside the self-check and tests)",
         number, "`worldsim train world --preset gpu --device cuda --data dream.h5 --autoencoder carracing "
         "--max-minutes 2`")
    )  # fmt: skip
    lines = ["| what | number | command | hardware |", "|---|---|---|---|"]
    lines += [f"| {what} | {number} | {command} | {hardware} |" for what, number, command in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("selfcheck", help="fused kernels and CUDA graphs against the PyTorch path")
    check.add_argument("--json", metavar="FILE", help="also write the result as one JSON line to FILE")
    data = sub.add_parser("dream-data", help="a trajectory file dreamed by the shipped world")
    data.add_argument("out")
    rep = sub.add_parser("report", help="gpu_check.json and gpu_check.md from a gpu_check.sh run's folder")
    rep.add_argument("folder")
    args = parser.parse_args()
    if args.command == "selfcheck":
        result = selfcheck()
        if args.json:
            Path(args.json).write_text(json.dumps(result) + "\n")
        print("self-check", "passed" if result["passed"] else "FAILED", flush=True)
    elif args.command == "dream-data":
        dream_data(args.out)
    else:
        print(format_table(report(Path(args.folder))), end="")


if __name__ == "__main__":
    main()
