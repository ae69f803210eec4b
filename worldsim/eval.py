"""``worldsim eval``: how good is a world, measured on held-out real episodes.

Four measurements, all on episodes the model never trained on (``--episodes``):

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
from worldsim.engine import WorldModel, resize_frames
from worldsim.envs.sources import source_world
from worldsim.errors import InputError
from worldsim.precision import Precision, model_dtype
from worldsim.worlds import DEFAULT_WORLD, resolve_world

PARTS = ("teacher", "open_loop", "stability")


@dataclass
class EvalConfig:
    """What ``worldsim eval`` measures."""

    checkpoint: str = DEFAULT_WORLD
    """World checkpoint dir, shipped world name or Hugging Face Hub repo id (owner/name[@revision])."""
    data: str = ""
    """Held-out trajectories (episodes never trained on)."""
    episodes: str = ""
    """Episode indices to use, e.g. '220-239' (default: all in the file)."""
    parts: str = ",".join(PARTS)
    """Which measurements to run: teacher, open_loop, stability (comma-separated)."""
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
    batch: int = 16
    """Rollouts run together (speed only: results do not depend on it)."""
    seed: int = 0
    """Seed of sampling noise and of the random actions."""
    precision: Precision = "fp32"
    """fp32, bf16 or auto: the precision of the world's DiT (to check that bf16 play loses nothing)."""


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
        reader = TrajectoryReader(cfg.data)
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
        self.wm = WorldModel.from_pretrained(path, dtype=model_dtype(cfg.precision, "cpu"))
        size = self.wm.frame_size
        self.frames = {e: resize_frames(torch.from_numpy(reader.frames(e)), size).numpy() for e in self.episodes}
        self.steps = {e: reader.steps(e) for e in self.episodes}
        self.seeds = {e: reader.seed(e) for e in self.episodes}
        self.wm.action_space.seed(cfg.seed)  # random actions for the controllability rollouts

    def _bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress)

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
            "reward_corr": float(np.corrcoef(r_pred, r_true)[0, 1]) if r_pred.std() > 0 and r_true.std() > 0 else 0.0,
            "terminations": int(t_true.sum()),
            "termination_false_alarms_per_1k": float(1000 * (t_pred & ~t_true).sum() / max(1, (~t_true).sum())),
        }
        if t_true.any():
            result["termination_recall"] = float((t_pred & t_true).sum() / t_true.sum())
        return result

    def open_loop(self) -> dict[str, Any]:
        """Rollouts from the true actions and from random ones, scored at each horizon."""
        cfg, c, skip = self.cfg, self.cfg.context, self.cfg.skip_frames
        horizons = [int(h) for h in cfg.horizons.split(",")]
        longest = max(horizons)
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
        return result

    def _features(self, frames: np.ndarray) -> np.ndarray:
        """Encoder features of uint8 frames (N, H, W, 3): posterior mean latents pooled to 4x4."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(frames), 256):
                z = self.wm.autoencoder.encode(torch.from_numpy(frames[i : i + 256]))
                out.append(F.adaptive_avg_pool2d(z.float(), 4).flatten(1).numpy())
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
        from worldsim.errors import WorldsimError

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


def evaluate(cfg: EvalConfig, progress: bool = False) -> dict[str, Any]:
    parts = [p.strip() for p in cfg.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise InputError(f"--parts: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    try:
        [int(h) for h in cfg.horizons.split(",")]
    except ValueError:
        raise InputError(f"--horizons {cfg.horizons}: expected comma-separated integers like 1,4,16,64") from None
    from worldsim.agents import SEEING_POLICIES

    if cfg.stability_policy not in ("auto", "replay", *SEEING_POLICIES) and ":" not in cfg.stability_policy:
        raise InputError(
            f"--stability-policy {cfg.stability_policy}: use auto, replay, {', '.join(SEEING_POLICIES)} or "
            "module:factory (a policy that sees only the dream's frames)"
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
            f"correlation {result['reward_corr']:.2f}. Termination head: {result['terminations']} real terminations"
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
    return "\n".join(lines).rstrip()
