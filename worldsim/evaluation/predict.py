"""``worldsim predict``: what will a policy do? Its rollouts dreamed in a world, beside the real env with ``--real``.

Examples::

    worldsim predict --policy road --episodes 8 --horizon 200          # dreams from the world's start contexts
    worldsim predict --policy road --real --json out.json --video grid.mp4   # the real env beside each dream
    worldsim predict --policy mypkg.drivers:make --data data/heldout.h5 --horizon 100
    worldsim predict --world runs/pusht --policy mypkg.pusht:make --episodes 50 --horizon 300 --real   # success rates

    import worldsim
    result = worldsim.predict("carracing", "road", episodes=4, horizon=100, real=True)
    result.summary()   # {'dream_return_mean': ..., 'dream_return_ci95': [low, high], 'return_mae': ...}

The policy sees only frames (``policy(frame uint8 H×W×3) -> action``, built by a factory ``(action_space, seed)``
or ``(env, seed)``; see ``worldsim.agents.policy.make_seeing_policy``). It drives all the dreams together, one
engine call per step. Each dream starts from ``context`` frames: a start context the world ships, the start of a
recorded episode (``data``), or with ``real`` the real env's own first frames after its intro (CarRacing's zoom-in).
There the episode forks: the real env goes on under the policy, and the dream goes on from the same frames under
another instance of the same policy, which has been shown the frames the real one saw, so both sides start in the
same state. The dream's return is what its reward head predicts; an episode ends where its termination fires (the
head's in the dream, the env's in reality), as an env episode would.

**Success.** Where the world's source env has a notion of success (``SourceWorld.success_reward``: PushT's reward
reaches 1.0 at 95% coverage), each episode also reports its highest per-step reward and whether it succeeded, by
one rule for both sides (``episode_success``): an env that terminates exactly when it succeeds
(``SourceWorld.success_terminates``, PushT) succeeded when the episode terminated, so in the dream when the world's
termination head fired. That head is a classifier trained on exactly the success event and it is what ends the
dream, as success ends the real episode; the reward head is a regression whose target reaches 1.0 only on that same
last frame, so a threshold on it would need a tolerance to tune. Other envs succeed when the reward reaches
``success_reward`` (less ``SUCCESS_TOLERANCE``).

**Judges.** Where the source env has a judge (``SourceWorld.judge``, ``worldsim.envs.judges``; PushT), the dream is
scored as the real env scores itself: each dreamt frame's state is read off its pixels (PushT: the T's pose) and
the env's own rule gives its reward (PushT: coverage / 0.95, capped at 1), so the dream's return, highest reward
and success are the judge's, and a dream ends where the judged reward reaches ``success_reward`` (as a PushT
episode ends on success). The heads' return and success come beside them (``dream_head_*``); ``judge=False``
(``--no-judge``) scores by the heads alone. ``summary()`` gives success rates, mean highest reward and mean
return, each with a 95% bootstrap interval over episodes.

**Actions.** A Box action outside the bounds (PushT's targets outside [0, 512]^2) is clipped into them, the same
clipped action going to the dream and the real env, with one ``ActionClippedWarning`` per policy naming it, the step
and the episode (``warnings.simplefilter("error", ActionClippedWarning)`` refuses instead). A NaN or infinite action,
a Discrete action out of range (no nearest choice means the same), or one of the wrong shape is refused: a one-line
InputError naming the policy, the step and the episode.

Episode i has its own seed, ``seed + i``: the noise of its dream, its policy's seed, its real env's seed and its
start context (start ``(seed + i) mod S`` of the world's S, or recorded episode ``(seed + i) mod E``), so a result
does not depend on how many episodes run together, nor on which other policies dream beside it
(``worldsim.rank`` dreams several policies in one batch through ``run_policies``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worldsim.checkpoint import check_output_path
from worldsim.engine import WorldModel
from worldsim.errors import ConfigError
from worldsim.evaluation.dream import DreamConfig, run_policies
from worldsim.evaluation.report import format_predict_table, write_predict_json, write_predict_video
from worldsim.evaluation.result import PredictResult
from worldsim.precision import Precision
from worldsim.video import check_video_path


@dataclass(kw_only=True)
class PredictConfig(DreamConfig):
    """What ``worldsim predict`` runs and writes (the world and the dreams' options: ``DreamConfig``)."""

    policy: str
    """What acts, seeing only frames: a name in worldsim.agents.SEEING_POLICIES (random, idle, road, ...) or
    module:factory, a factory (action_space, seed) or (env, seed) of policy(frame) -> action (the env it gets has
    only action_space)."""
    episodes: int = 8
    """Episodes (dreams), all run together; episode i uses seed + i."""
    real: bool = False
    """Also run the world's real source env: each dream starts from the real env's first frames after its intro,
    and the real env goes on beside it under the same policy."""
    data: str = ""
    """Start the dreams from episodes of this trajectory file instead of the world's shipped start contexts."""
    json: str = ""
    """Also write every number (per episode and the aggregate) as JSON to this file."""
    video: str = ""
    """Write a grid of the episodes to this .mp4 or .gif, each cell real | dream (dream only without --real)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.json:
            check_output_path(self.json)  # before the rollouts, not after
        if self.video:
            check_video_path(self.video)
        if self.real and self.data:
            raise ConfigError("--real and --data both give the dreams their start: pick one")


def predict(
    world: WorldModel | str,
    policy: str | Callable[..., Any],
    episodes: int = 8,
    horizon: int = 200,
    real: bool = False,
    data: str | None = None,
    seed: int = 0,
    context: int = 4,
    keep_frames: bool = False,
    progress: bool = False,
    *,
    device: str = "cpu",
    precision: Precision = "fp32",
    judge: bool = True,
) -> PredictResult:
    """Run ``episodes`` dreams of ``horizon`` steps under ``policy`` (and with ``real`` the real env beside each).

    world: a loaded ``WorldModel`` (its current episode is replaced) or a checkpoint dir / shipped name / Hub id,
        loaded on ``device`` at ``precision``.
    policy: a name that needs only frames (``SEEING_POLICIES``: road, random), ``module:factory`` or a factory
        callable, ``(action_space, seed)`` or ``(env, seed)``; called once per episode (and once more per episode
        for the real env's side), with seed ``seed + i``.
    data: start the dreams from this trajectory file's episodes instead of the world's start contexts.
    context: frames each dream starts from.
    keep_frames: also return the frames (``dream_frames``, and ``real_frames`` with ``real``).
    judge: score the dreams by the source env's judge where it has one (the env's rule on the state read off each
        dreamt frame; the heads' numbers come beside it); False: by the world's heads alone.

    Box actions outside the bounds are clipped with one ``ActionClippedWarning`` per policy; NaN or infinite actions
    are refused (see the module docstring). Inputs are checked before anything is loaded or run: one-line
    InputError / ConfigError.
    """
    runs = run_policies(world, [policy], episodes, horizon, real, data, seed, context,
                        episodes if keep_frames else 0, progress, device=device, precision=precision,
                        judge=judge)  # fmt: skip
    return runs.results[0]


def run(cfg: PredictConfig) -> int:
    """``worldsim predict``: dream (and with ``real`` play) the episodes, print the table, write the JSON and video."""
    outputs = ("json", "video", "data")  # the config's other fields are predict()'s own arguments
    settings = {name: value for name, value in vars(cfg).items() if name not in outputs}
    result = predict(**settings, data=cfg.data or None, keep_frames=bool(cfg.video), progress=True)
    if cfg.json:
        write_predict_json(result, cfg.json)
    if cfg.video:
        write_predict_video(result, cfg.video)
    print(format_predict_table(result))
    return 0
