"""Typed configuration: one dataclass per component, validated on construction.

Every config round-trips through plain JSON (``to_dict`` / ``from_dict``) so a checkpoint's
``config.json`` fully describes the model without pickling anything.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from gymnasium import spaces

from worldsim.errors import ConfigError

CONFIG_VERSION = 1
"""Bumped whenever a config change makes older checkpoints unloadable."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class ActionSpec:
    """A Gymnasium action space reduced to what the action encoder needs, JSON-serialisable."""

    kind: str = "discrete"
    """One of ``discrete``, ``multi_discrete``, ``box``."""
    n: int = 1
    """Number of choices (``discrete``)."""
    nvec: list[int] = field(default_factory=list)
    """Choices per component (``multi_discrete``)."""
    shape: list[int] = field(default_factory=list)
    """Action shape (``box``)."""
    low: list[float] = field(default_factory=list)
    """Flattened lower bounds (``box``), used to normalise actions to [-1, 1]."""
    high: list[float] = field(default_factory=list)
    """Flattened upper bounds (``box``)."""

    def __post_init__(self) -> None:
        _check(self.kind in ("discrete", "multi_discrete", "box"), f"unknown action kind {self.kind!r}")
        if self.kind == "discrete":
            _check(self.n >= 1, "a discrete action space needs n >= 1")
        if self.kind == "multi_discrete":
            _check(len(self.nvec) > 0 and min(self.nvec) >= 1, "multi_discrete needs a non-empty nvec >= 1")
        if self.kind == "box":
            size = self.flat_size
            _check(size > 0, "a box action space needs a non-empty shape")
            _check(len(self.low) == size and len(self.high) == size, "box low/high must match its shape")

    @property
    def flat_size(self) -> int:
        """Number of scalars in one action."""
        if self.kind == "discrete":
            return 1
        if self.kind == "multi_discrete":
            return len(self.nvec)
        size = 1
        for s in self.shape:
            size *= s
        return size

    @classmethod
    def from_gym(cls, space: Any) -> ActionSpec:
        """Build from a ``gymnasium.spaces`` Discrete, MultiDiscrete or Box."""
        if isinstance(space, spaces.Discrete):
            _check(int(space.start) == 0, "Discrete action spaces must start at 0")
            return cls(kind="discrete", n=int(space.n))
        if isinstance(space, spaces.MultiDiscrete):
            return cls(kind="multi_discrete", nvec=[int(v) for v in space.nvec.reshape(-1)])
        if isinstance(space, spaces.Box):
            low = [float(v) for v in space.low.reshape(-1)]
            high = [float(v) for v in space.high.reshape(-1)]
            _check(all(abs(v) < 1e30 for v in low + high), "Box action spaces must be bounded")
            return cls(kind="box", shape=list(space.shape), low=low, high=high)
        raise ConfigError(f"unsupported action space {space!r}: use Discrete, MultiDiscrete or Box")

    def to_gym(self) -> Any:
        """The matching ``gymnasium.spaces`` object."""
        if self.kind == "discrete":
            return spaces.Discrete(self.n)
        if self.kind == "multi_discrete":
            return spaces.MultiDiscrete(np.array(self.nvec, dtype=np.int64))
        shape = tuple(self.shape)
        low = np.array(self.low, dtype=np.float32).reshape(shape)
        high = np.array(self.high, dtype=np.float32).reshape(shape)
        return spaces.Box(low, high, dtype=np.float32)


@dataclass
class AutoencoderConfig:
    """Per-frame convolutional VAE."""

    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    """Channel width at each resolution level; the spatial factor is 2 ** (len(widths) - 1)."""
    latent_channels: int = 8
    """Channels of the latent map."""
    blocks_per_level: int = 1
    """Residual blocks at each level of the encoder and decoder."""
    kl_weight: float = 1e-6
    """Weight of the KL term; small, so latents stay informative but smooth."""

    def __post_init__(self) -> None:
        _check(len(self.widths) >= 2, "autoencoder needs at least two levels")
        _check(all(w > 0 and w % 8 == 0 for w in self.widths), "autoencoder widths must be multiples of 8")
        _check(self.latent_channels > 0, "latent_channels must be positive")

    @property
    def factor(self) -> int:
        """Spatial downsampling factor from pixels to latents."""
        return 2 ** (len(self.widths) - 1)


@dataclass
class DiTConfig:
    """Diffusion Transformer over spacetime latent patches."""

    width: int = 256
    """Token width."""
    depth: int = 6
    """Number of transformer blocks."""
    heads: int = 4
    """Attention heads (width must divide evenly)."""
    patch: int = 2
    """Latent patch size: each frame becomes (h / patch) * (w / patch) tokens."""
    mlp_ratio: float = 4.0
    """Hidden width of each MLP relative to ``width``."""
    text_dim: int = 0
    """Width of the frozen text encoder's token embeddings; 0 builds no text cross-attention."""
    max_frames: int = 16
    """Frames per training clip; the sampler's visible window (sinks + window) must not exceed it."""
    rope_theta_time: float = 1000.0
    """RoPE base for the time axis."""
    rope_theta_space: float = 100.0
    """RoPE base for the y and x axes."""
    action_point: bool = False
    """The Box(2) action is a point on the frame (a pointer; PushT's pusher target): every token also gets an
    embedding of its offset from it (``worldsim.models.conditioning.ActionPoint``). Set from the source env's
    adapter (``SourceWorld.action_point``)."""
    state_dim: int = 0
    """Outputs of the state head (``worldsim.models.dit.StateHead``): the task object's state that the world was
    trained to read off its frames (``WorldConfig.state``); 0 builds none."""

    def __post_init__(self) -> None:
        _check(self.width % self.heads == 0, "width must be divisible by heads")
        _check((self.width // self.heads) % 8 == 0, "head width must be a multiple of 8 (3-D RoPE split)")
        _check(self.depth >= 1 and self.patch >= 1, "depth and patch must be >= 1")
        _check(self.max_frames >= 2, "max_frames must be >= 2")


ModelSize = Literal["XS", "S", "M", "B"]
"""The names in ``DIT_SIZES``, as a type the CLI shows as choices."""

DIT_SIZES: dict[str, dict[str, int]] = {
    "XS": dict(width=64, depth=2, heads=2),
    "S": dict(width=256, depth=6, heads=4),
    "M": dict(width=384, depth=10, heads=6),
    "B": dict(width=512, depth=12, heads=8),
}
"""Named backbone sizes (DiT's ``DiT_models``). ``S`` is the size meant for the default 64x64 world."""


def dit_config(size: str, **overrides: Any) -> DiTConfig:
    """A ``DiTConfig`` for a named size, with any field overridden."""
    if size not in DIT_SIZES:
        raise ConfigError(f"unknown model size {size!r}; choose one of {', '.join(DIT_SIZES)}")
    return DiTConfig(**{**DIT_SIZES[size], **overrides})


@dataclass
class SamplerConfig:
    """How the engine turns the network into frames."""

    steps: int = 4
    """Euler steps per generated frame."""
    shift: float = 1.0
    """Where the Euler steps fall (SD3's shift: level s -> shift * s / (1 + (shift - 1) * s)); 1: evenly spaced,
    above 1: more of them at high noise."""
    context_noise: float = 0.05
    """Noise level at which finished frames are written into the cache (GameNGen / Oasis)."""
    action_cfg: float = 1.0
    """Classifier-free guidance scale on the action; 1.0 disables the extra pass."""
    text_cfg: float = 1.0
    """Classifier-free guidance scale on the text prompt; 1.0 disables the extra pass."""
    window: int = 12
    """Frames of rolling window visible to a new frame (the frame itself included)."""
    sinks: int = 1
    """Pinned frames from the start of the episode that stay visible forever."""
    pyramid_delay: int = 1
    """Multi-frame prediction: Euler steps between the starts of consecutive frames."""

    @property
    def steps_to_steady_state(self) -> int:
        """World steps after a reset, whatever its context, until the KV cache's steady state (its sinks and ring of
        ``window - 1`` slots filled), where each step's passes have the shapes of the last step's: where a compiled
        world builds its graphs (``WorldModel.compile``). One step to spare."""
        return self.sinks + self.window + 2

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "sampler steps must be >= 1")
        _check(self.shift > 0, "sampler shift must be > 0")
        _check(0.0 <= self.context_noise < 1.0, "context_noise must be in [0, 1)")
        _check(self.window >= 2, "window must be >= 2")
        _check(self.sinks >= 0, "sinks must be >= 0")
        _check(self.pyramid_delay >= 1, "pyramid_delay must be >= 1")


@dataclass
class WorldConfig:
    """Everything needed to rebuild a world model: written as the checkpoint's ``config.json``."""

    frame_size: list[int] = field(default_factory=lambda: [64, 64])
    """Frame height and width in pixels."""
    frame_rate: int = 15
    """Frames per second of the source data; the viewer paces play at this rate."""
    action: ActionSpec = field(default_factory=ActionSpec)
    """Action space of the world."""
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    """Frame autoencoder."""
    dit: DiTConfig = field(default_factory=DiTConfig)
    """Backbone."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Sampler defaults."""
    name: str = "world"
    """Human-readable world name."""
    source_env: str = ""
    """Gymnasium id of the real environment the data came from, if any."""
    key_map: dict[str, Any] = field(default_factory=dict)
    """Viewer key bindings: key name -> action."""
    state: dict[str, list[Any]] = field(default_factory=dict)
    """What the DiT's state head reads (``dit.state_dim`` > 0): ``names`` of its outputs (an angle as its sine and
    cosine) and the ``mean`` and ``std`` that turn them back into the source's units (output * std + mean); empty
    without a head."""
    text_to_video: bool = False
    """A text-to-video backbone (``worldsim train t2v``): trained on captioned clips with no actions, so every frame
    it makes has the null action; ``worldsim train world --init`` gives it actions."""
    version: int = CONFIG_VERSION
    """Config format version."""

    def __post_init__(self) -> None:
        _check(len(self.frame_size) == 2, "frame_size must be [height, width]")
        f = self.autoencoder.factor * self.dit.patch
        h, w = self.frame_size
        _check(h % f == 0 and w % f == 0, f"frame size {h}x{w} must be divisible by {f} (autoencoder x patch)")
        visible = self.sampler.sinks + self.sampler.window
        _check(
            visible <= self.dit.max_frames,
            f"sampler sinks + window ({visible}) must not exceed the training clip length ({self.dit.max_frames})",
        )
        _check(
            len(self.state.get("names", [])) == self.dit.state_dim,
            f"the state head has {self.dit.state_dim} outputs but the config names {len(self.state.get('names', []))}",
        )

    @property
    def latent_size(self) -> tuple[int, int]:
        """Latent map height and width."""
        return self.frame_size[0] // self.autoencoder.factor, self.frame_size[1] // self.autoencoder.factor

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        version = data.get("version")
        if version != CONFIG_VERSION:
            raise ConfigError(
                f"checkpoint config version {version} is not supported by this worldsim (expects {CONFIG_VERSION})"
            )
        # 0.1 checkpoints also wrote ``latent_scale`` here; the autoencoder's weights hold the one that is used.
        data = {k: v for k, v in data.items() if k != "latent_scale"}
        try:
            return cls(
                **{
                    **data,
                    "action": _build(ActionSpec, data.get("action", {})),
                    "autoencoder": _build(AutoencoderConfig, data.get("autoencoder", {})),
                    "dit": _build(DiTConfig, data.get("dit", {})),
                    "sampler": _build(SamplerConfig, data.get("sampler", {})),
                }
            )
        except TypeError as e:
            raise ConfigError(f"config.json does not match this worldsim version: {e}") from None


def _build(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields in config: {', '.join(sorted(unknown))}")
    return cls(**data)


def replace(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that re-runs validation and ignores ``None`` values (unset CLI flags)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})


def comma_list(text: str) -> list[str]:
    """The items of a comma-separated option (``--policies a,b``, ``--data x.h5,y.h5``), stripped, empties dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]
