"""``worldsim data-merge``: several trajectory files of one env as one, episodes in the order given.

Recordings made at different times or by different policies (a scripted mix, then the policies cloned from it)
train one world; its ``--holdout`` keeps the last episodes out, so list the file to hold out from last.

    worldsim data-merge --data data/pusht_bc.h5,data/pusht_mix.h5 --out data/pusht.h5
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worldsim.checkpoint import check_output_path
from worldsim.config import comma_list
from worldsim.data.reader import TrajectoryReader
from worldsim.data.writer import TrajectoryWriter
from worldsim.errors import InputError


@dataclass
class DataMergeConfig:
    """What ``worldsim data-merge`` joins."""

    data: str
    """Trajectory files (``worldsim record`` output), comma-separated, of one env, frame size, rate and action
    space."""
    out: str
    """The merged file (written to a temporary name and renamed when complete)."""
    overwrite: bool = False
    """Replace --out if it exists."""


def _signature(reader: TrajectoryReader) -> tuple:
    return reader.env_id, tuple(reader.frame_shape), reader.frame_rate, str(reader.action_space)


def merge(files: list[str], out: str | Path, overwrite: bool = False) -> tuple[int, int]:
    """Write every episode of ``files`` (with its seed, attrs, infos and caption) to ``out``; returns (episodes,
    steps). Checks that the files agree before writing anything."""
    if len(files) < 2:
        raise InputError(f"data-merge joins two or more files, got {len(files)}")
    if Path(out).resolve() in {Path(f).resolve() for f in files}:
        raise InputError(f"--out {out} is one of the files being merged: choose another name")
    readers = [TrajectoryReader(f) for f in files]
    first = _signature(readers[0])
    for f, r in zip(files[1:], readers[1:]):
        if _signature(r) != first:
            raise InputError(
                f"{f} does not match {files[0]}: (env, frame shape, frame rate, action space) {_signature(r)} vs "
                f"{first}"
            )
    ref = readers[0]
    h, w = ref.frame_shape[:2]
    with TrajectoryWriter(
        out, env_id=ref.env_id, frame_size=(h, w), action_space=ref.action_space, frame_rate=ref.frame_rate,
        overwrite=overwrite,
    ) as writer:  # fmt: skip
        for reader in readers:
            for e in range(len(reader)):
                steps = reader.steps(e)
                attrs = {k: v for k, v in reader.episode_attrs(e).items() if k not in ("id", "total_steps", "seed")}
                spans = reader.captions.get(e)
                writer.add_episode(
                    reader.frames(e), steps["actions"], steps["rewards"], steps["terminations"],
                    steps["truncations"], seed=reader.seed(e), caption=spans or None, infos=reader.infos(e),
                    attrs=attrs,
                )  # fmt: skip
        return writer.episodes, writer.steps


def run(cfg: DataMergeConfig) -> int:
    """``worldsim data-merge``: join the files, print what was written."""
    check_output_path(cfg.out)
    episodes, steps = merge(comma_list(cfg.data), cfg.out, cfg.overwrite)
    print(f"{episodes} episodes, {steps} steps -> {cfg.out}")
    return 0
