"""worldsim: a learned, playable simulator.

``from worldsim import WorldModel`` gives the inference engine; see README.md for the CLI. Importing worldsim also
registers its Gymnasium ids (``worldsim/WorldModel-v0``, one ``worldsim/<World>-v0`` per shipped world): cheap,
since entry points are strings and no model is loaded until ``gymnasium.make``.
"""

from worldsim import envs  # noqa: F401  (registers the worldsim/* Gymnasium ids, as ale_py and gym_pusht do)
from worldsim.config import ActionSpec, AutoencoderConfig, DiTConfig, SamplerConfig, WorldConfig
from worldsim.engine import StepOutput, WorldModel
from worldsim.errors import WorldsimError
from worldsim.evaluation.predict import PredictResult, predict
from worldsim.evaluation.rank import RankResult, rank
from worldsim.version import __version__

__all__ = [
    "ActionSpec",
    "AutoencoderConfig",
    "DiTConfig",
    "PredictResult",
    "RankResult",
    "SamplerConfig",
    "StepOutput",
    "WorldConfig",
    "WorldModel",
    "WorldsimError",
    "__version__",
    "predict",
    "rank",
]

