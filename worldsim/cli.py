"""The ``worldsim`` command line: one table, ``COMMANDS``, from a command's name to the module that holds it.

Examples::

    worldsim record --env CarRacing-v3 --policy carracing --episodes 200 --out data/carracing.h5
    worldsim train autoencoder --data data/carracing.h5 --out runs/carracing
    worldsim train world --data data/carracing.h5 --autoencoder runs/carracing --out runs/carracing
    worldsim train world --preset gpu --help     # every flag, with the defaults of that preset
    worldsim bench                 # engine speed on this machine (table)
    worldsim bench --json          # ... as one JSON object on stdout
    worldsim play --checkpoint runs/carracing/world --record play.mp4   # drive the world with the arrow keys
    worldsim play --headless --steps 200 --policy random --record out.mp4
    worldsim rank --world runs/pusht --policies random,idle,mypkg.pusht:make --episodes 50 --real --json rank.json

A command's module has its config dataclass and a ``run(config) -> int`` that runs the command, prints its result
and returns the exit code. The config's fields are the command's flags, through tyro: one ``--field-name`` per
field, the field's docstring as its help. argparse only picks the command (and reads the global ``--threads`` and
``--version``), so that a command imports nothing but its own module. To add a command, write its module and add
its line to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import inspect
import sys
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

import tyro
import tyro._errors as tyro_errors  # tyro's parse-error hook: each usage mistake as a structured event

from worldsim.errors import ConfigError, WorldsimError, WorldsimWarning
from worldsim.version import __version__


@dataclass(frozen=True)
class Command:
    """A command: where its config and ``run`` live, and its help (or, with ``subcommands``, a group of commands)."""

    help: str
    """First line: the command's line in ``worldsim --help``; all of it: the top of ``worldsim CMD --help``."""
    module: str = ""
    """The module that holds the config and ``run(config) -> int``."""
    config: str = ""
    """The config dataclass's name in ``module``, or there a function of the command line that returns the type to
    parse (``worldsim train``: one subcommand per stage, with its preset's values as the defaults)."""
    subcommands: dict[str, Command] = field(default_factory=dict)
    """``worldsim CMD SUB``: each subcommand's own command."""


COMMANDS: dict[str, Command] = {
    "record": Command(
        """Record episodes of a Gymnasium env into an HDF5 trajectory file.

        Run a policy in a Gymnasium env and write frames (resized), actions, rewards, terminations and truncations in
        Minari's HDF5 layout. Ctrl-C keeps the finished episodes.""",
        "worldsim.data.recorder", "RecordConfig",
    ),
    "data-card": Command(
        """Describe a trajectory file: actions, speeds, standing still, off the road, driving styles.

        A short markdown card of what the data shows (what a world trained on it can learn), printed and with --out
        also written to a file.""",
        "worldsim.data.card", "DataCardConfig",
    ),
    "data-merge": Command(
        """Join trajectory files of one env into one, episodes in the order given (seeds, styles, infos, captions kept).

        A world trains on one file and holds out its last --holdout episodes: list the file to hold out from last.""",
        "worldsim.data.merge", "DataMergeConfig",
    ),
    "train": Command(
        """Train an autoencoder, a world model, its text-to-video backbone, a faster sampler, or a cloned policy.

        Stage 1 `autoencoder`, then stage 2 `world`, and `distill` to make a world faster (fewer sampler steps a
        frame); `t2v` pretrains the world's DiT on captioned clips (worldsim record --captions) and `world --init RUN`
        starts a world from it; `bc` clones a frames-to-action policy from recorded episodes (the learned policies a
        world ranks). Runs under torchrun for data parallelism (torchrun --nproc_per_node N -m worldsim train ...).
        Ctrl-C saves a checkpoint; --resume continues.""",
        "worldsim.training.command", "command_line",
    ),
    "play": Command(
        """Play a world in a pygame window (keyboard or mouse), or headless into a video.

        A real-time window onto the generated world: held keys (the world's key map) or the mouse give the actions.
        Keys: R reset, P pause, [ ] fewer/more denoising steps, H HUD, S screenshot, Esc quit. --compare shows the
        real env beside the dream; --headless plays --steps frames with a policy.""",
        "worldsim.viewer", "PlayConfig",
    ),
    "eval": Command(
        """Measure a world on held-out real episodes: PSNR/SSIM, controllability, stability, heads.

        On held-out episodes: teacher-forced next-frame PSNR/SSIM and reward/termination head quality; open-loop
        PSNR/SSIM at each horizon beside the copy-last-frame baseline and beside random actions (delta PSNR);
        stability_ratio = FD(late, real) / FD(early, real) over long dreams, on the world's encoder features; with
        --parts state (worlds whose source has a judge, e.g. PushT), the task object's mask IoU and pose error after h
        open-loop steps beside copy-last. Prints a markdown table; --json FILE writes every number.""",
        "worldsim.evaluation.eval", "EvalConfig",
    ),
    "predict": Command(
        """Predict a policy's returns in a world, beside the real env with --real.

        The policy sees only frames (road, random, or module:factory). It drives --episodes dreams of --horizon steps
        from the world's start contexts or --data episodes; with --real each dream starts from the real env's first
        frames after its intro, and the real env goes on beside it under the same policy. Prints each episode's
        predicted (and real) return and termination (and success, where the world's env knows it: PushT) and the means
        with 95% bootstrap intervals; --json FILE writes every number, --video FILE a grid of the episodes (real |
        dream). Box actions outside the bounds are clipped (one warning per policy); NaN actions are refused.""",
        "worldsim.evaluation.predict", "PredictConfig",
    ),
    "rank": Command(
        """Rank policies by their predicted success in a world, beside their real success with --real.

        Every policy's --episodes dreams run in one batch (episode i of each from the same start, seed + i). Prints a
        table of the policies sorted by predicted success rate (by predicted return where the world's env has no notion
        of success) with 95% bootstrap intervals; with --real each policy also plays the real env, and the table adds
        real success, Pearson, Spearman and MMRV across policies, and the time of each side. --json FILE writes every
        number, --video-dir DIR a real | dream grid per policy.""",
        "worldsim.evaluation.rank", "RankConfig",
    ),
    "plan": Command(
        """Plan in a world, act in its real env: model-predictive control with CEM, scored by the source's judge.

        Each decision dreams --candidates action sequences of --horizon steps in one batch from the latest real frames,
        refits to the best (--iterations rounds), executes the best one's first --replan-every actions in the real env
        and plans again. Prints real success (by the env's own rule), the highest reward and the seconds per decision;
        --json FILE writes every episode.""",
        "worldsim.evaluation.plan", "PlanConfig",
    ),
    "generate": Command(
        """Generate video from a prompt: text-to-video, image-to-video (--image) or extending a clip (--video).

        Needs a text-capable checkpoint (a text-to-video backbone from `worldsim train t2v`, or a world trained with
        captions). --prompts FILE generates one prompt per line in one batch and writes a grid.""",
        "worldsim.generate", "GenerateConfig",
    ),
    "eval-text": Command(
        """Measure how a text-capable checkpoint follows prompts, from the pixels it generates.

        Text following on held-out prompts and on CarRacing palettes never seen together, prompt switches, and the
        realism (Fréchet distance) of generated frames beside real-vs-real; see worldsim.evaluation.eval_text.""",
        "worldsim.evaluation.eval_text", "EvalTextConfig",
    ),
    "bench": Command(
        """Measure the engine's speed on this machine.

        Frames/s, latency over a long rollout, full-recompute speed, FLOPs and MFU.""",
        "worldsim.bench", "BenchConfig",
    ),
    "bench-env": Command(
        """Env steps/s of a world as a (vector) Gymnasium env beside its real source env.

        Steps/s of gymnasium.make_vec('worldsim/WorldModel-v0', num_envs=N) for several N, and of the real source env
        (SyncVectorEnv of N copies) side by side.""",
        "worldsim.bench_env", "EnvBenchConfig",
    ),
    "rl": Command(
        """Train a pixel agent inside a world (PPO in the dream), and score it in the real env and the dream.

        `train` steps only the world's native vector env (no real env unless --eval-real-every asks, and then
        counted); `eval` gives the mean +- std return over real tracks and over dreams, side by side.
        Ctrl-C saves a checkpoint; --resume continues.""",
        subcommands={
            "train": Command("PPO in the dream.", "worldsim.training.rl", "RLTrainConfig"),
            "eval": Command("Real and dream returns.", "worldsim.evaluation.rl_eval", "RLEvalConfig"),
        },
    ),
}  # fmt: skip


def load(command: Command, argv: list[str]) -> tuple[Any, Callable[[Any], int]]:
    """The type to parse for ``command`` and the function that runs what it parses into. A command's module is
    imported here, not at the top, so that ``worldsim CMD`` imports only CMD's module (and --help none)."""
    if not command.subcommands:
        module = importlib.import_module(command.module)
        config = getattr(module, command.config)
        return (config if isinstance(config, type) else config(argv)), module.run
    loaded = {name: load(sub, argv[1:]) for name, sub in command.subcommands.items()}
    choices = tuple(
        Annotated[config, tyro.conf.subcommand(name, description=command.subcommands[name].help)]
        for name, (config, _) in loaded.items()
    )
    runs = dict(loaded.values())
    return Union[choices], lambda cfg: runs[type(cfg)](cfg)  # noqa: UP007


def parse(config: Any, argv: list[str], prog: str, description: str) -> Any:
    """``argv`` -> an instance of ``config`` (``--help`` exits 0). A usage mistake is one ConfigError line, from tyro's
    parse-error event (tyro's own message is a box of several lines, and every worldsim error is one line)."""

    def one_line(event: tyro_errors.ParseErrorEvent) -> None:
        raise ConfigError(f"{usage_error(event, config)} (see {event.prog} --help)")

    try:
        with tyro_errors.on_parse_error(one_line):
            return tyro.cli(config, args=argv, prog=prog, description=description)
    except SystemExit as e:
        if e.code:  # a mistake that raised no event (none known): still one line
            raise ConfigError(f"invalid arguments (see {prog} --help)") from None
        raise  # --help


def usage_error(event: tyro_errors.ParseErrorEvent, config: Any) -> str:
    """A parse-error event of tyro's as one line (the first letter lower case, as every worldsim error)."""
    e = tyro_errors
    if isinstance(event, e.UnrecognizedArgs):
        unknown = [t.split("=")[0] for t in event.tokens if t.startswith("--")]
        known = flags(config)
        near = [m for t in unknown for m in difflib.get_close_matches(t, [f for f in known if f != t], 1, 0.75)]
        return f"unrecognized options: {', '.join(event.tokens)}" + (f"; perhaps you meant {near[0]}" if near else "")
    if isinstance(event, e.InvalidChoice):
        name = event.argument.display_name()
        return f"invalid choice '{event.value}' for argument '{name}'. Expected one of {event.choices}."
    if isinstance(event, e.MissingSubcommand):
        return f"expected one of {{{', '.join(event.subcommand_spec.parser_from_name)}}}."
    if isinstance(event, e.MissingArgs):
        return "missing required " + ", ".join(a.arg.display_name() for a in event.missing_arguments)
    if isinstance(event, e.BadValue):
        name = event.argument.display_name()
        if event.offending_value is None:
            return f"{name} needs a value"
        return f"{name} takes no value, got {event.offending_value!r}"
    if isinstance(event, e.InstantiationFailure):
        name = event.argument.display_name() if event.argument is not None else "the arguments"
        return f"error parsing {name}: {event.message.split(chr(10))[0]}"  # its first line: what did not parse
    if isinstance(event, e.MutexConflict):
        return f"{event.first_token} and {event.second_token} are not allowed together"
    return f"invalid arguments ({type(event).__name__})"


def flags(config: Any) -> list[str]:
    """The ``--flags`` of a config type, its nested configs' (flags of their own) and every subcommand's: what a
    mistyped flag is matched against."""
    origin, args = typing.get_origin(config), typing.get_args(config)
    if origin is Annotated:
        return flags(args[0])
    if origin is Union:
        return [f for member in args for f in flags(member)]
    cls = origin or config
    if not dataclasses.is_dataclass(cls):
        return []
    bound = dict(zip(getattr(cls, "__parameters__", ()), args))
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except (NameError, TypeError):  # an annotation that does not resolve here: no flags to suggest
        return []
    found: list[str] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        hint = typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint
        hint = bound.get(hint, hint)
        found += flags(hint) if dataclasses.is_dataclass(hint) else ["--" + f.name.replace("_", "-")]
    return found


def run_command(name: str, argv: list[str]) -> int:
    """Parse ``argv`` into the command's config and run it."""
    command = COMMANDS[name]
    config, run = load(command, argv)
    return run(parse(config, argv, f"worldsim {name}", inspect.cleandoc(command.help)))


def build_parser() -> argparse.ArgumentParser:
    """Global flags and the command; the command's own flags are left to it."""
    listing = "\n".join(f"  {name:<11} {cmd.help.splitlines()[0]}" for name, cmd in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="worldsim",
        usage="worldsim [-h] [--version] [--threads N] COMMAND [FLAGS]",
        description="A learned, playable simulator: train a world model on trajectories, then play it.",
        epilog=f"commands:\n{listing}\n\n`worldsim COMMAND --help` lists a command's flags and their defaults.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"worldsim {__version__}")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch (default: all)")
    parser.add_argument("command", nargs="?", choices=COMMANDS, metavar="COMMAND", help="one of the commands below")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _one_line_warnings(command: str, show: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` that prints a worldsim warning as one line, as errors are (others go to ``show``)."""

    def one_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, WorldsimWarning):
            print(f"worldsim {command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    return one_line


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.threads:
            import torch  # only when asked: `worldsim --help` and the commands that need no torch stay fast

            torch.set_num_threads(args.threads)
        with warnings.catch_warnings():  # the previous showwarning comes back on exit
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            return run_command(args.command, args.flags)
    except WorldsimError as e:
        print(f"worldsim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"worldsim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
