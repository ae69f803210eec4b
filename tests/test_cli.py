"""Smoke runs of the CLI on tiny checkpoints, as a user would type them (subprocess or ``main``)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing

import pytest
from test_engine import tiny_world

from worldsim.cli import main


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
    assert r["precision"] == "fp32" and r["dtype"] == "fp32"
    assert r["params"] == sum(p.numel() for m in (tiny_world().dit, tiny_world().autoencoder) for p in m.parameters())
    assert 0 < r["mfu"] < 1


@pytest.mark.parametrize("text_cfg", [1.0, 3.0])
def test_bench_steps_a_text_world_under_a_prompt_guided_or_not(tmp_path, text_cfg):
    from worldsim.bench import BenchConfig, run_bench
    from worldsim.engine import WorldModel

    wm = tiny_world(text_dim=384)
    wm.config = dataclasses.replace(wm.config, sampler=dataclasses.replace(wm.config.sampler, text_cfg=text_cfg))
    wm.save_pretrained(tmp_path / "w")
    assert WorldModel.from_pretrained(tmp_path / "w").sampler_config.text_cfg == text_cfg
    r = run_bench(BenchConfig(checkpoint=str(tmp_path / "w"), frames=30, recompute_context=4, prompt="a square"))
    assert r["fps_prompt"] > 0 and r["mfu"] > 0


def test_bad_checkpoint_is_one_line_exit_2(tmp_path):
    p = run("bench", "--checkpoint", str(tmp_path / "missing"))
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "error" in p.stderr and "Traceback" not in p.stderr


def one_line_error(capsys, *argv: str) -> str:
    """Run ``worldsim argv``, check it failed as a usage error (exit 2, one line, no traceback); return the line."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"worldsim {argv[0]}: error: "), err
    return err


def test_bench_precision_is_checked_in_one_line(capsys):
    err = one_line_error(capsys, "bench", "--precision", "fp8")
    assert "--precision" in err and "'fp32', 'bf16', 'auto'" in err
    assert "--dtype" in one_line_error(capsys, "bench", "--dtype", "fp8")  # the old flag is gone, not a KeyError
    assert "perhaps you meant --precision" in one_line_error(capsys, "bench", "--precison", "bf16")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_bench_device_is_checked_before_loading(capsys):
    assert "no CUDA GPU" in one_line_error(capsys, "bench", "--device", "cuda", "--checkpoint", "carracing")
    assert "cpu or cuda" in one_line_error(capsys, "bench", "--device", "tpu")
    assert "cpu or cuda" in one_line_error(capsys, "bench", "--device", "gpu0")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_every_command_with_a_device_refuses_a_missing_gpu_in_one_line(tmp_path, capsys):
    """A new user's first try on a CPU-only machine: one line, exit 2, no traceback, nothing written."""
    agent, out = str(tmp_path / "agent"), tmp_path / "run"
    for argv in [
        ("play", "--device", "cuda", "--headless", "--steps", "2"),
        ("bench-env", "--device", "cuda", "--num-envs", "1"),
        ("rl", "train", "--device", "cuda", "--out", str(out)),
        ("rl", "eval", "--device", "cuda", "--agent", agent, "--dream"),
        ("train", "world", "--device", "cuda", "--data", str(tmp_path / "d.h5"), "--out", str(out)),
    ]:
        assert "--device cuda: this machine has no CUDA GPU" in one_line_error(capsys, *argv), argv
    assert "cpu or cuda" in one_line_error(capsys, "play", "--device", "tpu", "--headless", "--steps", "2")
    assert not out.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_the_gpu_training_preset_refuses_a_machine_without_one(tmp_path, capsys):
    out = tmp_path / "run"
    data = str(tmp_path / "d.h5")
    err = one_line_error(capsys, "train", "world", "--preset", "gpu", "--data", data, "--out", str(out))
    assert "--preset gpu: this machine has no CUDA GPU" in err and "--preset default" in err
    assert not out.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_play_on_a_missing_gpu_is_one_line_from_the_shell():
    """The command of issue 38, as typed: it ended in ``AssertionError: Torch not compiled with CUDA enabled``."""
    p = run("play", "--device", "cuda", "--headless", "--steps", "2")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("worldsim play: error: --device cuda: this machine has no CUDA GPU")


def test_library_bench_rejects_an_unknown_precision():
    from worldsim.bench import BenchConfig, run_bench
    from worldsim.errors import InputError

    with pytest.raises(InputError, match="--precision must be one of"):
        run_bench(BenchConfig(precision="fp8"))  # type: ignore[arg-type]


def test_alternating_rates_set_each_variant_up_on_its_fresh_rollout_in_turn(tmp_path):
    from conftest import save_world

    from worldsim.bench import alternating_rates
    from worldsim.engine import WorldModel

    wm, calls = WorldModel.from_pretrained(save_world(tmp_path / "w")), []  # a world with start contexts

    def variant(name: str):
        return lambda: calls.append((name, wm._rollout, wm._rollout.batch))  # kept alive: ids stay unique

    rates = alternating_rates(wm, {"a": variant("a"), "b": variant("b")}, batch=2, rounds=2, steps=2, warmup=1)
    assert [name for name, _, _ in calls] == ["a", "b", "a", "b"]  # rounds alternate
    assert len({id(rollout) for _, rollout, _ in calls}) == 4 and all(batch == 2 for *_, batch in calls)  # after reset
    assert {k: len(v) for k, v in rates.items()} == {"a": 2, "b": 2} and all(r > 0 for v in rates.values() for r in v)


def test_print_rates_reports_each_variants_median_and_its_ratio_to_the_baseline(capsys):
    from worldsim.bench import print_rates

    print_rates({"old": [10.0, 30.0, 20.0], "new": [25.0, 35.0, 30.0]}, "old", "batch 4, ")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "batch 4, old: median 20.0 frames/s (x1.00), rounds [10.0, 30.0, 20.0]",
        "batch 4, new: median 30.0 frames/s (x1.50), rounds [25.0, 35.0, 30.0]",
    ]


def test_play_record_path_is_checked_before_playing(tmp_path, capsys):
    """A --record whose folder cannot exist fails at once, naming the file in the way, and writes nothing."""
    (tmp_path / "notes").write_text("a file, not a folder")
    (tmp_path / "clip.mp4").mkdir()
    before = sorted(tmp_path.rglob("*"))
    for record in (tmp_path / "notes" / "out.mp4", tmp_path / "notes" / "more" / "out.gif"):
        err = one_line_error(capsys, "play", "--headless", "--steps", "3", "--record", str(record))
        assert f"{tmp_path / 'notes'} is a file, not a directory" in err
    err = one_line_error(capsys, "play", "--headless", "--steps", "3", "--record", str(tmp_path / "clip.mp4"))
    assert "it is a directory" in err
    assert sorted(tmp_path.rglob("*")) == before


def test_train_without_tensorboard_fails_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    out = tmp_path / "run"
    err = one_line_error(capsys, "train", "world", "--data", str(tmp_path / "d.h5"), "--out", str(out))
    assert "pip install 'worldsim[train]'" in err
    assert not out.exists()


def test_usage_errors_are_one_line(capsys):
    assert "'bogus'" in one_line_error(capsys, "train", "world", "--preset", "bogus")
    assert "{autoencoder, world, t2v, bc, distill}" in one_line_error(capsys, "train")
    assert "--steps" in one_line_error(capsys, "bench", "--steps", "many")


def test_a_mistyped_flag_is_matched_in_nested_configs_and_subcommands(capsys):
    """The flags of a stage (a subcommand) and of a nested config (plan's CEM search) are suggested too."""
    assert "perhaps you meant --steps" in one_line_error(capsys, "train", "world", "--stps", "3")
    assert "perhaps you meant --horizon" in one_line_error(capsys, "plan", "--horizen", "3")
    assert "missing required --policies" in one_line_error(capsys, "rank")
    assert "--env needs a value" in one_line_error(capsys, "record", "--env")


def test_help_lists_commands():
    p = run("--help")
    assert p.returncode == 0 and "bench" in p.stdout


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "bench-env" in capsys.readouterr().out


def flat(text: str) -> str:
    """Text without tyro's box and without whitespace, which its line wrapping moves about."""
    return "".join(text.replace("│", "").split())


@pytest.mark.parametrize(
    "command, expected",
    [
        ("bench", "--precision {fp32,bf16,auto} fp32 or bf16 weights"),
        ("bench-env", "--num-envs STR Comma-separated vector sizes to measure. (default: 1,8,32,128)"),
        ("eval", "--json FILE Also write the results as JSON to this file. (default: None)"),
        ("play", "--headless, --no-headless Play without a display"),
        ("record", "--frame-skip INT Env steps per recorded step"),
        ("train autoencoder", "--widths STR Channel width per resolution level"),
        ("train world", "--model-size {XS,S,M,B} DiT size"),
    ],
)
def test_every_command_has_help_with_defaults(capsys, command, expected):
    with pytest.raises(SystemExit) as exit:
        main([*command.split(), "--help"])
    assert exit.value.code == 0
    out = flat(capsys.readouterr().out)
    assert flat(expected) in out and "(default:" in out


def test_train_help_shows_the_defaults_of_the_preset(capsys):
    for preset, steps in (("tiny", 30), ("gpu", 60000)):
        with pytest.raises(SystemExit):
            main(["train", "world", "--preset", preset, "--help"])
        out = flat(capsys.readouterr().out)
        assert flat(f"(a resumed run continues up to this). (default: {steps})") in out
        assert flat("tiny: --steps 30 --batch-size 4") in out  # every preset's values, whichever is chosen


def test_choice_types_match_their_registries():
    from worldsim.config import DIT_SIZES
    from worldsim.precision import PRECISIONS
    from worldsim.training.config import ModelSize, Precision

    assert typing.get_args(Precision) == PRECISIONS
    assert typing.get_args(ModelSize) == tuple(DIT_SIZES)


def test_bench_env_checks_its_arguments_before_building_worlds(capsys):
    assert "--precision" in one_line_error(capsys, "bench-env", "--precision", "fp8")
    for sizes in ("8,x", "0,8", ""):
        assert "--num-envs must be" in one_line_error(capsys, "bench-env", "--num-envs", sizes)


def test_bench_env_json(tmp_path, capsys):
    """bench-env reports world and source steps/s for each vector size."""
    import json

    from worldsim.cli import main

    assert main(["bench-env", "--num-envs", "1,2", "--steps", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["num_envs"] for r in result["rows"]] == [1, 2]
    for r in result["rows"]:
        assert r["world_env_steps_per_s"] > 0 and r["source_env_steps_per_s"] > 0
