"""``worldsim eval-text``: how well a text-capable checkpoint follows prompts, measured from pixels.

What a program can read back from a generated frame is what is scored:

* **palette** (CarRacing prompts): every pixel is given to the nearest named road / grass colour
  (``worldsim.envs.captions``); the road is the road colour with most pixels, the grass the grass colour (with its
  darker field shade) with most. The reader is checked on real frames first (``meter_accuracy``).
* **source** (which game or env): nearest centroid of colour histograms fitted on real frames of each source.

Parts, all in one JSON:

* ``text_following``: share of clips generated from held-out prompts (captions of the held-out episodes) whose
  measured attributes match the prompt; ``unseen_combinations``: the same for CarRacing palettes never recorded
  together (``HELD_OUT_PALETTES``);
* ``prompt_switch``: start from one palette's prompt, switch to another mid-clip; share of switches whose new
  palette holds within ``switch_frames`` frames (and to the end). A world with actions is driven by the recorded
  actions from held-out real contexts, and in the same runs delta PSNR (true - random actions) is measured beside
  the same world with no prompt;
* ``realism``: Fréchet distance of generated frames to real frames of the same source on the checkpoint's encoder
  features, beside the distance between two halves of the real data (split by episode, sampled as clips the way
  the generated set is).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from worldsim.checkpoint import atomic_path, check_output_path
from worldsim.config import comma_list
from worldsim.data.reader import TrajectoryReader
from worldsim.engine import WorldModel
from worldsim.envs.captions import (
    BACKGROUND_SHADE,
    GRASS_COLOURS,
    HELD_OUT_PALETTES,
    ROAD_COLOURS,
    carracing_caption,
    palette_pairs,
)
from worldsim.envs.sources import source_world
from worldsim.errors import InputError
from worldsim.evaluation.metrics import frechet_distance, psnr
from worldsim.precision import Precision, model_dtype

HUD_ROWS = 0.875
"""CarRacing's frames end in a black dashboard below this share of the height: not scored."""
CAR_BOX = (0.62, 0.82, 0.40, 0.60)
"""(top, bottom, left, right) shares of the frame where the red car sits: not scored."""
NEAREST = 60.0
"""A pixel further than this (RGB distance) from every named colour counts for none."""
HISTOGRAM_BINS = 8
SWITCH_LEAD = 4
"""Frames made under the first prompt before a switch."""


def read_palette(frame: np.ndarray) -> tuple[str, str]:
    """(road, grass) colour names read from a CarRacing frame (uint8 H x W x 3)."""
    H, W, _ = frame.shape
    mask = np.ones((H, W), bool)
    mask[int(H * HUD_ROWS) :] = False
    t, b, left, r = CAR_BOX
    mask[int(H * t) : int(H * b), int(W * left) : int(W * r)] = False
    pixels = frame[mask].astype(np.float32)
    names = [("road", n) for n in ROAD_COLOURS] + [("grass", n) for n in GRASS_COLOURS] * 2
    colours = np.array(
        list(ROAD_COLOURS.values())
        + list(GRASS_COLOURS.values())
        + [np.round(np.array(c) * BACKGROUND_SHADE) for c in GRASS_COLOURS.values()],
        dtype=np.float32,
    )
    dist = np.linalg.norm(pixels[:, None] - colours[None], axis=-1)
    nearest = dist.argmin(1)
    near = dist[np.arange(len(pixels)), nearest] < NEAREST
    counts = Counter(names[i] for i in nearest[near])
    road = max(ROAD_COLOURS, key=lambda n: counts[("road", n)])
    grass = max(GRASS_COLOURS, key=lambda n: counts[("grass", n)])
    return road, grass


def palette_in_prompt(prompt: str) -> tuple[str, str] | None:
    """The (road, grass) a CarRacing prompt names, or None for other prompts."""
    for road, grass in palette_pairs("all"):
        if f"a {road} road through {grass} grass" in prompt:
            return road, grass
    return None


def colour_histogram(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, bins^3) normalised joint colour histograms."""
    q = (frames.astype(np.int32) * HISTOGRAM_BINS) // 256
    idx = (q[..., 0] * HISTOGRAM_BINS + q[..., 1]) * HISTOGRAM_BINS + q[..., 2]
    idx = idx.reshape(len(frames), -1)
    out = np.zeros((len(frames), HISTOGRAM_BINS**3))
    for i, row in enumerate(idx):
        out[i] = np.bincount(row, minlength=HISTOGRAM_BINS**3) / row.size
    return out


@dataclass
class SourceClassifier:
    """Nearest centroid of colour histograms: which source (env id) a frame looks like."""
    names: list[str]
    centroids: np.ndarray

    @classmethod
    def fit(cls, frames_by_source: dict[str, np.ndarray]) -> SourceClassifier:
        names = list(frames_by_source)
        return cls(names, np.stack([colour_histogram(f).mean(0) for f in frames_by_source.values()]))

    def __call__(self, frames: np.ndarray) -> list[str]:
        h = colour_histogram(frames)
        return [self.names[i] for i in np.abs(h[:, None] - self.centroids[None]).sum(-1).argmin(1)]


@dataclass
class EvalTextConfig:
    """What ``worldsim eval-text`` measures."""
    checkpoint: str
    """A text-capable checkpoint: a text-to-video backbone (run dir or export) or a world trained with text."""
    data: str
    """The captioned files it was trained on (comma-separated); their last --holdout episodes give the held-out
    prompts and the real frames."""
    holdout: int = 2
    """Episodes at the end of each file that were kept out of training."""
    clips: int = 24
    """Clips generated per part (held-out prompts, unseen combinations, switches)."""
    frames: int = 12
    """Frames per generated clip; the attributes are read on the last half."""
    switch_frames: int = 25
    """A switched prompt must hold within this many frames."""
    cfg: float = 0.0
    """Text guidance scale; 0: the checkpoint's own ``sampler.text_cfg`` (3 for a backbone from `train t2v`, 1 for a
    world with actions or a student with guidance built in)."""
    batch: int = 8
    """Clips generated together."""
    seed: int = 0
    json: str = ""
    """Also write the results to this JSON file."""
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        if self.json:
            check_output_path(self.json)
        if self.clips < 1 or self.frames < 2 or self.batch < 1:
            raise InputError("--clips, --batch must be >= 1 and --frames >= 2")


@dataclass
class _Source:
    reader: TrajectoryReader
    heldout: list[int]
    train: list[int]
    size: tuple[int, int] = field(default=(64, 64))
    intro: int = 0
    """Frames at the start of each episode that training left out (CarRacing's zoom-in)."""

def _sources(cfg: EvalTextConfig) -> dict[str, _Source]:
    out = {}
    for f in comma_list(cfg.data):
        r = TrajectoryReader(f.strip())
        if not r.captions:
            raise InputError(f"{f} has no captions: eval-text needs the captioned files the checkpoint learned from")
        n = len(r)
        if not 0 < cfg.holdout < n:
            raise InputError(f"--holdout {cfg.holdout} must leave training and held-out episodes in {f} ({n})")
        intro = round(source_world(r.env_id).intro_seconds * r.frame_rate) if r.env_id else 0
        out[r.env_id or f] = _Source(
            r, list(range(n - cfg.holdout, n)), list(range(n - cfg.holdout)), r.frame_shape[:2], intro
        )
    if not out:
        raise InputError("--data is required: the captioned trajectory files, comma-separated")
    return out


def _sample_frames(src: _Source, episodes: list[int], n: int, rng: np.random.Generator) -> np.ndarray:
    return _sample_clips(src, episodes, n, 1, rng)


def _sample_clips(src: _Source, episodes: list[int], n: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` real clips of ``frames`` consecutive frames after the intro, flattened to (n * frames, H, W, 3)."""
    out = []
    for e in rng.choice(episodes, n):
        first = min(src.intro, src.reader.episode_frames[e] - frames)
        t = int(rng.integers(first, src.reader.episode_frames[e] - frames + 1))
        out.append(src.reader.frames(int(e), t, t + frames))
    return np.concatenate(out)


class TextEvaluator:
    def __init__(self, cfg: EvalTextConfig, progress: bool = True) -> None:
        self.cfg = cfg
        self.sources = _sources(cfg)
        self.wm = WorldModel.from_pretrained(cfg.checkpoint, dtype=model_dtype(cfg.precision, "cpu"))
        if not self.wm.config.dit.text_dim:
            raise InputError(f"{cfg.checkpoint} was trained without text: nothing to evaluate")
        if cfg.cfg:
            self.wm.set_sampler(text_cfg=cfg.cfg)
        self.rng = np.random.default_rng(cfg.seed)
        self.progress = progress
        self.classifier = SourceClassifier.fit(
            {k: _sample_frames(s, s.train, 200, self.rng) for k, s in self.sources.items()}
        )
        self.carracing = next((k for k in self.sources if k.startswith("CarRacing")), None)

    # ----------------------------------------------------------------- generation
    def generate(self, prompts: list[str], size: tuple[int, int], frames: int, switch: list[str] | None = None,
                 switch_at: int = 0) -> np.ndarray:  # fmt: skip
        """(P, frames, H, W, 3) from text alone, ``batch`` prompts at a time; ``switch`` prompts replace them at
        frame ``switch_at``."""
        self.wm.set_frame_size(size)
        out = []
        for i in range(0, len(prompts), self.cfg.batch):
            chunk = prompts[i : i + self.cfg.batch]
            gens = [torch.Generator().manual_seed(self.cfg.seed * 10_000 + i + j) for j in range(len(chunk))]
            clip = [self.wm.reset_from_text(chunk, generator=gens)[:, None]]
            for t in range(1, frames):
                if switch is not None and t == switch_at:
                    self.wm.set_prompt(switch[i : i + self.cfg.batch])
                clip.append(self.wm.dream(1).frames)
            out.append(np.concatenate(clip, 1))
        return np.concatenate(out)

    def _heldout_prompts(self) -> list[tuple[str, str]]:
        """(source, prompt) pairs from the held-out episodes' captions, spread over the sources."""
        pairs = []
        for key, src in self.sources.items():
            for e in src.heldout:
                pairs += [(key, text) for _, _, text in src.reader.captions.get(e, [])]
        order = self.rng.permutation(len(pairs))
        by_source: dict[str, list[tuple[str, str]]] = {}
        for i in order:
            by_source.setdefault(pairs[i][0], []).append(pairs[i])
        # Round-robin over sources so every source gets its share of the clips.
        chosen: list[tuple[str, str]] = []
        while len(chosen) < self.cfg.clips and any(by_source.values()):
            for key in list(by_source):
                if by_source[key] and len(chosen) < self.cfg.clips:
                    chosen.append(by_source[key].pop())
        return chosen

    def _score(self, source: str, prompt: str, clip: np.ndarray) -> dict[str, Any]:
        late = clip[len(clip) // 2 :]
        said = Counter(self.classifier(late)).most_common(1)[0][0]
        row: dict[str, Any] = {"source": source, "prompt": prompt, "read_source": said, "source_ok": said == source}
        palette = palette_in_prompt(prompt)
        if palette is not None:
            read = Counter(read_palette(f) for f in late).most_common(1)[0][0]
            row.update(read_palette=list(read), palette_ok=read == palette)
        row["ok"] = row["source_ok"] and row.get("palette_ok", True)
        return row

    # ----------------------------------------------------------------- parts
    def meter(self) -> dict[str, Any]:
        """The readers on real held-out frames: how far the measurements themselves can be trusted."""
        result: dict[str, Any] = {}
        frames = {k: _sample_frames(s, s.heldout, 60, self.rng) for k, s in self.sources.items()}
        per_source = [np.mean(np.array(self.classifier(f)) == k) for k, f in frames.items()]
        result["source_accuracy"] = float(np.mean(per_source))
        if self.carracing:
            src = self.sources[self.carracing]
            ok = []
            for e in src.heldout:
                truth = palette_in_prompt(src.reader.caption(e))
                for t in np.linspace(src.intro, src.reader.episode_frames[e] - 1, 20).astype(int):
                    ok.append(read_palette(src.reader.frames(e, t, t + 1)[0]) == truth)
            result["palette_accuracy"] = float(np.mean(ok))
        return result

    def text_following(self) -> dict[str, Any]:
        pairs = self._heldout_prompts()
        rows = []
        for key in self.sources:
            mine = [p for k, p in pairs if k == key]
            if mine:
                clips = self.generate(mine, self.sources[key].size, self.cfg.frames)
                rows += [self._score(key, p, c) for p, c in zip(mine, clips)]
        return {"accuracy": float(np.mean([r["ok"] for r in rows])), "clips": len(rows), "rows": rows}

    def unseen_combinations(self) -> dict[str, Any]:
        if not self.carracing:
            return {"skipped": "no CarRacing data"}
        motions = ["cruising", "accelerating", "turning left", "turning right", "standing still"]
        prompts = [
            carracing_caption(*HELD_OUT_PALETTES[i % len(HELD_OUT_PALETTES)], motions[i % len(motions)])
            for i in range(self.cfg.clips)
        ]
        clips = self.generate(prompts, self.sources[self.carracing].size, self.cfg.frames)
        rows = [self._score(self.carracing, p, c) for p, c in zip(prompts, clips)]
        return {"accuracy": float(np.mean([r["ok"] for r in rows])), "clips": len(rows), "rows": rows}

    def prompt_switch(self) -> dict[str, Any]:
        if not self.carracing:
            return {"skipped": "no CarRacing data"}
        if self.wm.config.text_to_video:
            return self._switch_from_text()
        return self._switch_while_driving()

    def _switch_prompts(self, n: int) -> tuple[list[str], list[str]]:
        """``n`` (before, after) prompts of two different training palettes."""
        pairs = palette_pairs("train")
        before, after = [], []
        for _ in range(n):
            a, b = self.rng.choice(len(pairs), 2, replace=False)
            before.append(carracing_caption(*pairs[a], "cruising"))
            after.append(carracing_caption(*pairs[b], "cruising"))
        return before, after

    @staticmethod
    def _took_hold(prompt: str, frames: np.ndarray) -> int | None:
        """The first frame from which the prompt's palette reads on every frame to the end (None: never)."""
        want = palette_in_prompt(prompt)
        reads = [read_palette(f) == want for f in frames]
        return next((t for t in range(len(reads)) if all(reads[t:])), None)

    @staticmethod
    def _switch_summary(rows: list[dict[str, Any]], n: int) -> dict[str, Any]:
        frames = [r["took_hold_after"] for r in rows if r["took_hold_after"] is not None]
        return {
            "share_within": len(frames) / len(rows),
            "frames": n,
            "mean_frames_to_hold": float(np.mean(frames)) if frames else None,
        }

    def _switch_from_text(self) -> dict[str, Any]:
        """A backbone: clips from one palette's prompt, switched to another after a few frames."""
        before, after = self._switch_prompts(self.cfg.clips)
        lead, n = SWITCH_LEAD, self.cfg.switch_frames
        clips = self.generate(before, self.sources[self.carracing].size, lead + n, switch=after, switch_at=lead)
        rows = [{"prompt": p, "took_hold_after": self._took_hold(p, c[lead:])} for p, c in zip(after, clips)]
        return {**self._switch_summary(rows, n), "delta_psnr": None, "rows": rows}

    def _switch_while_driving(self) -> dict[str, Any]:
        """A world with actions, driven by the recorded actions from real held-out contexts: the prompt starts as
        the episode's own palette and switches to another. In the same runs, random actions from the same noise
        give delta PSNR (true - random actions, against the real frames, at horizon 16): action following with
        the switch, beside the same world with no prompt at all."""

        src = self.sources[self.carracing]
        if src.size != self.wm.frame_size:
            raise InputError(f"{src.reader.source} is {src.size}, the world {self.wm.frame_size}: record it there")
        context, lead, n = 4, SWITCH_LEAD, self.cfg.switch_frames
        horizon = lead + n
        keys = []
        per_episode = -(-self.cfg.clips // len(src.heldout))
        for e in src.heldout:
            last = src.reader.episode_frames[e] - context - horizon
            if last >= src.intro:
                keys += [(e, int(t)) for t in np.unique(np.linspace(src.intro, last, per_episode).astype(int))]
        if not keys:
            raise InputError(
                f"the held-out episodes of {src.reader.source} are shorter than {context + horizon} frames"
            )
        keys = keys[: self.cfg.clips]
        before = [carracing_caption(*palette_in_prompt(src.reader.caption(e)), "cruising") for e, _ in keys]
        pairs = palette_pairs("train")
        after = []
        for prompt in before:
            others = [p for p in pairs if p != palette_in_prompt(prompt)]
            after.append(carracing_caption(*others[self.rng.integers(len(others))], "cruising"))
        rows, delta = [], {"switched": [], "no_prompt": []}
        h = min(16, horizon) - 1
        for i in range(0, len(keys), self.cfg.batch):
            part = keys[i : i + self.cfg.batch]
            steps = [src.reader.steps(e)["actions"] for e, _ in part]
            frames = [src.reader.frames(e, s, s + context + horizon) for e, s in part]
            ctx = np.stack([f[:context] for f in frames])
            real = np.stack([f[context:] for f in frames])
            ctx_actions = np.stack([a[s : s + context - 1] for a, (_, s) in zip(steps, part)])
            true = np.stack([a[s + context - 1 : s + context - 1 + horizon] for a, (_, s) in zip(steps, part)])
            rand = np.stack([np.stack([self.wm.action_space.sample() for _ in range(horizon)]) for _ in part])
            for arm, (first, then) in {"switched": (before, after), "no_prompt": (None, None)}.items():
                dreams = {}
                for name, acts in (("true", true), ("random", rand)):
                    gens = [torch.Generator().manual_seed(self.cfg.seed * 10_000 + i + j) for j in range(len(part))]
                    text = None if first is None else first[i : i + len(part)]
                    self.wm.reset(ctx, actions=ctx_actions, text=text, generator=gens)
                    out = [self.wm.predict(acts[:, :lead]).frames]
                    self.wm.set_prompt(None if then is None else then[i : i + len(part)])
                    out.append(self.wm.predict(acts[:, lead:]).frames)
                    dreams[name] = np.concatenate(out, 1)
                delta[arm].append(psnr(dreams["true"][:, h], real[:, h]) - psnr(dreams["random"][:, h], real[:, h]))
                if arm == "switched":
                    rows += [
                        {"prompt": p, "took_hold_after": self._took_hold(p, d[lead:])}
                        for p, d in zip(after[i : i + len(part)], dreams["true"])
                    ]
        switched, plain = (float(np.mean(np.concatenate(delta[k]))) for k in ("switched", "no_prompt"))
        return {
            **self._switch_summary(rows, n),
            "delta_psnr": {
                "horizon": h + 1,
                "with_switch": switched,
                "no_prompt": plain,
                "ratio": switched / plain if plain else None,
            },
            "rows": rows,
        }

    def realism(self) -> dict[str, Any]:
        result = {}
        for key, src in self.sources.items():
            prompts = [text for e in src.train for _, _, text in src.reader.captions.get(e, [])]
            prompts = [prompts[i] for i in self.rng.choice(len(prompts), self.cfg.clips)]
            gen = self.generate(prompts, src.size, self.cfg.frames).reshape(-1, *src.size, 3)
            # Two halves of the real data split by episode, each sampled the way the generated set is (as many
            # clips of as many frames): real-vs-real then carries the same sampling structure as generated-vs-real.
            episodes = self.rng.permutation(src.train + src.heldout).tolist()
            halves = episodes[: len(episodes) // 2], episodes[len(episodes) // 2 :]
            real = [_sample_clips(src, h, len(prompts), self.cfg.frames, self.rng) for h in halves]
            feats = [self._features(x) for x in (gen, *real)]
            fd_gen = frechet_distance(feats[0], feats[1])
            fd_real = frechet_distance(feats[2], feats[1])
            result[key] = {"fd_generated": fd_gen, "fd_real_halves": fd_real, "ratio": fd_gen / max(fd_real, 1e-9)}
        return result

    def _features(self, frames: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            z = self.wm.autoencoder.encode(torch.from_numpy(frames))
        return F.adaptive_avg_pool2d(z.float(), 4).flatten(1).numpy().astype(np.float64)

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        parts = ("meter", "text_following", "unseen_combinations", "prompt_switch", "realism")
        result: dict[str, Any] = {"checkpoint": self.cfg.checkpoint, "cfg": self.wm.sampler_config.text_cfg}
        for part in parts:
            start = time.perf_counter()
            result[part] = getattr(self, part)()
            if self.progress:
                print(f"eval-text: {part} done in {time.perf_counter() - start:.0f} s", flush=True)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        if self.cfg.json:
            with atomic_path(Path(self.cfg.json)) as tmp:
                tmp.write_text(json.dumps(result, indent=2))
        return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"meter (real frames): {result['meter']}"]
    for part in ("text_following", "unseen_combinations"):
        r = result[part]
        lines.append(f"{part}: {r['accuracy']:.0%} of {r['clips']} clips" if "accuracy" in r else f"{part}: {r}")
    s = result["prompt_switch"]
    if "share_within" in s:
        lines.append(f"prompt_switch: {s['share_within']:.0%} hold within {s['frames']} frames "
                     f"(mean {s['mean_frames_to_hold']})")  # fmt: skip
        if isinstance(s.get("delta_psnr"), dict):
            d = s["delta_psnr"]
            lines.append(f"  delta PSNR h{d['horizon']}: {d['with_switch']:.2f} dB with the switch, "
                         f"{d['no_prompt']:.2f} dB with no prompt ({d['ratio']:.2f}x)")  # fmt: skip
    for key, r in result["realism"].items():
        lines.append(f"realism {key}: FD {r['fd_generated']:.2f} vs real halves {r['fd_real_halves']:.2f} "
                     f"({r['ratio']:.2f}x)")  # fmt: skip
    return lines


def run(cfg: EvalTextConfig) -> int:
    """``worldsim eval-text``: measure, then print the summary lines."""
    result = TextEvaluator(cfg, progress=sys.stderr.isatty()).run()
    print("\n".join(summary_lines(result)))
    return 0
