"""Input mapping: pygame events -> held keys and the pointer -> the action of each frame; UI keys -> ``Intent``.

Nothing here needs a window: ``pygame.event.Event`` values work without a display, so a test builds ``Controls``
from a key map and hands it events directly.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NamedTuple

import numpy as np
from gymnasium import spaces

from worldsim.display import VIEWER_KEYS, import_pygame, key_code
from worldsim.envs.world import WorldModelEnv


class Intent(Enum):
    """What a UI key asks the play loop for (actions come from the held keys, never from these)."""

    QUIT = "quit"
    RESET = "reset"
    """A new start from the next seed."""
    PAUSE = "pause"
    """Pause or go on."""
    FEWER_STEPS = "fewer steps"
    """One Euler step per frame less."""
    MORE_STEPS = "more steps"
    HUD = "hud"
    """Show or hide the HUD."""
    SCREENSHOT = "screenshot"
    PROMPT = "prompt"
    """Type a new prompt (worlds trained with text): Enter applies it, Esc cancels."""


class Area(NamedTuple):
    """A rectangle of the window, in window pixels (the dream's panel, for the pointer)."""

    left: int
    top: int
    width: int
    height: int


class Controls:
    """Held keys -> the world's action through its key map (``WorldModelEnv.get_keys_to_action``); no key: the
    do-nothing action. Pointer worlds (a 2-D Box without a key map, PushT) take the pointer's position instead."""

    def __init__(self, keys_to_action: dict[tuple[int, ...], Any], noop: Any, pointer: spaces.Box | None = None):
        self.keys = keys_to_action
        """Sorted tuples of pygame key codes (chords) -> actions."""
        self.action_keys = {k for chord in keys_to_action for k in chord}
        self.noop = noop
        self.pointer_space = pointer
        """The Box the pointer's position maps to; None: a key-driven world."""
        self.held: set[int] = set()
        self.pointer: tuple[int, int] | None = None
        """Last pointer position in the window (from MOUSEMOTION events); None: the dream panel's centre."""
        self.ui_keys = {key_code(name): Intent(intent) for name, intent in VIEWER_KEYS.items()}

    @classmethod
    def for_env(cls, env: WorldModelEnv) -> Controls:
        space = env.action_space
        if isinstance(space, spaces.Box) and space.shape == (2,) and not env.world.config.key_map:
            return cls({}, env.noop, pointer=space)
        return cls(env.get_keys_to_action(), env.noop)

    def handle(self, event: Any) -> Intent | None:
        """Track held keys and the pointer; the intent of a UI key press or of closing the window, else None."""
        pygame = import_pygame()
        if event.type == pygame.QUIT:
            return Intent.QUIT
        if event.type == pygame.KEYUP:
            self.held.discard(event.key)
        elif event.type == pygame.MOUSEMOTION:
            self.pointer = tuple(event.pos)
        elif event.type == pygame.WINDOWFOCUSLOST:
            self.held.clear()  # a key released in another window would otherwise stay held
        elif event.type == pygame.KEYDOWN:
            self.held.add(event.key)  # a key map may give a UI key an action too: it is both held and an intent
            return self.ui_keys.get(event.key)
        return None

    def action(self, dream: Area) -> Any:
        """The action of this frame: from the pointer over ``dream`` or from the keys held now."""
        if self.pointer_space is not None:
            return self._pointer_action(dream)
        pressed = tuple(sorted(self.held & self.action_keys))
        if pressed in self.keys:
            return self.keys[pressed]
        # Extra keys held: the longest chord among them wins ("up+left" over "up").
        chords = [c for c in self.keys if c and set(c) <= set(pressed)]
        return self.keys[max(chords, key=len)] if chords else self.noop

    def _pointer_action(self, dream: Area) -> np.ndarray:
        """Pointer position over the dream panel -> the Box linearly (x to dimension 0, y down to dimension 1)."""
        x, y = self.pointer or (dream.left + dream.width // 2, dream.top + dream.height // 2)
        frac = np.clip([(x - dream.left) / dream.width, (y - dream.top) / dream.height], 0.0, 1.0)
        space = self.pointer_space
        return (space.low + frac * (space.high - space.low)).astype(space.dtype)
