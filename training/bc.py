"""Behaviour cloning: fit a frames-to-action CNN (``worldsim.agents.bc``) to recorded episodes.

    worldsim train bc --data data/pusht_mix.h5 --styles expert,good --out runs/bc_full
    worldsim train bc --data data/pusht_mix.h5 --styles expert --max-episodes 20 --out runs/bc_small

Each sample is ``history`` consecutive frames and the action taken on the last of them; the loss is the
cross-entropy of the action's cell in a grid over the Box (``--bins``), or with ``--bins 0`` the MSE of the action
normalised to [-1, 1]. The exported policy (``policy/``, EMA weights) loads with ``BCPolicy.from_pretrained``;
the held-out episodes' action error is logged with every export.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from worldsim.agents.bc import BCNet, BCNetConfig, save_bc
from worldsim.checkpoint import atomic_path
from worldsim.config import ActionSpec, comma_list
from worldsim.data.clips import ClipDataset
from worldsim.data.reader import TrajectoryReader
from worldsim.data.recorder import parse_size
from worldsim.errors import InputError
from worldsim.training.common import open_training_data
from worldsim.training.config import BCTrainConfig

EXPORT_DIR = "policy"
HELDOUT_SAMPLES = 2048


def chosen_episodes(reader: TrajectoryReader, episodes: list[int], cfg: BCTrainConfig) -> list[int]:
    """The episodes to clone: of ``styles`` (the recorder's ``style`` attr), successes only if asked, at most
    ``max_episodes``; a one-line error when nothing is left."""
    styles = set(comma_list(cfg.styles))
    kept = []
    for e in episodes:
        if styles and str(reader.episode_attrs(e).get("style", "")) not in styles:
            continue
        if cfg.successes_only and not bool(reader.steps(e)["terminations"].any()):
            continue
        kept.append(e)
    if cfg.max_episodes:
        kept = kept[: cfg.max_episodes]
    if not kept:
        what = f" of style {', '.join(sorted(styles))}" if styles else ""
        raise InputError(
            f"{reader.source} has no training episodes{what}{' that succeed' if cfg.successes_only else ''}"
        )
    return kept


class BCStage:
    name = "bc"

    def __init__(self, cfg: BCTrainConfig) -> None:
        self.cfg = cfg
        frame_size = parse_size(cfg.frame_size)
        self.reader, episodes = open_training_data(cfg)
        space = self.reader.action_space
        spec = ActionSpec.from_gym(space)
        if spec.kind != "box":
            raise InputError(f"train bc clones Box actions; {cfg.data} has {space}")
        self.episodes = chosen_episodes(self.reader, episodes, cfg)
        # A window of history + 1 frames: the first `history` are what the policy sees, the action that produced
        # the last one is what it took on the frame before (ClipDataset: frame j came from action j).
        self.dataset = ClipDataset(self.reader, cfg.history + 1, frame_size, episodes=self.episodes)
        heldout = list(range(len(episodes), len(self.reader)))
        self.heldout = ClipDataset(self.reader, cfg.history + 1, frame_size, episodes=heldout) if heldout else None
        torch.manual_seed(cfg.seed)
        self.model = BCNet(BCNetConfig(frame_size=list(frame_size), history=cfg.history, action=spec, bins=cfg.bins))
        self.tokens_per_sample = 1

    def loss(
        self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator, rows: slice, global_batch: int
    ) -> tuple[Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        loss = self.model.loss(batch["frames"][:, :-1].to(device), batch["actions"][:, -1].to(device))
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def heldout_error(self, net: BCNet) -> dict[str, float]:
        """Mean absolute action error on held-out episodes, in the action's own units (PushT: world units)."""
        if self.heldout is None:
            return {}
        idx = np.linspace(0, len(self.heldout) - 1, min(HELDOUT_SAMPLES, len(self.heldout))).round().astype(int)
        items = [self.heldout[int(i)] for i in idx]
        frames = torch.stack([it["frames"][:-1] for it in items])
        actions = torch.stack([it["actions"][-1] for it in items]).float()
        device = next(net.parameters()).device
        predicted = torch.cat([net.denormalise(net.act(chunk.to(device))).cpu() for chunk in frames.split(256)])
        return {"heldout_action_mae": float((predicted - actions).abs().mean()), "samples": len(items)}

    def export(self, ema: nn.Module, out: Path, card: dict[str, Any]) -> None:
        metrics = self.heldout_error(ema)  # type: ignore[arg-type]
        episodes = {"episodes": len(self.episodes), "styles": self.cfg.styles or "all", "data": self.cfg.data}
        save_bc(ema, out / EXPORT_DIR, {**card, **episodes, **metrics})  # type: ignore[arg-type]
        if metrics:
            with atomic_path(out / EXPORT_DIR / "metrics.json") as tmp:
                tmp.write_text(json.dumps({**card, **metrics}, indent=2))
            print(
                f"bc at step {card.get('step')}: held-out action MAE {metrics['heldout_action_mae']:.2f}",
                file=sys.stderr,
                flush=True,
            )

    def log_samples(self, ema: nn.Module, tb: Any, step: int) -> None:
        pass  # the held-out error at export is the useful signal; a policy has no picture to show
