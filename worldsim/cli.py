"""The ``worldsim`` command line. Each subcommand is a thin wrapper over the library.

Examples::

    worldsim record --env CarRacing-v3 --policy carracing --episodes 200 --out data/carracing.h5
    worldsim train autoencoder --data data/carracing.h5 --out runs/carracing
    worldsim train world --data data/carracing.h5 --autoencoder runs/carracing --out runs/carracing
    worldsim bench                 # engine speed on this machine (table)
    worldsim bench --json          # ... as one JSON object on stdout
    worldsim play --checkpoint runs/carracing --record play.mp4   # drive the world with the arrow keys
    worldsim play --headless --steps 200 --policy random --record out.mp4
"""

from __future__ import annotations

import argparse
import json
import sys

from worldsim.cli_args import add_dataclass_args, dataclass_from_args
from worldsim.errors import WorldsimError


def cmd_bench(args: argparse.Namespace) -> int:
    from worldsim.bench import BenchConfig, format_table, run_bench

    cfg = dataclass_from_args(BenchConfig, args)
    result = run_bench(cfg, progress=not args.json and sys.stderr.isatty())
    print(json.dumps(result) if args.json else format_table(result))
    return 0


def cmd_bench_env(args: argparse.Namespace) -> int:
    from worldsim.bench_env import EnvBenchConfig, format_env_table, run_env_bench

    result = run_env_bench(dataclass_from_args(EnvBenchConfig, args), progress=not args.json and sys.stderr.isatty())
    print(json.dumps(result) if args.json else format_env_table(result))
    return 0


def _report(command: str, summary: str, interrupted: bool, kept: str = "") -> int:
    """Print a run's summary line; an interrupted run says so on stderr and exits 130 (what Ctrl-C means)."""
    if interrupted:
        print(f"worldsim {command}: interrupted; {kept}{summary}", file=sys.stderr)
        return 130
    print(summary)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from worldsim.eval import EvalConfig, evaluate, format_eval_table

    cfg = dataclass_from_args(EvalConfig, args)
    result = evaluate(cfg, progress=sys.stderr.isatty())
    if args.json_out:
        from worldsim.checkpoint import atomic_path

        with atomic_path(args.json_out) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    print(format_eval_table(result, [int(h) for h in cfg.horizons.split(",")]))
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    from worldsim.viewer import PlayConfig, play

    result = play(dataclass_from_args(PlayConfig, args))
    summary = (
        f"{result['frames']} frames shown ({result['model_steps']} model steps), {result['display_fps']:.1f} fps "
        f"displayed, {result['model_fps']:.1f} fps model" + (f" -> {result['record']}" if result["record"] else "")
    )
    return _report("play", summary, result["interrupted"])


def cmd_record(args: argparse.Namespace) -> int:
    from worldsim.data.recorder import RecordConfig, record

    cfg = dataclass_from_args(RecordConfig, args)
    result = record(cfg, progress=sys.stderr.isatty())
    summary = (
        f"{result['episodes']} episodes, {result['steps']} steps -> {result['out']} "
        f"({result['frames_per_second']:.0f} frames/s, world frame rate {result['frame_rate']} fps)"
    )
    return _report("record", summary, result["interrupted"], kept="kept ")


def cmd_train(args: argparse.Namespace) -> int:
    from worldsim.training.config import AutoencoderTrainConfig, WorldTrainConfig, with_preset
    from worldsim.training.loop import init_distributed, train

    d = init_distributed(args.device)
    if args.stage == "autoencoder":
        from worldsim.training.autoencoder import AutoencoderStage

        cfg = with_preset(AutoencoderTrainConfig, "autoencoder", args.preset or "default", vars(args))
        stage = AutoencoderStage(cfg)
    else:
        from worldsim.training.world import WorldStage

        cfg = with_preset(WorldTrainConfig, "world", args.preset or "default", vars(args))
        stage = WorldStage(cfg, d)
    result = train(stage, cfg, d, progress=sys.stderr.isatty())
    if d.is_main:
        line = (
            f"{result['stage']}: step {result['step']}/{cfg.steps}, {result['clips_per_s']:.2f} clips/s, "
            f"{result['tokens_per_s']:.0f} tokens/s, final loss {result['final_metrics'].get('loss', float('nan')):.4f}"
            f" -> {result['out']}"
        )
        if args.json:
            print(json.dumps(result))
        else:
            print(line)
        if result["interrupted"]:
            print(
                f"worldsim train: interrupted; checkpoint saved, continue with --resume --out {cfg.out}",
                file=sys.stderr,
            )
            return 130
    return 0


def _show_preset_defaults(parser: argparse.ArgumentParser, stage: str) -> None:
    """--help shows the defaults of the presets, which is what an unset flag really gets."""
    from worldsim.training.config import PRESETS

    presets = PRESETS[stage]
    for action in parser._actions:
        values = {name: preset[action.dest] for name, preset in presets.items() if action.dest in preset}
        if values and action.help:
            per_preset = ", ".join(f"{name}: {value}" for name, value in values.items())
            action.help = action.help.rsplit(" (default:", 1)[0] + f" (preset defaults: {per_preset})"


def build_parser() -> argparse.ArgumentParser:
    from worldsim import __version__
    from worldsim.bench import BenchConfig

    parser = argparse.ArgumentParser(
        prog="worldsim",
        description="A learned, playable simulator: train a world model on trajectories, then play it.",
    )
    parser.add_argument("--version", action="version", version=f"worldsim {__version__}")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from worldsim.bench_env import EnvBenchConfig
    from worldsim.data.recorder import RecordConfig
    from worldsim.eval import EvalConfig
    from worldsim.viewer import PlayConfig

    json_table = ("--json", dict(action="store_true", help="print one JSON object instead of a table"))
    json_file = ("--json", dict(dest="json_out", default=None, metavar="FILE", help="also write the results as JSON"))
    commands = [
        (
            "bench",
            BenchConfig,
            cmd_bench,
            json_table,
            "measure the engine's speed on this machine",
            "Measure frames/s, latency over a long rollout, full-recompute speed, FLOPs and MFU.",
        ),
        (
            "bench-env",
            EnvBenchConfig,
            cmd_bench_env,
            json_table,
            "env steps/s of a world as a (vector) Gymnasium env beside its real source env",
            "Steps/s of gymnasium.make_vec('worldsim/WorldModel-v0', num_envs=N) for several N, and of the real source "
            "env (SyncVectorEnv of N copies) side by side.",
        ),
        (
            "eval",
            EvalConfig,
            cmd_eval,
            json_file,
            "measure a world on held-out real episodes: PSNR/SSIM, controllability, stability, heads",
            "On held-out episodes: teacher-forced next-frame PSNR/SSIM and reward/termination head quality; open-loop "
            "PSNR/SSIM at each horizon beside the copy-last-frame baseline and beside random actions (delta PSNR); "
            "stability_ratio = FD(late, real) / FD(early, real) over long dreams, on the world's encoder features. "
            "Prints a markdown table; --json FILE writes every number.",
        ),
        (
            "play",
            PlayConfig,
            cmd_play,
            None,
            "play a world in a pygame window (keyboard or mouse), or headless into a video",
            "A real-time window onto the generated world: held keys (the world's key map) or the mouse give the "
            "actions. Keys: R reset, P pause, [ ] fewer/more denoising steps, H HUD, S screenshot, Esc quit. "
            "--compare shows the real env beside the dream; --headless plays --steps frames with a policy.",
        ),
        (
            "record",
            RecordConfig,
            cmd_record,
            None,
            "record episodes of a Gymnasium env into an HDF5 trajectory file",
            "Run a policy in a Gymnasium env and write frames (resized), actions, rewards, terminations and "
            "truncations in Minari's HDF5 layout. Ctrl-C keeps the finished episodes.",
        ),
    ]
    for name, cls, func, extra, help_text, description in commands:
        p = sub.add_parser(name, help=help_text, description=description)
        add_dataclass_args(p, cls)
        if extra:
            p.add_argument(extra[0], **extra[1])
        p.set_defaults(func=func)

    from worldsim.training.config import AutoencoderTrainConfig, WorldTrainConfig

    train = sub.add_parser(
        "train",
        help="train an autoencoder or a world model on trajectories",
        description="Stage 1 `autoencoder`, then stage 2 `world`. Runs under torchrun for data parallelism "
        "(torchrun --nproc_per_node N -m worldsim train ...). Ctrl-C saves a checkpoint; --resume continues.",
    )
    stages = train.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, cls, help_text in (
        ("autoencoder", AutoencoderTrainConfig, "train the frame autoencoder (stage 1)"),
        ("world", WorldTrainConfig, "train the DiT world model on latents of a trained autoencoder (stage 2)"),
    ):
        p = stages.add_parser(name, help=help_text, description=help_text)
        add_dataclass_args(p, cls)
        _show_preset_defaults(p, name)
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
        p.add_argument("--json", action="store_true", help="print the run summary as one JSON object")
        p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return args.func(args)
    except WorldsimError as e:
        print(f"worldsim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"worldsim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
