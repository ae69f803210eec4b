"""Smoke runs of the CLI on tiny checkpoints, as a user would type them (subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

from test_engine import tiny_world


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worldsim.cli", *args], capture_output=True, text=True, timeout=300)


def test_bench_json_reports_the_contracted_keys(tmp_path):
    tiny_world().save_pretrained(tmp_path / "w")
    p = run("bench", "--checkpoint", str(tmp_path / "w"), "--frames", "1012", "--recompute-context", "6", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    for key in (
        "fps",
        "fps_full_recompute",
        "latency_ms_frame10",
        "latency_ms_frame1000",
        "params",
        "matmul_gflops",
        "mfu",
    ):
        assert isinstance(r[key], (int, float)) and r[key] > 0, key
    assert r["params"] == sum(p.numel() for m in (tiny_world().dit, tiny_world().autoencoder) for p in m.parameters())
    assert 0 < r["mfu"] < 1


def test_bad_checkpoint_is_one_line_exit_2(tmp_path):
    p = run("bench", "--checkpoint", str(tmp_path / "missing"))
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "error" in p.stderr and "Traceback" not in p.stderr


def test_help_lists_commands():
    p = run("--help")
    assert p.returncode == 0 and "bench" in p.stdout


def test_bench_env_json(tmp_path, capsys):
    """bench-env reports world and source steps/s for each vector size."""
    import json

    from worldsim.cli import main

    assert main(["bench-env", "--num-envs", "1,2", "--steps", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["num_envs"] for r in result["rows"]] == [1, 2]
    for r in result["rows"]:
        assert r["world_env_steps_per_s"] > 0 and r["source_env_steps_per_s"] > 0
