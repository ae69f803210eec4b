"""``worldsim eval``: how good is a world, measured on held-out real episodes.

Four measurements, on episodes the model never trained on (``--episodes``) and, for the last, on the real tracks
they were recorded on:

* **teacher-forced next frame**: the model's memory holds the real past (``step(observed=...)``)
  and it predicts each next frame from the true action; PSNR/SSIM against the real frame, beside
  copy-last. The same pass scores the reward and termination heads on the real transitions.
* **open loop**: from ``context`` real frames the model predicts ``horizon`` frames from the true
  actions alone; PSNR/SSIM of frame h, beside the copy-last-frame baseline (the last real context
  frame repeated) and beside the same rollout under random actions (controllability: Genie's
  delta PSNR).
* **long-run stability**: worlds dream ``stability_frames`` frames, driven by a policy that sees only the
  dream (the source env's frame-only driver, e.g. the road follower for CarRacing) or by recorded actions;
  ``stability_ratio`` = FD(late frames, real frames) / FD(early frames, real frames), where FD is
  the Fréchet distance between Gaussians fitted to features of the world's own encoder (posterior
  mean latents, average-pooled to 4x4). 1.0 means the last frames are as close to real play as the
  first ones; drift and collapse push it up.
* **policy shift** (worlds whose source env runs here): does the world hold still when nothing is done, and does
  it tell good policies from bad ones? ``standstill_drift_h30``: from real frames that stand still (by the source
  env's own rule, ``SourceWorld.still``: for CarRacing a car below 1 unit/s), 30 no-op dream frames; mean
  |dream - real still frame| in uint8 units, beside the real env's own value (~0).
  ``policy_return_*``: each policy of the source env's family (``SourceWorld.policy_family``: for CarRacing the
  road follower at several speeds, stop-and-go, weaving, braking, random) plays ``family_episodes`` real tracks
  and dreams forked from them (``worldsim.predict``); the mean dreamed and real H-step returns per policy are
  compared by Pearson and Spearman correlation and by MAE (also as a share of the real returns' range).

* **state fidelity** (worlds whose source env has a judge, ``worldsim.envs.judges``; PushT): from ``context`` real
  frames the world replays the recorded actions open loop; at each of ``state_horizons`` the judge reads the task
  object off the dreamt and the real frame. ``state_iou_h{h}``: overlap (IoU) of the object's pixel masks;
  ``block_error_h{h}`` / ``angle_error_h{h}``: median error of its pose (table units, degrees; a dream where the
  object cannot be read counts as infinitely wrong, ``state_readable_h{h}`` says how often); each beside
  copy-last (the last context frame held), overall and split by whether the real object moved
  (``_moved`` / ``_still``). The real pose is the recorded one where the data logs it, else read off the frame.

The open-loop numbers are also split by whether anything moves in the context (``psnr_h{h}_moving`` /
``_still``): a world can score well on still starts by copying, and the split shows it.

Every rollout has its own noise generator seeded by (seed, episode, start), so a number does not
depend on how rollouts are batched.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
import tyro

from worldsim.agents import SEEING_POLICIES
from worldsim.checkpoint import atomic_path, check_output_path, load_config
from worldsim.config import comma_list
from worldsim.data.compat import check_data_matches_world
from worldsim.data.reader import TrajectoryReader
from worldsim.devices import resolve_device
from worldsim.engine import WorldModel
from worldsim.envs.judges import Judge, judge_for
from worldsim.envs.sources import source_world
from worldsim.errors import InputError
from worldsim.evaluation.eval_report import format_eval_table
from worldsim.evaluation.metrics import (
    json_ready,
    mask_iou,
    pearson,
    pixel_distance,
    psnr,
    ssim,
)
from worldsim.evaluation.policy_shift import PolicyShift
from worldsim.evaluation.stability import Stability
from worldsim.inputs import resize_frames
from worldsim.precision import Precision, model_dtype
from worldsim.progress import progress_bar
from worldsim.worlds import DEFAULT_WORLD, resolve_world

PARTS = ("teacher", "open_loop", "stability", "policy_shift", "state")
DEFAULT_PARTS = PARTS[:4]
"""What ``worldsim eval`` runs unless ``--parts`` says: ``state`` needs a judge, which not every source has."""
MOVED_UNITS, MOVED_DEGREES = 10.0, 10.0
"""A state rollout counts as one where the object moved when, between the last context frame and frame h, the
real object's position changed by at least this many table units or its angle by at least this many degrees."""
STILL_PIXEL_CHANGE = 0.1
"""Mean absolute change between consecutive uint8 frames of a context (0-255 units, over pixels, channels and frame
pairs) below which the context counts as still, where the data logs no state that the source's rule for standing
still reads (``SourceWorld.still``). Measured on 64x64 CarRacing at 25 fps: a stopped car's view does not change but
for the HUD's score counter (up to 0.25 on a frame where it ticks); a car creeping under 1 unit/s changes 0.1-0.2, as
much as one at 3-10 units/s; over 10 units/s ~1. On 4-frame contexts of the policy family this agrees with the speed
rule on 88% of them; a logged speed is the better judge."""


@dataclass
class EvalConfig:
    """What ``worldsim eval`` measures."""
    checkpoint: str = DEFAULT_WORLD
    """World checkpoint dir, shipped world name or Hugging Face Hub repo id (owner/name[@revision])."""
    data: str = ""
    """Held-out trajectories (episodes never trained on)."""
    camera: str | None = None
    """Image key of --data to compare with, for datasets with several (the one the world was trained on)."""
    episodes: str = ""
    """Episode indices to use, e.g. '220-239' (default: all in the file)."""
    parts: str = ",".join(DEFAULT_PARTS)
    """Which measurements to run: teacher, open_loop, stability, policy_shift, state (comma-separated; state needs
    a world whose source env has a judge, e.g. PushT)."""
    horizons: str = "1,4,16,64"
    """Comma-separated open-loop horizons at which PSNR/SSIM are reported."""
    context: int = 4
    """Real frames given before a rollout."""
    starts_per_episode: int = 4
    """Open-loop start points per episode (spread over the episode)."""
    teacher_frames: int = 96
    """Teacher-forced next-frame predictions per episode (from its start)."""
    stability_frames: int = 2000
    """Length of the long dream rollouts."""
    stability_worlds: int = 8
    """Long dreams run side by side (each starts from a different held-out episode)."""
    stability_window: int = 200
    """Frames at the start and at the end of each long dream that are compared with real frames."""
    stability_policy: str = "auto"
    """What drives the long dreams: 'replay' (the held-out episodes' recorded actions back to back), or a policy
    that acts on each dream's own frames (road, random, module:factory); auto: the driver that the world's source
    env names (road for CarRacing), else replay. Replayed actions do not see the dream, so they soon drive off a
    dreamed road onto grass that real driving rarely shows; a policy that sees the dream keeps the comparison with
    real frames fair."""
    skip_frames: int | None = None
    """Frames skipped at the start of every episode before any rollout or reference frame; default: the seconds
    that the world's source env opens with that are not play, at the world's frame rate (50 for CarRacing's
    zoom-in at 25 fps; 0 for most envs)."""
    family: str = "auto"
    """Policy shift: the policies whose returns the world predicts (two or more, comma-separated: names that see only
    frames, or module:factory); auto: the family the world's source env lists (SourceWorld.policy_family), if any."""
    family_episodes: int = 8
    """Policy shift: real tracks each policy of the source env's family plays (and dreams), the same for all."""
    family_horizon: int = 200
    """Policy shift: H, the steps after the context over which a policy's return is summed (real and dreamed)."""
    standstill_context: int = 4
    """Policy shift: real frames of the still car a standstill dream starts from."""
    standstill_tracks: int = 4
    """Policy shift: real tracks the standstill drift is averaged over."""
    state_horizons: str = "10,30,60,100"
    """State fidelity: open-loop horizons at which the task object's mask overlap and pose error are reported."""
    batch: int = 16
    """Rollouts run together (speed only: results do not depend on it)."""
    seed: int = 0
    """Seed of sampling noise and of the random actions."""
    precision: Precision = "fp32"
    """fp32, bf16 or auto: the precision of the world's DiT and decoder (to check that bf16 play loses nothing)."""
    device: str = "cpu"
    """cpu or cuda (cuda:N): where the world runs; refused in one line on a machine without it."""
    json: Annotated[str | None, tyro.conf.arg(metavar="FILE")] = None
    """Also write the results as JSON to this file."""

# ----------------------------------------------------------------------------- frame metrics


def _horizons(text: str, flag: str) -> list[int]:
    try:
        horizons = [int(h) for h in text.split(",")]
    except ValueError:
        raise InputError(f"{flag} {text}: expected comma-separated integers like 1,4,16,64") from None
    if min(horizons) < 1:
        raise InputError(f"{flag} {text}: horizons must be >= 1")
    return horizons


def context_is_still(frames: np.ndarray, still: np.ndarray | None = None) -> bool:
    """Whether nothing moves in a context of uint8 frames (T, H, W, 3): every frame still (``still``, (T,) bool: the
    source's own rule on its logged state, ``SourceWorld.stands_still``) when the data tells, else consecutive frames
    closer than ``STILL_PIXEL_CHANGE`` on average."""
    if still is not None:
        return bool(np.asarray(still).all())
    return bool(pixel_distance(frames[1:], frames[:-1]).mean() < STILL_PIXEL_CHANGE)


def parse_episodes(text: str, total: int) -> list[int]:
    if not text:
        return list(range(total))
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise InputError(f"--episodes {text}: expected indices and ranges like '220-239' or '3,5,9'") from None
    bad = [e for e in out if not 0 <= e < total]
    if bad:
        raise InputError(f"--episodes {text}: the file has episodes 0..{total - 1}")
    return out


# ----------------------------------------------------------------------------- the protocol
class _Evaluation(Stability, PolicyShift):
    """Held-out episodes (resized to the world) and the world, shared by the three measurements."""
    def __init__(self, cfg: EvalConfig, progress: bool) -> None:
        path = resolve_world(cfg.checkpoint)
        config = load_config(path)
        reader = TrajectoryReader(cfg.data, camera=cfg.camera)
        check_data_matches_world(reader, config, cfg.checkpoint, "evaluate")  # before loading weights or frames
        self.episodes = parse_episodes(cfg.episodes, len(reader))
        # The defaults that depend on the world come from its source env's adapter (envs/sources.py).
        source = source_world(config.source_env)
        if cfg.skip_frames is None:
            cfg = dataclasses.replace(cfg, skip_frames=round(source.intro_seconds * config.frame_rate))
        if cfg.stability_policy == "auto":
            cfg = dataclasses.replace(cfg, stability_policy=source.driver or "replay")
        self.cfg = cfg
        self.progress = progress
        device = resolve_device(cfg.device)
        self.wm = WorldModel.from_pretrained(path, device=device, dtype=model_dtype(cfg.precision, device.type))
        size = self.wm.frame_size
        self.frames = {e: resize_frames(torch.from_numpy(reader.frames(e)), size).numpy() for e in self.episodes}
        self.steps = {e: reader.steps(e) for e in self.episodes}
        self.seeds = {e: reader.seed(e) for e in self.episodes}
        # Newer recordings log the source's per-frame state (SourceWorld.probe); where the env that recorded them
        # has a rule for standing still on it (SourceWorld.still: CarRacing's speed), it tells moving starts from
        # still ones better than pixels do.
        self.infos = {e: reader.infos(e) for e in self.episodes}
        recorded = source_world(reader.env_id or config.source_env)
        self.still = {e: recorded.stands_still(self.infos[e]) for e in self.episodes}
        # Real tracks for the policy-shift part: seed, seed + 1, ... from the first held-out episode's (held-out
        # tracks, when the held-out episodes were recorded in a row), else --seed.
        first = self.seeds[self.episodes[0]] if self.episodes else None
        self.track_seed = first if first is not None else cfg.seed
        self.wm.action_space.seed(cfg.seed)  # random actions for the controllability rollouts

    def _bar(self, total: int, desc: str) -> Any:
        return progress_bar(total, desc, self.progress)

    def _generators(self, keys: list[tuple[int, int]]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(self.cfg.seed + e * 100_003 + s) for e, s in keys]

    def _start(self, keys: list[tuple[int, int]]) -> np.ndarray:
        """Reset one world per (episode, start) from the ``context`` real frames there; returns the last ones."""
        c = self.cfg.context
        ctx = np.stack([self.frames[e][s : s + c] for e, s in keys])
        acts = np.stack([self.steps[e]["actions"][s : s + c - 1] for e, s in keys])
        return self.wm.reset(ctx, actions=acts if c > 1 else None, generator=self._generators(keys))

    def teacher(self) -> dict[str, Any]:
        """Next-frame prediction with the real past in memory; reward and termination heads."""
        cfg, c, skip = self.cfg, self.cfg.context, self.cfg.skip_frames
        usable = [e for e in self.episodes if len(self.frames[e]) > skip + c]
        if not usable:
            raise InputError(f"no episode in {cfg.data} is longer than skipped frames + context ({skip + c})")
        groups = [usable[i : i + cfg.batch] for i in range(0, len(usable), cfg.batch)]
        lengths = [min(cfg.teacher_frames, min(len(self.frames[e]) for e in g) - skip - c) for g in groups]
        model_psnr, model_ssim, copy_psnr, copy_ssim = [], [], [], []
        reward_pred, reward_true, term_pred, term_true = [], [], [], []
        with self._bar(sum(n * len(g) for g, n in zip(groups, lengths)), "teacher-forced") as bar:
            for group, n in zip(groups, lengths):
                self._start([(e, skip) for e in group])
                for t in range(skip + c, skip + c + n):
                    real = np.stack([self.frames[e][t] for e in group])
                    prev = np.stack([self.frames[e][t - 1] for e in group])
                    out = self.wm.step(np.stack([self.steps[e]["actions"][t - 1] for e in group]), observed=real)
                    model_psnr.append(psnr(out.frames, real))
                    model_ssim.append(ssim(out.frames, real))
                    copy_psnr.append(psnr(prev, real))
                    copy_ssim.append(ssim(prev, real))
                    reward_pred.append(out.reward)
                    reward_true.append(np.array([self.steps[e]["rewards"][t - 1] for e in group], float))
                    term_pred.append(out.terminated)
                    term_true.append(np.array([self.steps[e]["terminations"][t - 1] for e in group], bool))
                    bar.update(len(group))
        r_pred, r_true = np.concatenate(reward_pred).astype(float), np.concatenate(reward_true)
        t_pred, t_true = np.concatenate(term_pred).astype(bool), np.concatenate(term_true)
        result = {
            "teacher_frames": int(len(r_true)),
            "teacher_psnr": float(np.mean(np.concatenate(model_psnr))),
            "teacher_ssim": float(np.mean(np.concatenate(model_ssim))),
            "teacher_baseline_psnr": float(np.mean(np.concatenate(copy_psnr))),
            "teacher_baseline_ssim": float(np.mean(np.concatenate(copy_ssim))),
            "reward_mae": float(np.abs(r_pred - r_true).mean()),
            # The best constant guess (the held-out median) is the bar a reward head has to clear.
            "reward_baseline_mae": float(np.abs(r_true - np.median(r_true)).mean()),
            "reward_corr": pearson(r_pred, r_true),
            "terminations": int(t_true.sum()),
            "termination_false_alarms_per_1k": float(1000 * (t_pred & ~t_true).sum() / max(1, (~t_true).sum())),
        }
        if t_true.any():
            result["termination_recall"] = float((t_pred & t_true).sum() / t_true.sum())
        return result

    def open_loop(self) -> dict[str, Any]:
        """Rollouts from the true actions and from random ones, scored at each horizon."""
        cfg, c = self.cfg, self.cfg.context
        horizons = [int(h) for h in cfg.horizons.split(",")]
        longest = max(horizons)
        keys = self._rollout_starts(longest)
        still = np.array([context_is_still(self.frames[e][s : s + c], self._still(e, s, c)) for e, s in keys])
        scores: dict[str, list[np.ndarray]] = {}

        def add(name: str, values: np.ndarray) -> None:
            scores.setdefault(name, []).append(values)

        with self._bar(len(keys), "open loop") as bar:
            for i in range(0, len(keys), cfg.batch):
                part = keys[i : i + cfg.batch]
                true_actions = np.stack([self.steps[e]["actions"][s + c - 1 : s + c - 1 + longest] for e, s in part])
                random_actions = np.stack(
                    [np.stack([self.wm.action_space.sample() for _ in range(longest)]) for _ in part]
                )
                real = np.stack([self.frames[e][s + c : s + c + longest] for e, s in part])
                last = np.stack([self.frames[e][s + c - 1] for e, s in part])[:, None]
                self._start(part)
                dream = self.wm.predict(true_actions).frames
                self._start(part)  # same noise again: only the actions differ
                dream_random = self.wm.predict(random_actions).frames
                for h in horizons:
                    add(f"psnr_h{h}", psnr(dream[:, h - 1], real[:, h - 1]))
                    add(f"ssim_h{h}", ssim(dream[:, h - 1], real[:, h - 1]))
                    add(f"baseline_psnr_h{h}", psnr(last[:, 0], real[:, h - 1]))
                    add(f"baseline_ssim_h{h}", ssim(last[:, 0], real[:, h - 1]))
                    add(f"random_action_psnr_h{h}", psnr(dream_random[:, h - 1], real[:, h - 1]))
                bar.update(len(part))
        result: dict[str, Any] = {"rollouts": len(keys)}
        result.update({k: float(np.mean(np.concatenate(v))) for k, v in scores.items()})
        for h in horizons:
            result[f"delta_psnr_h{h}"] = result[f"psnr_h{h}"] - result[f"random_action_psnr_h{h}"]
        # The same scores split by whether anything moves in the context (a group without starts has no key).
        logged = [self.still[e] is not None for e, _ in keys]  # "speed": the source's rule on its logged state
        result["motion_from"] = "speed" if all(logged) else "pixels" if not any(logged) else "speed, else pixels"
        result["rollouts_moving"], result["rollouts_still"] = int((~still).sum()), int(still.sum())
        for h in horizons:
            for name in (f"psnr_h{h}", f"baseline_psnr_h{h}"):
                values = np.concatenate(scores[name])  # in the order of keys
                for group, rows in (("moving", ~still), ("still", still)):
                    if rows.any():
                        result[f"{name}_{group}"] = float(values[rows].mean())
        return result

    def _rollout_starts(self, longest: int) -> list[tuple[int, int]]:
        """(episode, start) of the open-loop rollouts: ``starts_per_episode`` spread over each episode long enough
        for the skipped frames, the context and ``longest`` dreamt frames."""
        cfg, c, skip = self.cfg, self.cfg.context, self.cfg.skip_frames
        keys = []
        for e in self.episodes:
            last_start = len(self.frames[e]) - c - longest
            if last_start >= skip:
                spread = np.linspace(skip, last_start, cfg.starts_per_episode).astype(int)
                keys += [(e, int(s)) for s in np.unique(spread)]
        if not keys:
            raise InputError(
                f"no episode in {cfg.data} is long enough for skipped frames {skip} + context {c} + horizon {longest}"
            )
        return keys

    def _real_states(self, judge: Judge, keys: list[tuple[int, int]], at: int) -> dict[str, np.ndarray]:
        """The real task state of frame ``start + at`` of each rollout: recorded where the data logs every key of
        the judge's state (the source's probe), else read off the frame by the judge."""
        infos = [self.infos[e] for e, _ in keys]
        if all(all(k in info for k in judge.STATE) for info in infos):
            return {k: np.array([info[k][s + at] for info, (_, s) in zip(infos, keys)], float) for k in judge.STATE}
        return judge.state(np.stack([self.frames[e][s + at] for e, s in keys]))

    def state(self) -> dict[str, Any]:
        """State fidelity (module doc): the task object's mask overlap and pose error after h open-loop steps of
        the recorded actions, beside copy-last, split by whether the real object moved."""
        cfg, c = self.cfg, self.cfg.context
        judge = judge_for(self.wm.config.source_env, cfg.checkpoint)
        horizons = _horizons(cfg.state_horizons, "--state-horizons")
        keys = self._rollout_starts(max(horizons))
        dreams: dict[int, list[np.ndarray]] = {h: [] for h in horizons}
        with self._bar(len(keys), "state fidelity") as bar:
            for i in range(0, len(keys), cfg.batch):
                part = keys[i : i + cfg.batch]
                actions = np.stack([self.steps[e]["actions"][s + c - 1 : s + c - 1 + max(horizons)] for e, s in part])
                self._start(part)
                dream = self.wm.predict(actions).frames
                for h in horizons:
                    dreams[h].append(dream[:, h - 1])
                bar.update(len(part))
        last_frames = np.stack([self.frames[e][s + c - 1] for e, s in keys])
        last_mask, last_state = judge.mask(last_frames), self._real_states(judge, keys, c - 1)
        result: dict[str, Any] = {"state_rollouts": len(keys), "state_horizons": horizons}
        for h in horizons:
            real_frames = np.stack([self.frames[e][s + c - 1 + h] for e, s in keys])
            dream_frames = np.concatenate(dreams[h])
            real_mask, real_state = judge.mask(real_frames), self._real_states(judge, keys, c - 1 + h)
            dream_state = judge.state(dream_frames)
            moved_by = judge.state_errors(last_state, real_state)
            moved = (moved_by["block"] >= MOVED_UNITS) | (moved_by["angle"] >= MOVED_DEGREES)
            scores = {  # name -> per-rollout values; the "_copy" twins are the last context frame held
                "state_iou": mask_iou(judge.mask(dream_frames), real_mask),
                "state_iou_copy": mask_iou(last_mask, real_mask),
                **{f"{k}_error": v for k, v in judge.state_errors(dream_state, real_state).items()},
                **{f"{k}_error_copy": v for k, v in moved_by.items()},
            }
            result[f"state_readable_h{h}"] = float(np.isfinite(scores["block_error"]).mean())
            result[f"state_moved_h{h}"] = int(moved.sum())
            for group, rows in (("", np.ones(len(keys), bool)), ("_moved", moved), ("_still", ~moved)):
                if rows.any():
                    for name, values in scores.items():
                        # Overlaps are averaged; errors (inf where unreadable) take the median.
                        stat = np.nanmean if name.startswith("state_iou") else np.median
                        result[f"{name}_h{h}{group}"] = float(stat(values[rows]))
        return result

    def _still(self, episode: int, start: int, n: int) -> np.ndarray | None:
        """Whether frames start..start+n of an episode stand still by the source's rule, or None where the data does
        not tell."""
        still = self.still[episode]
        return None if still is None else still[start : start + n]











def evaluate(cfg: EvalConfig, progress: bool = False) -> dict[str, Any]:
    resolve_device(cfg.device)  # before any loading
    parts = comma_list(cfg.parts)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise InputError(f"--parts: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    _horizons(cfg.horizons, "--horizons")
    _horizons(cfg.state_horizons, "--state-horizons")
    if "state" in parts:  # before loading the world and the data: a judge reads the task state off the frames
        judge_for(load_config(resolve_world(cfg.checkpoint)).source_env, cfg.checkpoint)
    if min(cfg.family_episodes, cfg.family_horizon, cfg.standstill_context, cfg.standstill_tracks) < 1:
        raise InputError(
            "--family-episodes, --family-horizon, --standstill-context and --standstill-tracks must be >= 1"
        )

    if cfg.stability_policy not in ("auto", "replay", *SEEING_POLICIES) and ":" not in cfg.stability_policy:
        raise InputError(
            f"--stability-policy {cfg.stability_policy}: use auto, replay, {', '.join(SEEING_POLICIES)} or "
            "module:factory (a policy that sees only the dream's frames)"
        )
    family = comma_list(cfg.family)
    if cfg.family != "auto" and (len(family) < 2 or any(p not in SEEING_POLICIES and ":" not in p for p in family)):
        raise InputError(
            f"--family {cfg.family}: use auto, or two or more comma-separated policies that see only frames "
            f"({', '.join(SEEING_POLICIES)}, module:factory)"
        )
    run = _Evaluation(cfg, progress)
    result: dict[str, Any] = {"checkpoint": cfg.checkpoint, "data": cfg.data, "episodes": len(run.episodes)}
    for part in PARTS:
        if part in parts:
            result.update(getattr(run, part)())
    return result




def run(cfg: EvalConfig) -> int:
    """``worldsim eval``: measure, print the markdown table, and with ``json`` write every number."""
    if cfg.json:
        check_output_path(cfg.json)  # before minutes of evaluation, not after
    result = evaluate(cfg, progress=True)
    if cfg.json:
        with atomic_path(cfg.json) as tmp:
            tmp.write_text(json.dumps(json_ready(result), indent=2))
    print(format_eval_table(result, [int(h) for h in cfg.horizons.split(",")]))
    return 0
