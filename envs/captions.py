"""Captions from simulator state: what a clip of a source env shows, in words, for text-to-video training.

No captioned video can be downloaded here, so the captions are read off the simulators while they are recorded.
One captioner per source family (``SourceWorld.captioner`` names it):

* CarRacing: the episode's **colour palette** (road and grass colours picked from named colours and set on the env
  before its track is built, the way its ``domain_randomize`` option sets random ones) and the car's **motion**
  (standing still, accelerating, cruising, braking, turning left/right, off the road);
* PushT: what the pusher does to the T (moving towards it, pushing it left/right/up/down, rotating it, the T at
  the target);
* Crafter: the biome, day or night, what is near, and what the player does (from crafter's world state);
* ALE games: the game's name and its events (scoring, conceding, losing a life).

A captioner describes every frame of an episode with a short phrase; :func:`caption_spans` cuts the episode into
spans of one phrase (short flickers are merged into their neighbours) and the captioner turns each into a sentence:

    captioner = make_captioner("CarRacing-v3")
    attrs = captioner.prepare(env, seed)          # before env.reset: sets the palette, returns its names
    phrases = [captioner.describe(env, None, 0.0, {})] + [captioner.describe(env, a, r, info) for ...]
    spans = [(s, e, captioner.caption(attrs, p)) for s, e, p in caption_spans(phrases)]

Spans are ``(start, end, text)`` over the episode's frames, ``end`` exclusive (``worldsim.data.schema``).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

import numpy as np

from worldsim.agents.carracing import STILL_SPEED, car_speed, on_track
from worldsim.agents.policy import load_factory
from worldsim.envs.sources import KNOWN, source_world
from worldsim.errors import InputError

MIN_SPAN_FRAMES = 8
"""A phrase must hold this many frames to get a span of its own; shorter runs join a neighbour."""


def caption_spans(phrases: list[str], min_frames: int = MIN_SPAN_FRAMES) -> list[tuple[int, int, str]]:
    """Spans of one phrase as ``(start, end, phrase)``, covering every frame.

    Each frame first takes the most common phrase of the ``min_frames`` frames around it (so a noisy sequence,
    e.g. a random policy's actions, reads as what it mostly does); runs still shorter than ``min_frames`` then join
    the span before them (an opening one the span after it), and a span says what most of its frames show.
    """
    n, half = len(phrases), min_frames // 2
    smooth = []
    for i, own in enumerate(phrases):
        window = Counter(phrases[max(0, i - half) : i + half + 1])
        top = max(window.values())
        smooth.append(own if window[own] == top else next(p for p in window if window[p] == top))
    spans: list[list[Any]] = []
    start = 0
    for phrase, group in itertools.groupby(smooth):
        end = start + len(list(group))
        if spans and (end - start < min_frames or spans[-1][2] == phrase):
            spans[-1][1] = end
        elif spans and spans[-1][1] - spans[-1][0] < min_frames:
            spans[-1] = [spans[-1][0], end, phrase]  # a short opening run joins this one
        else:
            spans.append([start, end, phrase])
        start = end
    assert start == n
    # A span grown from short runs says what most of its frames show.
    out: list[tuple[int, int, str]] = []
    for a, b, _ in spans:
        phrase = Counter(phrases[a:b]).most_common(1)[0][0]
        if out and out[-1][2] == phrase:
            out[-1] = (out[-1][0], b, phrase)
        else:
            out.append((int(a), int(b), str(phrase)))
    return out


class Captioner:
    """Describes one source env's episodes; subclasses read its state.

    ``palettes`` is for the sources drawn in named colours (CarRacing: see :func:`palette_pairs`); others ignore it.
    """

    def __init__(self, palettes: str = "train") -> None:
        self.which = palettes

    def prepare(self, env: Any, seed: int) -> dict[str, str]:
        """Before ``env.reset(seed=seed)``: set up the episode (e.g. its palette); returns episode attributes that
        the recorder stores with the episode and :meth:`caption` gets back."""
        return {}

    def describe(self, env: Any, action: Any, reward: float, info: dict[str, Any]) -> str:
        """A short phrase for the frame the env shows now (``action`` None for the reset frame)."""
        raise NotImplementedError

    def caption(self, attrs: dict[str, str], phrase: str) -> str:
        """The sentence for a span of frames described by ``phrase``."""
        return phrase


# ------------------------------------------------------------------------------------------------------ CarRacing
ROAD_COLOURS: dict[str, tuple[int, int, int]] = {
    "gray": (102, 102, 102),
    "black": (30, 30, 30),
    "red": (170, 50, 50),
    "blue": (50, 70, 180),
    "brown": (120, 75, 35),
    "purple": (120, 50, 150),
}
"""Named road colours (the env's own road is gray, 102,102,102)."""
GRASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "green": (102, 230, 102),
    "yellow": (225, 215, 80),
    "white": (235, 235, 235),
    "orange": (235, 150, 60),
    "cyan": (90, 215, 215),
    "pink": (235, 140, 200),
}
"""Named grass colours (the env's own grass is green, 102,230,102). The field between the grass tiles (the env's
``bg_color``) is the same colour a shade darker, as in the env (102,204,102 beside 102,230,102)."""
BACKGROUND_SHADE = 0.89
HELD_OUT_PALETTES: tuple[tuple[str, str], ...] = (
    ("gray", "white"),
    ("black", "yellow"),
    ("red", "cyan"),
    ("blue", "orange"),
    ("brown", "pink"),
    ("purple", "green"),
)
"""(road, grass) combinations never recorded for training: each road and each grass colour is in exactly one, so
every colour is seen in training but these pairs never together (the unseen-combination test of text following)."""
DEFAULT_PALETTE = ("gray", "green")
"""The env's own colours; ``palettes="default"`` records only these (the data the shipped world is trained on)."""

ACCELERATING = 0.3
"""Speed gained per recorded step (1/25 s) above which the car accelerates (gas adds ~0.5-2 per step)."""
BRAKING = -1.0
"""Speed change per step below which the car brakes (braking loses ~5 per step; coasting ~0.1)."""
TURNING = 1.0
"""Angular speed (rad/s) above which the car turns; positive is to the left."""


def palette_pairs(which: str = "train") -> list[tuple[str, str]]:
    """(road, grass) pairs: ``train`` (all but the held-out ones), ``held_out``, ``all`` or ``default``."""
    every = list(itertools.product(ROAD_COLOURS, GRASS_COLOURS))
    if which == "all":
        return every
    if which == "held_out":
        return list(HELD_OUT_PALETTES)
    if which == "default":
        return [DEFAULT_PALETTE]
    if which == "train":
        return [p for p in every if p not in HELD_OUT_PALETTES]

    raise InputError(f"--palettes must be train, held_out, all or default, got {which!r}")


def set_palette(env: Any, road: str, grass: str) -> None:
    """Colour a CarRacing env; takes effect at its next reset (the track's tiles take the road colour then)."""
    u = env.unwrapped
    u.road_color = np.array(ROAD_COLOURS[road], dtype=np.float64)
    u.grass_color = np.array(GRASS_COLOURS[grass], dtype=np.float64)
    u.bg_color = np.round(u.grass_color * BACKGROUND_SHADE)


def carracing_caption(road: str, grass: str, motion: str) -> str:
    return f"a car on a {road} road through {grass} grass, {motion}"


class CarRacingCaptioner(Captioner):
    """A palette per episode (from ``palette_pairs(palettes)``, by the episode's seed) and the car's motion."""

    def __init__(self, palettes: str = "train") -> None:
        super().__init__(palettes)
        self.choices = palette_pairs(palettes)
        self.speed = 0.0

    def prepare(self, env: Any, seed: int) -> dict[str, str]:
        road, grass = self.choices[np.random.default_rng(seed).integers(len(self.choices))]
        set_palette(env, road, grass)
        self.speed = 0.0
        return {"road_colour": road, "grass_colour": grass}

    def describe(self, env: Any, action: Any, reward: float, info: dict[str, Any]) -> str:
        speed = car_speed(env)
        change, self.speed = speed - self.speed, speed
        turn = float(env.unwrapped.car.hull.angularVelocity)
        if speed < STILL_SPEED:
            return "standing still"
        if not on_track(env):
            return "driving off the road"
        if change < BRAKING:
            return "braking"
        if abs(turn) > TURNING:
            return "turning left" if turn > 0 else "turning right"
        if change > ACCELERATING:
            return "accelerating"
        return "cruising"

    def caption(self, attrs: dict[str, str], phrase: str) -> str:
        return carracing_caption(attrs["road_colour"], attrs["grass_colour"], phrase)


# ------------------------------------------------------------------------------------------------------ PushT
PUSH_SPEED = 0.4
"""Block displacement (PushT's 512-unit board) per recorded step above which the T is being pushed."""
ROTATE_SPEED = 0.02
"""Block rotation (rad) per step above which the T is being rotated."""
AT_TARGET = 0.9
"""Coverage of the target area above which the T is at the target."""


class PushTCaptioner(Captioner):
    """What the pusher does to the T, from the block's pose and the contacts (image y points down, as the state's)."""

    def __init__(self, palettes: str = "train") -> None:
        super().__init__(palettes)
        self.pose: np.ndarray | None = None
        self.gap = float("inf")

    def prepare(self, env: Any, seed: int) -> dict[str, str]:
        self.pose, self.gap = None, float("inf")
        return {}

    def describe(self, env: Any, action: Any, reward: float, info: dict[str, Any]) -> str:
        u = env.unwrapped
        pose = np.array([*u.block.position, u.block.angle], dtype=np.float64)
        gap = float(np.hypot(*(np.asarray(u.agent.position) - pose[:2])))
        previous, self.pose = self.pose, pose
        closer, self.gap = gap < self.gap - 0.5, gap
        if info.get("coverage", 0.0) > AT_TARGET:
            return "the T reaches the target"
        if previous is not None:
            dx, dy, da = pose - previous
            if abs(da) > ROTATE_SPEED:
                return "the pusher rotates the T " + ("clockwise" if da > 0 else "counterclockwise")
            if np.hypot(dx, dy) > PUSH_SPEED:
                direction = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
                return f"the pusher pushes the T {direction}"
        return "the pusher moves towards the T" if closer else "the pusher moves away from the T"

    def caption(self, attrs: dict[str, str], phrase: str) -> str:
        return f"PushT, a blue pusher and a gray T on a table: {phrase}"


# ------------------------------------------------------------------------------------------------------ Crafter
BIOMES = {"tree": "in a forest", "water": "by a lake", "sand": "on a beach", "stone": "in the mountains",
          "path": "in a cave", "grass": "on grassland", "lava": "near lava"}  # fmt: skip
"""The biome is named after the most common of these materials around the player."""
CREATURES = ("cow", "zombie", "skeleton")
ACTIVITIES = {"move_left": "walks", "move_right": "walks", "move_up": "walks", "move_down": "walks",
              "do": "hits what is in front", "sleep": "sleeps"}  # fmt: skip
"""What the player visibly does for an action; other actions (noop, a place or make without the materials) change
nothing on screen: the player stands still. A new achievement names itself instead (``collects wood``)."""
VIEW_RADIUS = 4
"""Cells around the player that count as near (crafter's local view is 9x9)."""


class CrafterCaptioner(Captioner):
    """Biome, daylight, creatures near and what the player does (a new achievement by name)."""

    def prepare(self, env: Any, seed: int) -> dict[str, str]:
        self.achievements: dict[str, int] = {}
        return {}

    def describe(self, env: Any, action: Any, reward: float, info: dict[str, Any]) -> str:
        game = env.unwrapped._world  # crafter.Env
        world, player = game._world, game._player
        x, y = (int(v) for v in player.pos)
        r = VIEW_RADIUS
        area = world._mat_map[max(0, x - r) : x + r + 1, max(0, y - r) : y + r + 1].ravel()
        names = [world._mat_names[i] for i in area]
        counts = {m: names.count(m) for m in BIOMES}
        biome = BIOMES[max(counts, key=lambda m: counts[m])]
        time = "by day" if world.daylight > 0.5 else "at night"
        _, objects = world.nearby((x, y), r)
        near = sorted({type(o).__name__.lower() for o in objects} & set(CREATURES))
        achieved = [k for k, v in info.get("achievements", {}).items() if v > self.achievements.get(k, 0)]
        self.achievements = dict(info.get("achievements", self.achievements))
        if achieved:
            activity = crafter_achievement(achieved[0])
        elif action is None:
            activity = "stands still"
        else:
            activity = ACTIVITIES.get(env.unwrapped.action_names[int(action)], "stands still")
        with_ = f" near a {' and a '.join(near)}" if near else ""
        return f"{biome} {time}{with_}, the player {activity}"

    def caption(self, attrs: dict[str, str], phrase: str) -> str:
        return f"Crafter, {phrase}"


def crafter_achievement(name: str) -> str:
    """``collect_wood`` -> ``collects wood``, ``make_wood_pickaxe`` -> ``makes a wood pickaxe``, ``eat_cow`` ->
    ``eats a cow``, ``wake_up`` -> ``wakes up``."""
    verb, _, thing = name.partition("_")
    thing = thing.replace("_", " ")
    if verb in ("collect", "wake"):
        return f"{verb}s {thing}"
    return f"{verb}s a {thing}"


# ------------------------------------------------------------------------------------------------------ ALE
EVENT_FRAMES = 8
"""Frames an ALE event (a point, a lost life) colours the phrase after it happens."""


class AtariCaptioner(Captioner):
    """The game's name and its events: scoring, conceding, losing a life (from rewards and ``info["lives"]``)."""

    def __init__(self, palettes: str = "train") -> None:
        super().__init__(palettes)
        self.lives: int | None = None
        self.event, self.since = "", EVENT_FRAMES

    def prepare(self, env: Any, seed: int) -> dict[str, str]:
        self.lives, self.event, self.since = None, "", EVENT_FRAMES
        return {"game": atari_game_name(env.spec.id if env.spec else "")}

    def describe(self, env: Any, action: Any, reward: float, info: dict[str, Any]) -> str:
        lives = info.get("lives")
        event = ""
        if reward > 0:
            event = "the player scores"
        elif reward < 0:
            event = "the opponent scores"
        if lives is not None and self.lives is not None and lives < self.lives:
            event = "the player loses a life"
        self.lives = lives if lives is not None else self.lives
        if event:
            self.event, self.since = event, 0
        else:
            self.since += 1
        return self.event if self.since < EVENT_FRAMES else "the game goes on"

    def caption(self, attrs: dict[str, str], phrase: str) -> str:
        return f"the Atari game {attrs.get('game', 'unknown')}: {phrase}"


def atari_game_name(env_id: str) -> str:
    """``ALE/SpaceInvaders-v5`` -> ``Space Invaders``."""
    base = re.sub(r"-v\d+$", "", env_id.split("/")[-1])
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base)


def make_captioner(env_id: str, **kwargs: Any) -> Captioner:
    """The captioner of a source env (``SourceWorld.captioner``); InputError when it has none."""
    spec = source_world(env_id).captioner
    if not spec:
        raise InputError(f"--captions: no captioner for {env_id} (captioned sources: {KNOWN})")
    return load_factory(spec)(**kwargs)
