"""Checkpoint directories: ``config.json`` + safetensors, written atomically, loaded without pickle.

Layout::

    world/
      config.json            WorldConfig (architecture, frame size, latent scale, actions, sampler ...)
      model.safetensors      weights: ``autoencoder.*`` and ``dit.*``
      starts.safetensors     start contexts: ``frames`` uint8 (S, T0, H, W, 3), optional ``actions``
      README.md              model card (data, steps, wall time, hardware, metrics)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from worldsim.config import WorldConfig
from worldsim.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STARTS_FILE = "starts.safetensors"
CARD_FILE = "README.md"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path`` (file or dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            # Directories cannot be replaced in one rename: move the old one aside first.
            old = tmp.parent / (path.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def check_output_path(path: str | Path, doing: str = "write") -> Path:
    """``path`` as a Path if a file can be written there (missing folders are created later); else a one-line
    ConfigError. Creates nothing: called before any work, so a bad output path fails at once, not after it."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot {doing} {path}: it is a directory")
    # The nearest existing ancestor decides: the missing folders below it are created when the file is written.
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    missing = "" if existing == path.parent else f"cannot create {path.parent}: "
    if not existing.is_dir():
        raise ConfigError(f"cannot {doing} {path}: {missing}{existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot {doing} {path}: {missing}{existing} is not writable")
    return path


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Atomic safetensors write."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning any failure into a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({str(e).splitlines()[0]})") from None


def save_checkpoint(
    path: str | Path,
    config: WorldConfig,
    state: dict[str, torch.Tensor],
    starts: dict[str, torch.Tensor] | None = None,
    card: str = "",
    half: bool = False,
) -> None:
    """Write a checkpoint directory atomically; ``half`` stores float weights as fp16 (for shipping)."""
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(path) as tmp:
        tmp.mkdir()
        (tmp / CONFIG_FILE).write_text(config.to_json())
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / WEIGHTS_FILE))
        if starts:
            save_file({k: v.contiguous().cpu() for k, v in starts.items()}, str(tmp / STARTS_FILE))
        if card:
            (tmp / CARD_FILE).write_text(card)


def load_config(path: str | Path) -> WorldConfig:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a directory (expected config.json + model.safetensors)")
    data = _read_config(path)
    try:
        return WorldConfig.from_dict(data)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _read_config(path: Path) -> dict:
    """The parsed ``config.json`` of a checkpoint directory, or a one-line CheckpointError."""
    file = path / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{path} has no {CONFIG_FILE}: not a worldsim checkpoint")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} does not hold a config object")
    return data


def load_checkpoint(path: str | Path) -> tuple[WorldConfig, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(config, weights, start contexts). Raises CheckpointError with a one-line reason."""
    path = Path(path)
    config = load_config(path)
    state = load_tensors(path / WEIGHTS_FILE)
    starts = load_tensors(path / STARTS_FILE) if (path / STARTS_FILE).exists() else {}
    return config, state, starts


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of ``state`` under ``prefix`` (``"dit."``), with the prefix taken off their names."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Strict ``load_state_dict`` whose mismatch is a one-line CheckpointError."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"shape mismatch at {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        raise CheckpointError(f"{where} does not match its config: " + "; ".join(parts))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


AUTOENCODER_KIND = "autoencoder"


def save_autoencoder(path: str | Path, frame_size: list[int], config: dict, state: dict[str, torch.Tensor]) -> None:
    """An autoencoder-only checkpoint (stage 1 of training): config.json + model.safetensors."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        meta = {"kind": AUTOENCODER_KIND, "frame_size": list(frame_size), "autoencoder": config, "version": 1}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / WEIGHTS_FILE))


def load_autoencoder(path: str | Path) -> tuple[list[int], dict, dict[str, torch.Tensor]]:
    """(frame_size, autoencoder config dict, weights) from an autoencoder or a world checkpoint."""
    path = Path(path)
    data = _read_config(path)
    if data.get("kind") == AUTOENCODER_KIND:
        return data["frame_size"], data["autoencoder"], load_tensors(path / WEIGHTS_FILE)
    config, state, _ = load_checkpoint(path)
    return config.frame_size, dataclasses.asdict(config.autoencoder), strip_prefix(state, "autoencoder.")
