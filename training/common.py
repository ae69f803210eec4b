"""Helpers the training stages share: opening data, GIF summaries for TensorBoard."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from worldsim.training.config import TrainConfig

from worldsim.data.reader import TrajectoryReader
from worldsim.errors import InputError


def open_training_data(cfg: TrainConfig) -> tuple[TrajectoryReader, list[int]]:
    """The reader and the episode indices used for training (the last ``holdout`` are kept out)."""
    if not cfg.data:
        raise InputError("--data is required: a trajectory file from `worldsim record`, a Minari dataset or robomimic")
    reader = TrajectoryReader(cfg.data, camera=cfg.camera)
    n = len(reader)
    if cfg.holdout >= n:
        raise InputError(f"--holdout {cfg.holdout} leaves no training episodes ({n} in {cfg.data})")
    return reader, list(range(n - cfg.holdout))


def gif_bytes(frames: np.ndarray, fps: int) -> bytes:
    """uint8 (T, H, W, 3) -> an animated GIF."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def add_gif(tb: Any, tag: str, frames: np.ndarray, step: int, fps: int) -> None:
    """Log an animated GIF to TensorBoard's image tab (what ``add_video`` does, without moviepy)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    T, H, W, _ = frames.shape
    image = Summary.Image(height=H, width=W, colorspace=3, encoded_image_string=gif_bytes(frames, fps))
    tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
