"""PPO's maths: the return scale, generalised advantage estimates and the clipped update, cleanrl's recipe (Huang et
al. 2022, "The 37 implementation details of PPO").

``Rollouts.collect`` (``training/rollouts.py``) hands over one flat batch (frames, actions, logp, advantages,
returns) and ``ppo_update`` is all that reads it: to change the loss, change it here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from worldsim.agents.ppo import ActorCritic
from worldsim.training.config import RLTrainConfig


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
