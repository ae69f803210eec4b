"""Score an agent in the real environment and in the dream it was trained in, side by side (``worldsim rl eval``).

The real side runs whole episodes of the world's source env, as its own benchmark counts them (CarRacing: 1000 env
steps, the zoom-in included), with the action held for the world's frame skip and the frames resized to the world's
size: the agent sees what it saw in the dream. The dream side runs the same agent in the world's native vector env
from the world's shipped start contexts (an episode's first frames), for the steps a real episode has left after
them. The gap between the two means is what a dream-trained agent's users need to know.

    worldsim rl eval --agent runs/agent --episodes 50 --real CarRacing-v3 --dream --video real.mp4
"""

from __future__ import annotations

import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import gymnasium
import numpy as np
import torch
import tyro
from tqdm import tqdm

from worldsim.agents.policy import Policy
from worldsim.agents.ppo import (
    ActorCritic,
    AgentPolicy,
    FrameStack,
    agent_dir,
    check_agent_fits,
    load_agent,
    read_agent_card,
)
from worldsim.agents.registry import AGENT_PREFIX, make_policy
from worldsim.checkpoint import atomic_path, load_config
from worldsim.config import WorldConfig, comma_list
from worldsim.devices import resolve_device
from worldsim.engine import WorldModel
from worldsim.envs.world_vector import WorldModelVectorEnv
from worldsim.errors import InputError
from worldsim.evaluation.real import RealEpisode, WorldView, real_env, real_episode
from worldsim.video import VideoWriter, check_video_path
from worldsim.worlds import resolve_world

REAL_SEED_BASE = 1_000_000
"""Real tracks of ``worldsim rl eval`` are seeds ``REAL_SEED_BASE + i``: far from the seeds any recording or
training run draws (``worldsim record`` numbers its episodes from 0), so no track is one the world or agent saw."""


@dataclass
class RLEvalConfig:
    """What ``worldsim rl eval`` runs."""
    agent: str = ""
    """The agent: a run directory of ``worldsim rl train`` (its exported agent/) or an agent directory."""
    episodes: int = 10
    """Episodes on each side."""
    real: str | None = None
    """Score in this real env (the world's source env, e.g. CarRacing-v3); 'auto' takes the world's."""
    dream: bool = False
    """Also score in the world the agent was trained in (its run's --world) or --world."""
    world: str | None = None
    """The world for --dream (default: the one the agent was trained in)."""
    seed: int = REAL_SEED_BASE
    """Seed of the first episode; episode i uses seed + i on both sides (real: the track; dream: which shipped start
    context and the sampler's noise)."""
    sample: bool = False
    """Draw actions from the policy instead of taking the likeliest."""
    drivers: str = ""
    """Comma-separated drivers scored on the same real tracks beside the agent (e.g. road,road_fast,carracing; any
    --policy of worldsim record)."""
    video: str | None = None
    """Write the first real episodes (up to 4, side by side) to this .mp4/.gif."""
    paired: bool = False
    """Per-episode prediction (needs --real): dream each real track from its own first frames, the agent driving, so
    every real return has the world's prediction beside it (their correlation and error are printed)."""
    workers: int = 2
    """Processes for the real episodes (each runs its own env)."""
    device: str = "cpu"
    """cpu or cuda: where the world dreams."""
    precision: str = "auto"
    """The dream world's precision: fp32, bf16 or auto."""
    json: Annotated[str | None, tyro.conf.arg(metavar="FILE")] = None
    """Also write the results as JSON to this file."""

@dataclass
class SideResult:
    returns: list[float]
    steps: list[int]
    seconds: float
    starts: np.ndarray | None = field(default=None, repr=False)
    """Real side with a start context: each episode's first frames (N, T, H, W, 3), what ``--paired`` dreams from."""
    start_returns: list[float] = field(default_factory=list)
    """Real side with a start context: each episode's return over the steps that made its first frames."""
    @property
    def mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.returns)) if self.returns else math.nan


@dataclass
class RLEvalResult:
    agent: str
    world: str
    seeds: list[int]
    real: SideResult | None = None
    dream: SideResult | None = None
    card: dict[str, Any] = field(default_factory=dict)
    drivers: dict[str, SideResult] = field(default_factory=dict)
    """Other drivers on the same real tracks, by name."""
    paired: SideResult | None = None
    """``--paired``: per real track, the world's predicted return (its first frames' real reward + the dream's)."""
    def pairing(self) -> dict[str, float] | None:
        """How well the paired predictions follow the real returns, episode by episode."""
        if self.paired is None or self.real is None or len(self.real.returns) < 2:
            return None
        predicted, real = np.array(self.paired.returns), np.array(self.real.returns)
        varied = predicted.std() > 0 and real.std() > 0  # a correlation needs both sides to vary
        return {
            "pearson_r": float(np.corrcoef(predicted, real)[0, 1]) if varied else math.nan,
            "mean_abs_error": float(np.abs(predicted - real).mean()),
            "mean_error": float((predicted - real).mean()),
        }

    @property
    def gap(self) -> float | None:
        """|dream mean - real mean| / |real mean|: the issue's dream-to-real gap."""
        if self.real is None or self.dream is None or self.real.mean == 0:
            return None
        return abs(self.dream.mean - self.real.mean) / abs(self.real.mean)


# ----------------------------------------------------------------------------- the real side


def _real_policy(spec: str, view: WorldView, sample: bool) -> Policy:
    """``agent:PATH`` (argmax, or sampled with ``sample``) or any policy ``make_policy`` knows, built on ``view`` so
    that drivers which read the env's internals find them and those that see frames get the world's."""

    if spec.startswith(AGENT_PREFIX):
        return AgentPolicy.from_pretrained(spec[len(AGENT_PREFIX) :], view.action_space, sample=sample)
    return make_policy(spec, view)


def _real_worker(job: tuple[str, dict[str, Any], list[int], bool, int, int]) -> list[RealEpisode]:
    spec, config_dict, seeds, sample, keep, context = job
    config = WorldConfig.from_dict(config_dict)
    env = real_env(config, None, config.name)
    policy = _real_policy(spec, WorldView(env, config), sample)
    out = [real_episode(env, policy, config, seed, i < keep, context) for i, seed in enumerate(seeds)]
    env.close()
    return out


def _one_thread() -> None:
    """A real-episode worker process runs one torch thread: the episodes are many and small, the workers many."""
    torch.set_num_threads(1)


def run_real(
    policy: str,
    config: WorldConfig,
    seeds: list[int],
    sample: bool,
    keep: int,
    workers: int,
    progress: bool,
    context: int = 0,
) -> tuple[SideResult, list[list[np.ndarray]]]:
    """Real episodes of ``policy`` (``agent:PATH`` or a driver's name) with seeds ``seeds``, split over ``workers``
    processes; the first ``keep`` episodes' frames (and with ``context`` every episode's first frames)."""
    start = time.perf_counter()
    workers = max(1, min(workers, len(seeds)))
    chunks = [seeds[i::workers] for i in range(workers)]  # round robin: episode i is in chunk i % workers
    jobs = [(policy, config.to_dict(), chunk, sample, math.ceil(keep / workers), context) for chunk in chunks]
    if workers == 1:
        results = [_real_worker(jobs[0])]
    else:
        with ProcessPoolExecutor(workers, initializer=_one_thread) as pool:
            results = list(
                tqdm(pool.map(_real_worker, jobs), total=workers, desc=f"real: {policy}", disable=not progress)
            )
    by_seed: dict[int, RealEpisode] = {}
    for chunk, result in zip(chunks, results):
        by_seed.update(zip(chunk, result))
    ordered = [by_seed[s] for s in seeds]
    frames = [r.frames for r in ordered[:keep] if r.frames]
    side = SideResult([r.ret for r in ordered], [r.steps for r in ordered], time.perf_counter() - start)
    if context:
        side.starts = np.stack([r.start for r in ordered])
        side.start_returns = [r.start_return for r in ordered]
    return side, frames


# ----------------------------------------------------------------------------- the dream side
def dream_episode_steps(config: WorldConfig, context: int = 1) -> int:
    """World steps of a dream episode: the steps a real episode has left after a start context of ``context``
    frames (a shipped start is an episode's first frames: CarRacing's 1000 env steps, 50 fps held 2 env steps for
    the world's 25, from a 4-frame start, leave 497), or 1000 for a world whose source env has no time limit on
    record."""

    if not config.source_env:
        return 1000
    try:
        spec = gymnasium.spec(config.source_env)
        limit = spec.max_episode_steps
        creator = gymnasium.envs.registration.load_env_creator(spec.entry_point) if limit else None
        native = getattr(creator, "metadata", {}).get("render_fps")
    except Exception:  # noqa: BLE001 - an id gymnasium does not know until its package registers it
        limit = native = None
    if not limit:
        return 1000
    repeat = max(1, round(native / config.frame_rate)) if native else 1  # as WorldView holds each action
    return max(1, limit // repeat - (context - 1))


def start_context(world: WorldModel) -> int:
    """Frames in one of the world's shipped start contexts (1 when it ships none)."""
    frames = world.starts.get("frames")
    return 1 if frames is None or len(frames) == 0 else int(frames.shape[1])


def run_dream(
    net: ActorCritic,
    world: str,
    seeds: list[int],
    sample: bool,
    device: str = "cpu",
    precision: str = "auto",
    episode_steps: int | None = None,
    batch: int = 32,
    progress: bool = False,
    starts: np.ndarray | None = None,
) -> SideResult:
    """One dream per seed in the world's vector env (``batch`` at a time), each to its end or ``episode_steps``, from
    the shipped start the seed picks or from ``starts[i]`` (N, T, H, W, 3): the world's start-context length."""

    start = time.perf_counter()
    returns, lengths = [], []
    bar = tqdm(total=len(seeds), desc="dream episodes", disable=not progress)
    for first in range(0, len(seeds), batch):
        chunk = seeds[first : first + batch]
        venv = WorldModelVectorEnv(world, num_envs=len(chunk), device=device, precision=precision)
        check_agent_fits(net, venv.world.config.action, f"world {world!r}", "")
        limit = episode_steps or dream_episode_steps(venv.world.config, start_context(venv.world))
        options = None if starts is None else {"start": starts[first : first + batch]}
        obs, _ = venv.reset(seed=chunk, options=options)
        stack = FrameStack(len(chunk), net.cfg.history, net.cfg.frame_size)
        frames = stack.start(obs)
        generator = torch.Generator().manual_seed(chunk[0])
        ret = np.zeros(len(chunk))
        length = np.full(len(chunk), limit)
        alive = np.ones(len(chunk), bool)
        for t in range(limit):
            actions = net.act(frames, sample, generator).numpy()
            obs, reward, terminated, _, _ = venv.step(actions)
            ret += np.where(alive, reward, 0.0)
            ended = alive & terminated
            length[ended] = t + 1
            alive &= ~terminated
            if not alive.any():
                break
            frames = stack.push(obs)
        returns += ret.tolist()
        lengths += length.tolist()
        bar.update(len(chunk))
        venv.close()
    bar.close()
    return SideResult(returns, [int(n) for n in lengths], time.perf_counter() - start)


# ----------------------------------------------------------------------------- the command
def run_rl_eval(cfg: RLEvalConfig, progress: bool = False) -> RLEvalResult:
    """Check everything, then run the real side, the dream side, or both."""
    if not cfg.agent:
        raise InputError("--agent is required: a run directory of worldsim rl train or an agent directory")
    resolve_device(cfg.device)
    if cfg.episodes < 1 or cfg.workers < 1:
        raise InputError(f"--episodes and --workers must be >= 1, got {cfg.episodes} and {cfg.workers}")
    if cfg.real is None and not cfg.dream:
        raise InputError("nothing to score: pass --real ENV (or --real auto) and/or --dream")
    if cfg.video:
        check_video_path(cfg.video)
    drivers = comma_list(cfg.drivers)
    if drivers and cfg.real is None:
        raise InputError("--drivers are scored in the real env: pass --real ENV (or --real auto) too")
    if cfg.paired and cfg.real is None:
        raise InputError("--paired dreams each real track from its first frames: pass --real ENV (or --real auto) too")
    path = agent_dir(cfg.agent)
    net = load_agent(path)
    card = read_agent_card(path)
    world = cfg.world or card.get("world_checkpoint") or ""
    if not world:
        raise InputError(f"agent {path} does not say which world it was trained in: pass --world")
    config = load_config(resolve_world(world))
    check_agent_fits(net, config.action, f"world {world!r}", str(path))
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    result = RLEvalResult(str(path), str(world), seeds, card=card)
    if cfg.real is not None:
        keep = 4 if cfg.video else 0
        env = WorldView(real_env(config, cfg.real, str(world)), config)
        for driver in drivers:  # a name no policy answers to fails here, before any episode runs
            _real_policy(driver, env, cfg.sample)
        env.close()
        context = start_context(WorldModel.from_pretrained(world)) if cfg.paired else 0
        result.real, frames = run_real(
            f"agent:{path}", config, seeds, cfg.sample, keep, cfg.workers, progress, context=context
        )
        if cfg.video and frames:
            write_side_by_side(frames, cfg.video, config.frame_rate)
        for driver in drivers:
            result.drivers[driver] = run_real(driver, config, seeds, False, 0, cfg.workers, progress)[0]
    if cfg.dream:
        result.dream = run_dream(net, world, seeds, cfg.sample, cfg.device, cfg.precision, progress=progress)
    if cfg.paired and result.real is not None:
        dreamt = run_dream(net, world, seeds, cfg.sample, cfg.device, cfg.precision, progress=progress,
                           starts=result.real.starts)  # fmt: skip
        # The prediction covers the whole real episode: the real reward up to its first frames, then the dream's.
        dreamt.returns = [a + b for a, b in zip(result.real.start_returns, dreamt.returns)]
        result.paired = dreamt
    return result


def write_side_by_side(episodes: list[list[np.ndarray]], path: str | Path, fps: float) -> None:
    """Episodes' frames in one row, each scaled up 4x; an ended episode holds its last frame."""
    longest = max(len(e) for e in episodes)
    with VideoWriter(path, fps) as video:
        for t in range(longest):
            row = np.concatenate([e[min(t, len(e) - 1)] for e in episodes], axis=1)
            video.append(row.repeat(4, 0).repeat(4, 1))


def format_rl_eval(result: RLEvalResult) -> str:
    lines = [f"agent {result.agent} (world {result.world}), {len(result.seeds)} episodes, seeds "
             f"{result.seeds[0]}..{result.seeds[-1]}", "", "| side | mean return | std | mean steps | seconds |",
             "|---|---|---|---|---|"]  # fmt: skip
    sides = [("real", result.real), ("dream", result.dream), ("dream from each real track's start", result.paired)]
    sides += [(f"real, driver {name}", side) for name, side in result.drivers.items()]
    for name, side in sides:
        if side is not None:
            lines.append(
                f"| {name} | {side.mean:.1f} | {side.std:.1f} | {np.mean(side.steps):.0f} | {side.seconds:.0f} |"
            )
    if result.gap is not None:
        lines.append(f"\ndream-to-real gap: {100 * result.gap:.1f}% of the real return")
    pairing = result.pairing()
    if pairing is not None:
        lines.append(f"\nper episode, predicted vs real return: correlation {pairing['pearson_r']:.2f}, mean error "
                     f"{pairing['mean_error']:+.1f}, mean |error| {pairing['mean_abs_error']:.1f}")  # fmt: skip
    return "\n".join(lines)


def _side_json(side: SideResult | None) -> dict[str, Any] | None:
    if side is None:
        return None
    return {**{k: v for k, v in asdict(side).items() if k != "starts"}, "mean": side.mean, "std": side.std}


def write_rl_eval_json(result: RLEvalResult, path: str | Path | None) -> dict[str, Any]:
    data = {
        "agent": result.agent,
        "world": result.world,
        "seeds": result.seeds,
        "real": _side_json(result.real),
        "dream": _side_json(result.dream),
        "gap": result.gap,
        "paired": _side_json(result.paired),
        "pairing": result.pairing(),
        "drivers": {name: _side_json(side) for name, side in result.drivers.items()},
        "card": result.card,
    }
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2))
    return data


def run(cfg: RLEvalConfig) -> int:
    """``worldsim rl eval``: score both sides, print them, and with ``json`` write every number."""
    result = run_rl_eval(cfg, progress=sys.stderr.isatty())
    write_rl_eval_json(result, cfg.json)
    print(format_rl_eval(result))
    return 0
