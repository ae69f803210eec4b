"""``worldsim generate``: text-to-video, image-to-video and video extension with a text-capable world or backbone.

    worldsim generate "a car on a red road through white grass, cruising" --checkpoint runs/t2v --out car.mp4
    worldsim generate "the Atari game Pong: the game goes on" --checkpoint runs/t2v --size 80x64 --out pong.mp4
    worldsim generate "..." --image start.png --frames 48 --out more.mp4     # image-to-video
    worldsim generate "..." --video clip.mp4 --out longer.mp4                 # extend a clip
    worldsim generate --prompts prompts.txt --out grid.mp4                    # one cell per prompt, one batch

Frames come with the null action (what the world does on its own), with classifier-free guidance on the text.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import tyro
from tqdm import tqdm

from worldsim.checkpoint import check_output_path
from worldsim.data.recorder import parse_size
from worldsim.engine import WorldModel
from worldsim.errors import ConfigError, InputError
from worldsim.inputs import resize_frames
from worldsim.precision import Precision, model_dtype
from worldsim.video import VideoWriter, check_video_path

DEFAULT_BACKBONE = "t2v"
"""The shipped text-to-video backbone (``assets/t2v``)."""


@dataclass
class GenerateConfig:
    """What ``worldsim generate`` makes."""

    prompt: Annotated[str, tyro.conf.Positional] = ""
    """What the video shows (at most 32 tokens)."""
    prompts: str = ""
    """A file of prompts, one per line: generated as one batch, written as a grid (one cell per prompt)."""
    world: str = ""
    """A text-capable world or text-to-video backbone: checkpoint dir, run dir, shipped name or Hub id."""
    checkpoint: str = ""
    """Same as --world."""
    frames: int = 32
    """Frames to generate (after the start image or clip)."""
    size: str = ""
    """Frame size HxW (default: the world's); divisible by the autoencoder factor x patch."""
    image: str = ""
    """Start from this image (.png / .jpg): image-to-video."""
    video: str = ""
    """Extend this clip (.mp4 / .gif): its last frames are the context, the output is the clip then the rest."""
    cfg: float = 0.0
    """Classifier-free guidance scale on the text (1 = off; each frame then costs one DiT pass, not two); 0: the
    checkpoint's own ``sampler.text_cfg`` (3 for a backbone from `train t2v`; 1 for a world with actions or a student
    with guidance built in)."""
    seed: int = 0
    """Seed of the noise (prompt i of --prompts uses seed + i)."""
    out: str = "generate.mp4"
    """Output video (.mp4 or .gif)."""
    precision: Precision = "auto"
    """fp32, bf16 or auto (bf16 where the hardware has it natively)."""

    def __post_init__(self) -> None:
        if bool(self.prompt) == bool(self.prompts):
            raise ConfigError('give one prompt ("...") or --prompts FILE')
        if self.world and self.checkpoint and self.world != self.checkpoint:
            raise ConfigError("--world and --checkpoint name the same thing: give one")
        if self.image and self.video:
            raise ConfigError("--image and --video both give the start: pick one")
        if self.frames < 1:
            raise ConfigError(f"--frames must be at least 1, got {self.frames}")
        if self.cfg and self.cfg < 1.0:
            raise ConfigError(f"--cfg must be at least 1 (1 = no guidance; 0 = the checkpoint's own), got {self.cfg}")
        check_video_path(self.out)
        check_output_path(self.out)


def read_prompts(cfg: GenerateConfig) -> list[str]:
    if not cfg.prompts:
        return [cfg.prompt]
    path = Path(cfg.prompts)
    if not path.is_file():
        raise InputError(f"--prompts {path}: no such file")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"--prompts {path} holds no prompt (one per line)")
    return prompts


def read_start(cfg: GenerateConfig) -> np.ndarray | None:
    """The start frames (T, H, W, 3) uint8 from --image or --video, or None."""
    source = cfg.image or cfg.video
    if not source:
        return None
    if not Path(source).is_file():
        raise InputError(f"{'--image' if cfg.image else '--video'} {source}: no such file")
    import imageio.v3 as iio  # imageio's readers: only when --image/--video is read

    try:
        frames = np.asarray(iio.imread(source, index=None) if cfg.video else iio.imread(source))
    except Exception as e:  # imageio raises many kinds for unreadable files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot read {source} as {'a video' if cfg.video else 'an image'} ({reason})") from None
    if cfg.image:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise InputError(f"{source}: expected RGB frames (uint8, H x W x 3), got {frames.dtype} {frames.shape[1:]}")
    return np.ascontiguousarray(frames[..., :3])


def generate(cfg: GenerateConfig, progress: bool = True) -> dict[str, object]:
    """Make the video(s) of ``cfg``; returns a summary (frames, seconds, out)."""
    prompts = read_prompts(cfg)
    start = read_start(cfg)
    wm = WorldModel.from_pretrained(
        cfg.world or cfg.checkpoint or DEFAULT_BACKBONE, dtype=model_dtype(cfg.precision, "cpu")
    )
    if not wm.config.dit.text_dim:
        raise InputError(f"{cfg.world or cfg.checkpoint} was trained without text: it cannot follow a prompt")
    if cfg.size:
        wm.set_frame_size(parse_size(cfg.size))
    if cfg.cfg:
        wm.set_sampler(text_cfg=cfg.cfg)
    t0 = time.perf_counter()
    gens = [torch.Generator().manual_seed(cfg.seed + i) for i in range(len(prompts))]
    if start is None:
        first = wm.reset_from_text(prompts, generator=gens)
        videos = [first[:, None]]
        todo = cfg.frames - 1
    else:
        visible = wm.sampler_config.sinks + wm.sampler_config.window - 1
        context = np.repeat(start[None, -visible:], len(prompts), axis=0)
        wm.reset(frames=context, text=prompts, generator=gens)

        given = resize_frames(torch.from_numpy(start), wm.frame_size).numpy()
        videos = [np.repeat(given[None], len(prompts), axis=0)]
        todo = cfg.frames
    bar = tqdm(total=cfg.frames, initial=cfg.frames - todo, unit="frame", desc="generating", disable=not progress)
    for _ in range(todo):
        videos.append(wm.dream(1).frames)
        bar.update(1)
    bar.close()
    clips = np.concatenate(videos, axis=1)  # (P, T, H, W, 3)
    seconds = time.perf_counter() - t0
    with VideoWriter(cfg.out, fps=wm.config.frame_rate) as video:
        for t in range(clips.shape[1]):
            video.append(_grid(clips[:, t]))
    return {"out": cfg.out, "prompts": len(prompts), "frames": int(clips.shape[1]), "seconds": round(seconds, 2)}


def _grid(frames: np.ndarray, gap: int = 2) -> np.ndarray:
    """(P, H, W, 3) -> one frame with the P frames in a near-square grid (white gaps)."""
    P, H, W, _ = frames.shape
    cols = int(np.ceil(np.sqrt(P)))
    rows = int(np.ceil(P / cols))
    out = np.full((rows * (H + gap) - gap, cols * (W + gap) - gap, 3), 255, dtype=np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, cols)
        out[r * (H + gap) : r * (H + gap) + H, c * (W + gap) : c * (W + gap) + W] = frame
    return out


def run(cfg: GenerateConfig) -> int:
    """``worldsim generate``: generate, then print what was written."""
    result = generate(cfg, progress=sys.stderr.isatty())
    print(f"{result['prompts']} prompt(s), {result['frames']} frames in {result['seconds']} s -> {result['out']}")
    return 0
