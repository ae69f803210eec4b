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
  it tell good policies from bad ones? ``standstill_drift_h30``: from real frames of a car that stands still, 30
  no-op dream frames; mean |dream - real still frame| in uint8 units, beside the real env's own value (~0).
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
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from worldsim.checkpoint import load_config
from worldsim.data.compat import check_data_matches_world
from worldsim.data.reader import TrajectoryReader
from worldsim.devices import resolve_device
from worldsim.engine import WorldModel, resize_frames
from worldsim.envs.judges import Judge, judge_for
from worldsim.envs.sources import SourceWorld, frame_of, make_source_env, source_world
from worldsim.errors import InputError, WorldsimError
from worldsim.precision import Precision, model_dtype
from worldsim.progress import progress_bar
from worldsim.stats import format_correlation, pearson, spearman
from worldsim.worlds import DEFAULT_WORLD, resolve_world

PARTS = ("teacher", "open_loop", "stability", "policy_shift", "state")
DEFAULT_PARTS = PARTS[:4]
"""What ``worldsim eval`` runs unless ``--parts`` says: ``state`` needs a judge, which not every source has."""
MOVED_UNITS, MOVED_DEGREES = 10.0, 10.0
"""A state rollout counts as one where the object moved when, between the last context frame and frame h, the
real object's position changed by at least this many table units or its angle by at least this many degrees."""
STILL_SPEED = 1.0
"""Speed (the source env's units per second: CarRacing's world units) below which a car counts as still."""
STILL_PIXEL_CHANGE = 0.1
"""Mean absolute change between consecutive uint8 frames of a context (0-255 units, over pixels, channels and frame
pairs) below which the context counts as still, where the data logs no speed. Measured on 64x64 CarRacing at 25 fps:
a stopped car's view does not change but for the HUD's score counter (up to 0.25 on a frame where it ticks); a car
creeping under 1 unit/s changes 0.1-0.2, as much as one at 3-10 units/s; over 10 units/s ~1. On 4-frame contexts of
the policy family this agrees with the speed rule on 88% of them; a logged speed is the better judge."""
STANDSTILL_HORIZONS = (1, 15, 30)
"""Dream frames after a standstill context at which its drift is reported; the last is the headline."""


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


# ----------------------------------------------------------------------------- frame metrics
def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 frames (..., H, W, 3)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(-3, -2, -1))
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame SSIM of uint8 frames (..., H, W, 3) (Wang et al. 2004).

    Gaussian window 11 / sigma 1.5, constants K1 0.01 and K2 0.03 of the 255 range, over the valid
    region of each colour channel, averaged over channels.
    """
    lead = a.shape[:-3]
    x, y = (
        rearrange(
            torch.from_numpy(np.ascontiguousarray(t).reshape(-1, *t.shape[-3:])).double(), "n h w c -> (n c) 1 h w"
        )
        for t in (a, b)
    )
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    per_channel = s.mean(dim=(1, 2, 3)).reshape(-1, 3)
    return per_channel.mean(1).numpy().reshape(lead)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(A B) = tr sqrt(sqrt(A) B sqrt(A)), which is symmetric PSD: eigenvalues are enough.
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def pixel_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame mean absolute difference of uint8 frames (..., H, W, 3), in 0-255 units."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=(-3, -2, -1))


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per frame: intersection over union of two (N, H, W) bool masks; NaN where both are empty."""
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def _horizons(text: str, flag: str) -> list[int]:
    try:
        horizons = [int(h) for h in text.split(",")]
    except ValueError:
        raise InputError(f"{flag} {text}: expected comma-separated integers like 1,4,16,64") from None
    if min(horizons) < 1:
        raise InputError(f"{flag} {text}: horizons must be >= 1")
    return horizons


def context_is_still(frames: np.ndarray, speed: np.ndarray | None = None) -> bool:
    """Whether nothing moves in a context of uint8 frames (T, H, W, 3): every frame's logged ``speed`` (T,) below
    ``STILL_SPEED`` when the data has it, else consecutive frames closer than ``STILL_PIXEL_CHANGE`` on average."""
    if speed is not None:
        return bool((np.asarray(speed) < STILL_SPEED).all())
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
class _Evaluation:
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
        # Newer recordings log the source's per-frame state (SourceWorld.probe): CarRacing's speed tells moving
        # starts from still ones better than pixels do.
        self.infos = {e: reader.infos(e) for e in self.episodes}
        self.speeds = {e: self.infos[e].get("speed") for e in self.episodes}
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
        still = np.array([context_is_still(self.frames[e][s : s + c], self._speed(e, s, c)) for e, s in keys])
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
        logged = [self.speeds[e] is not None for e, _ in keys]
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

    def _speed(self, episode: int, start: int, n: int) -> np.ndarray | None:
        """The logged speed of frames start..start+n of an episode, or None where the data has none."""
        speed = self.speeds[episode]
        return None if speed is None else speed[start : start + n]

    def _features(self, frames: np.ndarray) -> np.ndarray:
        """Encoder features of uint8 frames (N, H, W, 3): posterior mean latents pooled to 4x4."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(frames), 256):
                z = self.wm.autoencoder.encode(torch.from_numpy(frames[i : i + 256]).to(self.wm.device))
                out.append(F.adaptive_avg_pool2d(z.float(), 4).flatten(1).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def _long_dream(
        self, policy: str, episodes: list[int], worlds: int, n: int, last: np.ndarray, chunk: int = 40
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first frame index, frames (worlds, chunk, H, W, 3)) of n dreamed frames per world."""
        cfg, c, skip = self.cfg, self.cfg.context, self.cfg.skip_frames
        if policy == "replay":  # world b plays episodes b, b+1, ... (cyclic) back to back
            actions = []
            for b in range(worlds):
                seq: list[np.ndarray] = []
                k = b
                while sum(len(a) for a in seq) < n:
                    seq.append(self.steps[episodes[k % len(episodes)]]["actions"][skip + c - 1 :])
                    k += 1
                actions.append(np.concatenate(seq)[:n])
            replay = np.stack(actions)
            for t in range(0, n, chunk):
                yield t, self.wm.predict(replay[:, t : t + chunk]).frames
            return
        from worldsim.agents import make_policy

        seen = SimpleNamespace(action_space=self.wm.action_space)  # all a seeing policy may know of the env
        drivers = [make_policy(policy, seen, cfg.seed + b) for b in range(worlds)]  # type: ignore[arg-type]
        frames, shown = last, []
        for t in range(n):
            frames = self.wm.step(np.stack([d(f) for d, f in zip(drivers, frames)])).frames
            shown.append(frames)
            if len(shown) == chunk or t == n - 1:
                yield t + 1 - len(shown), np.stack(shown, 1)
                shown = []

    def stability(self) -> dict[str, Any]:
        """Long dreams, each driven by a policy that sees it (or by recorded actions): FD to real frames, late vs
        early."""
        cfg, c = self.cfg, self.cfg.context
        skip = cfg.skip_frames
        usable = [e for e in self.episodes if len(self.frames[e]) > skip + c + 1]
        if not usable:
            raise InputError(f"no episode in {cfg.data} is longer than {skip + c + 1} frames")
        worlds = min(cfg.stability_worlds, len(usable))
        window, n = cfg.stability_window, cfg.stability_frames
        if n < 2 * window:
            raise InputError(f"stability_frames ({n}) must be at least twice stability_window ({window})")
        policy = cfg.stability_policy
        starts = [(usable[b], skip) for b in range(worlds)]
        context_end = self._start(starts)
        dim = 4 * 4 * self.wm.latent_shape[0]
        features = np.zeros((worlds, n, dim))
        with self._bar(n, "long dream") as bar:
            for t, frames in self._long_dream(policy, usable, worlds, n, context_end):
                features[:, t : t + frames.shape[1]] = self._features(frames.reshape(-1, *frames.shape[2:])).reshape(
                    worlds, -1, dim
                )
                bar.update(frames.shape[1])
        real = self._features(np.concatenate([self.frames[e][skip:] for e in usable]))

        def fd_of_window(start: int) -> float:
            return frechet_distance(features[:, start : start + window].reshape(-1, dim), real)

        fd_early, fd_late = fd_of_window(0), fd_of_window(n - window)
        segments = [fd_of_window(s) for s in range(0, n - window + 1, window)]
        result = {
            "stability_policy": policy,
            "stability_frames": n,
            "stability_worlds": worlds,
            "fd_early": fd_early,
            "fd_late": fd_late,
            "stability_ratio": fd_late / max(fd_early, 1e-12),
            "fd_by_segment": segments,
        }
        if policy != "replay":
            real_play = self._real_policy_features(policy, usable[:worlds])
            if real_play is not None:
                result["fd_real_policy"] = frechet_distance(real_play, real)
                result["stability_ratio_vs_real_policy"] = fd_late / max(result["fd_real_policy"], 1e-12)
        return result

    def _real_policy_features(self, policy: str, episodes: list[int]) -> np.ndarray | None:
        """Features of the real source env played by the dream's policy (one window per held-out track, after the
        policy has had a window to take over): how far from the recorded frames real play with this policy is.
        None when the world names no source env or it cannot be made here."""
        from worldsim.data.recorder import RecordConfig, record_episode

        cfg, source = self.cfg, self.wm.config.source_env
        if not source:
            return None
        H, W = self.wm.frame_size
        frames = []
        try:
            for b, e in enumerate(episodes):
                seed = self.seeds[e] if self.seeds[e] is not None else cfg.seed + b
                run = RecordConfig(
                    env=source, policy=policy, size=f"{H}x{W}", seed=seed,
                    max_steps=cfg.skip_frames + 2 * cfg.stability_window,
                )  # fmt: skip
                obs = record_episode(run, 0)["observations"]
                frames.append(obs[cfg.skip_frames + cfg.stability_window :])
        except WorldsimError:
            return None
        return self._features(np.concatenate(frames))

    def policy_shift(self) -> dict[str, Any]:
        """Standstill drift and the source env's policy family's predicted vs real returns; skipped with a note
        where the world names no source env or it cannot run here."""
        in_data = self._standstill_in_data()  # needs only held-out data that logs speed
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
        """The standstill drift where held-out episodes stop mid-track: windows where the logged speed stays below
        ``STILL_SPEED`` and the action is the no-op for ``standstill_context`` + 30 frames (a car waiting on the
        road, off it, or after a spin: harder than the start line). The real frames after the context are the
        reference's own drift. Needs data that logs speed (``worldsim record`` of a source with a probe)."""
        from worldsim.envs.world import noop_action

        cfg, c = self.cfg, self.cfg.standstill_context
        longest = STANDSTILL_HORIZONS[-1]
        noop = np.asarray(noop_action(self.wm.action_space))
        keys = []
        for e in self.episodes:
            speed, actions = self.speeds[e], self.steps[e]["actions"]
            if speed is None:
                continue
            # frame t is still and the action into frame t (actions[t - 1]) is the no-op
            quiet = (speed[1:] < STILL_SPEED) & np.all(actions.reshape(len(actions), -1) == noop.reshape(1, -1), 1)
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
        """Dreams from real frames of a car that stands still, given no-op actions: how far they drift from the
        still frame, beside how far the real env does (~0)."""
        from worldsim.agents.policy import load_factory
        from worldsim.envs.world import noop_action
        from worldsim.predict import real_repeat

        cfg, c, skip = self.cfg, self.cfg.standstill_context, self.cfg.skip_frames
        longest = STANDSTILL_HORIZONS[-1]
        if not source.probe:
            return {"standstill_note": "skipped: the source env logs no speed to tell that a car stands still"}
        probe, repeat = load_factory(source.probe), real_repeat(env, self.wm.config)
        noop_real, noop = noop_action(env.action_space), np.asarray(noop_action(self.wm.action_space))
        contexts, futures, seeds = [], [], []
        for i in range(cfg.standstill_tracks):
            seed = self.track_seed + i
            obs, _ = env.reset(seed=seed)
            frames, speeds, ended = [frame_of(env, obs)], [probe(env).get("speed")], False
            if speeds[0] is None:
                return {"standstill_note": "skipped: the source env's probe logs no speed"}
            for _ in range(skip + c - 1 + longest):  # no input through the intro, the context and the horizon
                for _ in range(repeat):
                    obs, _, terminated, truncated, _ = env.step(noop_real)
                    ended = bool(terminated or truncated)
                    if ended:
                        break
                if ended:
                    break
                frames.append(frame_of(env, obs))
                speeds.append(probe(env)["speed"])
            if ended or max(speeds[skip : skip + c]) >= STILL_SPEED:
                continue  # not a standstill start (CarRacing's car waits for gas, so this should not happen)
            frames = resize_frames(torch.from_numpy(np.stack(frames)), self.wm.frame_size).numpy()
            contexts.append(frames[skip : skip + c])
            futures.append(frames[skip + c : skip + c + longest])
            seeds.append(seed)
        if not seeds:
            return {"standstill_note": f"skipped: no car stood still in the context on {cfg.standstill_tracks} tracks"}
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
        from worldsim.predict import predict

        cfg = self.cfg
        family = source.policy_family if cfg.family == "auto" else _names(cfg.family)
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


def _names(text: str) -> list[str]:
    """The items of a comma-separated option."""
    return [p.strip() for p in text.split(",") if p.strip()]


def evaluate(cfg: EvalConfig, progress: bool = False) -> dict[str, Any]:
    resolve_device(cfg.device)  # before any loading
    parts = _names(cfg.parts)
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
    from worldsim.agents import SEEING_POLICIES

    if cfg.stability_policy not in ("auto", "replay", *SEEING_POLICIES) and ":" not in cfg.stability_policy:
        raise InputError(
            f"--stability-policy {cfg.stability_policy}: use auto, replay, {', '.join(SEEING_POLICIES)} or "
            "module:factory (a policy that sees only the dream's frames)"
        )
    family = _names(cfg.family)
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


def format_eval_table(result: dict[str, Any], horizons: list[int]) -> str:
    """The markdown report ``worldsim eval`` prints (only the parts that were run)."""
    lines = [f"{result['checkpoint']} on {result['episodes']} held-out episodes of {result['data']}", ""]
    if "teacher_psnr" in result:
        lines += [
            f"Teacher-forced next frame ({result['teacher_frames']} frames):",
            "| | PSNR (dB) | SSIM |",
            "|---|---|---|",
            f"| model | {result['teacher_psnr']:.2f} | {result['teacher_ssim']:.3f} |",
            f"| copy last frame | {result['teacher_baseline_psnr']:.2f} | {result['teacher_baseline_ssim']:.3f} |",
            "",
            f"Reward head: MAE {result['reward_mae']:.3f} (constant median guess {result['reward_baseline_mae']:.3f}), "
            f"correlation {format_correlation(result['reward_corr'], 2)}. "
            f"Termination head: {result['terminations']} real terminations"
            + (f", recall {result['termination_recall']:.2f}" if "termination_recall" in result else "")
            + f", {result['termination_false_alarms_per_1k']:.1f} false alarms per 1000 frames.",
            "",
        ]
    if "rollouts" in result:
        lines += [
            f"Open loop ({result['rollouts']} rollouts, true actions):",
            "| horizon | PSNR (dB) | copy-last PSNR | SSIM | copy-last SSIM | random-action PSNR | delta PSNR |",
            "|---|---|---|---|---|---|---|",
        ]
        for h in horizons:
            lines.append(
                f"| {h} | {result[f'psnr_h{h}']:.2f} | {result[f'baseline_psnr_h{h}']:.2f} | "
                f"{result[f'ssim_h{h}']:.3f} | {result[f'baseline_ssim_h{h}']:.3f} | "
                f"{result[f'random_action_psnr_h{h}']:.2f} | {result[f'delta_psnr_h{h}']:.2f} |"
            )
        lines.append("")
    if "rollouts_still" in result:

        def cell(key: str) -> str:
            return f"{result[key]:.2f}" if key in result else "-"

        lines += [
            f"Open loop by motion in the context ({result['rollouts_moving']} moving, {result['rollouts_still']} still "
            f"starts, told by {result['motion_from']}):",
            "| horizon | PSNR moving | copy-last moving | PSNR still | copy-last still |",
            "|---|---|---|---|---|",
        ]
        for h in horizons:
            keys = [f"psnr_h{h}_moving", f"baseline_psnr_h{h}_moving", f"psnr_h{h}_still", f"baseline_psnr_h{h}_still"]
            lines.append(f"| {h} | " + " | ".join(cell(k) for k in keys) + " |")
        lines.append("")
    if "stability_ratio" in result:
        lines.append(
            f"Stability over {result['stability_frames']} frames ({result['stability_worlds']} worlds): "
            f"FD early {result['fd_early']:.2f}, late {result['fd_late']:.2f}, "
            f"stability_ratio {result['stability_ratio']:.2f}"
            + (
                f"; real {result['stability_policy']} play in the real env: FD {result['fd_real_policy']:.2f} "
                f"(late / real play {result['stability_ratio_vs_real_policy']:.2f})"
                if "fd_real_policy" in result
                else ""
            )
        )
        lines.append("")
    lines += _policy_shift_lines(result)
    lines += _state_lines(result)
    return "\n".join(lines).rstrip()


def _state_lines(result: dict[str, Any]) -> list[str]:
    if "state_rollouts" not in result:
        return []

    def cell(key: str, digits: int) -> str:
        return f"{result[key]:.{digits}f}" if key in result else "-"

    lines = [
        "",
        f"State fidelity ({result['state_rollouts']} open-loop rollouts of the recorded actions; the task object read "
        "off the frames by the source's judge; copy-last in brackets):",
        "| horizon | mask IoU | IoU, moved | IoU, still | position error | angle error (deg) | readable | moved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h in result["state_horizons"]:
        groups = ("", "_moved", "_still")
        iou = [f"{cell(f'state_iou_h{h}{g}', 2)} ({cell(f'state_iou_copy_h{h}{g}', 2)})" for g in groups]
        pose = [f"{cell(f'{k}_error_h{h}', 1)} ({cell(f'{k}_error_copy_h{h}', 1)})" for k in ("block", "angle")]
        tail = [cell(f"state_readable_h{h}", 2), str(result[f"state_moved_h{h}"])]
        lines.append(f"| {h} | " + " | ".join(iou + pose + tail) + " |")
    return lines


def _policy_shift_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"Policy shift: {result[k]}" for k in ("policy_shift_note", "standstill_note") if k in result]
    if "standstill_drift_h30" in result:
        dream = ", ".join(f"h{h} {result[f'standstill_drift_h{h}']:.2f}" for h in STANDSTILL_HORIZONS)
        real = ", ".join(f"{result[f'standstill_drift_h{h}_real']:.2f}" for h in STANDSTILL_HORIZONS)
        lines.append(
            f"Standstill, no input ({result['standstill_tracks']} real tracks): mean |dream - still frame| (0-255) "
            f"{dream}; real env {real}"
        )
    if "standstill_drift_h30_data" in result:
        dream = ", ".join(f"h{h} {result[f'standstill_drift_h{h}_data']:.2f}" for h in STANDSTILL_HORIZONS)
        real = ", ".join(f"{result[f'standstill_drift_h{h}_data_real']:.2f}" for h in STANDSTILL_HORIZONS)
        lines.append(
            f"Standstill mid-episode ({result['standstill_data_windows']} held-out stops): {dream}; recorded {real}"
        )
    if "policy_return_note" in result:
        lines.append(f"Policy returns: {result['policy_return_note']}")
    if "policy_return_pearson" in result:
        lines += [
            "",
            f"Policy returns over {result['policy_return_horizon']} steps ({result['policy_return_tracks']} real "
            "tracks each, dreams forked from them):",
            "| policy | predicted | real | per-track MAE |",
            "|---|---|---|---|",
        ]
        for row in result["policy_returns"]:
            lines.append(
                f"| {row['policy']} | {row['predicted_return']:.1f} | {row['real_return']:.1f} | "
                f"{row['episode_return_mae']:.1f} |"
            )
        lines.append(
            f"Pearson {format_correlation(result['policy_return_pearson'])}, "
            f"Spearman {format_correlation(result['policy_return_spearman'])}, "
            f"MAE {result['policy_return_mae']:.2f}"
            + (
                f" ({100 * result['policy_return_mae_share']:.1f}% of the real returns' range)"
                if "policy_return_mae_share" in result
                else ""
            )
        )
    return lines
