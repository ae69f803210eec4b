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

from worldsim.data.reader import TrajectoryReader

STILL_SPEED = 1.0
"""Below this speed (world units per second) a frame counts as standing still."""
SPEED_BINS = (0.0, STILL_SPEED, 20.0, 50.0, 80.0, 120.0, float("inf"))


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
    infos = [reader.infos(e) for e in range(len(reader))]
    if infos and all("speed" in i for i in infos):
        speed = np.concatenate([i["speed"] for i in infos])
        hist, _ = np.histogram(speed, bins=SPEED_BINS)
        result["speed_share"] = {
            _bin_name(lo, hi): float(h) / len(speed) for lo, hi, h in zip(SPEED_BINS, SPEED_BINS[1:], hist)
        }
        result["still_share"] = float((speed < STILL_SPEED).mean())
    if infos and all("on_track" in i for i in infos):
        result["off_track_share"] = float((np.concatenate([i["on_track"] for i in infos]) < 0.5).mean())
    return result


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
        lines += ["", "| driving style | episodes | share |", "|---|---|---|"]
        lines += [f"| {k} | {v} | {v / total:.0%} |" for k, v in n["styles"].items()]
    if "action_share" in n:
        names = action_names or {}
        lines += ["", "| action | share of steps |", "|---|---|"]
        lines += [f"| {a} {names.get(a, '')} | {s:.1%} |" for a, s in n["action_share"].items()]
    if "speed_share" in n:
        lines += ["", "| speed (units/s) | share of frames |", "|---|---|"]
        lines += [f"| {k} | {s:.1%} |" for k, s in n["speed_share"].items()]
        lines += ["", f"Standing still (speed < {STILL_SPEED:g}): **{n['still_share']:.1%}** of frames."]
    if "off_track_share" in n:
        lines += [f"Off the road (no wheel on a road tile): **{n['off_track_share']:.1%}** of frames."]
    return "\n".join(lines) + "\n"
