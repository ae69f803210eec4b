"""``worldsim eval``'s policy-shift part: does a world hold still when nothing is done (the standstill drift, from the
real env and from held-out stops in the data), and does it order its source env's policy family as reality does?

``PolicyShift`` is mixed into the evaluation (``eval._Evaluation``): it reads the world, the held-out episodes and the
config from it. What counts as standing still and which policies make the family come from the source world's
adapter (``SourceWorld.still`` on what ``SourceWorld.probe`` logs, ``SourceWorld.policy_family``); change them
there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from worldsim.agents.policy import load_factory
from worldsim.config import comma_list
from worldsim.envs.sources import SourceWorld, frame_of, make_source_env, source_world
from worldsim.envs.world import noop_action
from worldsim.errors import WorldsimError
from worldsim.evaluation.metrics import (
    pearson,
    pixel_distance,
    spearman,
)
from worldsim.evaluation.predict import predict
from worldsim.evaluation.real import real_repeat
from worldsim.inputs import resize_frames

STANDSTILL_HORIZONS = (1, 15, 30)
"""Dream frames after a standstill context at which its drift is reported; the last is the headline."""


def _stacked(states: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """Per-frame probe states as the recorder logs them: one (T,) array a name."""
    return {k: np.asarray([state[k] for state in states]) for k in states[0]}


class PolicyShift:
    """The policy-shift measurements of ``worldsim eval``, over the evaluation's world and held-out episodes."""
    def policy_shift(self) -> dict[str, Any]:
        """Standstill drift and the source env's policy family's predicted vs real returns; skipped with a note
        where the world names no source env or it cannot run here."""
        in_data = self._standstill_in_data()  # needs only held-out data that tells when it stands still
        source_id = self.wm.config.source_env
        if not source_id:
            return {**in_data, "policy_shift_note": "skipped: the world names no source env to play"}
        try:
            env = make_source_env(source_id)
        except WorldsimError as e:
            return {**in_data, "policy_shift_note": f"skipped: its source env cannot run here ({e})"}
        source = source_world(source_id)
        try:
            result = self._standstill(env, source)
        finally:
            env.close()
        return {**result, **in_data, **self._policy_returns(source)}

    def _standstill_in_data(self) -> dict[str, Any]:
        """The standstill drift where held-out episodes stop mid-episode: windows where every frame stands still by
        the source's rule on its logged state (``SourceWorld.still``) and the action is the no-op for
        ``standstill_context`` + 30 frames (CarRacing: a car waiting on the road, off it, or after a spin, harder
        than the start line). The real frames after the context are the reference's own drift. Needs data that logs
        the state the rule reads (``worldsim record`` of a source with a probe)."""

        cfg, c = self.cfg, self.cfg.standstill_context
        longest = STANDSTILL_HORIZONS[-1]
        noop = np.asarray(noop_action(self.wm.action_space))
        keys = []
        for e in self.episodes:
            still, actions = self.still[e], self.steps[e]["actions"]
            if still is None:
                continue
            # frame t is still and the action into frame t (actions[t - 1]) is the no-op
            quiet = still[1:] & np.all(actions.reshape(len(actions), -1) == noop.reshape(1, -1), 1)
            s = max(1, cfg.skip_frames)
            while s + c + longest <= len(quiet) + 1 and len(keys) < 4 * cfg.standstill_tracks:
                if quiet[s - 1 : s - 1 + c + longest].all():
                    keys.append((e, s))
                    s += c + longest  # windows do not overlap
                else:
                    s += 1
        if not keys:
            return {"standstill_data_note": "no held-out stretch stands still with no input for the whole window"}
        ctx = np.stack([self.frames[e][s : s + c] for e, s in keys])
        real = np.stack([self.frames[e][s + c : s + c + longest] for e, s in keys])
        actions = np.stack([self.steps[e]["actions"][s : s + c - 1] for e, s in keys]) if c > 1 else None
        self.wm.reset(ctx, actions=actions, generator=self._generators(keys))
        steps = np.broadcast_to(noop, (len(keys), *noop.shape)).copy()
        dream = np.stack([self.wm.step(steps).frames for _ in range(longest)], 1)
        result: dict[str, Any] = {"standstill_data_windows": len(keys)}
        for h in STANDSTILL_HORIZONS:
            result[f"standstill_drift_h{h}_data"] = float(pixel_distance(dream[:, h - 1], ctx[:, -1]).mean())
            result[f"standstill_drift_h{h}_data_real"] = float(pixel_distance(real[:, h - 1], ctx[:, -1]).mean())
        return result

    def _standstill(self, env: Any, source: SourceWorld) -> dict[str, Any]:
        """Dreams from real frames that stand still (by ``SourceWorld.still`` on the probe's state), given no-op
        actions: how far they drift from the still frame, beside how far the real env does (~0)."""

        cfg, c, skip = self.cfg, self.cfg.standstill_context, self.cfg.skip_frames
        longest = STANDSTILL_HORIZONS[-1]
        if not (source.probe and source.still):
            return {"standstill_note": "skipped: the source env logs no state to tell that it stands still"}
        probe, repeat = load_factory(source.probe), real_repeat(env, self.wm.config)
        noop_real, noop = noop_action(env.action_space), np.asarray(noop_action(self.wm.action_space))
        contexts, futures, seeds = [], [], []
        for i in range(cfg.standstill_tracks):
            seed = self.track_seed + i
            obs, _ = env.reset(seed=seed)
            frames, states, ended = [frame_of(env, obs)], [probe(env)], False
            if source.stands_still(_stacked(states)) is None:
                return {"standstill_note": "skipped: the source env's probe logs nothing its standstill rule reads"}
            for _ in range(skip + c - 1 + longest):  # no input through the intro, the context and the horizon
                for _ in range(repeat):
                    obs, _, terminated, truncated, _ = env.step(noop_real)
                    ended = bool(terminated or truncated)
                    if ended:
                        break
                if ended:
                    break
                frames.append(frame_of(env, obs))
                states.append(probe(env))
            if ended or not source.stands_still(_stacked(states))[skip : skip + c].all():
                continue  # not a standstill start (CarRacing's car waits for gas, so there this should not happen)
            frames = resize_frames(torch.from_numpy(np.stack(frames)), self.wm.frame_size).numpy()
            contexts.append(frames[skip : skip + c])
            futures.append(frames[skip + c : skip + c + longest])
            seeds.append(seed)
        if not seeds:
            return {"standstill_note": f"skipped: nothing stood still in the context on {cfg.standstill_tracks} tracks"}
        B = len(seeds)
        ctx, real = np.stack(contexts), np.stack(futures)  # (B, c, H, W, 3), (B, longest, H, W, 3)
        actions = np.broadcast_to(noop, (B, c - 1, *noop.shape)).copy() if c > 1 else None
        self.wm.reset(ctx, actions=actions, generator=self._generators([(s, 0) for s in seeds]))
        steps = np.broadcast_to(noop, (B, *noop.shape)).copy()
        dream = np.stack([self.wm.step(steps).frames for _ in range(longest)], 1)  # (B, longest, H, W, 3)
        result: dict[str, Any] = {"standstill_tracks": B}
        for h in STANDSTILL_HORIZONS:
            result[f"standstill_drift_h{h}"] = float(pixel_distance(dream[:, h - 1], ctx[:, -1]).mean())
            result[f"standstill_drift_h{h}_real"] = float(pixel_distance(real[:, h - 1], ctx[:, -1]).mean())
        return result

    def _policy_returns(self, source: SourceWorld) -> dict[str, Any]:
        """Each policy of the family on the same real tracks and in dreams forked from them (``worldsim.predict``):
        how well the dreamed H-step returns order and size the policies."""

        cfg = self.cfg
        family = source.policy_family if cfg.family == "auto" else comma_list(cfg.family)
        if not family:
            return {"policy_return_note": "skipped: the source env lists no policy family (SourceWorld.policy_family)"}
        table = []
        for name in family:
            run = predict(
                self.wm, name, episodes=cfg.family_episodes, horizon=cfg.family_horizon, real=True,
                seed=self.track_seed, context=cfg.context, progress=self.progress,
            )  # fmt: skip
            assert run.real_return is not None  # real=True
            table.append(
                {
                    "policy": name,
                    "predicted_return": float(run.dream_return.mean()),
                    "real_return": float(run.real_return.mean()),
                    "episode_return_mae": float(np.abs(run.dream_return - run.real_return).mean()),
                }
            )
        predicted = np.array([row["predicted_return"] for row in table])
        real = np.array([row["real_return"] for row in table])
        mae, spread = float(np.abs(predicted - real).mean()), float(real.max() - real.min())
        result = {
            "policy_return_tracks": cfg.family_episodes,
            "policy_return_horizon": cfg.family_horizon,
            "policy_return_pearson": pearson(predicted, real),
            "policy_return_spearman": spearman(predicted, real),
            "policy_return_mae": mae,
            "policy_returns": table,
        }
        if spread > 0:  # the error as a share of how far apart the policies really are
            result["policy_return_mae_share"] = mae / spread
        return result
