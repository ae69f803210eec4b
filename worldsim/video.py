"""Write frames to an mp4 or gif that appears only when complete (temp file, then rename); read a run of frames back.

Example::

    with VideoWriter("play.mp4", fps=15) as video:
        for frame in frames:          # uint8 (H, W, 3), all the same size
            video.append(frame)
    read_video_frames("play.mp4", start_s=2.0, count=15, fps=15)   # (15, H, W, 3): the third second
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from worldsim.checkpoint import atomic_path, check_output_path
from worldsim.errors import ConfigError, InputError

VIDEO_SUFFIXES = (".mp4", ".gif")


def check_video_path(path: str | Path) -> Path:
    """``path`` as a Path if a video can be written there; else a one-line ConfigError. Creates nothing.

    Checked before any work (``PlayConfig`` calls it while the flags are parsed), so a bad ``--record`` fails in
    a second instead of after a whole session of play.
    """
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"cannot record to {path}: use a file ending in {' or '.join(VIDEO_SUFFIXES)}")
    check_output_path(path, "record to")
    return path


class VideoWriter:
    """mp4 (ffmpeg, libx264, streamed) or gif (Pillow, written at close). The file is renamed into place on a clean
    exit of the ``with`` block that wrote at least one frame; otherwise nothing is left behind."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = check_video_path(path)
        self.fps = float(fps)
        self.frames = 0
        self._stack = contextlib.ExitStack()
        self._writer: Any = None
        self._gif: list[np.ndarray] = []

    def __enter__(self) -> VideoWriter:
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        if self.path.suffix.lower() == ".mp4":
            import imageio.v2 as imageio  # imageio: only when a video is written

            # macro_block_size=1: keep odd-free window sizes as they are (ours are multiples of 2).
            self._writer = imageio.get_writer(self._tmp, fps=self.fps, codec="libx264", macro_block_size=1)
        return self

    def append(self, frame: np.ndarray) -> None:
        """One uint8 (H, W, 3) frame."""
        if self._writer is not None:
            self._writer.append_data(frame)
        else:
            self._gif.append(frame.copy())
        self.frames += 1

    def __exit__(self, *exc: Any) -> bool:
        try:
            if self._writer is not None:
                self._writer.close()
            elif exc[0] is None and self._gif:
                import imageio.v3 as iio  # imageio: only when a video is written

                iio.imwrite(self._tmp, np.stack(self._gif), extension=".gif", duration=1000 / self.fps, loop=0)
        finally:
            if exc[0] is None and self.frames == 0:
                exc = (EmptyVideo, EmptyVideo(), None)  # nothing recorded: leave no empty file behind
            self._stack.__exit__(*exc)  # rename into place, or remove the temp file on an exception
        return False


class EmptyVideo(Exception):
    """Internal: tells ``atomic_path`` to drop the temp file of a video that got no frames."""


def read_video_frames(path: str | Path, start_s: float, count: int, fps: float) -> np.ndarray:
    """``count`` consecutive uint8 (H, W, 3) frames of a constant-rate video, the first shown at ``start_s`` seconds.

    Decodes only what it returns (imageio's bundled ffmpeg, one process per call), so a reader can take a clip out
    of a long video without holding the rest. ``-ss`` before the input seeks to the keyframe before the time and
    decodes forward from there, frame-accurately; it asks for half a frame early so that timestamps stored as
    float32 (LeRobot's) never round past the wanted frame. One-line InputError when the file cannot be decoded or
    ends before ``count`` frames.
    """
    import imageio_ffmpeg  # imageio's ffmpeg: only when an mp4 is written

    seek = start_s - 0.5 / fps
    frames: list[np.ndarray] = []
    try:
        reader = imageio_ffmpeg.read_frames(str(path), input_params=["-ss", f"{seek:.6f}"] if seek > 0 else [])
        try:
            width, height = next(reader)["size"]
            for raw in reader if count > 0 else ():
                frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3))
                if len(frames) == count:
                    break
        finally:
            reader.close()  # stops ffmpeg when the run ends before the file does
    except (OSError, RuntimeError, StopIteration) as e:
        raise InputError(f"{path} cannot be decoded ({(str(e).strip().splitlines() or ['no frames'])[-1]})") from None
    if len(frames) < count:
        raise InputError(f"{path} ends {len(frames)} frames after {start_s:.3f} s, before the {count} asked for")
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), dtype=np.uint8)
