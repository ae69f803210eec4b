"""``WorldModel``: the one inference engine. The env, viewer, predictor and benchmarks all call it.

Example::

    from worldsim import WorldModel
    wm = WorldModel.from_pretrained("assets/carracing")
    frame = wm.reset(seed=0)                      # (1, 64, 64, 3) uint8, a shipped start context
    out = wm.step([3])                            # frames (1, 64, 64, 3), reward (1,), terminated (1,)
    future = wm.predict([[3, 3, 1, 1]])           # 4 frames at once (pyramid schedule)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from worldsim.checkpoint import load_checkpoint, load_state, save_checkpoint
from worldsim.config import WorldConfig, replace
from worldsim.diffusion.sampler import FrameBatch, Rollout
from worldsim.errors import InputError, WorldsimError
from worldsim.models.autoencoder import FrameAutoencoder
from worldsim.models.conditioning import TextContext, TextEncoder, validate_actions
from worldsim.models.dit import DiT

PREDICT_BLOCK = 8
"""Frames denoised together by ``predict`` (pyramid schedule within a block)."""


class StepOutput(NamedTuple):
    frames: np.ndarray
    """uint8 (B, H, W, 3) after ``step``; (B, T, H, W, 3) after ``predict``."""
    reward: np.ndarray
    """float32 (B,) or (B, T)."""
    terminated: np.ndarray
    """bool (B,) or (B, T)."""


def resize_frames(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 (..., H, W, 3) -> uint8 (..., h, w, 3) with area/bilinear antialiased resampling."""
    if tuple(frames.shape[-3:-1]) == tuple(size):
        return frames
    lead = frames.shape[:-3]
    x = rearrange(frames.reshape(-1, *frames.shape[-3:]), "n h w c -> n c h w").float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    x = rearrange(x.round().clamp(0, 255).to(torch.uint8), "n c h w -> n h w c")
    return x.reshape(*lead, *size, 3)


def as_frames(frames: Any, size: tuple[int, int]) -> Tensor:
    """Validate user frames -> uint8 (B, T, H, W, 3) at ``size``. Accepts (H, W, 3), (B, H, W, 3) or (B, T, H, W, 3)."""
    t = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, Tensor) else frames
    if t.dtype != torch.uint8:
        raise InputError(f"frames must be uint8 RGB images, got dtype {t.dtype}")
    if t.dim() < 3 or t.shape[-1] != 3:
        raise InputError(f"frames must have shape (..., H, W, 3), got {tuple(t.shape)}")
    if t.dim() == 3:
        t = t[None, None]
    elif t.dim() == 4:
        t = t[:, None]
    elif t.dim() != 5:
        raise InputError(f"frames must be (H, W, 3), (B, H, W, 3) or (B, T, H, W, 3), got {tuple(t.shape)}")
    if min(t.shape[-3:-1]) < 8:
        raise InputError(f"frames of {tuple(t.shape[-3:-1])} pixels are too small to use")
    return resize_frames(t, size)


class WorldModel:
    """Autoencoder + DiT + sampler: reset from context frames, then step with actions."""

    def __init__(
        self,
        config: WorldConfig,
        autoencoder: FrameAutoencoder | None = None,
        dit: DiT | None = None,
        starts: dict[str, Tensor] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.autoencoder = (autoencoder or FrameAutoencoder(config.autoencoder)).to(self.device).eval()
        self.dit = (dit or DiT(config.dit, config.action, config.autoencoder.latent_channels)).to(self.device).eval()
        self.dit.to(dtype)
        self.starts = starts or {}
        self.sampler_config = config.sampler
        self._text_encoder: TextEncoder | None = None
        self._rollout: Rollout | None = None

    # ----------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> WorldModel:
        """Load a checkpoint directory (or a shipped world's name, e.g. ``"carracing"``)."""
        from worldsim.worlds import resolve_world

        path = resolve_world(path)
        config, state, starts = load_checkpoint(path)
        wm = cls(config, starts=starts, device=device, dtype=dtype)
        load_state(wm.autoencoder, _prefixed(state, "autoencoder."), f"{path} (autoencoder)")
        load_state(wm.dit, _prefixed(state, "dit."), f"{path} (dit)")
        wm.dit.to(dtype)
        return wm

    def state_dict(self) -> dict[str, Tensor]:
        state = {f"autoencoder.{k}": v for k, v in self.autoencoder.state_dict().items()}
        state.update({f"dit.{k}": v.float() for k, v in self.dit.state_dict().items()})
        return state

    def save_pretrained(self, path: str | Path, card: str = "", half: bool = False) -> None:
        save_checkpoint(path, self.config, self.state_dict(), self.starts, card=card, half=half)

    # ----------------------------------------------------------------- properties
    @property
    def frame_size(self) -> tuple[int, int]:
        return tuple(self.config.frame_size)  # type: ignore[return-value]

    @property
    def action_space(self) -> Any:
        return self.config.action.to_gym()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        h, w = self.config.latent_size
        return self.config.autoencoder.latent_channels, h, w

    @property
    def batch_size(self) -> int:
        return self._rollout.batch if self._rollout else 0

    @property
    def frame_index(self) -> int:
        """Frames in the current episode so far (context included)."""
        return self._rollout.frame_index if self._rollout else 0

    def set_sampler(self, **changes: Any) -> None:
        """Change sampler settings (steps, action_cfg, ...); window/sinks take effect at the next reset."""
        self.sampler_config = replace(self.sampler_config, **changes)
        if self._rollout is not None:
            self._rollout.cfg = replace(
                self._rollout.cfg, **{k: v for k, v in changes.items() if k not in ("window", "sinks")}
            )

    # ----------------------------------------------------------------- episode
    def reset(
        self,
        frames: Any = None,
        actions: Any = None,
        text: str | list[str] | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        reference: bool = False,
    ) -> np.ndarray:
        """Start B worlds from context frames; returns the last context frame, uint8 (B, H, W, 3).

        frames: uint8 (H, W, 3), (B, H, W, 3) or (B, T, H, W, 3), resized to the world's frame size;
            None picks one of the checkpoint's shipped start contexts per world (by seed).
        actions: optional actions that led to context frames 1..T-1, shape (B, T-1, ...).
        text: a prompt, or one per world (worlds trained with text only).
        generator: the noise stream, or one per world (world b then draws exactly what a batch of one
            with that generator would, and ``reset_worlds`` can restart worlds one by one).
        reference: recompute the whole history on every pass instead of using the KV cache (slow,
            for tests and benchmarks).
        """
        if generator is None:
            generator = torch.Generator().manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**63))
        if isinstance(generator, list):
            batch_size = batch_size or len(generator)
            if len(generator) != batch_size:
                raise InputError(f"got {len(generator)} generators for {batch_size} worlds")
        ctx, latents, cond = self._context(frames, actions, batch_size or 1, generator)
        text_ctx = self._encode_text(text, ctx.shape[0])
        self._rollout = Rollout(
            self.dit, self.sampler_config, ctx.shape[0], self.latent_shape, generator, text_ctx, reference
        )
        with torch.inference_mode():
            self._rollout.write(latents, cond)
        return ctx[:, -1].cpu().numpy().copy()

    def reset_worlds(
        self, rows: list[int], generators: list[torch.Generator], frames: Any = None, actions: Any = None
    ) -> np.ndarray:
        """Start some worlds of the batch over (a vector env's per-env reset); the others go on.

        Needs a batch started with one generator per world (``reset(generator=[...])``); each restarted
        world gets its new generator and then produces exactly what ``reset`` of a batch of one with
        that generator would. Returns the restarted worlds' last context frames, uint8 (R, H, W, 3).
        """
        rollout = self._require_rollout()
        if not isinstance(rollout.generator, list):
            raise WorldsimError("reset_worlds needs a batch reset with one generator per world")
        if len(generators) != len(rows) or not all(0 <= r < rollout.batch for r in rows):
            raise InputError(f"reset_worlds: {len(rows)} rows in 0..{rollout.batch - 1} need as many generators")
        ctx, latents, cond = self._context(frames, actions, len(rows), generators)
        with torch.inference_mode():
            rollout.reset_rows(list(rows), latents, cond, generators)
        return ctx[:, -1].cpu().numpy().copy()

    def _context(
        self, frames: Any, actions: Any, batch: int, generator: torch.Generator | list[torch.Generator]
    ) -> tuple[Tensor, Tensor, FrameBatch]:
        """Context frames (B, T, H, W, 3), their latents and conditioning for a (re)start."""
        if frames is None:
            frames = self._start_frames(batch, generator)
        ctx = as_frames(frames, self.frame_size).to(self.device)
        B, T = ctx.shape[:2]
        visible = self.sampler_config.sinks + self.sampler_config.window
        if visible < T:
            raise InputError(f"{T} context frames is more than the sampler sees ({visible}); pass the last {visible}")
        null = torch.ones(B, T, dtype=torch.bool, device=self.device)
        acts = None
        if actions is not None and T > 1:
            a = self._as_actions(actions, (B, T - 1))
            acts = torch.cat([a[:, :1], a], 1)  # frame 0 has no action: its slot is masked as null
            null[:, 1:] = False
        return ctx, self.autoencoder.encode(ctx).float(), FrameBatch(acts, null)

    def step(self, actions: Any, observed: Any = None) -> StepOutput:
        """Advance every world by one frame. actions: (B, ...) in the world's action space.

        observed: the real next frames (B, H, W, 3) uint8, when a real system ran the same actions.
        The model still predicts the frame (returned), but the observed frame is what enters its
        memory (teacher forcing): a dream kept in sync with reality, and next-frame evaluation.
        Reward and termination are then those the heads give the observed transition.
        """
        batch = self._require_rollout().batch
        acts = self._as_actions(actions, (batch,))
        latents = None
        if observed is not None:
            frames = as_frames(observed, self.frame_size).to(self.device)
            if frames.shape[:2] != (batch, 1):
                raise InputError(f"observed must hold one frame per world ({batch}), got {tuple(frames.shape[:-3])}")
            latents = self.autoencoder.encode(frames).float()
        out = self._generate(acts[:, None], observed=latents)
        return StepOutput(out.frames[:, 0], out.reward[:, 0], out.terminated[:, 0])

    def predict(self, actions: Any) -> StepOutput:
        """Predict T frames at once from an action sequence (B, T, ...) with the pyramid schedule."""
        rollout = self._require_rollout()
        acts = _as_tensor(actions)
        if acts.dim() < 2:
            raise InputError(f"predict takes actions shaped (B, T, ...), got {tuple(acts.shape)}")
        return self._generate(self._as_actions(acts, (rollout.batch, acts.shape[1])))

    def _generate(self, acts: Tensor, observed: Tensor | None = None) -> StepOutput:
        """Validated actions (B, T, ...) -> T decoded frames per world.

        Long sequences go in blocks of a few frames: a block attends to itself densely, so one block
        as long as the window would cost far more than the pyramid schedule saves.
        """
        rollout = self._require_rollout()
        block = max(1, min(PREDICT_BLOCK, self.sampler_config.window - 1))
        parts = []
        for s in range(0, acts.shape[1], block):
            a = acts[:, s : s + block]
            null = torch.zeros(a.shape[:2], dtype=torch.bool, device=self.device)
            real = None if observed is None else observed[:, s : s + block]
            parts.append(rollout.generate(FrameBatch(a, null), a.shape[1], real))
        latents, reward, term = (torch.cat(p, 1) for p in zip(*parts))
        frames = self.autoencoder.decode(latents.to(torch.float32))
        return StepOutput(
            frames=np.ascontiguousarray(frames.cpu().numpy()),
            reward=reward.cpu().numpy().astype(np.float32),
            terminated=(term > 0).cpu().numpy(),
        )

    # ----------------------------------------------------------------- helpers
    def _require_rollout(self) -> Rollout:
        if self._rollout is None:
            raise WorldsimError("call reset() before step()")
        return self._rollout

    def _start_frames(self, batch: int, generator: torch.Generator | list[torch.Generator]) -> Tensor:
        starts = self.starts.get("frames")
        if starts is None or len(starts) == 0:
            raise InputError("this checkpoint ships no start contexts: pass frames= to reset()")
        if isinstance(generator, list):
            idx = torch.cat([torch.randint(len(starts), (1,), generator=g) for g in generator])
        else:
            idx = torch.randint(len(starts), (batch,), generator=generator)
        return starts[idx]

    def _as_actions(self, actions: Any, lead: tuple[int, ...]) -> Tensor:
        spec = self.config.action
        t = _as_tensor(actions)
        if spec.kind == "discrete" and tuple(t.shape) == (*lead, 1):
            t = t[..., 0]
        validate_actions(spec, t, lead)
        t = t.float() if spec.kind == "box" else t.long()
        return t.to(self.device)

    def _encode_text(self, text: str | list[str] | None, batch: int) -> TextContext | None:
        if text is None:
            return None
        if not self.config.dit.text_dim:
            raise InputError("this world was trained without text: drop the prompt")
        prompts = [text] * batch if isinstance(text, str) else list(text)
        if len(prompts) != batch:
            raise InputError(f"got {len(prompts)} prompts for {batch} worlds")
        if self._text_encoder is None:
            self._text_encoder = TextEncoder(self.device)
        return self._text_encoder(prompts)


def _as_tensor(actions: Any) -> Tensor:
    if isinstance(actions, Tensor):
        return actions
    try:
        return torch.as_tensor(np.asarray(actions))
    except (TypeError, ValueError) as e:
        raise InputError(f"actions could not be read as an array: {e}") from None


def _prefixed(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
