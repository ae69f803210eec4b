"""worldsim eval: PSNR maths and the open-loop protocol against the copy-last baseline."""

from __future__ import annotations

import json

import numpy as np
from conftest import tiny_config
from helpers import write_dataset

from worldsim.cli import main
from worldsim.engine import WorldModel
from worldsim.eval import psnr


def test_psnr_matches_its_definition():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = a.copy()
    b[1] = 10  # MSE 100 -> 10 log10(255^2 / 100)
    out = psnr(a, b)
    assert out[0] > 90 and abs(out[1] - 10 * np.log10(255**2 / 100)) < 1e-9


def test_eval_cli_writes_json_with_baselines(tmp_path, capsys):
    data = tmp_path / "d.h5"
    episodes = write_dataset(data, lengths=(12, 14), size=32)
    cfg = tiny_config(action=None, frame_size=(32, 32))
    import gymnasium as gym

    from worldsim.config import ActionSpec

    cfg.action = ActionSpec.from_gym(gym.spaces.Discrete(5))
    WorldModel(cfg).save_pretrained(tmp_path / "w")
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(tmp_path / "w"), "--data", str(data), "--horizons", "1,4", "--context", "2"]
    assert main([*argv, "--starts-per-episode", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["rollouts"] == 2
    for key in ("psnr_h1", "psnr_h4", "baseline_psnr_h1", "baseline_psnr_h4", "delta_psnr_h4"):
        assert np.isfinite(result[key])
    # Copy-last baseline of the first rollout of episode 0 (start 0, context 2): frame 1 vs frames 2 and 5.
    f = episodes[0]["observations"]
    expected_h4 = np.mean([psnr(f[1], f[5]), psnr(episodes[1]["observations"][1], episodes[1]["observations"][5])])
    assert abs(result["baseline_psnr_h4"] - expected_h4) < 1e-6
    assert "| 4 |" in capsys.readouterr().out
