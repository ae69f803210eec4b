"""worldsim: a learned, playable simulator.

``from worldsim import WorldModel`` gives the inference engine; see README.md for the CLI.
"""

from worldsim.config import ActionSpec, AutoencoderConfig, DiTConfig, SamplerConfig, WorldConfig
from worldsim.engine import StepOutput, WorldModel
from worldsim.errors import WorldsimError

__all__ = [
    "ActionSpec",
    "AutoencoderConfig",
    "DiTConfig",
    "SamplerConfig",
    "StepOutput",
    "WorldConfig",
    "WorldModel",
    "WorldsimError",
]
__version__ = "0.1.0"
