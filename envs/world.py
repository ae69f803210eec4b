"""A world model checkpoint as a Gymnasium env: ``reset`` fills the engine's memory, ``step`` dreams one frame.

    import gymnasium, worldsim
    env = gymnasium.make("worldsim/WorldModel-v0", checkpoint="runs/world", render_mode="rgb_array")
    obs, info = env.reset(seed=0)                          # a shipped start context, chosen by the seed
    obs, info = env.reset(options={"start": image})         # or your own (H, W, 3) / (T, H, W, 3) uint8 frames
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    from gymnasium.utils.play import play                   # keyboard play at the world's frame rate
    play(env, zoom=6, noop=env.unwrapped.noop)             # keys from get_keys_to_action()

The env owns spaces, seeding, buffers and the window; the frames, reward and termination come from
``worldsim.WorldModel`` (one engine call per step), as in DIAMOND's ``WorldModelEnv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from worldsim.devices import resolve_device
from worldsim.display import DEFAULT_ACTION_KEYS, WINDOW_PIXELS, import_pygame, key_code
from worldsim.engine import WorldModel
from worldsim.envs.sources import source_world
from worldsim.errors import ConfigError, InputError, WorldsimError
from worldsim.precision import model_dtype

START_OPTIONS = frozenset({"start", "actions", "text"})
"""Keys ``reset(options=...)`` understands; any other is a typo and raises."""


def load_world(
    checkpoint: str | Path,
    device: str | torch.device,
    precision: str,
    sampler_steps: int | None,
    compile: bool = False,
) -> WorldModel:
    """The engine behind an env: a checkpoint at a device and precision, optionally fewer/more Euler steps, optionally
    with its passes compiled (``WorldModel.compile``)."""
    device = resolve_device(device)  # before model_dtype asks a missing GPU whether it has bf16
    world = WorldModel.from_pretrained(checkpoint, device=device, dtype=model_dtype(precision, device))
    if sampler_steps is not None:
        world.set_sampler(steps=sampler_steps)
    if compile:
        world.compile()
    return world


class WorldModelEnv(gymnasium.Env[np.ndarray, Any]):
    """A learned world: every observation is a frame the model dreamed from the start context and your actions.

    ## Action Space

    The action space of the data the world was trained on, ``config.action.to_gym()``: ``Discrete(n)``,
    ``MultiDiscrete`` or a bounded ``Box`` (``Discrete(5)`` for CarRacing: 0 nothing, 1 right, 2 left, 3 gas,
    4 brake). An action outside it raises ``worldsim.errors.InputError``.

    ## Observation Space

    ``Box(0, 255, (H, W, 3), uint8)``: the newest frame at the world's frame size (64x64 by default).

    ## Rewards and Episode End

    Reward and termination come from the model's heads on the frame it just wrote into memory. Truncation is
    Gymnasium's ``TimeLimit`` (the registered ids use 1000 steps), or ``max_episode_steps`` when the env is
    built directly.

    ## Starting State

    ``reset(options={"start": frames})`` with uint8 ``(H, W, 3)`` or a short clip ``(T, H, W, 3)`` (resized to
    the world's size; at most ``sinks + window`` frames). Optional ``"actions"`` (T-1 actions that led to frames
    1..T-1) and ``"text"`` (a prompt, for worlds trained with text). Without ``"start"``, one of the checkpoint's
    shipped start contexts, chosen by the seed; a checkpoint with none (a text-to-video backbone) starts from the
    prompt alone. ``set_prompt(text)`` changes the prompt mid-episode. Bad input raises
    ``worldsim.errors.InputError``.

    ## Seeding

    ``reset(seed=s)`` seeds ``self.np_random``, and the engine's torch generator (start choice and all sampling
    noise) is drawn from it: the same seed and the same actions give the same frames, bit for bit.

    ## Engine

    ``env.unwrapped.world`` is the ``worldsim.WorldModel`` behind the env (``predict``, ``set_sampler`` ...).

    ## Keyboard

    ``get_keys_to_action()`` for ``gymnasium.utils.play``: the checkpoint's ``key_map`` when it has one, else
    number keys for small Discrete spaces (see that method); ``noop`` is the do-nothing action.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 15}

    def __init__(
        self,
        checkpoint: str | Path,
        render_mode: str | None = None,
        device: str | torch.device = "cpu",
        sampler_steps: int | None = None,
        max_episode_steps: int | None = None,
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        """``checkpoint``: a checkpoint directory, a shipped world's name or a Hub repo id; ``sampler_steps``
        overrides the checkpoint's Euler steps per frame (fewer is faster and blurrier); ``precision`` fp32, bf16
        or auto (bf16 where the hardware has it natively: faster, not bit-identical to fp32); ``compile`` runs the
        world's passes compiled (``WorldModel.compile``; not under a prompt: faster steps after ~25 s of compiling in
        the first episode on a CPU)."""
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.world = load_world(checkpoint, device, precision, sampler_steps, compile)
        config = self.world.config
        # Per instance: two worlds in one process can run at different rates; play() wants an int.
        self.metadata = {**self.metadata, "render_fps": int(config.frame_rate)}
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        H, W = self.world.frame_size
        self.observation_space = spaces.Box(0, 255, (H, W, 3), np.uint8)
        self.action_space = config.action.to_gym()

        # Where the world's source env terminates exactly when it succeeds (PushT), a dream's termination is its
        # success, reported as the source env does: info["is_success"] (worldsim.evaluation.result.episode_success).
        source = source_world(config.source_env) if config.source_env else None
        self._reports_success = bool(source and source.success_reward is not None and source.success_terminates)
        self._frame: np.ndarray | None = None
        self._steps = 0
        self._window: Any = None
        self._clock: Any = None

    # ----------------------------------------------------------------- Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._frame = None  # a reset that fails on bad options leaves no episode to step on by mistake
        generator = torch.Generator().manual_seed(int(self.np_random.integers(2**63 - 1)))
        options = dict(options or {})
        unknown = set(options) - START_OPTIONS
        if unknown:
            raise InputError(f"unknown reset option(s) {sorted(unknown)}; use {sorted(START_OPTIONS)}")
        text = options.get("text")
        if options.get("start") is None and text is not None and len(self.world.starts.get("frames", ())) == 0:
            # No start frames anywhere: the prompt alone makes the opening frame (a text-to-video start).
            obs = self.world.reset_from_text(text, generator=generator)
        else:
            frames = self._start_frames(options.get("start"))
            actions = options.get("actions")
            if actions is not None:
                actions = np.asarray(actions)[None]  # (T-1, ...) -> (1, T-1, ...); the engine checks the rest
            obs = self.world.reset(frames, actions=actions, text=text, generator=generator)
        self._frame = obs[0].copy()
        self._steps = 0
        if self.render_mode == "human":
            self.render()
        return self._frame.copy(), {"frame_index": self.world.frame_index}

    def set_prompt(self, text: str | None) -> None:
        """Change the prompt mid-episode (worlds trained with text; None: no prompt). What text controls (e.g. the
        palette) follows it from the next step on while your actions keep driving::

            env.unwrapped.set_prompt("a car on a red road through white grass")
        """
        if self._frame is None:
            raise WorldsimError("call reset() before set_prompt()")
        self.world.set_prompt(text)

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict]:
        if self._frame is None:
            raise WorldsimError("call reset() before step()")
        out = self.world.step([action])  # a batch of one; the engine checks the action
        self._frame = out.frames[0].copy()
        self._steps += 1
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        if self.render_mode == "human":
            self.render()
        info: dict[str, Any] = {"frame_index": self.world.frame_index}
        if self._reports_success:
            info["is_success"] = bool(out.terminated[0])
        return self._frame.copy(), float(out.reward[0]), bool(out.terminated[0]), truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gymnasium.logger.warn(
                "render() called without a render_mode; make the env with render_mode='rgb_array' or 'human'"
            )
            return None
        if self._frame is None:
            return None
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        self._show(self._frame)
        return None

    def close(self) -> None:
        if self._window is not None:
            import pygame  # heavy: only render_mode='human' needs it

            pygame.display.quit()
            self._window = None
            self._clock = None

    # ----------------------------------------------------------------- keyboard play
    @property
    def noop(self) -> Any:
        """The do-nothing action (for ``play(..., noop=env.unwrapped.noop)``): see ``noop_action``."""
        return noop_action(self.action_space)

    def get_keys_to_action(self) -> dict[tuple[int, ...], Any]:
        """Key combinations -> actions, in the form ``gymnasium.utils.play`` takes: sorted tuples of pygame key codes.

        From the checkpoint's ``config.key_map`` when it is set. Its format: each key is one pygame key name
        (``pygame.key.key_code`` spelling: ``"up"``, ``"left"``, ``"space"``, ``"w"``) or several joined with
        ``+`` for a chord (``"up+left"``); each value is an action of the world's space (an int for Discrete, a
        list for MultiDiscrete and Box). Example for CarRacing::

            {"right": 1, "left": 2, "up": 3, "down": 4}

        Without a key map, Discrete worlds get number keys ``0``..``9`` for actions 0..9, then the letters that
        ``worldsim play`` leaves free (``DEFAULT_ACTION_KEYS``: not R, P, H, S) for 10..31. Other spaces need a key
        map (``ConfigError``).
        """
        key_map = self.world.config.key_map
        if key_map:
            return {self._chord(keys): self._key_action(keys, action) for keys, action in key_map.items()}
        space = self.action_space
        if not isinstance(space, spaces.Discrete):
            raise ConfigError(
                f"no key_map in this checkpoint's config.json and no default keys for {space}: add one, e.g. "
                '{"up": [...], "left": [...]}'
            )
        return {self._chord(c): i for i, c in enumerate(DEFAULT_ACTION_KEYS[: int(space.n)])}

    def _chord(self, keys: str) -> tuple[int, ...]:
        """``"up+left"`` -> sorted pygame key codes, the form ``play`` looks pressed keys up in."""
        codes = []
        for name in keys.split("+"):
            try:
                codes.append(key_code(name.strip()))
            except ValueError:
                raise ConfigError(
                    f"key_map key {keys!r}: {name.strip()!r} is not a pygame key name (e.g. 'up', 'space', 'w')"
                ) from None
        return tuple(sorted(codes))

    def _key_action(self, keys: str, action: Any) -> Any:
        try:
            a = self.world.check_actions([action], (1,))[0].cpu().numpy()
        except InputError as e:
            raise ConfigError(f"key_map entry {keys!r}: {e}") from None
        return int(a) if isinstance(self.action_space, spaces.Discrete) else a.astype(self.action_space.dtype)

    # ----------------------------------------------------------------- helpers
    def _start_frames(self, start: Any) -> np.ndarray | None:
        """Validate ``options["start"]`` -> uint8 (1, T, H, W, 3), or None for a shipped start context."""
        if start is None:
            if self.world.starts.get("frames") is None:
                raise InputError(
                    "this checkpoint ships no start contexts: pass reset(options={'start': frames}) with uint8 "
                    "(H, W, 3) or (T, H, W, 3) frames"
                )
            return None
        return self.world.check_frames(start, what="options['start']", one_world=True).cpu().numpy()

    def _show(self, frame: np.ndarray) -> None:
        """Draw ``frame`` scaled up in a pygame window, pump its events and keep the world's frame rate."""
        pygame = import_pygame()
        if self._window is None:
            H, W = frame.shape[:2]
            scale = max(1, WINDOW_PIXELS // max(H, W))
            try:
                pygame.display.init()
                self._window = pygame.display.set_mode((W * scale, H * scale))
            except pygame.error as e:
                raise WorldsimError(
                    f"cannot open a window ({e}); on a machine without a display set SDL_VIDEODRIVER=dummy or use "
                    "render_mode='rgb_array'"
                ) from None
            pygame.display.set_caption(f"worldsim: {self.world.config.name}")
            self._clock = pygame.time.Clock()
        surface = pygame.surfarray.make_surface(frame.swapaxes(0, 1))  # pygame surfaces are (W, H)
        self._window.blit(pygame.transform.scale(surface, self._window.get_size()), (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.metadata["render_fps"])


def noop_action(space: spaces.Space) -> Any:
    """The do-nothing action of an action space: 0 (Discrete), zeros (MultiDiscrete), or the Box's zero clipped into
    its bounds."""
    if isinstance(space, spaces.Discrete):
        return int(space.start)
    if isinstance(space, spaces.MultiDiscrete):
        return np.zeros(space.shape, dtype=space.dtype)
    return np.clip(np.zeros(space.shape, dtype=space.dtype), space.low, space.high)
