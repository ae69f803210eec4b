"""``worldsim train``: the training stages by name, the command line of each (its config, with its preset's values
as the defaults) and the run.

To add a stage, write its config (a ``TrainConfig`` in ``training/config.py``, with its ``PRESETS``) and its trainer
(a ``Stage`` of ``training/loop.py``), and name both in ``STAGES``: the stage is then ``worldsim train NAME``.

    worldsim train autoencoder --data data/carracing.h5 --out runs/carracing
    worldsim train world --preset gpu --help     # every flag, with the defaults of that preset
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar, Union

import tyro

from worldsim.training.autoencoder import AutoencoderStage
from worldsim.training.bc import BCStage
from worldsim.training.config import (
    PRESETS,
    AutoencoderTrainConfig,
    BCTrainConfig,
    DistillTrainConfig,
    TextToVideoTrainConfig,
    TrainConfig,
    WorldTrainConfig,
    with_preset,
)
from worldsim.training.distill import DistillStage
from worldsim.training.loop import Distributed, Stage, init_distributed, require_tensorboard, train
from worldsim.training.t2v import TextToVideoStage
from worldsim.training.world import WorldStage


@dataclass(frozen=True)
class StageEntry:
    """One training stage: its config, how its trainer is built, and its line in ``worldsim train --help``."""

    config: type[TrainConfig]
    trainer: Callable[[Any, Distributed], Stage]
    summary: str


STAGES: dict[str, StageEntry] = {
    "autoencoder": StageEntry(AutoencoderTrainConfig, lambda cfg, d: AutoencoderStage(cfg),
                              "Train the frame autoencoder (stage 1)."),
    "world": StageEntry(WorldTrainConfig, WorldStage,
                        "Train the DiT world model on an autoencoder's latents (stage 2)."),
    "t2v": StageEntry(TextToVideoTrainConfig, TextToVideoStage,
                      "Pretrain the same DiT as text-to-video on captioned clips (no actions)."),
    "bc": StageEntry(BCTrainConfig, lambda cfg, d: BCStage(cfg),
                     "Clone a frames-to-action policy (a small CNN) from recorded episodes."),
    "distill": StageEntry(DistillTrainConfig, DistillStage,
                          "Distil a world's sampler into fewer Euler steps a frame (faster play)."),
}  # fmt: skip
"""The stages by name, in the order ``worldsim train --help`` lists them."""

C = TypeVar("C")


@dataclass
class TrainRun(Generic[C]):
    """A training stage's config and the flags that are not part of the run (device, output)."""

    config: Annotated[C, tyro.conf.arg(name="")]  # its fields are flags of their own (--steps, not --config.steps)
    device: str | None = None
    """cpu or cuda (default: cuda when available; --preset gpu refuses a machine without it)."""
    json: bool = False
    """Print the run summary as one JSON object."""


def command_line(argv: list[str]) -> Any:
    """The type ``worldsim train`` parses: one subcommand per stage. Precedence: dataclass defaults < the --preset <
    flags. The preset's values are tyro's defaults, so --help shows what an unset flag really gets (for the --preset
    given, else the default preset); a stage's preset table shows only in its own --help."""
    preset = flag_value(argv, "--preset") or "default"

    def subcommand(name: str, entry: StageEntry) -> Any:
        default = with_preset(entry.config, name, preset if preset in PRESETS[name] else "default", {})
        summary = entry.summary
        description = f"{summary}\n\n{presets_text(PRESETS[name], default.preset)}" if argv[:1] == [name] else summary
        return Annotated[
            TrainRun[entry.config],  # type: ignore[name-defined]
            tyro.conf.subcommand(name, default=TrainRun(default), description=description),
        ]

    return Union[tuple(subcommand(name, entry) for name, entry in STAGES.items())]  # noqa: UP007


def run(run: TrainRun) -> int:
    """Train the stage ``run.config`` names, then print its summary line (or JSON); Ctrl-C saves and exits 130."""
    cfg = run.config
    require_tensorboard()
    d = init_distributed(run.device, cfg.preset)
    entry = next(entry for entry in STAGES.values() if type(cfg) is entry.config)
    result = train(entry.trainer(cfg, d), cfg, d, progress=sys.stderr.isatty())
    if not d.is_main:
        return 0
    line = (
        f"{result['stage']}: step {result['step']}/{cfg.steps}, {result['clips_per_s']:.2f} clips/s, "
        f"{result['tokens_per_s']:.0f} tokens/s, final loss {result['final_metrics'].get('loss', float('nan')):.4f}"
        f" -> {result['out']}"
    )
    print(json.dumps(result) if run.json else line)
    if result["interrupted"]:
        print(f"worldsim train: interrupted; checkpoint saved, continue with --resume --out {cfg.out}", file=sys.stderr)
        return 130
    return 0


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value given to ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``), if any; tyro checks it later."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def presets_text(presets: dict[str, dict[str, Any]], chosen: str) -> str:
    """What each --preset sets, as flags."""
    lines = [f"Presets (--preset; defaults below are those of {chosen}, flags override them):"]
    for name, values in presets.items():
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())
        lines.append(f"  {name}: {flags}")
    return "\n".join(lines)
