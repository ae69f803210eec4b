"""Checkpoint directories: bit-exact round trip, atomic writes, clear errors for bad ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_engine import tiny_world

from worldsim.checkpoint import CONFIG_FILE, WEIGHTS_FILE, save_tensors
from worldsim.engine import WorldModel
from worldsim.errors import CheckpointError


def test_round_trip_is_bit_exact(tmp_path):
    wm = tiny_world()
    wm.starts = {"frames": torch.randint(0, 255, (3, 2, 32, 32, 3), dtype=torch.uint8)}
    wm.save_pretrained(tmp_path / "w", card="# tiny")
    loaded = WorldModel.from_pretrained(tmp_path / "w")
    a, b = wm.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.config == wm.config
    assert torch.equal(loaded.starts["frames"], wm.starts["frames"])
    wm.reset(seed=4)
    loaded.reset(seed=4)
    assert np.array_equal(wm.step([1]).frames, loaded.step([1]).frames)


def test_overwrite_leaves_no_temp_files(tmp_path):
    wm = tiny_world()
    wm.save_pretrained(tmp_path / "w")
    wm.save_pretrained(tmp_path / "w")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def test_interrupted_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "t.safetensors"
    save_tensors({"x": torch.ones(3)}, target)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("worldsim.checkpoint.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_tensors({"x": torch.zeros(3)}, target)
    monkeypatch.undo()
    from worldsim.checkpoint import load_tensors

    assert torch.equal(load_tensors(target)["x"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


def corrupt(path, how):
    if how == "missing dir":
        return path / "nope"
    if how == "missing weights":
        (path / WEIGHTS_FILE).unlink()
    elif how == "truncated weights":
        data = (path / WEIGHTS_FILE).read_bytes()
        (path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    elif how == "garbage config":
        (path / CONFIG_FILE).write_text("{not json")
    elif how == "other version":
        cfg = json.loads((path / CONFIG_FILE).read_text())
        cfg["version"] = 999
        (path / CONFIG_FILE).write_text(json.dumps(cfg))
    elif how == "other architecture":
        cfg = json.loads((path / CONFIG_FILE).read_text())
        cfg["dit"]["width"] = 64
        (path / CONFIG_FILE).write_text(json.dumps(cfg))
    elif how == "a file":
        return path / CONFIG_FILE
    return path


@pytest.mark.parametrize(
    "how,message",
    [
        ("missing dir", "no checkpoint at"),
        ("missing weights", "missing"),
        ("truncated weights", "truncated or corrupt"),
        ("garbage config", "not valid JSON"),
        ("other version", "version 999"),
        ("other architecture", "shape mismatch"),
        ("a file", "not a directory"),
    ],
)
def test_bad_checkpoints_give_one_line_errors(tmp_path, how, message):
    wm = tiny_world()
    wm.save_pretrained(tmp_path / "w")
    path = corrupt(tmp_path / "w", how)
    with pytest.raises(CheckpointError, match=message) as info:
        WorldModel.from_pretrained(path)
    assert "\n" not in str(info.value)
