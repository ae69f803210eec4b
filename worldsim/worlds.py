"""Where a world comes from: a checkpoint directory, a world shipped in ``worldsim.assets``, or a Hub repo."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from worldsim.errors import CheckpointError
from worldsim.hub import hub_snapshot, parse_hub_ref

ASSETS = Path(str(files("worldsim.assets")))
POLICY_DIR = ASSETS / "policies"
"""Where shipped learned policies live: ``assets/policies/<name>/`` (config.json + model.safetensors)."""
"""Where the shipped worlds are: ``assets/`` of a checkout (editable install) or ``worldsim/assets`` of a wheel."""
DEFAULT_WORLD = "carracing"


def shipped_worlds() -> list[str]:
    """Names of the worlds shipped in ``assets/`` (directories holding a config.json)."""
    if not ASSETS.is_dir():
        return []
    return sorted(p.name for p in ASSETS.iterdir() if (p / "config.json").is_file())


def resolve_world(name_or_path: str | Path) -> Path:
    """A checkpoint directory, a shipped world's name or a Hub repo id (``owner/name[@revision]``) -> a directory.

    Tried in that order, so a local directory shadows a Hub repo of the same name (as in transformers). A Hub world
    is read from huggingface_hub's cache and downloaded on first use (``worldsim.hub.hub_snapshot``).
    """
    path = Path(name_or_path)
    if path.exists():
        # A training run directory stands for the model it exported (``runs/x`` -> ``runs/x/world``).
        exported = path / "world"
        return exported if not (path / "config.json").exists() and (exported / "config.json").exists() else path
    shipped = ASSETS / str(name_or_path).lower()
    if (shipped / "config.json").is_file():
        return shipped
    names = ", ".join(shipped_worlds()) or "none installed"
    tried = f"no checkpoint at {name_or_path!s}"

    ref = parse_hub_ref(str(name_or_path))
    if ref is None:
        raise CheckpointError(f"{tried} and no shipped world of that name (shipped: {names})")
    try:
        return hub_snapshot(ref)
    except CheckpointError as e:
        raise CheckpointError(f"{tried}, no shipped world of that name (shipped: {names}), and {e}") from None
