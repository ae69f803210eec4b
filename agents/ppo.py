"""A pixel policy for Discrete-action worlds: the actor-critic network PPO trains, its files, and the policy around it.

The net reads the last ``history`` frames stacked on channels (one frame cannot tell a moving car from a parked
one) through the three convolutions of the DQN/PPO Atari net (Mnih et al. 2015; the network cleanrl's PPO uses),
then one hidden layer shared by a categorical policy head and a value head. It is small on purpose: in a dream the
world's step, not the policy, is the cost, and on two CPU cores a PPO update must stay a fraction of it.

An agent is a directory: ``config.json`` (the net's shape, the action space it acts in, the world it was trained
in and a card) and ``model.safetensors`` (weights). Loading never unpickles anything.

    policy = AgentPolicy.from_pretrained("assets/policies/carracing_ppo", action_space, seed=0)
    action = policy(frame)      # frame: uint8 (H, W, 3); frames of another size are resized
"""

from __future__ import annotations

import json
import math
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
from worldsim.worlds import POLICY_DIR

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass
class AgentConfig:
    """Shape of an agent's network and what it acts in."""

    frame_size: list[int] = field(default_factory=lambda: [64, 64])
    """Frames (H, W) the net reads; other sizes are resized."""
    history: int = 3
    """Frames stacked on the channel axis, the current one last."""
    action: ActionSpec = field(default_factory=lambda: ActionSpec(kind="discrete", n=5))
    """The Discrete action space the policy head chooses in."""
    hidden: int = 256
    """Width of the layer shared by the policy and value heads."""
    world: str = ""
    """Name of the world (``WorldConfig.name``) the agent was trained in; a hint for messages, not a check."""

    def __post_init__(self) -> None:
        if isinstance(self.action, dict):
            self.action = ActionSpec(**self.action)
        if self.action.kind != "discrete":
            raise InputError(
                f"the PPO agent chooses among Discrete actions; this world's actions are {self.action.kind} "
                "(a Box world needs a Gaussian policy head, which worldsim rl does not have yet)"
            )
        if self.history < 1 or min(self.frame_size) < 36:
            raise InputError(f"need history >= 1 and frames of at least 36x36, got {self.history}, {self.frame_size}")


def _layer(module: nn.Module, gain: float) -> nn.Module:
    """Orthogonal weights, zero bias: the initialisation PPO implementations agree matters (Engstrom et al. 2020)."""
    nn.init.orthogonal_(module.weight, gain)
    nn.init.zeros_(module.bias)
    return module


class ActorCritic(nn.Module):
    """(B, history, H, W, 3) uint8 frames -> action logits (B, n) and state value (B,)."""

    def __init__(self, cfg: AgentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        relu = math.sqrt(2)
        self.features = nn.Sequential(
            _layer(nn.Conv2d(3 * cfg.history, 32, 8, stride=4), relu), nn.ReLU(),
            _layer(nn.Conv2d(32, 64, 4, stride=2), relu), nn.ReLU(),
            _layer(nn.Conv2d(64, 64, 3, stride=1), relu), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        with torch.no_grad():
            cells = self.features(torch.zeros(1, 3 * cfg.history, *cfg.frame_size)).shape[1]
        self.trunk = nn.Sequential(_layer(nn.Linear(cells, cfg.hidden), relu), nn.ReLU())
        self.policy = _layer(nn.Linear(cfg.hidden, int(cfg.action.n)), 0.01)  # near-uniform first actions
        self.value = _layer(nn.Linear(cfg.hidden, 1), 1.0)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        B, T, H, W, C = frames.shape
        x = frames.permute(0, 1, 4, 2, 3).reshape(B, T * C, H, W).float() / 255.0
        h = self.trunk(self.features(x))
        return self.policy(h), self.value(h).squeeze(-1)

    @torch.no_grad()
    def act(self, frames: Tensor, sample: bool, generator: torch.Generator | None = None) -> Tensor:
        """(B,) actions: drawn from the policy (``sample``) or its likeliest."""
        logits, _ = self(frames)
        if not sample:
            return logits.argmax(-1)
        return torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator).squeeze(-1)


class FrameStack:
    """The last ``history`` frames of N episodes, (N, history, H, W, 3) uint8, the newest last. A row that starts
    over is filled with its first frame (the net sees a car standing still, not the last episode's road)."""

    def __init__(self, num: int, history: int, frame_size: list[int] | tuple[int, int]) -> None:
        self.size = (int(frame_size[0]), int(frame_size[1]))
        self.frames = torch.zeros(num, history, *self.size, 3, dtype=torch.uint8)

    def _fit(self, frames: np.ndarray | Tensor) -> Tensor:
        return resize_frames(torch.as_tensor(np.ascontiguousarray(frames)), self.size)

    def start(self, frames: np.ndarray | Tensor, rows: np.ndarray | None = None) -> Tensor:
        """Rows (all when None) start over from ``frames`` (one per row)."""
        index = slice(None) if rows is None else torch.as_tensor(rows, dtype=torch.long)
        self.frames[index] = self._fit(frames)[:, None]
        return self.frames

    def push(self, frames: np.ndarray | Tensor) -> Tensor:
        self.frames = torch.cat([self.frames[:, 1:], self._fit(frames)[:, None]], 1)
        return self.frames


def agent_dir(path: str | Path) -> Path:
    """A run directory -> its exported agent (``RUN/agent``); an agent directory as it is; the bare name of an agent
    shipped in ``assets/policies`` (``carracing_ppo``) -> its directory there."""
    path = Path(path)
    if (path / "agent").is_dir():
        return path / "agent"
    if not path.exists() and len(path.parts) == 1 and (POLICY_DIR / path).is_dir():
        return POLICY_DIR / path
    return path


def save_agent(net: ActorCritic, path: str | Path, card: dict[str, Any] | None = None, half: bool = True) -> None:
    """The net's config (and ``card``: how it was trained, how it scored) as JSON, its weights as safetensors."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half else v.float()).contiguous() for k, v in net.state_dict().items()}
    save_tensors(state, path / WEIGHTS_FILE)
    with atomic_path(path / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps({"agent": asdict(net.cfg), "card": card or {}}, indent=2))


def read_agent_card(path: str | Path) -> dict[str, Any]:
    return dict(_read_config(Path(path)).get("card", {}))


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise CheckpointError(f"{path} is not an agent directory (train one with worldsim rl train --out {path})")
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{path} is not an agent (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE} is corrupt ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("agent"), dict):
        raise CheckpointError(f"{path / CONFIG_FILE} is not an agent's config (no 'agent' entry)")
    return config


def load_agent(path: str | Path) -> ActorCritic:
    """An agent directory -> its net in eval mode; one-line CheckpointError for a missing or corrupt one."""
    path = Path(path)
    config = _read_config(path)
    try:
        cfg = AgentConfig(**config["agent"])
    except TypeError as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from None
    net = ActorCritic(cfg)
    try:
        state = {k: v.float() for k, v in load_tensors(path / WEIGHTS_FILE).items()}
        net.load_state_dict(state)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated file or other weights: the same one-line answer
        raise CheckpointError(f"{path}: weights do not match its config ({str(e).splitlines()[0][:160]})") from None
    return net.eval().requires_grad_(False)


def check_agent_fits(net: ActorCritic, action: ActionSpec, where: str, label: str) -> None:
    """A one-line InputError when the agent acts in another action space than ``where`` takes."""
    if net.cfg.action != action:
        trained = f" (trained in world {net.cfg.world!r})" if net.cfg.world else ""
        raise InputError(
            f"agent {label}{trained} acts in {net.cfg.action.to_gym()}, but {where} takes {action.to_gym()}"
        )


class AgentPolicy:
    """A trained agent as a frames-only policy: ``policy(frame) -> int``; ``sample`` draws from the policy head with
    the episode's seed, otherwise the likeliest action is taken."""

    def __init__(self, net: ActorCritic, seed: int | None = None, sample: bool = False, name: str = "agent") -> None:
        self.net, self.sample, self.name = net, sample, name
        self.reset(seed)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, action_space: Any, seed: int | None = None, sample: bool = False
    ) -> AgentPolicy:
        net = load_agent(path)
        space = getattr(action_space, "action_space", action_space)
        check_agent_fits(net, ActionSpec.from_gym(space), "this env", str(path))
        return cls(net, seed, sample, Path(path).name)

    @property
    def episode_attrs(self) -> dict[str, str]:
        """What ``worldsim record`` stores with each episode: the agent's name as its style."""
        return {"style": self.name}

    def reset(self, seed: int | None = None) -> None:
        self.generator = torch.Generator().manual_seed(seed if seed is not None else 0)
        self.stack: FrameStack | None = None

    def __call__(self, frame: np.ndarray) -> int:
        frames = np.asarray(frame)[None]
        if self.stack is None:
            self.stack = FrameStack(1, self.net.cfg.history, self.net.cfg.frame_size)
            stacked = self.stack.start(frames)
        else:
            stacked = self.stack.push(frames)
        return int(self.net.act(stacked, self.sample, self.generator)[0])
