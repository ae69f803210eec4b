"""Model-predictive control inside a world: candidate action sequences dreamt in one batch, the best one's first
actions executed, then planned again from what really happened.

The search is the cross-entropy method (CEM): sample candidates from a distribution over action sequences, dream
them all in one batch, refit the distribution to the best few (the elites), repeat. CEM and not gradient descent
through the dream, because the scores worth planning for are read off pixels (a source judge: PushT's coverage
from the T's pose) and have no useful gradient; CEM and not MPPI, because with the few candidates a CPU can dream
per decision a hard top-k keeps the distribution on the good sequences where MPPI's soft weights spread it over
many poor ones (DINO-WM and TD-MPC plan with CEM for the same reason).

A planner needs a world and a score: a function of the dreamt frames and the world's reward head
(``judge_score``, ``head_score``, ``goal_score``, or your own). To plan with another score, write a function with
the ``Score`` signature; to plan another way, write a class with ``reset()`` and ``plan(frames, actions)``.

Action sequences are searched in blocks of ``hold`` world steps (one action held for the block): a PushT push is
a direction held for a few frames, and fewer numbers to search is what lets few candidates find it. Box actions
are Gaussian per block, clipped to the bounds; discrete ones are a categorical distribution per block.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from worldsim.engine import WorldModel
from worldsim.envs.judges import has_judge, judge_for
from worldsim.errors import InputError
from worldsim.inputs import resize_frames

Score = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(frames (N, H, h, w, 3) uint8 of N dreamt candidates, head rewards (N, H)) -> (N,) scores, higher is better."""


def head_score(frames: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """The world's reward head summed over the dreamt horizon."""
    return rewards.sum(1)


def judge_score(judge: Any) -> Score:
    """A source judge's reward (PushT: clip(coverage / 0.95, 0, 1), read off each dreamt frame) summed over the
    horizon: reaching the goal early and staying there scores best. Frames the judge cannot read score 0."""

    def score(frames: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        N, H = frames.shape[:2]
        judged = np.asarray(judge.reward(frames.reshape(N * H, *frames.shape[2:])), dtype=np.float64)
        return np.nan_to_num(judged, nan=0.0).reshape(N, H).sum(1)

    return score


def goal_score(world: WorldModel, goal: np.ndarray) -> Score:
    """Closeness of the last dreamt frame to a goal frame (uint8 (h, w, 3) at the world's frame size), in the
    world's latent space: minus the mean squared distance of their encodings (DINO-WM's goal cost, on our own
    autoencoder's latents)."""
    target = world.check_frames(goal, what="goal", one_world=True)
    with torch.inference_mode():
        goal_latent = world.autoencoder.encode(target.to(world.device)).float()[:, -1]

    def score(frames: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            last = world.autoencoder.encode(torch.from_numpy(frames[:, -1:]).to(world.device)).float()[:, 0]
        return -(last - goal_latent).pow(2).flatten(1).mean(1).cpu().numpy()

    return score


def reward_score(world: WorldModel, label: str) -> tuple[Score, str]:
    """The world's reward head as the score; a text-to-video backbone has none (a one-line error)."""
    if world.config.text_to_video:
        raise InputError(f"world {label!r} is a text-to-video backbone: it has no reward head to plan for")
    return head_score, "reward head"


def default_score(world: WorldModel, label: str) -> tuple[Score, str]:
    """What a planner maximises when told nothing: the source env's judge where it has one (PushT: coverage read
    off the dreamt frames), else the world's reward head; (score, its name)."""
    source = world.config.source_env
    if has_judge(source):
        return judge_score(judge_for(source, label)), f"judge ({source})"
    return reward_score(world, label)


@dataclass
class CEMConfig:
    """The search's budget and shape: ``candidates`` x ``horizon`` dreamt frames per iteration."""

    horizon: int = 6
    """World steps dreamt per candidate."""
    candidates: int = 16
    """Action sequences dreamt side by side per iteration (one batch)."""
    elites: int = 4
    """Best candidates the distribution is refit to."""
    iterations: int = 1
    """Sample-dream-refit rounds per decision (the defaults fit a decision in about a second on a 2-core CPU)."""
    hold: int = 2
    """World steps each searched action is held for."""
    std: float = 0.15
    """Box actions: starting spread per block, as a share of the action range."""
    min_std: float = 0.02
    """Box actions: the spread never shrinks below this share of the range (the search keeps looking)."""
    search_seed: int = 0
    """Seeds the candidates and the dreams' noise: the same seed plans the same sequence."""

    def __post_init__(self) -> None:
        for name in ("horizon", "candidates", "elites", "iterations", "hold"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.elites > self.candidates:
            raise InputError(f"--elites {self.elites} cannot exceed --candidates {self.candidates}")
        if not 0.0 < self.min_std <= self.std:
            raise InputError(f"the spreads need 0 < --min-std ({self.min_std}) <= --std ({self.std})")


class CEMPlanner:
    """Plans ``horizon`` actions from the frames (and actions) seen so far by dreaming candidates in ``world``.

    ``plan`` returns the best sequence dreamt in the last round; after executing some of it, ``shift`` makes the
    rest the next search's start. ``last_score`` is what the world predicted for it."""

    def __init__(self, world: WorldModel, score: Score, config: CEMConfig | None = None) -> None:
        self.world = world
        self.score = score
        self.cfg = config or CEMConfig()
        self.spec = world.config.action
        if self.spec.kind == "box":
            self.low = np.asarray(self.spec.low, dtype=np.float64)
            self.high = np.asarray(self.spec.high, dtype=np.float64)
        else:
            self.choices = [self.spec.n] if self.spec.kind == "discrete" else list(self.spec.nvec)
        self.blocks = math.ceil(self.cfg.horizon / self.cfg.hold)
        self.rng = np.random.default_rng(self.cfg.search_seed)
        self.last_score = float("nan")
        self.reset()

    def reset(self) -> None:
        """Forget the warm start (a new episode)."""
        self.mean: np.ndarray | None = None

    def reseed(self, seed: int) -> None:
        """Search (candidates and dream noise) as a planner made with ``search_seed=seed`` would."""
        self.cfg = dataclasses.replace(self.cfg, search_seed=seed)
        self.rng = np.random.default_rng(seed)

    def shift(self, steps: int) -> None:
        """``steps`` world steps of the last plan were executed: the next search starts from the rest of it (the
        last block repeated to fill the horizon)."""
        if self.mean is not None:
            drop = min(steps // self.cfg.hold, self.blocks - 1)
            self.mean = np.concatenate([self.mean[drop:], np.repeat(self.mean[-1:], drop, 0)])

    # ----------------------------------------------------------------------------- one decision
    def plan(self, frames: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        """frames: uint8 (T, h, w, 3), the latest real frames (the world's context); actions: the T-1 actions
        between them, or None. Returns (horizon, *action shape) actions in the world's action space."""
        frames = np.asarray(frames)
        if frames.ndim != 4:
            raise InputError(f"plan takes the context frames (T, h, w, 3), got shape {frames.shape}")
        mean, spread = self._start(actions)
        for _ in range(self.cfg.iterations):
            blocks = self._sample(mean, spread)
            blocks[0] = mean if self.spec.kind == "box" else mean.argmax(-1)  # the current plan is always dreamt
            sequences = np.repeat(blocks, self.cfg.hold, axis=1)[:, : self.cfg.horizon]
            scores = self._dream(frames, actions, sequences)
            elite = np.argsort(-scores, kind="stable")[: self.cfg.elites]
            best, self.last_score = blocks[elite[0]], float(scores[elite[0]])
            mean, spread = self._refit(blocks[elite], mean, spread)
        # What is returned is what was dreamt and scored best; the next search starts from it (box) or from the
        # refit choice probabilities (discrete, which must keep every choice possible).
        self.mean = best.astype(np.float64) if self.spec.kind == "box" else mean
        return self._to_actions(np.repeat(best, self.cfg.hold, axis=0)[: self.cfg.horizon])

    def _start(self, actions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The search's first distribution: the warm start where there is one, else holding the last action taken
        (PushT: the pusher stays where it is), else the middle of the range / uniform choices."""
        if self.spec.kind == "box":
            spread = np.full((self.blocks, len(self.low)), self.cfg.std) * (self.high - self.low)
            if self.mean is not None:
                return self.mean.copy(), spread
            if actions is not None and len(actions):
                last = np.asarray(actions[-1], dtype=np.float64).reshape(-1)
            else:
                last = (self.low + self.high) / 2
            return np.repeat(last[None], self.blocks, 0), spread
        if self.mean is not None:
            return self.mean.copy(), np.zeros(0)
        width = max(self.choices)
        probs = np.zeros((self.blocks, len(self.choices), width))
        for i, n in enumerate(self.choices):
            probs[:, i, :n] = 1.0 / n
        return probs, np.zeros(0)

    def _sample(self, mean: np.ndarray, spread: np.ndarray) -> np.ndarray:
        N = self.cfg.candidates
        if self.spec.kind == "box":
            draw = mean[None] + spread[None] * self.rng.standard_normal((N, *mean.shape))
            return np.clip(draw, self.low, self.high)
        cumulative = mean.cumsum(-1)
        u = self.rng.random((N, *mean.shape[:-1], 1))
        return (u > cumulative[None]).sum(-1).clip(0, mean.shape[-1] - 1)

    def _refit(self, elites: np.ndarray, mean: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.spec.kind == "box":
            floor = self.cfg.min_std * (self.high - self.low)
            return elites.mean(0), np.maximum(elites.std(0), floor)
        counts = np.stack([(elites == k).mean(0) for k in range(mean.shape[-1])], -1)
        return 0.8 * counts + 0.2 * mean, spread  # smoothed, so no choice's probability falls to exactly 0

    def _dream(self, frames: np.ndarray, actions: np.ndarray | None, sequences: np.ndarray) -> np.ndarray:
        N = len(sequences)
        context = np.repeat(frames[None], N, 0)
        past = None if actions is None or len(frames) < 2 else np.repeat(np.asarray(actions)[None], N, 0)
        # The same noise for every iteration and candidate row: candidates differ by their actions alone.
        self.world.reset(context, past, generator=torch.Generator().manual_seed(self.cfg.search_seed))
        # Frame by frame (``step``), not ``predict``'s pyramid blocks: on a CPU a block's dense attention costs more
        # than it saves at a planner's short horizons.
        actions_seq = self._to_actions(sequences, lead=2)
        steps = [self.world.step(actions_seq[:, t]) for t in range(actions_seq.shape[1])]
        frames, rewards = np.stack([s.frames for s in steps], 1), np.stack([s.reward for s in steps], 1)
        scores = np.asarray(self.score(frames, rewards), dtype=np.float64)
        if scores.shape != (N,):
            raise InputError(f"a planning score must return one number per candidate ({N}), got shape {scores.shape}")
        return np.nan_to_num(scores, nan=-math.inf)

    def _to_actions(self, plan: np.ndarray, lead: int = 1) -> np.ndarray:
        """Searched numbers -> actions in the world's action space, keeping ``lead`` leading dimensions."""
        lead_shape = plan.shape[:lead]
        if self.spec.kind == "box":
            return plan.reshape(*lead_shape, *self.spec.shape).astype(np.float32)
        if self.spec.kind == "discrete":
            return plan.reshape(lead_shape).astype(np.int64)
        return plan.reshape(*lead_shape, len(self.choices)).astype(np.int64)


class PlannerPolicy:
    """A planner as a policy (``policy(observation) -> action``, ``reset(seed)``): plans from the latest ``context``
    observations (RGB frames, resized to the planning world's) and the actions between them, takes the plan's first
    ``replan_every`` actions, then plans again. It counts its ``decisions`` and the ``plan_seconds`` they took."""

    def __init__(self, planner: CEMPlanner, replan_every: int = 5, context: int = 4) -> None:
        if replan_every < 1 or context < 1:
            raise InputError(f"a planner policy needs replan_every and context >= 1, got {replan_every}, {context}")
        self.planner, self.replan_every, self.context = planner, replan_every, context
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        self.planner.reset()
        if seed is not None:
            self.planner.reseed(seed)
        self.frames: list[np.ndarray] = []
        self.taken: list[np.ndarray] = []
        self.queue: list[np.ndarray] = []
        self.decisions, self.plan_seconds = 0, 0.0

    def __call__(self, observation: Any) -> np.ndarray:
        frame = resize_frames(torch.as_tensor(np.asarray(observation)), tuple(self.planner.world.config.frame_size))
        self.frames = [*self.frames, frame.numpy()][-self.context :]
        if not self.queue:
            if self.decisions:  # the last plan's actions were all taken: the next search starts from its rest
                self.planner.shift(self.replan_every)
            seen = np.stack(self.frames)
            between = np.stack(self.taken[-(len(seen) - 1) :]) if len(seen) > 1 else None
            started = time.perf_counter()
            self.queue = list(self.planner.plan(seen, between)[: self.replan_every])
            self.plan_seconds += time.perf_counter() - started
            self.decisions += 1
        action = self.queue.pop(0)
        self.taken = [*self.taken, np.asarray(action)][-self.context :]
        return action
