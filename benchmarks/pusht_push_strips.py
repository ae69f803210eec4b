"""Real | dream strips of the biggest pushes in a PushT data file: for each of the N windows where the block moved
most within H steps, the world gets the 4 real frames before it and the recorded actions (open loop); columns show
real (top) over dream (bottom) at a few steps. Look at it before trusting a number: a melting T is plain here.

    python benchmarks/pusht_push_strips.py --world pusht --data data/pusht_fresh.h5 --out strips.png
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from worldsim.data.reader import TrajectoryReader
from worldsim.engine import WorldModel

CONTEXT = 4


def biggest_pushes(reader: TrajectoryReader, horizon: int, count: int) -> list[tuple[float, int, int]]:
    """(distance the block travelled in ``horizon`` steps, episode, first dreamt step) of the ``count`` largest."""
    found = []
    for e in range(len(reader)):
        infos = reader.infos(e)
        x, y = infos["block_x"], infos["block_y"]
        for s in range(CONTEXT - 1, reader.episode_frames[e] - horizon - 1, 10):
            found.append((float(np.hypot(x[s + horizon] - x[s], y[s + horizon] - y[s])), e, s))
    return sorted(found, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default="pusht")
    parser.add_argument("--data", default="data/pusht_fresh.h5")
    parser.add_argument("--out", default="push_strips.png")
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    reader = TrajectoryReader(args.data)
    picks = biggest_pushes(reader, args.horizon, args.rows)
    world = WorldModel.from_pretrained(args.world)
    context = np.stack([reader.frames(e, s - CONTEXT + 1, s + 1) for _, e, s in picks])
    actions = np.stack([reader.steps(e)["actions"][s - CONTEXT + 1 : s + args.horizon] for _, e, s in picks])
    world.reset(context, actions[:, : CONTEXT - 1], generator=torch.Generator().manual_seed(args.seed))
    dream = np.stack([world.step(actions[:, CONTEXT - 1 + t]).frames for t in range(args.horizon)], 1)
    shown = sorted({0, 4, 9, 14, 19, args.horizon - 1})
    rows = []
    for i, (moved, e, s) in enumerate(picks):
        real = reader.frames(e, s + 1, s + 1 + args.horizon)
        rows.append(np.concatenate([np.concatenate([real[t], dream[i, t]], 0) for t in shown], 1))
        print(f"episode {e}, step {s}: the block moved {moved:.0f} units in {args.horizon} steps")
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(args.out)
    print(f"-> {args.out} (columns: steps {', '.join(str(t + 1) for t in shown)}; real above dream)")


if __name__ == "__main__":
    main()
