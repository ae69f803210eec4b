"""PackedLinear: an nn.Linear whose CPU inference runs oneDNN on a weight packed once (kernels/packed_linear)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from worldsim.kernels import packed_linear
from worldsim.kernels.packed_linear import PackedLinear

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")

DTYPES = [torch.float32] + ([torch.bfloat16] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else [])


@pytest.fixture(autouse=True)
def pack_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests check the packed path itself on small layers; which sizes take it is tested on its own."""
    monkeypatch.setattr(packed_linear, "FP32_PACKED_FROM_ROWS", 0)


def test_fp32_packs_from_a_number_of_rows_and_bf16_always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed_linear, "FP32_PACKED_FROM_ROWS", 512)
    layer = _layer(torch.float32)
    with torch.inference_mode():
        assert not packed_linear.use_packed(torch.randn(2, 255, 64), layer.weight)  # 510 rows
        assert packed_linear.use_packed(torch.randn(2, 256, 64), layer.weight)
        if packed_linear.mkl_packs():  # fewer rows: MKL's packed sgemm
            assert packed_linear.use_mkl_packed(torch.randn(2, 255, 64), layer.weight)
            assert not packed_linear.use_mkl_packed(torch.randn(2, 256, 64), layer.weight)
        if torch.bfloat16 in DTYPES:
            assert packed_linear.use_packed(torch.randn(1, 64, dtype=torch.bfloat16), layer.weight.bfloat16())


def _layer(dtype: torch.dtype, activation: str | None = None) -> PackedLinear:
    torch.manual_seed(0)
    return PackedLinear(64, 96, activation=activation).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(16, 64), (2, 3, 16, 64), (1, 64)])
def test_inference_takes_the_packed_path_and_matches_f_linear(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    layer = _layer(dtype)
    x = torch.randn(shape).to(dtype)
    with torch.inference_mode():
        assert packed_linear.use_packed(x, layer.weight)
        out = layer(x)
    expected = F.linear(x.float(), layer.weight.float(), layer.bias.float())
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert out.shape == (*shape[:-1], 96) and out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, atol=tol * expected.abs().max().item(), rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_gelu_matches_gelu_of_the_linear(dtype: torch.dtype) -> None:
    layer = _layer(dtype, activation="gelu")
    x = torch.randn(2, 16, 64).to(dtype)
    with torch.inference_mode():
        out = layer(x)
    expected = F.gelu(F.linear(x.float(), layer.weight.float(), layer.bias.float()))
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.float(), expected, atol=tol * expected.abs().max().item(), rtol=0)


needs_mkl = pytest.mark.skipif(not packed_linear.mkl_packs(), reason="no MKL packed sgemm in this torch build")

# Both packed fp32 calls: oneDNN's (from FP32_PACKED_FROM_ROWS rows, 0 here) and MKL's (under it).
FP32_PATHS = ["onednn", pytest.param("mkl", marks=needs_mkl)]


def _take(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every fp32 call of a test to oneDNN's packed call or to MKL's."""
    monkeypatch.setattr(packed_linear, "FP32_PACKED_FROM_ROWS", 0 if path == "onednn" else 10**9)
    monkeypatch.setattr(packed_linear, "MKL_FROM_ROWS", 1)


@needs_mkl
@pytest.mark.parametrize("activation", [None, "gelu"])
def test_small_fp32_calls_take_mkls_packed_sgemm_and_match_f_linear(monkeypatch, activation) -> None:
    _take("mkl", monkeypatch)
    monkeypatch.setattr(packed_linear, "MKL_FROM_ROWS", 8)
    layer = _layer(torch.float32, activation)
    inputs = [
        torch.randn(16, 64),
        torch.randn(2, 3, 16, 64),
        torch.randn(64, 8).t(),  # transposed
        torch.randn(3, 64)[:, None].expand(3, 5, 64),  # broadcast rows
        torch.randn(2, 64),  # fewer than MKL_FROM_ROWS rows: F.linear
        torch.randn(0, 64),  # an empty batch: F.linear
    ]
    for x in inputs:
        with torch.inference_mode():
            mkl = packed_linear.use_mkl_packed(x, layer.weight)
            assert mkl == (x.numel() >= 8 * 64) and not packed_linear.use_packed(x, layer.weight)
            out = layer(x)
        expected = F.linear(x, layer.weight, layer.bias).detach()
        expected = F.gelu(expected) if activation else expected
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, atol=1e-5 * max([1.0, *expected.abs().flatten().tolist()]), rtol=0)


@pytest.mark.parametrize("path", FP32_PATHS)
def test_the_packed_copy_follows_every_change_of_the_weight(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _take(path, monkeypatch)
    layer = _layer(torch.float32)
    x = torch.randn(8, 64)

    def infer() -> torch.Tensor:
        with torch.inference_mode():
            return layer(x)

    def reference() -> torch.Tensor:
        return F.linear(x, layer.weight, layer.bias).detach()

    first = infer()
    # An optimizer step writes the weight in place.
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x).square().sum().backward()
    opt.step()
    torch.testing.assert_close(infer(), reference())
    assert not torch.allclose(infer(), first)
    # load_state_dict copies into the same tensors.
    other = nn.Linear(64, 96)
    layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(infer(), reference())
    # .to(dtype) swaps the tensors' storage.
    layer.to(torch.float64).to(torch.float32)
    torch.testing.assert_close(infer(), reference())


def test_training_is_plain_nn_linear() -> None:
    layer = _layer(torch.float32, activation="gelu")
    plain = nn.Linear(64, 96)
    assert layer.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(4, 64)
    assert not packed_linear.use_packed(x, layer.weight)  # autograd on: the F.linear path, with gradients
    out = layer(x)
    torch.testing.assert_close(out, F.gelu(plain(x)))
    out.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("path", FP32_PATHS)
def test_flop_counter_counts_the_packed_call_as_the_plain_one(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from worldsim.bench import _count_cpu_kernel_flops

    _take(path, monkeypatch)
    _count_cpu_kernel_flops()
    layer = _layer(torch.float32)
    x = torch.randn(2, 16, 64)

    def flops() -> int:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            layer(x)
        return counter.get_total_flops()

    packed = flops()
    monkeypatch.setattr(packed_linear, "use_packed", lambda x, weight: False)
    monkeypatch.setattr(packed_linear, "use_mkl_packed", lambda x, weight: False)
    assert packed == flops() == 2 * 32 * 64 * 96


def test_flop_counter_counts_cpu_flash_attention_as_its_two_matrix_products() -> None:
    """A batch-1 step attends through SDPA's CPU flash kernel, which FlopCounterMode alone counts as nothing."""
    from torch.utils.flop_counter import FlopCounterMode

    from worldsim.bench import _count_cpu_kernel_flops

    _count_cpu_kernel_flops()
    q, k, v = torch.randn(2, 4, 16, 32), torch.randn(2, 4, 80, 32), torch.randn(2, 4, 80, 24)

    def flops(attend) -> int:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            attend()
        return counter.get_total_flops()

    sdpa = flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    products = flops(lambda: torch.matmul(torch.matmul(q, k.transpose(-1, -2)).softmax(-1), v))
    assert sdpa == products == 2 * 2 * 4 * 16 * 80 * (32 + 24)


def test_strided_and_empty_inputs() -> None:
    layer = _layer(torch.float32)
    inputs = [
        torch.randn(64, 8).t(),  # transposed
        torch.randn(3, 64)[:, None].expand(3, 5, 64),  # broadcast rows
        torch.randn(0, 64),  # an empty batch
    ]
    for x in inputs:
        with torch.inference_mode():
            out = layer(x)
        torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias).detach())


def test_autocast_keeps_its_dtype() -> None:
    """Under autocast (a distillation's no-grad teacher pass) the layer computes in autocast's dtype, as nn.Linear."""
    layer = _layer(torch.float32)
    x = torch.randn(4, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not packed_linear.use_packed(x, layer.weight)
        assert layer(x).dtype == torch.bfloat16
