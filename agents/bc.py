"""Behaviour cloning from pixels: a small CNN that maps the last frames to a Box action, and the policy around it.

A cloned policy sees only frames, so it can drive a dream as well as the real env: the learned members of the
PushT policy family (``worldsim train bc`` trains one on recorded episodes with the shared training loop). The
net sees the current frame and the one before it (stacked on channels: enough to tell which way the pusher moves)
and either regresses the action normalised to [-1, 1] by the action space's bounds (an MSE head), or, with
``bins``, classifies it into a grid of cells over the Box and acts at the most likely cell's centre. A demonstrator
that plans (PushT's) often has several good actions for one frame; regression averages them into a bad one, a
categorical head picks one (the reason Diffusion Policy, Chi et al. 2023, models the action distribution; a grid is
the cheapest such model, as in RT-1's binned actions).

    policy = BCPolicy.from_pretrained("assets/pusht/policies/bc_full", action_space, seed=0)
    action = policy(frame)       # frame: uint8 (H, W, 3) at the size the net was trained on
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from worldsim.checkpoint import atomic_path, load_tensors, save_tensors
from worldsim.config import ActionSpec
from worldsim.errors import CheckpointError, InputError
from worldsim.inputs import resize_frames

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass
class BCNetConfig:
    """Shape of a cloned policy's network."""

    frame_size: list[int] = field(default_factory=lambda: [64, 64])
    """Frames (H, W) the net reads; other sizes are resized."""
    history: int = 2
    """Frames stacked on the channel axis, the current one last."""
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    """Channels of the stride-2 convolutions."""
    action: ActionSpec = field(default_factory=lambda: ActionSpec(kind="box", shape=[2], low=[0, 0], high=[1, 1]))
    """The Box action space the net outputs (normalised to [-1, 1] by its bounds)."""
    bins: int = 0
    """Cells per action dimension of a categorical head over the Box (bins ** dims classes); 0: an MSE head."""

    def __post_init__(self) -> None:
        if isinstance(self.action, dict):
            self.action = ActionSpec(**self.action)
        if self.action.kind != "box":
            raise InputError(f"behaviour cloning here regresses Box actions, not {self.action.kind}")
        if self.history < 1 or not self.widths:
            raise InputError(f"need history >= 1 and some widths, got {self.history} and {self.widths}")
        if self.bins < 0 or self.bins**self.action.flat_size > 4096:
            raise InputError(
                f"bins {self.bins}: need 0 (regression) or bins ** {self.action.flat_size} <= 4096 classes"
            )

    @property
    def outputs(self) -> int:
        return self.bins**self.action.flat_size if self.bins else self.action.flat_size


class BCNet(nn.Module):
    """(B, history, H, W, 3) uint8 frames -> (B, outputs): the action in [-1, 1] before a tanh, or cell logits."""

    def __init__(self, cfg: BCNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        channels = 3 * cfg.history
        for width in cfg.widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        h, w = cfg.frame_size
        cells = (h // 2 ** len(cfg.widths)) * (w // 2 ** len(cfg.widths))
        # Flatten, not pool: where things are is the whole point for a pushing policy.
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * cells, 256), nn.SiLU(), nn.Linear(256, cfg.outputs)
        )

    def forward(self, frames: Tensor) -> Tensor:
        B, T, H, W, C = frames.shape
        x = frames.permute(0, 1, 4, 2, 3).reshape(B, T * C, H, W).float() / 127.5 - 1.0
        return self.head(self.features(x))

    def loss(self, frames: Tensor, actions: Tensor) -> Tensor:
        """MSE of the normalised action, or cross-entropy of its cell."""
        out = self(frames).float()
        if not self.cfg.bins:
            return (torch.tanh(out) - self.normalise(actions)).pow(2).mean()
        return nn.functional.cross_entropy(out, self.cell_of(self.normalise(actions)))

    def act(self, frames: Tensor) -> Tensor:
        """(B, history, H, W, 3) -> (B, action size) in [-1, 1]: the regressed action or the likeliest cell's centre."""
        out = self(frames)
        if not self.cfg.bins:
            return torch.tanh(out)
        return self.cell_centre(out.argmax(-1))

    def cell_of(self, unit: Tensor) -> Tensor:
        """(B, D) in [-1, 1] -> (B,) joint cell index, dimension 0 slowest."""
        bins = self.cfg.bins
        per_dim = ((unit.clamp(-1, 1) + 1) / 2 * bins).long().clamp(0, bins - 1)
        index = torch.zeros(len(unit), dtype=torch.long, device=unit.device)
        for d in range(per_dim.shape[1]):
            index = index * bins + per_dim[:, d]
        return index

    def cell_centre(self, index: Tensor) -> Tensor:
        """(B,) joint cell index -> (B, D) the cell's centre in [-1, 1]."""
        bins, dims = self.cfg.bins, self.cfg.action.flat_size
        per_dim = []
        for _ in range(dims):
            per_dim.append(index % bins)
            index = index // bins
        cells = torch.stack(per_dim[::-1], -1).float()
        return (cells + 0.5) / bins * 2 - 1

    # ---------------------------------------------------------------- actions <-> [-1, 1]
    def normalise(self, actions: Tensor) -> Tensor:
        low, high = self._bounds(actions.device)
        return (actions.float() - low) / (high - low) * 2 - 1

    def denormalise(self, unit: Tensor) -> Tensor:
        low, high = self._bounds(unit.device)
        return low + (unit.clamp(-1, 1) + 1) / 2 * (high - low)

    def _bounds(self, device: torch.device) -> tuple[Tensor, Tensor]:
        spec = self.cfg.action
        return torch.tensor(spec.low, device=device), torch.tensor(spec.high, device=device)


def save_bc(net: BCNet, path: str | Path, card: dict[str, Any] | None = None) -> None:
    """The net's config (and ``card``: what it was trained on) as JSON, its weights as fp16 safetensors."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_tensors({k: v.half().contiguous() for k, v in net.state_dict().items()}, path / WEIGHTS_FILE)
    with atomic_path(path / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps({"bc": asdict(net.cfg), "card": card or {}}, indent=2))


def load_bc(path: str | Path) -> BCNet:
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{path} is not a cloned policy (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    cfg = BCNetConfig(**json.loads((path / CONFIG_FILE).read_text())["bc"])
    net = BCNet(cfg)
    state = {k: v.float() for k, v in load_tensors(path / WEIGHTS_FILE).items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match its config ({str(e).splitlines()[0][:160]})") from None
    return net.eval().requires_grad_(False)


class BCPolicy:
    """A cloned policy: ``policy(frame) -> action`` from the last ``history`` frames, with optional Gaussian
    ``noise`` (std in normalised action units, [-1, 1] spans the Box) drawn from the episode's seed."""

    def __init__(self, net: BCNet, seed: int | None = None, noise: float = 0.0, name: str = "bc") -> None:
        if noise < 0:
            raise InputError(f"noise must be >= 0, got {noise}")
        self.net, self.noise, self.name = net, noise, name
        self.reset(seed)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, action_space: Any, seed: int | None = None, noise: float = 0.0
    ) -> BCPolicy:
        net = load_bc(path)
        space = getattr(action_space, "action_space", action_space)
        if ActionSpec.from_gym(space) != net.cfg.action:
            raise InputError(f"the cloned policy in {path} acts in {net.cfg.action}, not in {space}")
        name = Path(path).name + (f"_noise{noise:g}" if noise else "")
        return cls(net, seed, noise, name)

    @property
    def episode_attrs(self) -> dict[str, str]:
        """What ``worldsim record`` stores with each episode: the policy's name as its style."""
        return {"style": self.name}

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.frames: list[Tensor] = []

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        now = resize_frames(torch.from_numpy(np.ascontiguousarray(frame))[None], tuple(self.net.cfg.frame_size))[0]
        history = self.net.cfg.history
        self.frames = (self.frames or [now] * history)[1 - history :] + [now] if history > 1 else [now]
        unit = self.net.act(torch.stack(self.frames)[None])[0]
        if self.noise:
            unit = unit + torch.from_numpy(self.rng.normal(0.0, self.noise, unit.shape).astype(np.float32))
        return self.net.denormalise(unit).numpy().astype(np.float32)
