"""What the env's ``human`` window and the viewer share: pygame, imported only when a window is wanted."""

from __future__ import annotations

import os
import string
import warnings
from typing import Any

import gymnasium

WINDOW_PIXELS = 384
"""Longest side of a world's window; a 64x64 world is shown at 6x."""


VIEWER_KEYS = {
    "escape": "quit",
    "r": "reset",
    "p": "pause",
    "[": "fewer steps",
    "]": "more steps",
    "h": "hud",
    "s": "screenshot",
    "t": "prompt",
}
"""Keys ``worldsim play`` keeps for itself (pygame key name -> what they do); never given to actions by default."""

DEFAULT_ACTION_KEYS = [c for c in string.digits + string.ascii_lowercase if c not in VIEWER_KEYS]
"""Keys for actions 0, 1, 2, ... of a Discrete world without a key map: digits, then letters the viewer leaves free."""


def import_pygame() -> Any:
    """pygame, imported on first use so that RL without a window never loads it (and without its banner)."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame  # heavy, and only a window needs it
    except ImportError as e:
        raise gymnasium.error.DependencyNotInstalled("a window and keyboard play need `pip install pygame`") from e
    return pygame


def key_code(name: str) -> int:
    """The pygame key code of a key name (``"up"``, ``"space"``, ``"w"``); ValueError for an unknown name."""
    pygame = import_pygame()
    with warnings.catch_warnings():
        # Names map to codes without SDL's video system (SDL_GetKeyFromName); pygame warns anyway when no display
        # is open (or one was opened and closed before), and opening a display here would be worse.
        warnings.filterwarnings("ignore", message="pygame.init", category=Warning)
        return pygame.key.key_code(name)
