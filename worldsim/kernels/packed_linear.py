"""Linear layers whose inference on a CPU runs on weights packed once (oneDNN, or MKL's packed sgemm for small fp32
calls), instead of repacked on every call.

``F.linear`` hands oneDNN a plain row-major weight, which it reorders into its blocked layout on every call. A world
step makes ~30 linear calls a pass over 16-32 tokens (batch 1), where that reorder is most of the call
(``benchmarks/measure_packed_linear.py``; the timings in ``docs/results.md``, "Linear layers on packed weights").
The packed call gives ``F.linear``'s numbers up to float rounding (tested on a whole fp32 rollout).

fp32 calls of fewer than ``FP32_PACKED_FROM_ROWS`` rows lose on oneDNN's packed weight; they take MKL's packed
sgemm instead (``torch.ops.mkl._mkl_linear``, what inductor's frozen fp32 graphs call), which beats ``F.linear``
there (``benchmarks/measure_mkl_linear.py``; ``docs/results.md``, "Eager fp32 on MKL's packed sgemm").

``PackedLinear`` is an ``nn.Linear`` (same parameters, same checkpoint keys, same training path); only its inference
differs. The packed copy of a weight is made on the first inference call and again whenever the weight changes (an
optimizer step, ``load_state_dict``, ``.to(dtype)``), so a model can be trained and stepped in turns.
"""

from __future__ import annotations

import functools
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_PACKED: dict[tuple[int, str], tuple[weakref.ref, tuple[int, int, torch.dtype], Tensor]] = {}
"""(id(weight), "onednn" or "mkl") -> (the weight, the key it was packed under, its packed copy); an entry leaves
with its weight."""


@functools.cache
def _packed_dtypes() -> frozenset[torch.dtype]:
    """The dtypes oneDNN packs here: fp32, and bf16 where the CPU has it natively; none without oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return frozenset()
    bf16 = {torch.bfloat16} if torch.ops.mkldnn._is_mkldnn_bf16_supported() else set()
    return frozenset({torch.float32, *bf16})


@functools.cache
def mkl_packs() -> bool:
    """Whether this torch has MKL's packed sgemm (x86 builds with MKL)."""
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


FP32_PACKED_FROM_ROWS = 512
"""fp32 inputs of fewer rows take MKL's packed sgemm instead of oneDNN's packed call, which at those sizes is no
faster than ``F.linear`` (a batch-1 step of the shipped world: 110.2 frames/s all ``F.linear``, 100.4 all on oneDNN's
packed weights, 8 worlds 289.6 against 280.9; 32 worlds, whose block layers see 512-1,024 rows, 366.1 packed against
353.1). bf16 takes oneDNN at every size."""


def _cpu_inference(x: Tensor, weight: Tensor) -> bool:
    """Inference (no autograd, no autocast) on a CPU with oneDNN (not switched off by ``torch.backends.mkldnn.flags``),
    not inside ``torch.compile`` (which plans its own calls). Called ~60 times a batch-1 step, so it checks the cheap
    things first (but the compiler's first: it cannot trace the cached checks)."""
    return (
        not torch.compiler.is_compiling()
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")  # autocast picks the dtype itself (a distillation's teacher pass)
        and x.dtype is weight.dtype
        and x.device.type == "cpu"
        and torch.backends.mkldnn.enabled
    )


def use_packed(x: Tensor, weight: Tensor) -> bool:
    """Whether ``PackedLinear`` takes oneDNN's packed call: CPU inference (``_cpu_inference``) in bf16 where oneDNN
    has it natively, or in fp32 over at least ``FP32_PACKED_FROM_ROWS`` rows. The row count first: a small fp32
    call then goes on to ``use_mkl_packed`` without checking ``_cpu_inference`` twice."""
    return (
        (x.dtype is not torch.float32 or x.numel() >= FP32_PACKED_FROM_ROWS * x.shape[-1])
        and _cpu_inference(x, weight)
        and x.dtype in _packed_dtypes()
    )


MKL_FROM_ROWS = 8
"""fp32 calls of fewer rows (a batch of few worlds' per-frame conditioning) stay on ``F.linear``, as fast there."""

MKL_PACK_ROWS = 32
"""The row count MKL packs a weight for. Its pack serves any count (it is told the rows at each call) but runs
best near the one it was made for: the 24 block layers over 16 / 32 rows took 0.85 / 1.35 ms packed for 1 row, 0.71 /
1.09 for 16 or 32, against 1.04 / 1.47 through ``F.linear``; at 256 rows 6.59 ms packed for 32, 7.01 ``F.linear``.
One pack a weight: the block layers of a batch-1 step see 16 rows in one pass and 32 in the other."""


def use_mkl_packed(x: Tensor, weight: Tensor) -> bool:
    """Whether ``PackedLinear`` takes MKL's packed sgemm: CPU inference in fp32 over ``MKL_FROM_ROWS`` to
    ``FP32_PACKED_FROM_ROWS`` rows, where this torch has it."""
    return (
        x.dtype is torch.float32
        and MKL_FROM_ROWS * x.shape[-1] <= x.numel() < FP32_PACKED_FROM_ROWS * x.shape[-1]
        and _cpu_inference(x, weight)
        and torch.float32 in _packed_dtypes()
        and mkl_packs()
    )


def write_version(t: Tensor) -> int:
    """The tensor's in-place write counter; -1 for an inference-mode tensor, which keeps none."""
    try:
        return t._version
    except RuntimeError:
        return -1


def packed_weight(weight: Tensor, kind: str = "onednn") -> Tensor:
    """oneDNN's (``kind="onednn"``) or MKL's (``"mkl"``) packed copy of ``weight`` (out, in), made once per weight
    and again after the weight changes. MKL's pack serves every number of rows (it is told the rows at each call)."""
    key = (weight.data_ptr(), write_version(weight), weight.dtype)
    slot = (id(weight), kind)
    entry = _PACKED.get(slot)
    if entry is not None and entry[0]() is weight and entry[1] == key:
        return entry[2]
    with torch.inference_mode():
        w = weight.detach()
        packed = (
            torch.ops.mkl._mkl_reorder_linear_weight(w, MKL_PACK_ROWS)
            if kind == "mkl"
            else torch.ops.mkldnn._reorder_linear_weight(w)
        )
    if entry is None or entry[0]() is not weight:
        weakref.finalize(weight, _PACKED.pop, slot, None)
    _PACKED[slot] = (weakref.ref(weight), key, packed)
    return packed


class PackedLinear(nn.Linear):
    """``nn.Linear``, on a packed weight at inference on a CPU (module doc). ``activation="gelu"`` applies the exact
    GELU to the output, fused into the same oneDNN call on the packed path."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if activation not in (None, "gelu"):
            raise ValueError(f"activation must be None or 'gelu', got {activation!r}")
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if use_packed(x, self.weight):
            attr = "gelu" if self.activation else "none"
            return torch.ops.mkldnn._linear_pointwise(
                x, packed_weight(self.weight), self.bias, attr, [], "none" if self.activation else ""
            )
        if use_mkl_packed(x, self.weight):
            rows = x.numel() // x.shape[-1]
            y = torch.ops.mkl._mkl_linear(x, packed_weight(self.weight, "mkl"), self.weight, self.bias, rows)
        else:
            y = F.linear(x, self.weight, self.bias)
        return F.gelu(y) if self.activation else y

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", activation={self.activation}" if self.activation else "")
