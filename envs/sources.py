"""Source worlds: the real environments whose frames and actions we record to train a world model.

Each family needs a little care before ``gymnasium.make``: CarRacing is recorded with discrete actions, PushT must
be asked for pixel observations, ALE and PushT register their ids only once their package is imported, Crafter
is our own wrapper. ``make_source_env`` knows these; ``frame_of`` and ``frame_rate`` give the recorder one RGB frame
per step and the clock to play it back at, whatever the env's observation is. ``source_world`` gives the rest of what
is known about an env to the code that records it, evaluates worlds of it or drives them (its default action repeat,
the seconds at the start of an episode that are not play, a policy that drives it from frames alone, what
standing still means for it).

    env = make_source_env("CarRacing-v3", seed=0)
    obs, info = env.reset()
    frame = frame_of(env, obs)  # (96, 96, 3) uint8
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import gymnasium
import numpy as np

from worldsim.errors import InputError

DEFAULT_FPS = 15
"""Playback rate for envs whose metadata does not say (``render_fps`` missing or None)."""


@dataclass(frozen=True)
class SourceWorld:
    """How to build one family of source envs."""

    ids: tuple[str, ...]
    """Env ids this entry covers; an id ending in ``/`` is a namespace prefix (``ALE/``)."""
    module: str
    """Module to import first: it registers the ids, or is the dependency ``gymnasium.make`` would miss; or none."""
    pip: str
    """What to ``pip install`` when ``module`` is missing."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``gymnasium.make`` that the caller's kwargs override."""
    frame_skip: int = 1
    """Env steps per recorded step unless ``worldsim record --frame-skip`` says otherwise: an action repeat for envs
    whose native rate is too fast for real-time play. Such data, and worlds trained on it, run at the env's native
    rate / ``frame_skip``."""
    intro_seconds: float = 0.0
    """Seconds at the start of every episode that are not play (a fixed animation); ``worldsim eval`` leaves them
    out of every rollout and reference frame."""
    driver: str = ""
    """A policy that drives the env from its frames alone, so it can drive a dreamed world too (``worldsim eval``'s
    long dreams use it); empty: none, the dreams replay recorded actions."""
    probe: str = ""
    """``module:function(env) -> {name: float}``: state the recorder logs with every frame (under the episode's
    ``infos``) for the data card, e.g. speed; empty: nothing."""
    still: str = ""
    """``module:function(state) -> (T,) bool or None``: the env's own rule for standing still, read off the state
    its probe logs (``{name: (T,) array}``; CarRacing: the car's speed below 1 unit/s), None where that state lacks
    what the rule reads. ``worldsim eval`` splits its open-loop scores by it and finds standstills with it (its
    policy-shift part); empty: the env has no such rule, and eval tells a still context by its pixels."""
    policy_family: tuple[str, ...] = ()
    """Frame-only policies of clearly different quality and style (registered names) whose returns ``worldsim eval``
    asks a world of this env to predict (its policy-shift part); empty: that part is skipped."""
    captioner: str = ""
    """``module:Class`` of the env's captioner (``worldsim.envs.captions``): ``worldsim record --captions`` describes
    its clips in words with it; empty: the env cannot be recorded with captions."""
    key_map: dict[str, Any] = field(default_factory=dict)
    """Keys -> action that worlds trained on this env's data play with (``WorldConfig.key_map``: pygame key names,
    ``+`` for chords); empty: the env/viewer defaults for the action space."""
    action_point: bool = False
    """The env's Box(2) action is a point on the frame (PushT: the pusher's absolute target on the table, drawn
    1:1): worlds trained on its data embed it per token (``DiTConfig.action_point``)."""
    success_reward: float | None = None
    """The reward of one world step that means the task is done (PushT: 1.0, its reward clip(coverage / 0.95, 0, 1)
    reaching 1 at 95% coverage); ``worldsim predict`` and ``rank`` report success rates and the mean of each
    episode's highest reward with it. None: the env has no notion of success."""
    judge: str = ""
    """``module:Class`` of the env's judge (``worldsim.envs.judges``): reads task state off any frame, real or
    dreamt, and scores it by the env's own rule (PushT: the T's pose -> coverage -> success); empty: none."""
    object_state: tuple[str, ...] = ()
    """The ``probe``'s keys that are the task object's state (PushT: the block's pose), which ``worldsim train world
    --state-weight/--moving-share`` learn from and sample by; empty: none."""
    success_terminates: bool = False
    """The env terminates exactly when it succeeds (PushT), so an episode succeeded when it terminated, in the real
    env and in a dream, where the world's termination head is then a success detector (``predict.episode_success``)."""

    def covers(self, env_id: str) -> bool:
        return any(env_id.startswith(i) if i.endswith("/") else env_id == i for i in self.ids)

    def stands_still(self, state: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Per frame of ``state`` (what the probe logged, ``{name: (T,) array}``), whether the env stands still by
        its own rule (``still``); None where it has none or the state does not tell."""
        if not self.still:
            return None
        module, name = self.still.split(":")
        return getattr(importlib.import_module(module), name)(state)


CAPTIONS = "worldsim.envs.captions"

SOURCE_WORLDS: tuple[SourceWorld, ...] = (
    # CarRacing runs at 50 fps; its worlds at 25. It opens with a one-second zoom-in; 2 s (50 frames at 25 fps) are
    # left out, the skip the shipped world's eval numbers were measured with.
    SourceWorld(
        ("CarRacing-v3",),
        "Box2D",
        "box2d==2.3.10",
        {"continuous": False},
        frame_skip=2,
        intro_seconds=2.0,
        driver="road",
        probe="worldsim.agents.carracing:car_state",
        still="worldsim.agents.carracing:car_stands_still",
        policy_family=("road", "road_slow", "road_fast", "road_stopgo", "road_weave", "road_brake", "random"),
        captioner=f"{CAPTIONS}:CarRacingCaptioner",
        key_map={"up": 3, "down": 4, "left": 2, "right": 1},  # gas, brake, steer (the discrete actions' order)
    ),
    SourceWorld(
        ("gym_pusht/PushT-v0",),
        "gym_pusht",
        "gym-pusht",
        {"obs_type": "pixels"},
        probe="worldsim.agents.pusht:pusht_state",
        captioner=f"{CAPTIONS}:PushTCaptioner",
        action_point=True,
        success_reward=1.0,  # gym_pusht: reward clip(coverage / 0.95, 0, 1); terminated = success = coverage > 0.95
        success_terminates=True,
        judge="worldsim.envs.judges:PushTJudge",
        object_state=("block_x", "block_y", "block_angle"),
    ),
    SourceWorld(("ALE/",), "ale_py", "ale-py", captioner=f"{CAPTIONS}:AtariCaptioner"),
    SourceWorld(("worldsim/Crafter-v0",), "crafter", "crafter", captioner=f"{CAPTIONS}:CrafterCaptioner"),
)
ALIASES = {"Crafter": "worldsim/Crafter-v0"}
KNOWN = "CarRacing-v3, gym_pusht/PushT-v0, ALE/<Game>-v5 (e.g. ALE/Pong-v5), worldsim/Crafter-v0 (alias Crafter)"


def canonical_id(env_id: str) -> str:
    """The Gymnasium id an env name stands for (``Crafter`` -> ``worldsim/Crafter-v0``); other names unchanged."""
    return ALIASES.get(env_id, env_id)


def source_world(env_id: str) -> SourceWorld:
    """What is known about a source env: its entry in ``SOURCE_WORLDS``, or a plain Gymnasium env's defaults."""
    env_id = canonical_id(env_id)
    return next((w for w in SOURCE_WORLDS if w.covers(env_id)), SourceWorld((env_id,), module="", pip=""))


def _import(module: str, pip: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise InputError(f"{module} is not installed: pip install {pip}") from e


def make_source_env(env_id: str, seed: int | None = None, **kwargs: Any) -> gymnasium.Env:
    """A source env that renders RGB frames; ``kwargs`` go to ``gymnasium.make`` over the family's defaults.

    With a ``seed`` the env is reset once with it (Gymnasium seeds through ``reset``) and its action space is
    seeded too, so the unseeded resets a recorder makes afterwards replay the same episodes.
    """
    env_id = canonical_id(env_id)
    world = source_world(env_id)
    if world.module:
        # Importing registers the family's ids (ale_py, gym_pusht; worldsim/Crafter-v0 came with this package)
        # or proves the dependency is there, so a missing one reads as what to install, not as an unknown id.
        _import(world.module, world.pip)
    kwargs = {**world.defaults, **kwargs}
    kwargs.setdefault("render_mode", "rgb_array")
    try:
        env = gymnasium.make(env_id, **kwargs)
    except gymnasium.error.DependencyNotInstalled as e:
        raise InputError(f"{env_id} needs a missing package: {str(e).splitlines()[0]}") from e
    except ImportError as e:
        raise InputError(f"{env_id} needs {e.name or 'a package'}, which is not installed: pip install it") from e
    except gymnasium.error.UnregisteredEnv as e:
        raise InputError(f"unknown source world {env_id!r}: use one of {KNOWN}, or a registered Gymnasium id") from e
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _is_rgb(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 3 and x.shape[-1] == 3


def frame_of(env: gymnasium.Env, observation: Any) -> np.ndarray:
    """The RGB frame (H, W, 3) uint8 for this step: the observation when it is one, else ``env.render()``."""
    if isinstance(observation, dict) and "pixels" in observation:
        observation = observation["pixels"]
    if _is_rgb(observation):
        return observation
    frame = env.render()
    if not _is_rgb(frame):
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise InputError(
            f"{env.spec.id if env.spec else env} gives no RGB frame (render() returned {got}): make it with "
            'render_mode="rgb_array"'
        )
    return frame


def frame_rate(env: gymnasium.Env) -> int:
    """Frames per second to play recorded frames back at, from the env's ``render_fps`` metadata."""
    fps = env.metadata.get("render_fps")
    return int(fps) if fps else DEFAULT_FPS
