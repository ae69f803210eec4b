"""The package as users get it: one import package, the shipped world inside the wheel, nothing else at the top."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_card_folders_import_as_subpackages():
    for name, folder in (("worldsim.envs", "envs"), ("worldsim.agents", "agents"), ("worldsim.training", "training")):
        module = importlib.import_module(name)
        assert Path(module.__file__).parent.name == folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from this checkout with the installed setuptools (no build isolation: no network)."""
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the tracked files: setuptools leaves build/ behind, and a stale build/ from an earlier build
    # of a working tree could put deleted modules in the wheel.
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    p = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    (path,) = out.glob("worldsim-*.whl")
    return path


def test_wheel_holds_one_package_and_the_default_world(wheel):
    from worldsim.worlds import DEFAULT_WORLD

    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"worldsim"}, f"top-level entries besides worldsim: {top}"
    for part in ("config.json", "model.safetensors", "starts.safetensors", "README.md"):
        assert f"worldsim/assets/{DEFAULT_WORLD}/{part}" in names
    for sub in ("envs", "agents", "training", "viewer"):
        assert f"worldsim/{sub}/__init__.py" in names
    assert not any(n.endswith((".whl", ".gif", ".h5")) for n in names)


def test_wheel_plays_the_default_world_without_the_checkout(wheel, tmp_path):
    """Unpacked alone (no checkout on the path, run from elsewhere), the wheel's worldsim finds its shipped world."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # Drop what points back at the checkout: the editable install's import hook and the checkout on sys.path.
    isolate = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
        f"sys.path[:] = [{str(site)!r}] + [p for p in sys.path if p and not p.startswith({str(ROOT)!r})]\n"
    )
    code = (
        "import worldsim, gymnasium\n"
        f"assert worldsim.__file__.startswith({str(site)!r}), worldsim.__file__\n"
        "env = gymnasium.make('worldsim/CarRacing-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "obs, *_ = env.step(3)\n"
        "print(obs.shape)\n"
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, "-I", "-c", isolate + code],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "(64, 64, 3)"
