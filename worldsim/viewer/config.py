"""``PlayConfig``: every flag of ``worldsim play``, each field's docstring its --help text."""

from __future__ import annotations

from dataclasses import dataclass

from worldsim.errors import ConfigError
from worldsim.precision import Precision
from worldsim.video import check_video_path
from worldsim.worlds import DEFAULT_WORLD

MAX_SAMPLER_STEPS = 16
"""Upper bound for ``]`` (more Euler steps per frame)."""


@dataclass
class PlayConfig:
    """What ``worldsim play`` shows and how."""

    world: str | None = None
    """Shipped world name or Hugging Face Hub repo id owner/name[@revision] (default: carracing)."""
    checkpoint: str | None = None
    """Checkpoint directory (or Hub repo id) to play instead of a shipped world."""
    headless: bool = False
    """Play without a display (SDL dummy driver), actions from --policy, unpaced unless --realtime."""
    steps: int = 0
    """Frames to show (and record), the start frame included; 0 = until Esc. Needed with --headless."""
    policy: str = ""
    """Where actions come from: keyboard, random, idle (touches nothing), road (steers from the frames alone),
    carracing, pusht, agent:PATH (an agent of worldsim rl train), plan:WORLD (plans each move by dreaming in WORLD,
    worldsim plan's search; about a second a decision on a CPU) or module:callable (default: keyboard, or random
    when headless). random, idle, road, agents and planners need only the frames, so they drive the dream; carracing
    and pusht read the real env's internals and need --compare."""
    seed: int = 0
    """Seed of the first start context and noise; R moves on to seed+1, seed+2, ..."""
    sampler_steps: int | None = None
    """Euler steps per frame at the start (default: the checkpoint's)."""
    record: str | None = None
    """Write the frames shown (the window, HUD included) to this .mp4 or .gif."""
    out_dir: str = "."
    """Folder for S screenshots."""
    compare: bool = False
    """Run the world's real source env beside the dream with the same actions."""
    realtime: bool = False
    """Pace headless play at the world's frame rate too."""
    scale: int = 0
    """Window pixels per frame pixel (0: fit the frame to 384 pixels, 6x for 64x64)."""
    hud: bool = True
    """Show the HUD at the start (H toggles it)."""
    prompt: str = ""
    """The prompt the world starts from and follows (worlds trained with text); T types a new one mid-play."""
    prompts: str = ""
    """A file of ``FRAME: prompt`` lines: the prompt changes at those shown frames (headless prompt switches)."""
    device: str = "cpu"
    """Torch device of the world."""
    precision: Precision = "auto"
    """fp32, bf16 or auto (bf16 where the hardware has it natively: faster play)."""
    model_threads: int = 1
    """Torch threads of the worker that runs the world (0: torch's default). Torch ops called from a thread other
    than the main one lose from a second intra-op thread, so one thread is faster in the worker on a 2-core machine
    (``docs/results.md``, "Play")."""

    def __post_init__(self) -> None:
        if self.world and self.checkpoint:
            raise ConfigError("give --world or --checkpoint, not both")
        if self.steps < 0 or self.scale < 0:
            raise ConfigError("--steps and --scale must be >= 0")
        if self.headless and self.steps == 0:
            raise ConfigError("--headless needs --steps N (frames to play)")
        if self.sampler_steps is not None and not 1 <= self.sampler_steps <= MAX_SAMPLER_STEPS:
            raise ConfigError(f"--sampler-steps must be in 1..{MAX_SAMPLER_STEPS}")
        if self.record:
            check_video_path(self.record)
        self.prompt_schedule = read_prompt_schedule(self.prompts) if self.prompts else {}

    @property
    def source(self) -> str:
        return self.checkpoint or self.world or DEFAULT_WORLD


def read_prompt_schedule(path: str) -> dict[int, str]:
    """``FRAME: prompt`` lines -> {frame: prompt}; blank lines and ``#`` comments skipped; one-line errors."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--prompts {path}: no such file")
    schedule: dict[int, str] = {}
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        frame, sep, prompt = line.partition(":")
        if not sep or not frame.strip().isdigit() or not prompt.strip():
            raise ConfigError(f"--prompts {path}, line {number}: expected 'FRAME: prompt', got {line[:60]!r}")
        schedule[int(frame)] = prompt.strip()
    if not schedule:
        raise ConfigError(f"--prompts {path} holds no 'FRAME: prompt' line")
    return schedule
