"""The window: the dream (with ``--compare`` the real env's frame to its left) scaled up, panel labels, the HUD,
screenshots, and the clock that keeps the frame rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from worldsim.checkpoint import atomic_path
from worldsim.display import WINDOW_PIXELS, import_pygame
from worldsim.errors import WorldsimError
from worldsim.viewer.controls import Area
from worldsim.viewer.stats import Stats

HELP = "R reset  P pause  [ ] steps  S shot  H hud  T prompt  Esc quit"


class Panel(NamedTuple):
    label: str
    """Drawn under the panel when there is more than one ("real", "dream")."""
    frame: np.ndarray
    """uint8 (H, W, 3)."""


def hud_lines(stats: Stats, paused: bool, seed: int, prompt: str | None = None) -> list[str]:
    s = stats
    state = "  PAUSED" if paused else ("  terminated" if s.terminated else "")
    return [
        f"{s.display_fps:5.1f} fps shown  {s.model_fps:5.1f} fps model{state}",
        f"frame {s.frame_index}  reward {s.reward:+.3f}  return {s.episode_return:+.2f}",
        f"sampler steps {s.sampler_steps}  seed {seed}",
        *([f"prompt: {prompt}"] if prompt else []),
        HELP,
    ]


class Screen:
    """A pygame window of ``panels`` side by side, each a ``frame_size`` (H, W) frame scaled up ``scale`` times
    (0: to fit ``WINDOW_PIXELS``); the dream is the rightmost panel."""

    def __init__(self, title: str, frame_size: tuple[int, int], scale: int = 0, panels: int = 1) -> None:
        pygame = self.pygame = import_pygame()
        H, W = frame_size
        scale = scale or max(1, WINDOW_PIXELS // max(H, W))
        self.panel = (W * scale, H * scale)
        """One panel's (width, height) in window pixels."""
        self.panels = panels
        try:
            pygame.display.init()
            pygame.font.init()
            self.window = pygame.display.set_mode((self.panel[0] * panels, self.panel[1]))
        except pygame.error as e:
            raise WorldsimError(f"cannot open a window ({e}); without a display use --headless") from None
        pygame.display.set_caption(title)
        self.font = pygame.font.Font(None, 20)
        self.clock = pygame.time.Clock()

    @property
    def dream_area(self) -> Area:
        return Area(self.panel[0] * (self.panels - 1), 0, *self.panel)

    def close(self) -> None:
        self.pygame.display.quit()

    # ----------------------------------------------------------------- events and pacing
    def events(self) -> list[Any]:
        """The window's events since the last call (key presses, pointer moves, close)."""
        return self.pygame.event.get()

    def post(self, events: list[Any]) -> None:
        for event in events:
            self.pygame.event.post(event)

    def tick(self, fps: float) -> None:
        """Wait out the rest of this frame at ``fps`` frames per second (0: do not wait)."""
        self.clock.tick(fps)

    # ----------------------------------------------------------------- drawing
    def draw(self, panels: list[Panel], hud: list[str] | None = None) -> None:
        """Draw the panels left to right, and ``hud`` text over the top left corner; show the result."""
        pygame = self.pygame
        self.window.fill((0, 0, 0))
        for i, panel in enumerate(panels):
            surface = pygame.surfarray.make_surface(np.ascontiguousarray(panel.frame.swapaxes(0, 1)))  # (W, H)
            x = i * self.panel[0]
            self.window.blit(pygame.transform.scale(surface, self.panel), (x, 0))  # nearest neighbour
            if len(panels) > 1:
                self._text([panel.label], (x + 4, self.panel[1] - 20))
        if hud:
            self._text(hud, (4, 4))
        pygame.display.flip()

    def pixels(self) -> np.ndarray:
        """The window as it is shown, uint8 (H, W, 3): what --record writes."""
        return self.pygame.surfarray.array3d(self.window).swapaxes(0, 1)

    def screenshot(self, path: Path) -> Path:
        """Save the window as a PNG (renamed into place when complete)."""
        with atomic_path(path) as tmp:
            self.pygame.image.save(self.window, str(tmp))
        return path

    def _text(self, lines: list[str], at: tuple[int, int]) -> None:
        """White lines on a translucent black box, so they read over any frame."""
        pygame = self.pygame
        rendered = [self.font.render(line, True, (255, 255, 255)) for line in lines]
        w = max(r.get_width() for r in rendered) + 6
        h = sum(r.get_height() for r in rendered) + 4
        box = pygame.Surface((w, h), pygame.SRCALPHA)
        box.fill((0, 0, 0, 150))
        self.window.blit(box, (at[0] - 3, at[1] - 2))
        y = at[1]
        for r in rendered:
            self.window.blit(r, (at[0], y))
            y += r.get_height()
