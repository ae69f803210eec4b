"""Shipped worlds: names that resolve to checkpoint directories in the ``worldsim.assets`` package data."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from worldsim.errors import CheckpointError

ASSETS = Path(str(files("worldsim.assets")))
"""Where the shipped worlds are: ``assets/`` of a checkout (editable install) or ``worldsim/assets`` of a wheel."""
DEFAULT_WORLD = "carracing"


def shipped_worlds() -> list[str]:
    """Names of the worlds shipped in ``assets/`` (directories holding a config.json)."""
    if not ASSETS.is_dir():
        return []
    return sorted(p.name for p in ASSETS.iterdir() if (p / "config.json").is_file())


def resolve_world(name_or_path: str | Path) -> Path:
    """A checkpoint directory path, or the name of a shipped world -> its directory."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = ASSETS / str(name_or_path).lower()
    if (shipped / "config.json").is_file():
        return shipped
    names = ", ".join(shipped_worlds()) or "none installed"
    raise CheckpointError(f"no checkpoint at {name_or_path!s} and no shipped world of that name (shipped: {names})")
