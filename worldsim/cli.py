"""The ``worldsim`` command line. Each subcommand is a thin wrapper over the library.

Examples::

    worldsim bench                 # engine speed on this machine (table)
    worldsim bench --json          # ... as one JSON object on stdout
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

    bench = sub.add_parser(
        "bench",
        help="measure the engine's speed on this machine",
        description="Measure frames/s, latency over a long rollout, full-recompute speed, FLOPs and MFU.",
    )
    add_dataclass_args(bench, BenchConfig)
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    bench.set_defaults(func=cmd_bench)
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
