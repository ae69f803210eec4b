"""The ``worldsim`` command line. Each subcommand is a thin wrapper over the library.

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

A command's flags are its config dataclass, through tyro: one ``--field-name`` per field, the field's docstring
as its help. argparse only picks the command (and reads the global ``--threads`` and ``--version``), so that a
command imports nothing but its own module.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import tyro

from worldsim.errors import ConfigError, WorldsimError, WorldsimWarning
from worldsim.version import __version__

C = TypeVar("C")
Flat = Annotated[C, tyro.conf.arg(name="")]
"""A nested config whose fields are flags of their own (``--steps``, not ``--config.steps``)."""


@dataclass
class TableOrJson(Generic[C]):
    """A command's config and how its result is printed."""

    config: Flat[C]
    json: bool = False
    """Print one JSON object instead of a table."""


@dataclass
class WithJsonFile(Generic[C]):
    """A command's config and where its full result is also written."""

    config: Flat[C]
    json: Annotated[str | None, tyro.conf.arg(metavar="FILE")] = None
    """Also write the results as JSON to this file."""


@dataclass
class TrainRun(Generic[C]):
    """A training stage's config and the flags that are not part of the run (device, output)."""

    config: Flat[C]
    device: str | None = None
    """cpu or cuda (default: cuda when available; --preset gpu refuses a machine without it)."""
    json: bool = False
    """Print the run summary as one JSON object."""


def parse(cls: Any, argv: list[str], command: str, description: str, default: Any = tyro.MISSING_NONPROP) -> Any:
    """``argv`` -> an instance of ``cls`` (``--help`` exits 0). A usage mistake is one ConfigError line: tyro's
    own message is a box of several lines on stderr, and every worldsim error is one line."""
    prog = f"worldsim {command}"
    box = io.StringIO()
    try:
        with contextlib.redirect_stderr(box):
            return tyro.cli(cls, args=argv, prog=prog, description=inspect.cleandoc(description), default=default)
    except SystemExit as e:
        if not e.code:
            raise  # --help
        text = _ANSI.sub("", box.getvalue())
        more = re.search(r"(?:run|see) (worldsim .*?--help)", text)  # the (sub)command's own help
        raise ConfigError(f"{_first_paragraph(text)} (see {more[1] if more else prog + ' --help'})") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RULE = re.compile(r"^[╭╰]|^[─-]{3,}$")


def _first_paragraph(box: str) -> str:
    """The message inside tyro's error box on one line: its first paragraph, and a "Perhaps you meant" flag."""
    paragraphs: list[list[str]] = [[]]
    for line in box.splitlines():
        line = line.strip().strip("│").strip()
        if _RULE.match(line) or not line:
            paragraphs.append([])
        else:
            paragraphs[-1].append(line)
    paragraphs = [p for p in paragraphs if p]
    if "╭" not in box and len(paragraphs) > 1:
        paragraphs = paragraphs[1:]  # without UTF-8 the box title is a line of its own
    if not paragraphs:
        return "invalid arguments"
    message = " ".join(paragraphs[0])
    hint = next((p for p in paragraphs[1:] if p[0].startswith("Perhaps you meant") and len(p) > 1), None)
    return message + (f"; perhaps you meant {hint[1].split()[0]}" if hint else "")


# --------------------------------------------------------------------------- commands
def cmd_bench(argv: list[str]) -> int:
    """Measure the engine's speed on this machine.

    Frames/s, latency over a long rollout, full-recompute speed, FLOPs and MFU.
    """
    from worldsim.bench import BenchConfig, format_table, run_bench

    args = parse(TableOrJson[BenchConfig], argv, "bench", cmd_bench.__doc__, TableOrJson(BenchConfig()))
    result = run_bench(args.config, progress=not args.json and sys.stderr.isatty())
    print(json.dumps(result) if args.json else format_table(result))
    return 0


def cmd_bench_env(argv: list[str]) -> int:
    """Env steps/s of a world as a (vector) Gymnasium env beside its real source env.

    Steps/s of gymnasium.make_vec('worldsim/WorldModel-v0', num_envs=N) for several N, and of the real source env
    (SyncVectorEnv of N copies) side by side.
    """
    from worldsim.bench_env import EnvBenchConfig, format_env_table, run_env_bench

    args = parse(TableOrJson[EnvBenchConfig], argv, "bench-env", cmd_bench_env.__doc__, TableOrJson(EnvBenchConfig()))
    result = run_env_bench(args.config, progress=not args.json and sys.stderr.isatty())
    print(json.dumps(result) if args.json else format_env_table(result))
    return 0


def _report(command: str, summary: str, interrupted: bool, kept: str = "") -> int:
    """Print a run's summary line; an interrupted run says so on stderr and exits 130 (what Ctrl-C means)."""
    if interrupted:
        print(f"worldsim {command}: interrupted; {kept}{summary}", file=sys.stderr)
        return 130
    print(summary)
    return 0


def cmd_eval(argv: list[str]) -> int:
    """Measure a world on held-out real episodes: PSNR/SSIM, controllability, stability, heads.

    On held-out episodes: teacher-forced next-frame PSNR/SSIM and reward/termination head quality; open-loop
    PSNR/SSIM at each horizon beside the copy-last-frame baseline and beside random actions (delta PSNR);
    stability_ratio = FD(late, real) / FD(early, real) over long dreams, on the world's encoder features; with
    --parts state (worlds whose source has a judge, e.g. PushT), the task object's mask IoU and pose error after h
    open-loop steps beside copy-last. Prints a markdown table; --json FILE writes every number.
    """
    from worldsim.checkpoint import atomic_path, check_output_path
    from worldsim.evaluation.eval import EvalConfig, evaluate
    from worldsim.evaluation.eval_report import format_eval_table
    from worldsim.evaluation.metrics import json_ready

    args = parse(WithJsonFile[EvalConfig], argv, "eval", cmd_eval.__doc__, WithJsonFile(EvalConfig()))
    cfg = args.config
    if args.json:
        check_output_path(args.json)  # before minutes of evaluation, not after
    result = evaluate(cfg, progress=True)
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(json_ready(result), indent=2))
    print(format_eval_table(result, [int(h) for h in cfg.horizons.split(",")]))
    return 0


def cmd_play(argv: list[str]) -> int:
    """Play a world in a pygame window (keyboard or mouse), or headless into a video.

    A real-time window onto the generated world: held keys (the world's key map) or the mouse give the actions.
    Keys: R reset, P pause, [ ] fewer/more denoising steps, H HUD, S screenshot, Esc quit. --compare shows the
    real env beside the dream; --headless plays --steps frames with a policy.
    """
    from worldsim.viewer import PlayConfig, play

    result = play(parse(PlayConfig, argv, "play", cmd_play.__doc__, PlayConfig()))
    summary = (
        f"{result['frames']} frames shown ({result['model_steps']} model steps), {result['display_fps']:.1f} fps "
        f"displayed, {result['model_fps']:.1f} fps model" + (f" -> {result['record']}" if result["record"] else "")
    )
    return _report("play", summary, result["interrupted"])


def cmd_predict(argv: list[str]) -> int:
    """Predict a policy's returns in a world, beside the real env with --real.

    The policy sees only frames (road, random, or module:factory). It drives --episodes dreams of --horizon steps
    from the world's start contexts or --data episodes; with --real each dream starts from the real env's first
    frames after its intro, and the real env goes on beside it under the same policy. Prints each episode's
    predicted (and real) return and termination (and success, where the world's env knows it: PushT) and the means
    with 95% bootstrap intervals; --json FILE writes every number, --video FILE a grid of the episodes (real |
    dream). Box actions outside the bounds are clipped (one warning per policy); NaN actions are refused.
    """
    from worldsim.evaluation.predict import PredictConfig, predict
    from worldsim.evaluation.report import format_predict_table, write_predict_json, write_predict_video

    cfg = parse(PredictConfig, argv, "predict", cmd_predict.__doc__)
    result = predict(
        cfg.world,
        cfg.policy,
        episodes=cfg.episodes,
        horizon=cfg.horizon,
        real=cfg.real,
        data=cfg.data or None,
        seed=cfg.seed,
        context=cfg.context,
        keep_frames=bool(cfg.video),
        progress=True,
        device=cfg.device,
        precision=cfg.precision,
        judge=cfg.judge,
    )
    if cfg.json:
        write_predict_json(result, cfg.json)
    if cfg.video:
        write_predict_video(result, cfg.video)
    print(format_predict_table(result))
    return 0


def cmd_rank(argv: list[str]) -> int:
    """Rank policies by their predicted success in a world, beside their real success with --real.

    Every policy's --episodes dreams run in one batch (episode i of each from the same start, seed + i). Prints a
    table of the policies sorted by predicted success rate (by predicted return where the world's env has no notion
    of success) with 95% bootstrap intervals; with --real each policy also plays the real env, and the table adds
    real success, Pearson, Spearman and MMRV across policies, and the time of each side. --json FILE writes every
    number, --video-dir DIR a real | dream grid per policy.
    """
    from worldsim.evaluation.rank import (
        RankConfig,
        format_rank_table,
        policy_list,
        rank,
        write_rank_json,
        write_rank_videos,
    )

    cfg = parse(RankConfig, argv, "rank", cmd_rank.__doc__)
    result = rank(
        cfg.world,
        policy_list(cfg.policies),
        episodes=cfg.episodes,
        horizon=cfg.horizon,
        real=cfg.real,
        seed=cfg.seed,
        context=cfg.context,
        keep_frames=cfg.video_episodes if cfg.video_dir else 0,
        progress=True,
        device=cfg.device,
        precision=cfg.precision,
        judge=cfg.judge,
    )
    if cfg.json:
        write_rank_json(result, cfg.json)
    if cfg.video_dir:
        write_rank_videos(result, cfg.video_dir)
    print(format_rank_table(result))
    return 0


def cmd_plan(argv: list[str]) -> int:
    """Plan in a world, act in its real env: model-predictive control with CEM, scored by the source's judge.

    Each decision dreams --candidates action sequences of --horizon steps in one batch from the latest real frames,
    refits to the best (--iterations rounds), executes the best one's first --replan-every actions in the real env
    and plans again. Prints real success (by the env's own rule), the highest reward and the seconds per decision;
    --json FILE writes every episode.
    """
    from worldsim.evaluation.plan import PlanConfig, run

    return run(parse(PlanConfig, argv, "plan", cmd_plan.__doc__))


def cmd_eval_text(argv: list[str]) -> int:
    """Measure how a text-capable checkpoint follows prompts, from the pixels it generates.

    Text following on held-out prompts and on CarRacing palettes never seen together, prompt switches, and the
    realism (Fréchet distance) of generated frames beside real-vs-real; see worldsim.evaluation.eval_text.
    """
    from worldsim.evaluation.eval_text import EvalTextConfig, TextEvaluator, summary_lines

    cfg = parse(EvalTextConfig, argv, "eval-text", cmd_eval_text.__doc__)
    result = TextEvaluator(cfg, progress=sys.stderr.isatty()).run()
    print("\n".join(summary_lines(result)))
    return 0


def cmd_generate(argv: list[str]) -> int:
    """Generate video from a prompt: text-to-video, image-to-video (--image) or extending a clip (--video).

    Needs a text-capable checkpoint (a text-to-video backbone from `worldsim train t2v`, or a world trained with
    captions). --prompts FILE generates one prompt per line in one batch and writes a grid.
    """
    from worldsim.generate import GenerateConfig, generate

    cfg = parse(GenerateConfig, argv, "generate", cmd_generate.__doc__)
    result = generate(cfg, progress=sys.stderr.isatty())
    print(f"{result['prompts']} prompt(s), {result['frames']} frames in {result['seconds']} s -> {result['out']}")
    return 0


def cmd_record(argv: list[str]) -> int:
    """Record episodes of a Gymnasium env into an HDF5 trajectory file.

    Run a policy in a Gymnasium env and write frames (resized), actions, rewards, terminations and truncations in
    Minari's HDF5 layout. Ctrl-C keeps the finished episodes.
    """
    from worldsim.data.recorder import RecordConfig, record

    cfg = parse(RecordConfig, argv, "record", cmd_record.__doc__, RecordConfig())
    result = record(cfg, progress=sys.stderr.isatty())
    summary = (
        f"{result['episodes']} episodes, {result['steps']} steps -> {result['out']} "
        f"({result['frames_per_second']:.0f} frames/s, world frame rate {result['frame_rate']} fps)"
    )
    return _report("record", summary, result["interrupted"], kept="kept ")


def cmd_data_card(argv: list[str]) -> int:
    """Describe a trajectory file: actions, speeds, standing still, off the road, driving styles.

    A short markdown card of what the data shows (what a world trained on it can learn), printed and with --out
    also written to a file.
    """
    from worldsim.checkpoint import atomic_path, check_output_path
    from worldsim.data.card import DataCardConfig, card_numbers, format_card
    from worldsim.data.reader import TrajectoryReader

    cfg = parse(DataCardConfig, argv, "data-card", cmd_data_card.__doc__)
    if cfg.out:
        check_output_path(cfg.out)
    card = format_card(card_numbers(TrajectoryReader(cfg.data)), cfg.data)
    if cfg.out:
        with atomic_path(cfg.out) as tmp:
            tmp.write_text(card)
    print(card, end="")
    return 0


def cmd_data_merge(argv: list[str]) -> int:
    """Join trajectory files of one env into one, episodes in the order given (seeds, styles, infos, captions kept).

    A world trains on one file and holds out its last --holdout episodes: list the file to hold out from last.
    """
    from worldsim.checkpoint import check_output_path
    from worldsim.data.merge import DataMergeConfig, merge

    cfg = parse(DataMergeConfig, argv, "data-merge", cmd_data_merge.__doc__)
    check_output_path(cfg.out)
    episodes, steps = merge([f.strip() for f in cfg.data.split(",") if f.strip()], cfg.out, cfg.overwrite)
    print(f"{episodes} episodes, {steps} steps -> {cfg.out}")
    return 0


def cmd_train(argv: list[str]) -> int:
    """Train an autoencoder, a world model, its text-to-video backbone, a faster sampler, or a cloned policy.

    Stage 1 `autoencoder`, then stage 2 `world`, and `distill` to make a world faster (fewer sampler steps a
    frame); `t2v` pretrains the world's DiT on captioned clips (worldsim record --captions) and `world --init RUN`
    starts a world from it; `bc` clones a frames-to-action policy from recorded episodes (the learned policies a
    world ranks). Runs under torchrun for data parallelism (torchrun --nproc_per_node N -m worldsim train ...).
    Ctrl-C saves a checkpoint; --resume continues.
    """
    from worldsim.training.config import (
        PRESETS,
        AutoencoderTrainConfig,
        BCTrainConfig,
        DistillTrainConfig,
        TextToVideoTrainConfig,
        WorldTrainConfig,
        with_preset,
    )
    from worldsim.training.loop import init_distributed, require_tensorboard, train

    # Precedence: dataclass defaults < the --preset < flags. The preset's values are tyro's defaults, so --help
    # shows what an unset flag really gets (for the --preset given, else the default preset).
    preset = _flag_value(argv, "--preset") or "default"

    def subcommand(name: str, cls: type, summary: str) -> Any:
        """A stage; its preset table only in its own --help (`worldsim train --help` lists stages in a line)."""
        default = with_preset(cls, name, preset if preset in PRESETS[name] else "default", {})
        description = f"{summary}\n\n{_presets_text(PRESETS[name], default.preset)}" if argv[:1] == [name] else summary
        return Annotated[TrainRun[cls], tyro.conf.subcommand(name, default=TrainRun(default), description=description)]

    autoencoder = subcommand("autoencoder", AutoencoderTrainConfig, "Train the frame autoencoder (stage 1).")
    world = subcommand("world", WorldTrainConfig, "Train the DiT world model on an autoencoder's latents (stage 2).")
    t2v = subcommand(
        "t2v", TextToVideoTrainConfig, "Pretrain the same DiT as text-to-video on captioned clips (no actions)."
    )
    bc = subcommand("bc", BCTrainConfig, "Clone a frames-to-action policy (a small CNN) from recorded episodes.")
    distill = subcommand(
        "distill", DistillTrainConfig, "Distil a world's sampler into fewer Euler steps a frame (faster play)."
    )
    run = parse(autoencoder | world | t2v | bc | distill, argv, "train", cmd_train.__doc__)
    cfg = run.config
    require_tensorboard()
    d = init_distributed(run.device, cfg.preset)
    if isinstance(cfg, AutoencoderTrainConfig):
        from worldsim.training.autoencoder import AutoencoderStage

        stage = AutoencoderStage(cfg)
    elif isinstance(cfg, BCTrainConfig):
        from worldsim.training.bc import BCStage

        stage = BCStage(cfg)
    elif isinstance(cfg, DistillTrainConfig):
        from worldsim.training.distill import DistillStage

        stage = DistillStage(cfg, d)
    elif isinstance(cfg, TextToVideoTrainConfig):
        from worldsim.training.t2v import TextToVideoStage

        stage = TextToVideoStage(cfg, d)
    else:
        from worldsim.training.world import WorldStage

        stage = WorldStage(cfg, d)
    result = train(stage, cfg, d, progress=sys.stderr.isatty())
    if d.is_main:
        line = (
            f"{result['stage']}: step {result['step']}/{cfg.steps}, {result['clips_per_s']:.2f} clips/s, "
            f"{result['tokens_per_s']:.0f} tokens/s, final loss {result['final_metrics'].get('loss', float('nan')):.4f}"
            f" -> {result['out']}"
        )
        print(json.dumps(result) if run.json else line)
        if result["interrupted"]:
            print(
                f"worldsim train: interrupted; checkpoint saved, continue with --resume --out {cfg.out}",
                file=sys.stderr,
            )
            return 130
    return 0


def cmd_rl(argv: list[str]) -> int:
    """Train a pixel agent inside a world (PPO in the dream), and score it in the real env and the dream.

    `train` steps only the world's native vector env (no real env unless --eval-real-every asks, and then
    counted); `eval` gives the mean +- std return over real tracks and over dreams, side by side.
    Ctrl-C saves a checkpoint; --resume continues.
    """
    from worldsim.evaluation.rl_eval import RLEvalConfig, format_rl_eval, run_rl_eval, write_rl_eval_json
    from worldsim.training.rl import RLTrainConfig

    train = Annotated[
        RLTrainConfig, tyro.conf.subcommand("train", default=RLTrainConfig(), description="PPO in the dream.")
    ]
    evaluate = Annotated[
        WithJsonFile[RLEvalConfig],
        tyro.conf.subcommand("eval", default=WithJsonFile(RLEvalConfig()), description="Real and dream returns."),
    ]
    cfg = parse(train | evaluate, argv, "rl", cmd_rl.__doc__)
    if isinstance(cfg, RLTrainConfig):
        from worldsim.training.loop import require_tensorboard
        from worldsim.training.rl import train_agent

        require_tensorboard()
        result = train_agent(cfg, progress=sys.stderr.isatty())
        ret = result["dream_return_last_100"]
        summary = (
            f"rl train: {result['dream_steps']} dream steps, {result['real_steps']} real steps, "
            f"{result['seconds'] / 60:.1f} min, return (last 100 episodes) "
            f"{'n/a' if ret is None else f'{ret:.1f}'} -> {result['out']}"
        )
        return _report("rl", summary, result["interrupted"], "checkpoint saved, continue with --resume; ")
    result = run_rl_eval(cfg.config, progress=sys.stderr.isatty())
    write_rl_eval_json(result, cfg.json)
    print(format_rl_eval(result))
    return 0


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value given to ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``), if any; tyro checks it later."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _presets_text(presets: dict[str, dict[str, Any]], chosen: str) -> str:
    """What each --preset sets, as flags."""
    lines = [f"Presets (--preset; defaults below are those of {chosen}, flags override them):"]
    for name, values in presets.items():
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())
        lines.append(f"  {name}: {flags}")
    return "\n".join(lines)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "record": cmd_record,
    "data-card": cmd_data_card,
    "data-merge": cmd_data_merge,
    "train": cmd_train,
    "play": cmd_play,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "rank": cmd_rank,
    "plan": cmd_plan,
    "generate": cmd_generate,
    "eval-text": cmd_eval_text,
    "bench": cmd_bench,
    "bench-env": cmd_bench_env,
    "rl": cmd_rl,
}


def build_parser() -> argparse.ArgumentParser:
    """Global flags and the command; the command's own flags are left to it."""

    listing = "\n".join(f"  {name:<11} {func.__doc__.splitlines()[0]}" for name, func in COMMANDS.items())
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
            import torch

            torch.set_num_threads(args.threads)
        with warnings.catch_warnings():  # the previous showwarning comes back on exit
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            return COMMANDS[args.command](args.flags)
    except WorldsimError as e:
        print(f"worldsim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"worldsim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
