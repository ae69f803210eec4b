"""How well the PushT judge reads state and success off real frames: its coverage and pose against the recorded
truth (the recorder's PushT probe), frame by frame.

    python benchmarks/pusht_judge.py data/pusht_fresh.h5 [--episodes 0-23] [--json out.json]

Prints the coverage error (mean, 99th percentile, max), the success agreement (judged coverage >= 0.95 against
the true coverage >= 0.95) and the T's position / angle errors, over every frame of the chosen episodes.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from worldsim.bench import report_json
from worldsim.data.reader import TrajectoryReader
from worldsim.envs.judges import PushTJudge
from worldsim.evaluation.eval import parse_episodes
from worldsim.inputs import resize_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--episodes", default="")
    parser.add_argument("--size", default="64x64", help="frame size the judge reads (the world's)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    reader = TrajectoryReader(args.data)
    size = tuple(int(v) for v in args.size.split("x"))
    judge = PushTJudge()
    read, truth = {k: [] for k in judge.STATE}, {k: [] for k in judge.STATE}
    episode_success = []  # (true, judged): the episode reached 95% coverage at some frame
    for e in parse_episodes(args.episodes, len(reader)):
        infos = reader.infos(e)
        if not all(k in infos for k in judge.STATE):
            raise SystemExit(f"{args.data} episode {e} logs no PushT state: record it with this worldsim")
        frames = resize_frames(torch.from_numpy(reader.frames(e)), size).numpy()
        state = judge.state(frames)
        for k, v in state.items():
            read[k].append(v)
            truth[k].append(infos[k].astype(np.float64))
        true_state = {k: infos[k].astype(np.float64) for k in judge.STATE}
        episode_success.append(
            (
                judge.score_states(true_state).max() >= judge.success_score,
                judge.score_states(state).max() >= judge.success_score,
            )
        )
    read = {k: np.concatenate(v) for k, v in read.items()}
    truth = {k: np.concatenate(v) for k, v in truth.items()}
    coverage_read, coverage_true = judge.score_states(read), judge.score_states(truth)
    error = np.abs(coverage_read - coverage_true)
    success_true, success_read = coverage_true >= judge.success_score, coverage_read >= judge.success_score
    pose = judge.state_errors(read, truth)
    result = {
        "frames": int(len(error)),
        "readable": float(np.isfinite(pose["block"]).mean()),
        "coverage_error_mean": float(error.mean()),
        "coverage_error_p99": float(np.quantile(error, 0.99)),
        "coverage_error_max": float(error.max()),
        "true_successes": int(success_true.sum()),
        "success_agreement": float((success_true == success_read).mean()),
        "success_recall": float((success_read & success_true).sum() / max(1, success_true.sum())),
        "success_false_alarms": int((success_read & ~success_true).sum()),
        "episodes": len(episode_success),
        "episode_successes": int(sum(t for t, _ in episode_success)),
        "episode_success_agreement": float(np.mean([t == j for t, j in episode_success])),
        "block_error_median": float(np.median(pose["block"])),
        "block_error_p99": float(np.quantile(pose["block"], 0.99)),
        "angle_error_median": float(np.median(pose["angle"])),
        "angle_error_p99": float(np.quantile(pose["angle"], 0.99)),
    }
    report_json(result, args.json)


if __name__ == "__main__":
    main()
