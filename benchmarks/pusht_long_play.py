"""Two minutes of play in a PushT world beside the real env: does the T stay where the pusher left it?

    python benchmarks/pusht_long_play.py --world pusht --policy idle --frames 1200 --worlds 8

From each real episode's first frames (seeds 100000+, never recorded) the world and the real env run the same frame-only
policy (``idle``: the pusher parks in a corner and never touches the T; ``pusht_pixels``: pushes from the frames it
sees) for ``--frames`` steps (1200 = two minutes at 10 fps). At a few points the judge reads the T off the dreamt
and the real frame: its position error (table units), angle error (degrees), mask IoU, how many dreams still show a
readable T and how much of the green goal is still drawn. Prints one JSON object.
"""

from __future__ import annotations

import argparse

import numpy as np

import worldsim
from worldsim.bench import report_json
from worldsim.envs.judges import PushTJudge
from worldsim.evaluation.metrics import mask_iou


def goal_pixels(frames: np.ndarray) -> np.ndarray:
    """Per frame: pixels of the goal's light green (g well above r and b)."""
    f = frames.astype(np.int16)
    return ((f[..., 1] - f[..., 0] > 40) & (f[..., 1] - f[..., 2] > 40)).reshape(len(f), -1).sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="pusht")
    parser.add_argument("--policy", default="idle")
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--worlds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=100000)
    parser.add_argument("--at", default="100,300,600,1200")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    at = [h for h in (int(v) for v in args.at.split(",")) if h <= args.frames]
    result = worldsim.predict(args.world, args.policy, episodes=args.worlds, horizon=args.frames, real=True,
                              seed=args.seed, keep_frames=True, precision=args.precision, judge=False)  # fmt: skip
    judge = PushTJudge()
    dream, real = result.dream_frames, result.real_frames  # (N, H+1, h, w, 3): the fork's frame, then each step
    out: dict = {"world": args.world, "policy": args.policy, "worlds": args.worlds, "frames": args.frames}
    for h in at:
        d, r = dream[:, h], real[:, h]
        errors = judge.state_errors(judge.state(d), judge.state(r))
        out[f"h{h}"] = {
            "block_error_median": float(np.median(errors["block"])),
            "angle_error_median": float(np.median(errors["angle"])),
            "readable": float(np.isfinite(errors["block"]).mean()),
            "iou_mean": float(np.nanmean(mask_iou(judge.mask(d), judge.mask(r)))),
            "goal_pixels_dream_over_real": float(goal_pixels(d).sum() / max(1, goal_pixels(r).sum())),
        }
    report_json(out, args.json)


if __name__ == "__main__":
    main()
