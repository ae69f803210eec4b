"""``WorldModel``: the one inference engine. The env, viewer, predictor and benchmarks all call it.

Example::

    from worldsim import WorldModel
    wm = WorldModel.from_pretrained("assets/carracing")
    frame = wm.reset(seed=0)                      # (1, 64, 64, 3) uint8, a shipped start context
    out = wm.step([3])                            # frames (1, 64, 64, 3), reward (1,), terminated (1,)
    future = wm.predict([[3, 3, 1, 1]])           # 4 frames at once (pyramid schedule)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from worldsim.checkpoint import load_checkpoint, load_state, save_checkpoint, strip_prefix
from worldsim.config import WorldConfig, replace
from worldsim.devices import resolve_device
from worldsim.diffusion.sampler import Rollout
from worldsim.errors import ConfigError, InputError, WorldsimError
from worldsim.hub import push_world
from worldsim.inputs import check_actions, check_frames
from worldsim.kernels.compiled import FrozenGraphs
from worldsim.kernels.compiled_pass import CompiledPass
from worldsim.models.autoencoder import FrameAutoencoder
from worldsim.models.conditioning import FrameConditioning, TextContext, TextEncoder
from worldsim.models.dit import DiT
from worldsim.worlds import resolve_world

PREDICT_BLOCK = 8
"""Frames denoised together by ``predict`` (pyramid schedule within a block)."""


class StepOutput(NamedTuple):
    frames: np.ndarray
    """uint8 (B, H, W, 3) after ``step``; (B, T, H, W, 3) after ``predict``."""
    reward: np.ndarray
    """float32 (B,) or (B, T)."""
    terminated: np.ndarray
    """bool (B,) or (B, T)."""


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
        self.device = resolve_device(device)
        self.dtype = dtype
        self.autoencoder = (autoencoder or FrameAutoencoder(config.autoencoder)).to(self.device).eval()
        self.dit = (dit or DiT(config.dit, config.action, config.autoencoder.latent_channels)).to(self.device).eval()
        self._set_dtype(dtype)
        self.starts = starts or {}
        self.sampler_config = config.sampler
        self._text_encoder: TextEncoder | None = None
        self._rollout: Rollout | None = None
        self._compiled: CompiledPass | None = None
        self._compiled_decoder: FrozenGraphs | None = None

    # ----------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> WorldModel:
        """Load a checkpoint directory, a shipped world's name (``"carracing"``) or a Hugging Face Hub repo id
        (``"owner/name"`` or ``"owner/name@revision"``, through huggingface_hub's cache: offline once cached)."""
        resolve_device(device)  # a device this machine lacks is refused before a world is read or downloaded
        path = resolve_world(path)
        config, state, starts = load_checkpoint(path)
        wm = cls(config, starts=starts, device=device, dtype=dtype)
        load_state(wm.autoencoder, strip_prefix(state, "autoencoder."), f"{path} (autoencoder)")
        load_state(wm.dit, strip_prefix(state, "dit."), f"{path} (dit)")
        wm._set_dtype(dtype)
        return wm

    def _set_dtype(self, dtype: torch.dtype) -> None:
        """The DiT and the decoder compute in ``dtype``; the encoder stays fp32 (it runs only at a reset, and its
        latents are the context every later frame is read against). A bf16 decoder costs at most one grey level
        (mean 0.09) and runs oneDNN's bf16 convs instead of the fp32 ones that small frames fall back from."""
        self.dit.to(dtype)
        self.autoencoder.decoder.to(dtype)

    def state_dict(self) -> dict[str, Tensor]:
        state = {f"autoencoder.{k}": v.float() for k, v in self.autoencoder.state_dict().items()}
        state.update({f"dit.{k}": v.float() for k, v in self.dit.state_dict().items()})
        return state

    def save_pretrained(
        self,
        path: str | Path,
        card: str = "",
        half: bool = False,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        private: bool = False,
    ) -> str | None:
        """Write a checkpoint directory; ``push_to_hub`` also uploads it to the Hub model repo ``repo_id`` (default:
        the directory's name, under the token's account) and returns the commit URL."""
        save_checkpoint(path, self.config, self.state_dict(), self.starts, card=card, half=half)
        if not push_to_hub:
            return None

        return push_world(path, repo_id or Path(path).name, private=private)

    def compile(self) -> WorldModel:
        """Step with the DiT's passes and the decoder compiled by ``torch.compile`` (``FrozenGraphs``), from the next
        ``reset`` on (passes under a prompt stay eager). Frames are those of the eager model up to float rounding. It
        pays most at batch 1, where a step is bound by per-op dispatch, and less for large batches (speed-ups in
        ``docs/results.md``, "Compiled passes"). The first rollout pays tens of seconds of compiling (a C++ compiler
        is needed). On a CPU the weights are frozen into the graphs: weights changed later take effect at the next
        ``reset``, which builds the graphs again. On a GPU the passes become CUDA graphs (not yet measured in this
        project), whose first calls are checked against the eager passes (``worldsim.kernels.selfcheck``: the world
        steps eagerly, with a warning, where they disagree). Returns the world."""
        self._compiled = CompiledPass(self.dit)
        autoencoder = self.autoencoder
        self._compiled_decoder = FrozenGraphs(autoencoder.latents_to_frames, autoencoder, self.device.type == "cuda")
        return self

    def _follow_weights(self) -> None:
        """Compiled graphs hold the weights they were built with (on a CPU): build them again if those changed."""
        for graphs in (self._compiled, self._compiled_decoder):
            if graphs is not None:
                graphs.follow_weights()

    @property
    def compiled(self) -> bool:
        """Whether ``compile`` was called: the steady state's passes run as compiled graphs."""
        return self._compiled is not None

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
            self._rollout.settings = replace(
                self._rollout.settings, **{k: v for k, v in changes.items() if k not in ("window", "sinks")}
            )

    def set_frame_size(self, size: tuple[int, int]) -> None:
        """Make frames of another size from the next reset on (3-D RoPE takes any grid; a text-to-video backbone
        trained on several sizes makes each of them). Must be divisible by the autoencoder factor x patch."""
        try:
            self.config = replace(self.config, frame_size=[int(v) for v in size])
        except ConfigError as e:
            raise InputError(str(e)) from None

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
        generator, batch_size = _noise_stream(seed, generator, batch_size)
        ctx, latents, cond = self._context(frames, actions, batch_size or 1, generator)
        text_ctx = self._encode_text(text, ctx.shape[0])
        self._follow_weights()
        self._rollout = Rollout(
            self.dit,
            self.sampler_config,
            ctx.shape[0],
            self.latent_shape,
            generator,
            text_ctx,
            reference,
            compiled=self._compiled,
        )
        with torch.inference_mode():
            self._rollout.write(latents, cond)
        return ctx[:, -1].cpu().numpy().copy()

    def reset_from_text(
        self,
        text: str | list[str],
        seed: int | None = None,
        batch_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> np.ndarray:
        """Start worlds from a prompt alone (text-to-video): no context frames, the opening frame is generated from
        the text with the null action. Returns it, uint8 (B, H, W, 3); ``step`` / ``dream`` go on from there."""
        batch = batch_size or (
            len(text) if isinstance(text, list) else len(generator) if isinstance(generator, list) else 1
        )
        generator, _ = _noise_stream(seed, generator, batch)
        text_ctx = self._encode_text(text, batch)
        self._follow_weights()
        self._rollout = Rollout(self.dit, self.sampler_config, batch, self.latent_shape, generator, text_ctx)
        return self.dream(1).frames[:, 0]

    def set_prompt(self, text: str | list[str] | None) -> None:
        """Change the prompt mid-episode (None: no prompt); frames from now on follow it while the actions keep
        driving. The frames already made, and the memory of them, stay as they were."""
        rollout = self._require_rollout()
        rollout.set_text(None if text is None else self._encode_text(text, rollout.batch))

    def dream(self, frames: int) -> StepOutput:
        """``frames`` more frames per world with the null action: what the world does on its own (for a
        text-to-video backbone, what the prompt describes)."""
        if frames < 1:
            raise InputError(f"dream needs at least one frame, got {frames}")
        return self._generate(None, frames)

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

    def keep_worlds(self, rows: Sequence[int]) -> None:
        """Go on with only these worlds of the batch (indices, in the order given); the others end here. Each kept
        world goes on as it would have (its memory and noise stream move with it), and the batch gets cheaper:
        ``worldsim rank`` drops a dream the step it terminates. Needs a batch reset with one generator per world."""
        rollout = self._require_rollout()
        rows = [int(r) for r in rows]
        if not rows or len(set(rows)) != len(rows) or not all(0 <= r < rollout.batch for r in rows):
            raise InputError(f"keep_worlds takes distinct indices in 0..{rollout.batch - 1}, at least one")
        if not isinstance(rollout.generator, list):
            raise WorldsimError("keep_worlds needs a batch reset with one generator per world")
        rollout.keep_rows(rows)

    def _context(
        self, frames: Any, actions: Any, batch: int, generator: torch.Generator | list[torch.Generator]
    ) -> tuple[Tensor, Tensor, FrameConditioning]:
        """Context frames (B, T, H, W, 3), their latents and conditioning for a (re)start."""
        if frames is None:
            frames = self._start_frames(batch, generator)
        ctx = self.check_frames(frames).to(self.device)
        B, T = ctx.shape[:2]
        null = torch.ones(B, T, dtype=torch.bool, device=self.device)
        acts = None
        if actions is not None and T > 1:
            a = self.check_actions(actions, (B, T - 1))
            acts = torch.cat([a[:, :1], a], 1)  # frame 0 has no action: its slot is masked as null
            null[:, 1:] = False
        return ctx, self.autoencoder.encode(ctx).float(), FrameConditioning(acts, null)

    def step(self, actions: Any, observed: Any = None) -> StepOutput:
        """Advance every world by one frame. actions: (B, ...) in the world's action space.

        observed: the real next frames (B, H, W, 3) uint8, when a real system ran the same actions.
        The model still predicts the frame (returned), but the observed frame is what enters its
        memory (teacher forcing): a dream kept in sync with reality, and next-frame evaluation.
        Reward and termination are then those the heads give the observed transition.
        """
        batch = self._require_rollout().batch
        acts = self.check_actions(actions, (batch,))
        latents = None
        if observed is not None:
            frames = self.check_frames(observed, what="observed").to(self.device)
            if frames.shape[:2] != (batch, 1):
                raise InputError(f"observed must hold one frame per world ({batch}), got {tuple(frames.shape[:-3])}")
            latents = self.autoencoder.encode(frames).float()
        out = self._generate(acts[:, None], 1, observed=latents)
        return StepOutput(out.frames[:, 0], out.reward[:, 0], out.terminated[:, 0])

    def predict(self, actions: Any) -> StepOutput:
        """Predict T frames at once from an action sequence (B, T, ...) with the pyramid schedule."""
        rollout = self._require_rollout()
        try:
            shape = tuple(actions.shape) if isinstance(actions, Tensor) else np.shape(actions)
        except ValueError:
            shape = ()
        if len(shape) < 2:
            raise InputError(f"predict takes actions shaped (B, T, ...), got {shape}")
        return self._generate(self.check_actions(actions, (rollout.batch, shape[1])), shape[1])

    def _generate(self, acts: Tensor | None, frames: int, observed: Tensor | None = None) -> StepOutput:
        """Validated actions (B, T, ...), or None for the null action, -> T decoded frames per world.

        Long sequences go in blocks of a few frames: a block attends to itself densely, so one block
        as long as the window would cost far more than the pyramid schedule saves.
        """
        rollout = self._require_rollout()
        block = max(1, min(PREDICT_BLOCK, self.sampler_config.window - 1))
        # A text-to-video backbone never saw an action: its frames all have the null one.
        null_actions = acts is None or self.config.text_to_video
        parts = []
        for s in range(0, frames, block):
            n = min(block, frames - s)
            a = None if acts is None else acts[:, s : s + n]
            null = torch.full((rollout.batch, n), null_actions, dtype=torch.bool, device=self.device)
            real = None if observed is None else observed[:, s : s + n]
            parts.append(rollout.generate(FrameConditioning(a, null), n, real))
        latents, reward, term = (torch.cat(p, 1) for p in zip(*parts))
        # A step's frames decode through the compiled decoder (one frame a world: one graph per batch size).
        decoder = self._compiled_decoder if frames == 1 else None
        frames = self.autoencoder.decode(latents, decoder=decoder)  # decode casts to the decoder's dtype itself
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

    def check_actions(self, actions: Any, lead: tuple[int, ...]) -> Tensor:
        """Actions shaped ``lead`` + this world's action shape, validated (``check_actions``), on the world's device."""
        return check_actions(self.config.action, actions, lead).to(self.device)

    def check_frames(self, frames: Any, what: str = "frames", one_world: bool = False) -> Tensor:
        """uint8 (B, T, H, W, 3) at this world's frame size, at most ``sinks + window`` frames (``check_frames``)."""
        s = self.sampler_config
        return check_frames(frames, self.frame_size, s.sinks + s.window, what, one_world)

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
        self._text_encoder.check_prompts(prompts)
        return self._text_encoder(prompts)


def _noise_stream(
    seed: int | None, generator: torch.Generator | list[torch.Generator] | None, batch_size: int | None
) -> tuple[torch.Generator | list[torch.Generator], int | None]:
    """The noise generator(s) of a (re)start: the given one(s), else one seeded by ``seed`` (random without), and
    the batch size they imply."""
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**63))
    if isinstance(generator, list):
        batch_size = batch_size or len(generator)
        if len(generator) != batch_size:
            raise InputError(f"got {len(generator)} generators for {batch_size} worlds")
    return generator, batch_size
