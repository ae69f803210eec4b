"""A function of a module's inference compiled by ``torch.compile``, with the module's weights frozen into the graph on
a CPU.

Frozen weights are constants to inductor, which packs each of them once for its GEMM library and folds what it can:
fp32 linear layers become MKL's packed sgemm (``mkl_linear``), bf16 ones and the decoder's convolutions oneDNN calls on
pre-packed weights, each with its activation fused in. With the weights as graph inputs instead, every call repacks
them, and at batch 1 the repacking is a large part of a call, of the DiT's passes and the decoder's alike (measured
in ``docs/results.md``, "Frozen weights, a compiled decoder").

A frozen graph does not see its weights change, so the owner calls ``follow_weights`` where a change may take effect
(``WorldModel.reset``): if any parameter was replaced or written since the graphs were built, they are built again.
Each instance compiles a code object of its own, because dynamo keeps its graphs per code object: rebuilding one
world's graphs leaves other worlds' alone, and each world's graphs count against dynamo's recompile limit separately.

On a GPU the weights stay graph inputs (nothing to pack; untested with freezing here) and the graphs are inductor's
CUDA graphs (``mode="reduce-overhead"``'s ``triton.cudagraphs``). No machine of this project has run those yet, so
their first calls are checked against ``fn`` run eagerly on the same inputs, and ``fn`` serves instead from the first
disagreement on (``worldsim.kernels.selfcheck``; ``WORLDSIM_KERNELS`` picks the path).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
import torch._inductor.config as inductor_config
from torch import nn

from worldsim.errors import WorldsimError
from worldsim.kernels import plain_torch
from worldsim.kernels.packed_linear import write_version
from worldsim.kernels.selfcheck import CHECKED_CALLS, checks, kernel_path, mismatch, report


def weights_key(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """Where each parameter and buffer lives and how often it was written: changes when one is replaced (``.to``,
    assignment) or written in place (an optimizer step, ``load_state_dict``). ~100 us for the shipped DiT."""
    return tuple((t.data_ptr(), write_version(t)) for t in (*module.parameters(), *module.buffers()))


def own_code_copy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a function or a bound method) with a code object of its own, so dynamo's graphs for it are its own."""
    func = getattr(fn, "__func__", fn)
    copy = types.FunctionType(
        func.__code__.replace(), func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    copy.__kwdefaults__ = func.__kwdefaults__
    return types.MethodType(copy, fn.__self__) if hasattr(fn, "__self__") else copy


def compute_dtype(module: nn.Module) -> torch.dtype:
    """The least precise floating dtype among ``module``'s parameters (a bf16 world's autoencoder: its bf16 decoder)."""
    dtypes = {p.dtype for p in module.parameters() if p.is_floating_point()} or {torch.float32}
    return max(dtypes, key=lambda d: torch.finfo(d).eps)


def _signature(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """What picks one of the graphs for these inputs: the tensors' shapes and which inputs are None (a mask or none)."""
    return tuple(None if t is None else getattr(t, "shape", True) for t in inputs)


class FrozenGraphs:
    """``fn`` compiled (inductor; the C++ wrapper on a CPU, CUDA graphs on a GPU, static shapes: one graph per shape
    it meets), ``module``'s weights frozen into the CPU graphs (module doc). Called under ``torch.no_grad`` or
    ``inference_mode``, as freezing requires. Where ``selfcheck.checks`` says so, the first ``CHECKED_CALLS`` calls of
    each input shape also run ``fn`` eagerly (PyTorch ops only) and compare; from a disagreement on, ``fn`` serves."""

    def __init__(self, fn: Callable[..., Any], module: nn.Module, cuda: bool) -> None:
        self.fn = fn
        self.module = module
        self.frozen = not cuda
        self.name = getattr(fn, "__qualname__", repr(fn))
        self.device = next(module.parameters()).device
        self.dtype = compute_dtype(module)
        self.fallback: str | None = None
        """The self-check's warning line once a graph disagreed with ``fn``: ``fn`` runs instead from then on."""
        self.options: dict[str, Any] = {"triton.cudagraphs": True} if cuda else {"cpp_wrapper": True}
        # Dynamo guards every graph on the module tree it inlined (~450 checks, ~30 us a call at batch 1); that tree
        # does not change after compiling here, and weights replaced or written are ``follow_weights``'s business, so
        # only the guards on the inputs (shapes, dtypes, a mask or none) and on global state are kept.
        self.options["guard_filter_fn"] = torch.compiler.skip_guard_on_all_nn_modules_unsafe
        self.builds = 0
        """How many times the graphs were (re)built: 1 after construction, +1 for each change of weights followed."""
        self._build()

    def _build(self) -> None:
        self.graph = torch.compile(own_code_copy(self.fn), options=self.options, dynamic=False)
        self.key = weights_key(self.module) if self.frozen else None
        self.builds += 1
        self.plain = kernel_path() == "torch"
        """``WORLDSIM_KERNELS=torch``: ``fn`` runs, never a graph."""
        self.check = checks(self.device)
        self.calls_checked: dict[tuple[Any, ...], int] = {}

    def follow_weights(self) -> None:
        """Rebuild the graphs if the module's weights changed since they were frozen into them."""
        if self.frozen and weights_key(self.module) != self.key:
            self._build()

    def __call__(self, *inputs: Any) -> Any:
        if self.plain or self.fallback is not None:
            return self.fn(*inputs)
        out = self._graph(*inputs)
        if self.check and self._check_due(inputs):
            with plain_torch():
                plain = self.fn(*inputs)
            difference = mismatch(out, plain, self.dtype)
            if difference is not None:
                self.fallback = report(f"the compiled graph of {self.name}", self.device, self.dtype, difference)
                return plain
        return out

    def _check_due(self, inputs: tuple[Any, ...]) -> bool:
        """Whether this call is one of the first ``CHECKED_CALLS`` of its input shape since the graphs were built."""
        key = _signature(inputs)
        done = self.calls_checked.get(key, 0)
        if done >= CHECKED_CALLS:
            return False
        self.calls_checked[key] = done + 1
        return True

    def _graph(self, *inputs: Any) -> Any:
        # Dynamo decides whether parameters are frozen constants while it traces, from the global setting (the
        # options above reach only inductor), so the setting is switched on around the call: ~4 us.
        was = inductor_config.freezing
        inductor_config.freezing = self.frozen
        try:
            return self.graph(*inputs)
        except torch._dynamo.exc.TorchDynamoException as e:  # no C++ compiler, a platform inductor does not build for
            first_line = (str(e).splitlines() or [""])[0]
            raise WorldsimError(
                f"torch.compile could not build the world's step ({type(e).__name__}: {first_line}): "
                "run it without compiling"
            ) from e
        finally:
            inductor_config.freezing = was
