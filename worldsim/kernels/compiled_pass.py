"""The KV cache's steady-state pass as compiled graphs (``CompiledPass``), beside the frozen-graph machinery it runs on
(``worldsim.kernels.compiled.FrozenGraphs``).

The cache (``worldsim.diffusion.memory.KVCache``) decides when a pass is steady; ``CompiledPass`` runs it as one call
into generated code, the cache's keys and values coming in as plain tensors (``ContextAttention``). Change what a
compiled pass computes here, and keep it equal to the eager DiT's pass: the self-check and the tests hold it to that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from worldsim.diffusion.memory import CachePass, KeysValues, KVCache
from worldsim.kernels.compiled import FrozenGraphs
from worldsim.models.conditioning import FrameConditioning
from worldsim.models.dit import DiT, DiTOutput


class ContextAttention:
    """The attention memory of a compiled pass (``CompiledPass``): the cache's keys and values come in as plain
    tensors, so the compiler has no Python state to guard on. Each layer attends over them joined with its block's
    own keys and values (``KVCache.attend`` reads the same keys in place), and keeps the block's for the caller.

    Always through SDPA, which the compiler keeps as one fused call. ``cache_attention``'s matmul-and-softmax path
    (eager bf16 batches) is lowered to generated loops that were slow on large score tensors: with it, PushT's 32
    worlds ran slower compiled than eager (``docs/results.md``, "Compiled passes")."""

    def __init__(self, keys: Tensor, values: Tensor, bias: Tensor | None) -> None:
        self.keys, self.values, self.bias = keys, values, bias
        self.block_keys: list[Tensor] = []
        self.block_values: list[Tensor] = []

    def kv_slots(self, layer: int, batch: int, length: int) -> None:
        return None  # the block's keys and values are returned, not written into the cache

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        self.block_keys.append(k)
        self.block_values.append(v)
        keys = torch.cat([self.keys[layer], k], -2)
        values = torch.cat([self.values[layer], v], -2)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=self.bias)

class CompiledPass:
    """KV-cache passes of the steady state as graphs compiled by ``torch.compile`` (``FrozenGraphs``: inductor, the
    C++ wrapper, the weights frozen in on a CPU): a pass is one call into generated code instead of ~1,000 PyTorch
    ops, each with its dispatch, which is what bounds a batch-1 step on a CPU (speed-ups and compile times in
    ``docs/results.md``, "Frozen weights, a compiled decoder").

    The cache's steady state only (``KVCache.steady``), unguided and without a prompt: those passes repeat the same
    shapes frame after frame, so two graphs serve a whole rollout (the merged write-then-denoise pass and a plain
    one), three once a world restarts (the plain pass then carries a mask); the first frames, guidance, prompts and
    multi-frame blocks go through the eager DiT, which is what the graphs are tested against.
    Weights changed after compiling take effect at the next reset (``WorldModel.reset`` calls ``follow_weights``).
    """

    def __init__(self, dit: DiT) -> None:
        self.dit = dit
        self.cuda = next(dit.parameters()).is_cuda
        self.graph = FrozenGraphs(self._forward, dit, self.cuda)

    def follow_weights(self) -> None:
        """Build the graphs again if the DiT's weights changed since they were frozen into them."""
        self.graph.follow_weights()

    def _forward(
        self,
        latents: Tensor,
        levels: Tensor,
        actions: Tensor,
        null: Tensor,
        rope: tuple[Tensor, Tensor],
        keys: Tensor,
        values: Tensor,
        bias: Tensor | None,
    ) -> tuple[DiTOutput, Tensor, Tensor]:
        memory = ContextAttention(keys, values, bias)
        out = self.dit(latents, levels, actions, null, None, memory=memory, rope=rope)
        return out, torch.stack(memory.block_keys), torch.stack(memory.block_values)

    def __call__(
        self, cache: KVCache, x: Tensor, levels: Tensor, cond: FrameConditioning, positions: Tensor, step: CachePass
    ) -> DiTOutput:
        """``cache``'s pass over ``x`` (steady), the same as ``dit(..., memory=step)``; the block's keys and values go
        to ``step``."""
        dense = cond.dense(self.dit.action_embed.spec)  # one graph whether or not the frames have actions
        rope = self.dit.rope.table(positions, self.dit.grid(x.shape[-2:]), cache.k.dtype, cache.k.device)
        bias = cache.block_bias(x.shape[1], step.ahead)
        keys, values = cache.context(step.ahead)
        if self.cuda:  # CUDA graphs copy each input into a buffer of their own unless it is static: the cache's views
            for view in (keys, values):  # sit at the same addresses frame after frame, so they are read in place
                torch._dynamo.mark_static_address(view, guard=False)
        # Contiguous small inputs: a write pass's levels (filled) and a denoise pass's (expanded) then share a graph.
        small = (t.contiguous() for t in (x, levels, dense.actions, dense.null))
        inputs = (*small, rope, keys, values, bias)
        out, keys, values = self.graph(*inputs)
        if self.cuda:  # a CUDA graph's outputs are overwritten by its next replay: keep copies
            out, keys, values = DiTOutput(*(t.clone() for t in out)), keys.clone(), values.clone()
        step.remember(KeysValues(keys, values))
        return out
