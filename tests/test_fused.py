"""The fused training pieces compute what the plain operators do (coatsearch/nn/fused.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coatsearch.nn import fused

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _input(channels_last: bool, shape=(4, 6, 5, 7)) -> torch.Tensor:
    x = torch.randn(shape) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("momentum, track", [(0.1, True), (None, True), (0.1, False)])
@pytest.mark.parametrize("chunk_bytes", [fused.CHUNK_BYTES, 200])  # one chunk, or one per sample
@pytest.mark.parametrize("grad_in_place", [False, True])
def test_batch_norm_gelu_matches_the_plain_operators(
    monkeypatch, channels_last, momentum, track, chunk_bytes, grad_in_place
):
    monkeypatch.setattr(fused, "CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(6, momentum=momentum, track_running_stats=track)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    plain_norm = copy.deepcopy(norm)
    x = _input(channels_last)
    x_plain = x.detach().clone().requires_grad_()
    grad = torch.randn(x.shape)
    for _ in range(2):  # twice: the cumulative average uses the batch counter
        out = fused.batch_norm_gelu(x, norm, grad_in_place)
        expected = F.gelu(plain_norm(x_plain))
        assert out.grad_fn is not None and type(out.grad_fn).__name__ == "_BatchNormGeluBackward"
        torch.testing.assert_close(out, expected, **TOL)
        kept = grad.clone()
        (out * 1.0).backward(grad)  # a consumer that makes a fresh gradient, as a conv does
        assert torch.equal(grad, kept)
        expected.backward(grad)
    torch.testing.assert_close(x.grad, x_plain.grad, atol=1e-4, rtol=1e-4)
    for name, param in norm.named_parameters():
        torch.testing.assert_close(param.grad, dict(plain_norm.named_parameters())[name].grad,
                                   atol=1e-4, rtol=1e-4, msg=name)
    for name, buffer in norm.named_buffers():
        torch.testing.assert_close(buffer, dict(plain_norm.named_buffers())[name], **TOL, msg=name)


def test_batch_norm_gelu_gradients_are_exact_in_double():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(4, dtype=torch.float64).add_(0.5).requires_grad_()
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def f(x, weight, bias):
        return fused._BatchNormGelu.apply(x, weight, bias, None, None, 0.0, 1e-5, False)

    assert torch.autograd.gradcheck(f, (x, weight, bias))


@pytest.mark.parametrize("chunk_bytes", [fused.CHUNK_BYTES, 200])
@pytest.mark.parametrize("grad_in_place", [False, True])
def test_gate_matches_the_product_and_survives_a_zero_scale(monkeypatch, chunk_bytes, grad_in_place):
    monkeypatch.setattr(fused, "CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    x = _input(True)
    logits = torch.randn(4, 6, 1, 1)
    logits[0, 0] = -200.0  # sigmoid is exactly 0 in float32 there
    logits.requires_grad_()
    x_plain = x.detach().clone().requires_grad_()
    logits_plain = logits.detach().clone().requires_grad_()
    grad = torch.randn(x.shape)

    source = x * 1.0  # gate_ writes over its input: give it one nothing else reads
    out = fused.gate_(source, torch.sigmoid(logits), grad_in_place)
    expected = x_plain * torch.sigmoid(logits_plain)
    assert out.data_ptr() == source.data_ptr()
    torch.testing.assert_close(out, expected, **TOL)
    (out * 1.0).backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_plain.grad, **TOL)
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(logits.grad, logits_plain.grad, atol=1e-4, rtol=1e-4)


def test_gate_gradients_are_exact_in_double():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(3, 4, 1, 1, dtype=torch.float64).add_(0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, s: fused._GateInPlace.apply(x * 1.0, s, False), (x, scale))


def test_a_retained_graph_gives_the_same_gradients_twice():
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(6)
    x = _input(True)
    scale = torch.rand(4, 6, 1, 1, requires_grad=True)
    out = fused.gate_(fused.batch_norm_gelu(x, norm), scale).square().sum()
    out.backward(retain_graph=True)
    first = x.grad.clone(), scale.grad.clone()
    out.backward()
    torch.testing.assert_close(x.grad, 2 * first[0], **TOL)
    torch.testing.assert_close(scale.grad, 2 * first[1], **TOL)


def test_a_broadcast_gradient_is_not_written_over():
    """``.sum()``'s gradient is one value viewed at every position: copied, not overwritten."""
    torch.manual_seed(0)
    norm, plain_norm = nn.BatchNorm2d(6), nn.BatchNorm2d(6)
    x = _input(True)
    x_plain = x.detach().clone().requires_grad_()
    scale = torch.rand(4, 6, 1, 1)
    fused.gate_(fused.batch_norm_gelu(x, norm, grad_in_place=True), scale, grad_in_place=True).sum().backward()
    (F.gelu(plain_norm(x_plain)) * scale).sum().backward()
    torch.testing.assert_close(x.grad, x_plain.grad, atol=1e-4, rtol=1e-4)


def test_plain_operators_where_the_fusion_does_not_apply():
    norm = nn.BatchNorm2d(6)
    x = _input(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert type(fused.batch_norm_gelu(x, norm).grad_fn).__name__ == "GeluBackward0"
    assert type(fused.batch_norm_gelu(x.double(), norm.double()).grad_fn).__name__ == "GeluBackward0"
    norm.eval()  # running statistics: nothing to fuse
    assert type(fused.batch_norm_gelu(x.float(), norm.float()).grad_fn).__name__ == "GeluBackward0"
    with torch.no_grad():
        assert fused.gate_(x.detach().clone(), torch.ones(4, 6, 1, 1)).grad_fn is None
