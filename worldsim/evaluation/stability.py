"""``worldsim eval``'s long-run stability part: worlds dream long, driven by a policy that sees only the dream (or by
recorded actions), and the Fréchet distance of their late frames to real play, over that of their early frames,
says whether they drift.

``Stability`` is mixed into the evaluation (``eval._Evaluation``): it reads the world, the held-out episodes and the
config from it. The driver comes from the source world's adapter (``SourceWorld.driver``); change it there.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from worldsim.agents import make_policy
from worldsim.data.recorder import RecordConfig, record_episode
from worldsim.errors import InputError, WorldsimError
from worldsim.evaluation.metrics import (
    frechet_distance,
)


class Stability:
    """The long-run stability measurement of ``worldsim eval``, over the evaluation's world and held-out episodes."""
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
