"""Diffusion Transformer over spacetime latent patches, with per-frame conditioning.

Follows DiT (Peebles & Xie 2023) for adaLN-Zero blocks, with three changes that make it a world
model: every frame carries its own noise level and action (diffusion forcing, Chen et al. 2024),
attention is block-causal in time, and positions are 3-D RoPE over (t, y, x) so frame size, aspect
ratio and duration are free.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from worldsim.config import ActionSpec, DiTConfig
from worldsim.kernels import modulate, norm_modulate, split_heads_rope
from worldsim.kernels.packed_linear import PackedLinear, write_version
from worldsim.models.attention import AttentionMemory, BlockCausal, Rope3D
from worldsim.models.conditioning import ActionEncoder, LevelEmbedder, TextContext


class DiTOutput(NamedTuple):
    velocity: Tensor
    """(B, F, C, h, w) predicted flow velocity v = noise - clean."""
    reward: Tensor
    """(B, F) predicted reward of the transition into each frame."""
    termination_logit: Tensor
    """(B, F) logit that each frame is terminal."""
    state: Tensor
    """(B, F, k) the task object's standardised state in each frame (``StateHead``); k = 0 without a state head."""


class StateHead(nn.Module):
    """A frame's object state (a pose) from its final token features: a few attention pools over the frame's tokens,
    each giving the features and the grid position (in [-1, 1]) it attends to, then an MLP. Pools work on any grid;
    the positions carry where the object is, which the rotary-position network keeps out of the features."""

    def __init__(self, width: int, out: int, pools: int = 4) -> None:
        super().__init__()
        self.score = PackedLinear(width, pools)
        self.mlp = nn.Sequential(PackedLinear(pools * (width + 2), width), nn.SiLU(), PackedLinear(width, out))

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """x: (B, F, N, d) with N = gh * gw tokens in row-major order -> (B, F, out)."""
        gh, gw = grid
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, gh), torch.linspace(-1, 1, gw), indexing="ij")
        where = torch.stack([ys.flatten(), xs.flatten()], dim=-1).to(x)  # (N, 2)
        weights = self.score(x).float().softmax(dim=2).to(x.dtype)  # (B, F, N, pools)
        pooled = torch.einsum("bfnp,bfnd->bfpd", weights, torch.cat([x, where.expand(*x.shape[:3], 2)], dim=-1))
        return self.mlp(pooled.flatten(2))


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = PackedLinear(width, 3 * width)
        self.proj = PackedLinear(width, width)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], memory: AttentionMemory, layer: int) -> Tensor:
        B, F_, N, _ = x.shape
        q, k, v = split_heads_rope(self.qkv(x), self.heads, *rope, memory, layer)  # (B, heads, F*N, head_dim)
        out = memory.attend(layer, q, k, v)
        return self.proj(rearrange(out, "b h (f n) d -> b f n (h d)", f=F_))


class CrossAttention(nn.Module):
    """Image tokens attend to text tokens (PixArt-style plain residual cross-attention)."""

    def __init__(self, width: int, heads: int, text_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.q = PackedLinear(width, width)
        self.kv = PackedLinear(text_dim, 2 * width)
        self.proj = PackedLinear(width, width)

        self._cached: tuple[Any, Tensor, Tensor, Tensor, Tensor] | None = None
        self._cached_null: tuple[Any, Tensor] | None = None

    def _weights_version(self) -> tuple[int, ...]:
        """Changes whenever the weights are written in place (an optimizer step, ``load_state_dict``)."""
        params = (self.q.weight, self.q.bias, self.kv.weight, self.kv.bias, self.proj.weight, self.proj.bias)
        return tuple(write_version(p) for p in params)

    def forward(self, x: Tensor, text: TextContext) -> Tensor:
        if torch.is_grad_enabled():
            return self.attend(x, text)
        return self._attend_folded(x, text)

    def attend(self, x: Tensor, text: TextContext) -> Tensor:
        """Cross-attention as written: queries, the prompt's keys and values, attention, output projection."""
        B, F_, N, _ = x.shape
        q = rearrange(self.q(self.norm(x)), "b f n (h d) -> b h (f n) d", h=self.heads)
        k, v = rearrange(self.kv(text.tokens.to(x.dtype)), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=text.mask[:, None, None, :])
        return self.proj(rearrange(out, "b h (f n) d -> b f n (h d)", f=F_))

    def _attend_folded(self, x: Tensor, text: TextContext) -> Tensor:
        """``attend`` at inference, where a prompt stays the same pass after pass until it changes. Per prompt, the
        query projection is folded into the keys and the output projection into the values, so a play step pays a
        layer norm, two matrix products and a softmax instead of two projections and an attention call:

            scores_h = norm(x) Wq_h^T k_h^T / sqrt(d) + bq_h k_h^T / sqrt(d)   ->  norm(x) A + c
            out      = sum_h softmax(scores_h) (v_h Wproj_h^T) + bproj            ->  softmax(.) V + b
        """
        B, F_, N, W = x.shape
        A, c, V, b = (t.expand(B, -1, -1) for t in self._prompt_operators(text))
        # In fp32 whatever the model's dtype: at these sizes (tens of tokens, a few dozen keys) CPU bf16 matrix
        # products cost 2-4x their fp32 ones, and the casts are cheap.
        scores = torch.baddbmm(c, self.norm(x.float()).reshape(B, F_ * N, W), A)
        weights = scores.view(B, F_ * N, self.heads, -1).softmax(-1).view(B, F_ * N, -1)
        return torch.baddbmm(b, weights, V).view(B, F_, N, W).to(x.dtype)

    def _prompt_operators(self, text: TextContext) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The folded operators of ``_attend_folded`` for this prompt, fp32, computed once per prompt (and again
        when the weights change): A (B, W, H*L), c (B, 1, H*L) with the padding mask as -inf, V (B, H*L, W), b."""
        key = (text.tokens, write_version(text.tokens), self._weights_version())
        if self._cached is not None:
            cached_key, *operators = self._cached
            if cached_key[0] is key[0] and cached_key[1:] == key[1:]:
                return tuple(operators)  # type: ignore[return-value]
        h, width = self.heads, self.proj.in_features
        kv = F.linear(text.tokens.float(), self.kv.weight.float(), self.kv.bias.float())
        k, v = rearrange(kv, "b l (two h d) -> two b h l d", two=2, h=h)
        scale = k.shape[-1] ** -0.5
        wq, bq = self.q.weight.float().view(h, -1, width), self.q.bias.float().view(h, -1)
        A = torch.einsum("hdw,bhld->bwhl", wq, k).flatten(2) * scale
        c = (torch.einsum("hd,bhld->bhl", bq, k) * scale).masked_fill(~text.mask[:, None, :], float("-inf"))
        V = torch.einsum("bhld,whd->bhlw", v, self.proj.weight.float().view(width, h, -1)).flatten(1, 2)
        b = self.proj.bias.float().expand(V.shape[0], 1, width)
        operators = (A, c.flatten(1)[:, None, :], V, b)
        self._cached = (key, *operators)
        return operators  # type: ignore[return-value]

    def null_output(self, null_token: Tensor, dtype: torch.dtype) -> Tensor:
        """What the block adds for the learned "no prompt" token, (width,): attention over a single key is that
        key's value for every query, so the result does not depend on the image tokens. Exactly ``forward`` with the
        null prompt, at the cost of a constant (computed once at inference)."""
        if torch.compiler.is_compiling():  # inside a compiled pass: two small products, no Python-side cache to trace
            return self._null_output(null_token, dtype)
        key = (write_version(null_token), dtype, self._weights_version())
        if not torch.is_grad_enabled() and self._cached_null is not None and self._cached_null[0] == key:
            return self._cached_null[1]
        out = self._null_output(null_token, dtype)
        if not torch.is_grad_enabled():
            self._cached_null = (key, out)
        return out

    def _null_output(self, null_token: Tensor, dtype: torch.dtype) -> Tensor:
        value = self.kv(null_token.to(dtype))[..., self.proj.in_features :]  # (1, width): the value half
        return self.proj(value)[0]


class Block(nn.Module):
    """adaLN-Zero transformer block; modulation is per frame and broadcast over its tokens."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d = cfg.width
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(d, cfg.heads)
        self.cross = CrossAttention(d, cfg.heads, cfg.text_dim) if cfg.text_dim else None
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        # The GELU rides in the first layer's oneDNN call at inference (exact GELU either way); nn.Identity keeps
        # the second layer at index 2, so checkpoints keep their keys (mlp.0, mlp.2).
        self.mlp = nn.Sequential(PackedLinear(d, hidden, activation="gelu"), nn.Identity(), PackedLinear(hidden, d))

    def forward(
        self,
        x: Tensor,
        mod: Tensor,
        rope: tuple[Tensor, Tensor],
        memory: AttentionMemory,
        layer: int,
        text: TextContext | None,
        null_token: Tensor | None = None,
    ) -> Tensor:
        # x: (B, F, N, d); mod: (B, F, 6, d) -> six (B, F, 1, d) tensors
        shift1, scale1, gate1, shift2, scale2, gate2 = mod[:, :, :, None].unbind(2)
        # Gated residuals as fused multiply-adds (x + gate * y): one op each instead of two.
        x = torch.addcmul(x, gate1, self.attn(norm_modulate(self.norm1, x, shift1, scale1), rope, memory, layer))
        if self.cross is not None:
            x = x + (self.cross(x, text) if text is not None else self.cross.null_output(null_token, x.dtype))
        return torch.addcmul(x, gate2, self.mlp(norm_modulate(self.norm2, x, shift2, scale2)))


class DiT(nn.Module):
    """Velocity network v(x_s, s, action, text | past frames) over a block of F frames."""

    def __init__(self, cfg: DiTConfig, action: ActionSpec, latent_channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.latent_channels = latent_channels
        d, p = cfg.width, cfg.patch
        token_dim = latent_channels * p * p
        self.patch_in = PackedLinear(token_dim, d)
        self.level_embed = LevelEmbedder(d)
        self.action_embed = ActionEncoder(action, d, point=cfg.action_point)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        # adaLN-single (PixArt-alpha): one modulation from the frame's conditioning, shared by all
        # blocks, plus a learned per-block offset. Per-block Linear(d, 6d) layers would hold 3x more
        # weights than the attention; at 16 tokens per pass the step is bound by reading weights.
        self.modulation = nn.Sequential(nn.SiLU(), PackedLinear(d, 6 * d))
        self.block_modulation = nn.Parameter(torch.zeros(cfg.depth, 6, d))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), PackedLinear(d, 2 * d))
        self.patch_out = PackedLinear(d, token_dim)
        # Reward / termination from the frame's pooled final features.
        self.heads = nn.Sequential(PackedLinear(d, d), nn.SiLU(), PackedLinear(d, 2))
        self.state_head = StateHead(d, cfg.state_dim) if cfg.state_dim else None
        if cfg.text_dim:
            self.null_text_token = nn.Parameter(torch.zeros(1, cfg.text_dim))
        self.rope = Rope3D(d // cfg.heads, cfg.rope_theta_time, cfg.rope_theta_space)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All special initialisation in one place (DiT's ``initialize_weights``)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for table in getattr(self.action_embed, "tables", []):
            nn.init.normal_(table.weight, std=0.02)
        nn.init.normal_(self.level_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.level_embed.mlp[2].weight, std=0.02)
        # adaLN-Zero: every gate, shift and scale starts at zero, so each block starts as identity ...
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)
        nn.init.zeros_(self.block_modulation)
        nn.init.zeros_(self.final_modulation[-1].weight)
        nn.init.zeros_(self.final_modulation[-1].bias)
        # ... and the output layer starts at zero, so the untrained network predicts v = 0.
        nn.init.zeros_(self.patch_out.weight)
        nn.init.zeros_(self.patch_out.bias)
        for block in self.blocks:
            if block.cross is not None:
                nn.init.zeros_(block.cross.proj.weight)
                nn.init.zeros_(block.cross.proj.bias)
        nn.init.zeros_(self.heads[-1].weight)
        nn.init.zeros_(self.heads[-1].bias)
        if self.state_head is not None:  # a new head starts at the features' mean, moving nothing else
            nn.init.zeros_(self.state_head.mlp[-1].weight)
            nn.init.zeros_(self.state_head.mlp[-1].bias)
        if self.action_embed.point is not None:  # a world gains the point embedding without changing at first
            nn.init.zeros_(self.action_embed.point.mlp[-1].weight)
            nn.init.zeros_(self.action_embed.point.mlp[-1].bias)

    def null_text(self, batch: int, device: torch.device) -> TextContext:
        """The learned "no prompt" context (one token)."""
        tokens = self.null_text_token[None].expand(batch, 1, -1)
        return TextContext(tokens=tokens, mask=torch.ones(batch, 1, dtype=torch.bool, device=device))

    def grid(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        p = self.cfg.patch
        return latent_hw[0] // p, latent_hw[1] // p

    def forward(
        self,
        latents: Tensor,
        levels: Tensor,
        actions: Tensor | None,
        action_null: Tensor,
        t_positions: Tensor | None,
        text: TextContext | None = None,
        memory: AttentionMemory | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> DiTOutput:
        """
        latents: (B, F, C, h, w) noisy latents, frame f at noise level ``levels[:, f]``.
        levels: (B, F) in [0, 1]; actions: per frame (see ActionEncoder); action_null: (B, F) bool.
        t_positions: (F,) absolute time index of each frame (RoPE); None when ``rope`` is given.
        memory: how attention sees other frames; None = block-causal within this block (training).
        rope: the cos/sin tables of ``t_positions`` when the caller has them (a compiled pass takes them as inputs,
        ``worldsim.kernels.compiled_pass.CompiledPass``); None makes them here.
        """
        B, F_, C, h, w = latents.shape
        p = self.cfg.patch
        gh, gw = h // p, w // p
        x = rearrange(latents, "b f c (gh p1) (gw p2) -> b f (gh gw) (c p1 p2)", p1=p, p2=p)
        x = self.patch_in(x.to(self.patch_in.weight.dtype))  # (B, F, N, d)
        if self.action_embed.point is not None and actions is not None:
            x = x + self.action_embed.point(actions, action_null, (gh, gw)).to(x.dtype)

        cond = self.level_embed(levels) + self.action_embed(actions, action_null)  # (B, F, d)
        mod = rearrange(self.modulation(cond), "b f (six d) -> b f six d", six=6)
        if rope is None:
            assert t_positions is not None, "the DiT needs the frames' positions or their rope tables"
            rope = self.rope.table(t_positions, (gh, gw), x.dtype, x.device)
        if memory is None:
            memory = BlockCausal(gh * gw)
        # No prompt: the learned null prompt, whose cross-attention is a constant per block (``null_output``).
        null_token = self.null_text_token if self.cfg.text_dim and text is None else None

        for layer, block in enumerate(self.blocks):
            x = block(x, mod + self.block_modulation[layer], rope, memory, layer, text, null_token)

        shift, scale = self.final_modulation(cond)[:, :, None].chunk(2, dim=-1)
        x = self.final_norm(x)
        heads = self.heads(x.mean(dim=2))  # (B, F, 2)
        state = self.state_head(x, (gh, gw)) if self.state_head is not None else heads.new_zeros(B, F_, 0)
        v = self.patch_out(modulate(x, shift, scale))
        v = rearrange(v, "b f (gh gw) (c p1 p2) -> b f c (gh p1) (gw p2)", gh=gh, p1=p, p2=p)
        return DiTOutput(v.float(), heads[..., 0].float(), heads[..., 1].float(), state.float())
