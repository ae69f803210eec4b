"""``benchmarks/gpu_check.sh``, the run prepared for the day a GPU is lent: its dry run on this machine, and its report
from the files a run leaves (made up here), so neither first fails on the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import check_gpu  # noqa: E402

pytestmark = pytest.mark.skipif(os.name != "posix", reason="a bash script")


def test_the_dry_run_lists_every_part_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        env={**os.environ, "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    text = run.stdout
    for part in ("install", "gpu", "train (in the background)", "selfcheck", "tests", "report"):
        assert f"\n{part} " in text, part
    assert "tests/test_cuda.py" in text and "check_gpu.py selfcheck" in text
    assert "--preset gpu --device cuda" in text and "--max-minutes 2" in text
    for batch in (1, 32, 256):
        for mode, flag in (("eager", "--json"), ("compiled", "--compile --json")):
            line = next(line for line in text.splitlines() if line.startswith(f"bench {mode} batch {batch} "))
            assert "--device cuda --precision bf16" in line and f"--batch {batch} {flag}" in line, line
    assert not out.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_the_run_refuses_a_machine_without_a_gpu_before_installing_anything(tmp_path):
    out = tmp_path / "out"
    script = str(ROOT / "benchmarks" / "gpu_check.sh")
    run = subprocess.run(["bash", script], env={**os.environ, "OUT": str(out)}, capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.startswith("gpu_check: torch sees no CUDA GPU here"), run.stderr
    assert run.stdout == "" and not out.exists()


def test_a_wrong_flag_is_refused():
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--wet-run"], capture_output=True)
    assert run.returncode == 2 and b"usage" in run.stderr


def bench_result(batch: int, compiled: bool) -> dict:
    return {"fps": 100.0 * batch, "mfu": 0.123, "matmul_gflops": 700000.0, "dtype": "bf16",
            "compile_seconds": 30.0 if compiled else None}  # fmt: skip


def test_the_report_gathers_a_runs_files_into_json_and_a_table(tmp_path):
    (tmp_path / "machine.txt").write_text("NVIDIA H100 80GB HBM3, 81559 MiB, 1980 MHz\n")
    (tmp_path / "tests.log").write_text("....s.\n12 passed, 1 skipped in 80.0s\n")
    runs = [{"dtype": "bfloat16", "compiled": True, "checked": {"psnr_h16": 48.0}, "passed": True, "warnings": []}]
    (tmp_path / "selfcheck.json").write_text(json.dumps({"passed": True, "runs": runs}) + "\n")
    for batch in check_gpu.BATCHES:
        (tmp_path / f"bench_eager_b{batch}.json").write_text(json.dumps(bench_result(batch, False)))
    (tmp_path / "bench_compiled_b1.json").write_text(json.dumps(bench_result(1, True)))
    (tmp_path / "bench_compiled_b32.log").write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
    (tmp_path / "train.log").write_text("the fused split_heads_rope kernel differs from the PyTorch path on cuda:0\n")
    train = {"clips_per_s": 55.5, "tokens_per_s": 1e6, "step": 120, "final_metrics": {"loss": 0.5}}
    (tmp_path / "train.json").write_text("progress\n" + json.dumps(train) + "\n")

    result = check_gpu.report(tmp_path)
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == result
    assert result["bench"]["eager_b256"]["fps"] == 25600.0
    assert result["bench"]["compiled_b32"] == {"error": "RuntimeError: CUDA out of memory"}
    assert "no result" in result["bench"]["compiled_b256"]["error"]
    assert result["tests"] == "12 passed, 1 skipped in 80.0s"
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.startswith("| what | number | command | hardware |\n|---|---|---|---|\n")
    assert "| engine, shipped world, bf16, batch 1, compiled | **100.0 frames/s**, MFU 12.3% of a 700,000 " in table
    assert "compiling 30 s" in table and "did not finish: RuntimeError: CUDA out of memory" in table
    assert "**failed**" in table and "split_heads_rope kernel differs" in table  # a warning fails the self-check
    assert "55.5 clips/s" in table and table.count("| NVIDIA H100 80GB HBM3 |") == 9
