"""PPO in the dream: a pixel policy trained entirely inside a world's native vector env (``worldsim rl train``).

Why our own single-file PPO (cleanrl's recipe: Huang et al. 2022, "The 37 implementation details of PPO") and not
Stable-Baselines3 through ``worldsim.envs.sb3``: the rollout is one batched engine call per step either way, but
here the policy acts on a frame stack kept as one tensor (no per-env Python wrappers), the checkpoint is safetensors
+ JSON (SB3's zip pickles its optimizer and settings), and a resumed run keeps the policy, optimiser, return
normaliser and RNG (its dreams start new episodes). ``benchmarks/measure_rl_sb3.py`` times the two on the same dreams.

What PPO sees: rewards from the world's reward head, episodes ended by its termination head or by the real env's
time limit (``rl_eval.dream_episode_steps``), a truncated episode bootstrapped with the value of its last frame.
Rewards are scaled by a running std of the discounted return and clipped to +-10 (as SB3's VecNormalize and cleanrl
do).

Gap tools (``docs/rl.md`` measures each): ``--noise-levels`` draws each dream's context noise (how much the world
distrusts its own past frames) per update from a range, so the agent does not learn one sampler's quirks;
``--dream-dropout`` gives every dream its own dropout mask over the world's MLP units (``DropoutDreams``);
``--init`` starts from a trained agent, so a dream agent can be fine-tuned briefly with ``--real`` (counted);
``--eval-real-every`` scores the agent on real tracks now and then (those real steps are counted and reported).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from worldsim.agents.ppo import ActorCritic, AgentConfig, FrameStack, save_agent
from worldsim.devices import resolve_device
from worldsim.errors import InputError
from worldsim.training.loop import _deferred_interrupt, load_state_file, save_state

STATE_FILE, AGENT_DIR, CONFIG_FILE = "state.pt", "agent", "rl_config.json"
BEST_REAL_DIR = "agent_best_real"
"""Where ``--eval-real-every`` keeps the agent at its best real check (the run's own ``agent/`` is its end)."""
STATE_VERSION = 1


@dataclass
class RLTrainConfig:
    """``worldsim rl train``: PPO on a world's dreams."""

    world: str = "carracing"
    """The world to dream in: a shipped world's name, a checkpoint or run directory, or a Hub repo id."""
    out: str = "runs/agent"
    """Run directory: resumable state, TensorBoard logs (tb/), the exported agent (agent/)."""
    algo: str = "ppo"
    """The RL algorithm (ppo)."""
    steps: int = 1_000_000
    """Dream env steps in total (a resumed run continues up to this)."""
    num_envs: int = 32
    """Dreams stepped together (one engine call per step for all)."""
    rollout: int = 64
    """Steps per dream between updates (a batch is num_envs * rollout transitions)."""
    epochs: int = 4
    """Passes over each batch."""
    minibatch: int = 512
    """Transitions per gradient step."""
    lr: float = 2.5e-4
    """Adam learning rate, annealed linearly to 0 over --steps."""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.1
    """PPO's ratio clip."""
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    history: int = 3
    """Frames the policy sees at once (stacked)."""
    episode_steps: int = 0
    """Steps of a dream episode; 0: what a real episode has left after the world's start context (CarRacing: 497)."""
    sampler_steps: int | None = None
    """Euler steps per dreamed frame (default: the world's)."""
    noise_levels: tuple[float, float] | None = None
    """Gap tool: draw each update's context noise uniformly in [LOW, HIGH] instead of the world's fixed one."""
    dream_dropout: float = 0.0
    """Gap tool (Dropout's Dream Land): each dream drops this share of the world's MLP units, its own mask per dream,
    redrawn every update, so the agent trains in a family of slightly different worlds; 0: off."""
    precision: str = "auto"
    """The world's precision: fp32, bf16, or auto (bf16 where the CPU has it natively)."""
    compile: bool = False
    """Step the world with its passes compiled (torch.compile; not under a prompt): faster dreams after ~25 s of
    compiling in the first episode (a few more at the first autoreset)."""
    device: str = "cpu"
    """cpu or cuda: where the world dreams."""
    seed: int = 0
    real: bool = False
    """Baseline: train in the world's source env instead of its dreams (every step is a real step; CarRacing runs
    one env per core-second at ~80 world steps/s here, so use fewer --num-envs)."""
    eval_real_every: int = 0
    """Score on real tracks every this many updates (counted as real steps) and keep the best-scoring agent in
    RUN/agent_best_real; 0: never, 0 real steps."""
    eval_real_episodes: int = 4
    save_minutes: float = 5.0
    """Write a resumable checkpoint at least this often (and on Ctrl-C, at --max-minutes and at the end)."""
    max_minutes: float = 0.0
    """Stop (with a checkpoint) after this much wall time; 0 = run to --steps."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint."""
    init: str | None = None
    """Start the policy from this agent (a run or agent directory) instead of from scratch: e.g. a dream-trained
    agent fine-tuned with --real. Its card's dream and real steps are added to this run's, so the count stays
    honest."""

    def check(self) -> None:
        resolve_device(self.device)
        if self.algo != "ppo":
            raise InputError(f"--algo {self.algo}: worldsim rl trains with ppo")
        for name in ("steps", "num_envs", "rollout", "epochs", "minibatch", "history"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.num_envs * self.rollout < self.minibatch:
            raise InputError(f"--minibatch {self.minibatch} is more than a batch ({self.num_envs} x {self.rollout})")
        if self.real and (self.noise_levels is not None or self.dream_dropout):
            raise InputError("--noise-levels and --dream-dropout change the dream; the real env (--real) has none")
        if self.compile and (self.real or self.dream_dropout):
            raise InputError("--compile compiles the dream's passes: not with --real, nor --dream-dropout (its hooks)")
        if not 0 <= self.dream_dropout < 1:
            raise InputError(f"--dream-dropout must be in [0, 1), got {self.dream_dropout}")
        if self.noise_levels is not None and not 0 <= self.noise_levels[0] <= self.noise_levels[1] < 1:
            raise InputError(f"--noise-levels needs 0 <= LOW <= HIGH < 1, got {self.noise_levels}")


class ReturnScale:
    """Running variance of the discounted return; rewards are divided by its std (Engstrom et al. 2020)."""

    def __init__(self, num: int, gamma: float, clip: float = 10.0) -> None:
        self.gamma, self.clip, self.count, self.mean, self.var = gamma, clip, 1e-4, 0.0, 1.0
        self.running = np.zeros(num)

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.running = self.running * self.gamma + reward
        batch_mean, batch_var, n = self.running.mean(), self.running.var(), len(self.running)
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total
        self.running[done] = 0.0
        # The clip matters at the start: one step where every env gets the same reward leaves a variance near 0.
        return np.clip(reward / math.sqrt(self.var + 1e-8), -self.clip, self.clip)

    def state(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "var": self.var}

    def load(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.var = state["count"], state["mean"], state["var"]
        self.running[:] = 0.0  # a resumed run's dreams start new episodes


def gae(rewards: Tensor, values: Tensor, dones: Tensor, last_value: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates (R, N): ``dones[t]`` marks that the episode ended with step t."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(len(rewards))):
        following = last_value if t == len(rewards) - 1 else values[t + 1]
        alive = 1.0 - dones[t]
        delta = rewards[t] + gamma * following * alive - values[t]
        running = delta + gamma * lam * alive * running
        advantages[t] = running
    return advantages


def ppo_update(
    net: ActorCritic, optimizer: torch.optim.Optimizer, batch: dict[str, Tensor], cfg: RLTrainConfig,
    generator: torch.Generator,
) -> dict[str, float]:  # fmt: skip
    """``cfg.epochs`` passes of clipped-ratio policy loss + value loss - entropy bonus over shuffled minibatches."""
    n = len(batch["actions"])
    stats: dict[str, list[float]] = {
        "policy_loss": [],
        "value_loss": [],
        "entropy": [],
        "approx_kl": [],
        "clip_frac": [],
    }
    net.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator)
        for first in range(0, n - cfg.minibatch + 1, cfg.minibatch):
            idx = order[first : first + cfg.minibatch]
            logits, value = net(batch["frames"][idx])
            logp_all = F.log_softmax(logits, -1)
            logp = logp_all.gather(1, batch["actions"][idx, None]).squeeze(1)
            entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
            log_ratio = logp - batch["logp"][idx]
            ratio = log_ratio.exp()
            adv = batch["advantages"][idx]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
            value_loss = 0.5 * (value - batch["returns"][idx]).pow(2).mean()
            loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                stats["policy_loss"].append(float(policy_loss))
                stats["value_loss"].append(float(value_loss))
                stats["entropy"].append(float(entropy))
                stats["approx_kl"].append(float(((ratio - 1) - log_ratio).mean()))
                stats["clip_frac"].append(float(((ratio - 1).abs() > cfg.clip).float().mean()))
    net.eval()
    return {k: float(np.mean(v)) for k, v in stats.items()}


class DropoutDreams:
    """Dropout's Dream Land (Wellmer & Kwok 2021) on a trained world: while ``on``, hooks on every DiT block's MLP
    activation multiply dream i's rows by its own fixed mask of kept units (scaled by 1/(1-p)); ``redraw`` draws new
    masks. Rollouts turn it on for the dream steps only, so restarts' start contexts are encoded by the world as it
    is. A guided pass (the batch stacked k times) masks each copy of a dream alike."""

    def __init__(self, dit: torch.nn.Module, p: float, rows: int) -> None:
        self.p, self.rows, self.on = p, rows, False
        self.masks: list[Tensor] = []
        self.handles = []
        for block in dit.blocks:
            activation, hidden = block.mlp[1], block.mlp[0].out_features
            self.masks.append(torch.ones(rows, hidden))
            self.handles.append(activation.register_forward_hook(self._hook(len(self.masks) - 1)))

    def _hook(self, index: int) -> Any:
        def apply(module: torch.nn.Module, args: Any, out: Tensor) -> Tensor | None:
            if not self.on:
                return None
            copies, rest = divmod(out.shape[0], self.rows)
            if rest:
                raise RuntimeError(f"dropout dreams: a pass over {out.shape[0]} rows, not a multiple of {self.rows}")
            mask = self.masks[index].to(out.device, out.dtype).repeat(copies, 1)
            return out * mask.view(out.shape[0], *([1] * (out.dim() - 2)), -1)

        return apply

    def redraw(self, generator: torch.Generator) -> None:
        for mask in self.masks:
            mask.copy_((torch.rand(mask.shape, generator=generator) >= self.p).float() / (1 - self.p))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class RealEnvs:
    """N copies of a world's source env stepped as the dream's vector env is (``WorldView`` frames, ended rows
    restarted through ``reset(options={"reset_mask": ...})``): the real-env baseline, every step a real one. Episode
    i of the run is track ``seed + i``."""

    def __init__(self, config: Any, num_envs: int) -> None:
        from worldsim.evaluation.rl_eval import WorldView, real_env

        self.envs = [WorldView(real_env(config, None, config.name), config) for _ in range(num_envs)]
        self.frames = np.zeros((num_envs, *config.frame_size, 3), np.uint8)
        self.next_seed = 0

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        mask = (options or {}).get("reset_mask")
        if seed is not None:
            self.next_seed = seed
        for i in range(len(self.envs)) if mask is None else np.flatnonzero(mask):
            self.frames[i] = self.envs[i].reset(seed=self.next_seed)[0]
            self.next_seed += 1
        return self.frames.copy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        out = [env.step(int(a)) for env, a in zip(self.envs, actions)]
        self.frames = np.stack([o[0] for o in out])
        reward, terminated, truncated = (np.array([o[k] for o in out]) for k in (1, 2, 3))
        return self.frames.copy(), reward.astype(np.float64), terminated.astype(bool), truncated.astype(bool), {}

    def close(self) -> None:
        for env in self.envs:
            env.close()


class Rollouts:
    """The vector env (dreams, or the real env for the baseline), the frame stack over it and the episode
    bookkeeping; ``collect`` fills one batch."""

    def __init__(self, cfg: RLTrainConfig) -> None:
        from worldsim.envs.world_vector import WorldModelVectorEnv
        from worldsim.evaluation.rl_eval import dream_episode_steps, start_context

        self.cfg = cfg
        self.venv: Any
        if cfg.real:
            from worldsim.checkpoint import load_config
            from worldsim.worlds import resolve_world

            self.config = load_config(resolve_world(cfg.world))
            self.venv = RealEnvs(self.config, cfg.num_envs)  # the env's own time limit ends its episodes
        else:
            self.venv = WorldModelVectorEnv(
                cfg.world, num_envs=cfg.num_envs, device=cfg.device, sampler_steps=cfg.sampler_steps,
                precision=cfg.precision, compile=cfg.compile,
            )  # fmt: skip
            self.config = self.venv.world.config
            context = start_context(self.venv.world)
            self.venv.max_episode_steps = cfg.episode_steps or dream_episode_steps(self.config, context)
        self.dropout = None
        if cfg.dream_dropout:
            self.dropout = DropoutDreams(self.venv.world.dit, cfg.dream_dropout, cfg.num_envs)
        self.scale = ReturnScale(cfg.num_envs, cfg.gamma)
        self.episode_return = np.zeros(cfg.num_envs)
        self.finished: list[float] = []
        self.stack: FrameStack | None = None

    def start(self, seed: int) -> None:
        obs, _ = self.venv.reset(seed=seed)
        self.stack = FrameStack(self.cfg.num_envs, self.cfg.history, self.config.frame_size)
        self.stack.start(obs)

    def collect(self, net: ActorCritic, generator: torch.Generator) -> dict[str, Tensor]:
        cfg, stack = self.cfg, self.stack
        assert stack is not None
        if cfg.noise_levels is not None and not cfg.real:
            low, high = cfg.noise_levels
            level = low + (high - low) * float(torch.rand((), generator=generator))
            self.venv.world.set_sampler(context_noise=level)
        if self.dropout is not None:
            self.dropout.redraw(generator)
        R, N = cfg.rollout, cfg.num_envs
        frames = torch.zeros(R, *stack.frames.shape, dtype=torch.uint8)
        actions = torch.zeros(R, N, dtype=torch.long)
        logps, values, rewards, dones = (torch.zeros(R, N) for _ in range(4))
        for t in range(R):
            frames[t] = stack.frames
            with torch.no_grad():
                logits, value = net(stack.frames)
            logp_all = F.log_softmax(logits, -1)
            action = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(-1)
            if self.dropout is not None:
                self.dropout.on = True
            obs, reward, terminated, truncated, _ = self.venv.step(action.numpy())
            if self.dropout is not None:
                self.dropout.on = False
            done = terminated | truncated
            self.episode_return += reward
            shaped = self.scale(reward, done)
            after = stack.push(obs)
            cut = np.flatnonzero(truncated & ~terminated)
            if len(cut):  # a time limit is not the world's end: bootstrap from the value of where it stopped
                with torch.no_grad():
                    _, tail = net(after[torch.as_tensor(cut)])
                shaped[cut] += cfg.gamma * tail.numpy()
            if done.any():
                self.finished += self.episode_return[done].tolist()
                self.episode_return[done] = 0.0
                restarted, _ = self.venv.reset(options={"reset_mask": done})
                stack.start(restarted[done], np.flatnonzero(done))
            actions[t], values[t] = action, value
            logps[t] = logp_all.gather(1, action[:, None]).squeeze(1)
            rewards[t] = torch.as_tensor(shaped, dtype=torch.float32)
            dones[t] = torch.as_tensor(done, dtype=torch.float32)
        with torch.no_grad():
            _, last_value = net(stack.frames)
        advantages = gae(rewards, values, dones, last_value, cfg.gamma, cfg.gae_lambda)
        flat = {
            "frames": frames.flatten(0, 1),
            "actions": actions.flatten(),
            "logp": logps.flatten(),
            "advantages": advantages.flatten(),
            "returns": (advantages + values).flatten(),
        }
        return flat

    def close(self) -> None:
        self.venv.close()


def train_agent(cfg: RLTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) PPO in the dream; returns a summary. Ctrl-C saves a checkpoint and returns."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    cfg.check()
    out = Path(cfg.out)
    if not cfg.resume and (out / STATE_FILE).exists():
        raise InputError(f"{out} already holds a run: pass --resume to continue it, or another --out")
    state = load_state_file(out / STATE_FILE) if cfg.resume else None  # a bad run dir fails before the world loads
    if state is not None and state.get("kind") != "rl":
        raise InputError(f"{out / STATE_FILE} is not a worldsim rl run")
    dreams = Rollouts(cfg)
    config = dreams.config
    if cfg.eval_real_every and not config.source_env:
        dreams.close()
        raise InputError(f"--eval-real-every: world {config.name!r} names no real env (config.source_env is empty)")
    agent_cfg = AgentConfig(frame_size=list(config.frame_size), history=cfg.history, action=config.action,
                            world=config.name)  # fmt: skip
    init_steps = {"dream": 0, "real": 0}
    if state is None and cfg.init:
        agent_cfg, start_weights, init_steps = _init_agent(cfg.init, config, cfg.history)
    net = ActorCritic(agent_cfg).eval()
    if state is None and cfg.init:
        net.load_state_dict(start_weights)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=1e-5)
    generator = torch.Generator().manual_seed(cfg.seed)
    counters = {"env_steps": 0, "updates": 0, "real_steps": 0, "seconds": 0.0, "real_evals": [],
                "init_dream_steps": init_steps["dream"], "init_real_steps": init_steps["real"]}  # fmt: skip
    if state is not None:
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        counters.update(json.loads(state["counters"]))
        dreams.scale.load(json.loads(state["scale"]))
    dreams.start(cfg.seed + counters["updates"] * cfg.num_envs)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    tb = SummaryWriter(str(out / "tb"))
    per_update = cfg.num_envs * cfg.rollout

    def card() -> dict[str, Any]:
        recent = dreams.finished[-100:]
        return {
            "algorithm": "ppo",
            "world_checkpoint": cfg.world,
            "dream_steps": counters.get("init_dream_steps", 0) + (0 if cfg.real else counters["env_steps"]),
            "real_steps": counters.get("init_real_steps", 0) + counters["real_steps"],
            "wall_seconds": round(counters["seconds"], 1),
            "dream_return_last_100": float(np.mean(recent)) if recent else None,
            "real_evals": counters["real_evals"],
            "config": dataclasses.asdict(cfg),
        }

    def checkpoint() -> None:
        save_state(out / STATE_FILE, {
            "version": STATE_VERSION, "kind": "rl", "net": net.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "counters": json.dumps(counters),
            "scale": json.dumps(dreams.scale.state()),
        })  # fmt: skip
        save_agent(net, out / AGENT_DIR, card(), half=False)

    started = time.perf_counter()
    seconds_before = counters["seconds"]
    last_save = started
    interrupted = False
    where = "real_env" if cfg.real else "dream"  # what the episodes being trained on are, in logs and the bar
    bar = tqdm(total=cfg.steps, initial=min(counters["env_steps"], cfg.steps), desc=f"{where} steps", unit="step",
               disable=not progress, dynamic_ncols=True)  # fmt: skip
    with _deferred_interrupt() as stop:
        while counters["env_steps"] < cfg.steps:
            tick = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * max(0.0, 1.0 - counters["env_steps"] / cfg.steps)
            batch = dreams.collect(net, generator)
            collect_s = time.perf_counter() - tick
            stats = ppo_update(net, optimizer, batch, cfg, generator)
            counters["env_steps"] += per_update
            counters["real_steps"] += per_update if cfg.real else 0
            counters["updates"] += 1
            counters["seconds"] = seconds_before + time.perf_counter() - started
            bar.update(per_update)
            step = counters["env_steps"]
            for k, v in stats.items():
                tb.add_scalar(f"ppo/{k}", v, step)
            tb.add_scalar(f"speed/{where}_steps_per_s", per_update / collect_s, step)
            tb.add_scalar("speed/steps_per_s", per_update / (time.perf_counter() - tick), step)
            recent = dreams.finished[-cfg.num_envs :]
            if recent:
                tb.add_scalar(f"return/{where}", float(np.mean(recent)), step)
                bar.set_postfix(dream_return=f"{np.mean(recent):.0f}", refresh=False)
            if cfg.eval_real_every and counters["updates"] % cfg.eval_real_every == 0:
                best = max((e["mean_return"] for e in counters["real_evals"]), default=-np.inf)
                real = _real_check(net, cfg, config, counters)
                tb.add_scalar("return/real", real, step)
                if real > best:  # a checkpoint picked by real return, its real steps (so far) in its card
                    save_agent(net, out / BEST_REAL_DIR, {**card(), "picked_by_real_return": real}, half=False)
            if stop.requested or (cfg.max_minutes and time.perf_counter() - started > 60 * cfg.max_minutes):
                interrupted = stop.requested
                break
            if time.perf_counter() - last_save > 60 * cfg.save_minutes:
                checkpoint()
                last_save = time.perf_counter()
    bar.close()
    counters["seconds"] = seconds_before + time.perf_counter() - started
    checkpoint()
    tb.close()
    dreams.close()
    recent = dreams.finished[-100:]
    return {
        "env_steps": counters["env_steps"],
        "dream_steps": 0 if cfg.real else counters["env_steps"],
        "updates": counters["updates"],
        "real_steps": counters["real_steps"],
        "seconds": counters["seconds"],
        "dream_return_last_100": float(np.mean(recent)) if recent else None,
        "interrupted": interrupted,
        "out": str(out / AGENT_DIR),
    }


def _init_agent(path: str, config: Any, history: int) -> tuple[AgentConfig, dict[str, Tensor], dict[str, int]]:
    """--init: the agent's config and weights, checked against the world, and the steps its card says it took."""
    from worldsim.agents.ppo import agent_dir, check_agent_fits, load_agent, read_agent_card

    where = agent_dir(path)
    net = load_agent(where)
    check_agent_fits(net, config.action, f"world {config.name!r}", str(where))
    if list(net.cfg.frame_size) != list(config.frame_size):
        raise InputError(f"--init {path}: the agent sees {net.cfg.frame_size} frames, the world makes "
                         f"{list(config.frame_size)}")  # fmt: skip
    if net.cfg.history != history:
        raise InputError(f"--init {path}: the agent stacks {net.cfg.history} frames: pass --history {net.cfg.history}")
    card = read_agent_card(where)
    steps = {"dream": int(card.get("dream_steps") or 0), "real": int(card.get("real_steps") or 0)}
    return net.cfg, net.state_dict(), steps


def _real_check(net: ActorCritic, cfg: RLTrainConfig, config: Any, counters: dict[str, Any]) -> float:
    """Mean return over a few real tracks (seeds never used by eval's default), its steps added to the count."""
    import tempfile

    from worldsim.evaluation.rl_eval import run_real

    seeds = [500_000 + counters["updates"] * 100 + i for i in range(cfg.eval_real_episodes)]
    with tempfile.TemporaryDirectory() as tmp:
        save_agent(net, tmp, half=False)
        side, _ = run_real(f"agent:{tmp}", config, seeds, sample=False, keep=0, workers=1, progress=False)
    counters["real_steps"] += int(sum(side.steps))
    counters["real_evals"].append({"env_steps": counters["env_steps"], "mean_return": side.mean})
    return side.mean
