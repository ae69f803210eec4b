"""Real PushT episodes of frame-only policies on given seeds: success and highest reward within N world steps, the
baselines a planner's numbers stand beside (`worldsim plan --seed S --max-steps N`).

    python benchmarks/pusht_policy_baseline.py --policies idle,random --seed 9000000 --episodes 6 --steps 150
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from worldsim.agents.registry import make_seeing_policy
from worldsim.checkpoint import load_config
from worldsim.evaluation.real import WorldView, source_env
from worldsim.worlds import resolve_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default="pusht")
    parser.add_argument("--policies", default="idle,random,pusht_planner_px")
    parser.add_argument("--seed", type=int, default=9_000_000)
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    config = load_config(resolve_world(args.world))
    env = source_env(config, args.world, args.steps + 1)
    view = WorldView(env, config)
    out = {}
    for name in args.policies.split(","):
        best, success = [], []
        for i in range(args.episodes):
            policy = make_seeing_policy(name, env.action_space, args.seed + i)
            frame, _ = view.reset(seed=args.seed + i)
            policy.reset(args.seed + i)
            top, done = -np.inf, False
            for _ in range(args.steps):
                frame, reward, terminated, truncated, _ = view.step(policy(frame))
                top = max(top, reward)
                if terminated or truncated:
                    done = terminated
                    break
            best.append(top)
            success.append(done)
        out[name] = {"success": float(np.mean(success)), "best_reward_mean": float(np.mean(best))}
        print(f"{name}: success {np.mean(success):.0%}, highest reward mean {np.mean(best):.3f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
