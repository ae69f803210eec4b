"""``carracing_mix``: a different driving style every episode, so a world sees what players and agents will do.

To add a style, append a ``DrivingStyle`` to ``DRIVING_STYLES`` and keep the weights summing to 1; ``driver`` takes
``CarRacingDriver``'s keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium

from worldsim.agents.carracing.driver import NOTHING, CarRacingDriver
from worldsim.agents.carracing.road_follower import RoadFollower
from worldsim.agents.policy import check_style_weights, draw_style


@dataclass(frozen=True)
class DrivingStyle:
    """One way of driving a whole episode; ``CarRacingMix`` draws one per episode by ``weight``.

    ``driver`` holds ``CarRacingDriver`` keyword arguments; ``road_gas`` set instead means the pixel road follower
    (``RoadFollower``) drives, pressing gas on that (min, max) share of its straight steps.
    """

    name: str
    weight: float
    driver: dict[str, Any] = field(default_factory=dict)
    road_gas: tuple[float, float] | None = None
    start_still: tuple[int, int] = (0, 0)
    """(min, max) steps the car first stands still with no input (a player who has not started yet)."""


DRIVING_STYLES: tuple[DrivingStyle, ...] = (
    DrivingStyle("normal", 0.14),
    DrivingStyle("slow", 0.10, {"max_speed": 50.0, "min_speed": 25.0}),
    DrivingStyle("fast", 0.08, {"max_speed": 170.0, "min_speed": 60.0, "noise": 0.05}),
    DrivingStyle(
        "stop_and_go", 0.14, {"excursion_prob": 0.02, "excursion_steps": (20, 80), "excursion_kinds": ("stop",)}
    ),
    DrivingStyle(
        "standstill",
        0.10,
        {"max_speed": 60.0, "excursion_prob": 0.03, "excursion_steps": (60, 250), "excursion_kinds": ("stop",)},
        start_still=(20, 200),
    ),
    DrivingStyle(
        "hard_braking", 0.08, {"max_speed": 150.0, "excursion_prob": 0.02, "excursion_kinds": ("brake", "stop")}
    ),
    DrivingStyle(
        "offroad",
        0.10,
        {"excursion_prob": 0.01, "excursion_steps": (60, 200), "excursion_kinds": ("veer",), "veer_widths": (3, 8)},
    ),
    DrivingStyle("spins", 0.06, {"excursion_prob": 0.01, "excursion_kinds": ("spin", "hold")}),
    DrivingStyle("random", 0.08, {"noise": 1.0}),
    DrivingStyle("road_follower", 0.12, road_gas=(0.15, 0.9)),
)
"""The documented mix behind ``worldsim record --policy carracing_mix`` (weights sum to 1): what a player or an
agent will do to the world, not just a competent lap: standing still, stop-and-go, slow and fast driving, hard
braking, long off-road excursions and recoveries, spins, random actions, and a frame-only road follower."""


class CarRacingMix:
    """A different driving style every episode, drawn from ``DRIVING_STYLES`` by the episode's seed.

    ``episode_attrs`` names the style of the current episode (the recorder stores it with the episode, so data
    cards and evaluations can split by style).
    """

    def __init__(
        self, env: gymnasium.Env, seed: int | None = None, styles: tuple[DrivingStyle, ...] = DRIVING_STYLES
    ) -> None:
        check_style_weights(styles, "driving style")
        self.env, self.styles = env, styles
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.style, self.still_left, sub_seed, rng = draw_style(self.styles, seed)
        if self.style.road_gas is not None:
            self.driver: Any = RoadFollower(self.env, sub_seed, gas_share=float(rng.uniform(*self.style.road_gas)))
        else:
            self.driver = CarRacingDriver(self.env, sub_seed, **self.style.driver)

    @property
    def episode_attrs(self) -> dict[str, str]:
        return {"style": self.style.name}

    def __call__(self, observation: Any = None) -> int:
        if self.still_left > 0:
            self.still_left -= 1
            return NOTHING
        return int(self.driver(observation))
