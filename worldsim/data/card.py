"""``worldsim data-card``: what a trajectory file holds, as a short markdown card.

What a world can learn is bounded by what its data shows, so the card counts what matters for a world that must
follow *any* policy: the actions taken, the speeds driven, how much of the data stands still or is off the road,
and which driving styles recorded it. Speed and road contact come from the recorder's per-frame ``infos`` (logged
for source envs with a state probe, e.g. CarRacing); files without them get the action part only.

    worldsim data-card data/carracing.h5 --out data/carracing.md
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from worldsim.checkpoint import atomic_path, check_output_path
from worldsim.data.reader import TrajectoryReader
from worldsim.envs.sources import source_world

SPEED_BINS = (0.0, 1.0, 20.0, 50.0, 80.0, 120.0, float("inf"))
"""Histogram edges of a logged ``speed`` (world units per second)."""


@dataclass
class DataCardConfig:
    """What ``worldsim data-card`` describes."""

    data: str
    """Trajectory file (``worldsim record`` output, Minari or robomimic)."""
    out: str | None = None
    """Also write the card to this markdown file."""


def card_numbers(reader: TrajectoryReader) -> dict[str, Any]:
    """The numbers of the card: episodes, steps, action shares, style counts, speed histogram, still / off-road."""
    actions = np.concatenate(
        [reader.steps(e)["actions"].reshape(reader.episodes[e].steps, -1) for e in range(len(reader))]
    )
    styles = Counter(str(reader.episode_attrs(e).get("style", "")) for e in range(len(reader)))
    result: dict[str, Any] = {
        "episodes": len(reader),
        "steps": reader.total_steps,
        "env_id": reader.env_id,
        "frame_rate": reader.frame_rate,
        "styles": {k: v for k, v in sorted(styles.items()) if k},
    }
    if actions.shape[1] == 1 and np.issubdtype(actions.dtype, np.integer):
        values, counts = np.unique(actions[:, 0], return_counts=True)
        result["action_share"] = {int(v): float(c) / len(actions) for v, c in zip(values, counts)}
    space = reader.action_space
    if space is not None and hasattr(space, "low") and actions.shape[1] <= 4:
        result.update(_box_numbers(reader, actions, np.asarray(space.low).ravel(), np.asarray(space.high).ravel()))
    result["outcomes"] = _outcomes(reader)
    infos = [reader.infos(e) for e in range(len(reader))]
    if infos and all("speed" in i for i in infos):
        speed = np.concatenate([i["speed"] for i in infos])
        hist, _ = np.histogram(speed, bins=SPEED_BINS)
        result["speed_share"] = {
            _bin_name(lo, hi): float(h) / len(speed) for lo, hi, h in zip(SPEED_BINS, SPEED_BINS[1:], hist)
        }
    # Standing still by the source env's own rule (``SourceWorld.stands_still``), where it has one.
    still = [source_world(reader.env_id).stands_still(i) for i in infos]
    if infos and all(s is not None for s in still):
        result["still_share"] = float(np.concatenate(still).mean())
    if infos and all("on_track" in i for i in infos):
        result["off_track_share"] = float((np.concatenate([i["on_track"] for i in infos]) < 0.5).mean())
    return result


BOX_BINS = 8
"""Bins per action dimension of a Box action's histogram (over the space's bounds)."""
HELD_SHARE = 0.01
"""A Box action counts as held (the agent keeps still) when no dimension moves by more than this share of its range
from the step before."""


def _box_numbers(reader: TrajectoryReader, actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, Any]:
    """Per-dimension histograms of a Box action over its bounds, and the share of steps that repeat the action
    before (for absolute-target actions such as PushT's, a pusher that waits)."""
    span = np.where(high > low, high - low, 1.0)
    hist = {
        f"dim {d}": np.histogram(actions[:, d], bins=BOX_BINS, range=(low[d], high[d]))[0] / len(actions)
        for d in range(actions.shape[1])
    }
    held, total = 0, 0
    for e in range(len(reader)):
        a = reader.steps(e)["actions"].reshape(reader.episodes[e].steps, -1).astype(np.float64)
        held += int((np.abs(np.diff(a, axis=0)) <= HELD_SHARE * span).all(axis=1).sum())
        total += max(0, len(a) - 1)
    edges = [np.linspace(low[d], high[d], BOX_BINS + 1) for d in range(actions.shape[1])]
    return {"box_histogram": {k: [float(v) for v in h] for k, h in hist.items()},
            "box_edges": [[float(x) for x in e] for e in edges],
            "held_share": held / max(total, 1)}  # fmt: skip


def _outcomes(reader: TrajectoryReader) -> dict[str, dict[str, float]]:
    """Per style (all episodes under ""): episodes, share that terminated (PushT: succeeded), mean of each
    episode's best step reward (PushT: max coverage / 0.95, capped at 1) and mean length."""
    rows: dict[str, list[tuple[bool, float, int]]] = {}
    for e in range(len(reader)):
        steps = reader.steps(e)
        row = (
            bool(steps["terminations"].any()),
            float(np.max(steps["rewards"], initial=0.0)),
            reader.episodes[e].steps,
        )
        rows.setdefault("", []).append(row)
        style = str(reader.episode_attrs(e).get("style", ""))
        if style:
            rows.setdefault(style, []).append(row)
    return {
        style: {
            "episodes": len(r),
            "terminated_share": float(np.mean([t for t, _, _ in r])),
            "mean_max_reward": float(np.mean([m for _, m, _ in r])),
            "mean_steps": float(np.mean([n for _, _, n in r])),
        }
        for style, r in sorted(rows.items())
    }


def _bin_name(lo: float, hi: float) -> str:
    return f"{lo:g}+" if hi == float("inf") else f"{lo:g}-{hi:g}"


def format_card(numbers: dict[str, Any], source: str, action_names: dict[int, str] | None = None) -> str:
    """The numbers as markdown."""
    n = numbers
    lines = [
        f"# Data card: {source}",
        "",
        f"{n['episodes']} episodes, {n['steps']} steps of `{n['env_id'] or 'unknown env'}` at {n['frame_rate']} fps.",
    ]
    if n["styles"]:
        total = sum(n["styles"].values())
        lines += ["", "| style | episodes | share |", "|---|---|---|"]
        lines += [f"| {k} | {v} | {v / total:.0%} |" for k, v in n["styles"].items()]
    if "action_share" in n:
        names = action_names or {}
        lines += ["", "| action | share of steps |", "|---|---|"]
        lines += [f"| {a} {names.get(a, '')} | {s:.1%} |" for a, s in n["action_share"].items()]
    if "speed_share" in n:
        lines += ["", "| speed (units/s) | share of frames |", "|---|---|"]
        lines += [f"| {k} | {s:.1%} |" for k, s in n["speed_share"].items()]
    if "still_share" in n:
        lines += ["", f"Standing still (by {n['env_id']}'s own rule): **{n['still_share']:.1%}** of frames."]
    if "off_track_share" in n:
        lines += [f"Off the road (no wheel on a road tile): **{n['off_track_share']:.1%}** of frames."]
    if "box_histogram" in n:
        edges = n["box_edges"][0]
        bins = [f"{lo:g}-{hi:g}" for lo, hi in zip(edges, edges[1:])]
        lines += ["", "| action dimension | " + " | ".join(bins) + " |", "|---|" + "---|" * len(bins)]
        lines += [f"| {d} | " + " | ".join(f"{v:.1%}" for v in h) + " |" for d, h in n["box_histogram"].items()]
        lines += ["", f"Held actions (the same as the step before, within {HELD_SHARE:.0%} of the range): "
                  f"**{n['held_share']:.1%}** of steps."]  # fmt: skip
    if n.get("outcomes"):
        lines += ["", "| episodes of | episodes | terminated | mean best step reward | mean steps |"]
        lines += ["|---|---|---|---|---|"]
        lines += [
            f"| {style or '**all**'} | {o['episodes']} | {o['terminated_share']:.0%} | {o['mean_max_reward']:.3f} | "
            f"{o['mean_steps']:.0f} |"
            for style, o in n["outcomes"].items()
        ]
    return "\n".join(lines) + "\n"


def run(cfg: DataCardConfig) -> int:
    """``worldsim data-card``: print the card (and with ``out`` also write it)."""
    if cfg.out:
        check_output_path(cfg.out)
    card = format_card(card_numbers(TrajectoryReader(cfg.data)), cfg.data)
    if cfg.out:
        with atomic_path(cfg.out) as tmp:
            tmp.write_text(card)
    print(card, end="")
    return 0
