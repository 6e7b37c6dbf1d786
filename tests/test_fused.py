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
        (out * 1.0).backward(grad)  # a consumer that makes a fresh gradient, as a conv does
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


@pytest.mark.parametrize("grad_in_place", [False, True])
def test_a_retained_graph_gives_the_same_gradients_twice(grad_in_place):
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(6)
    x = _input(True)
    scale = torch.rand(4, 6, 1, 1, requires_grad=True)
    conv = nn.Conv2d(6, 6, 1)
    hidden = fused.batch_norm_gelu(x, norm, grad_in_place)
    out = conv(fused.gate_(hidden, scale, grad_in_place)).square().sum()
    out.backward(retain_graph=True)
    first = x.grad.clone(), scale.grad.clone()
    out.backward()
    torch.testing.assert_close(x.grad, 2 * first[0], **TOL)
    torch.testing.assert_close(scale.grad, 2 * first[1], **TOL)


@pytest.mark.parametrize("with_gate", [False, True])
def test_a_broadcast_gradient_is_not_written_over(with_gate):
    """``.sum()``'s gradient is one value viewed at every position: copied, not overwritten."""
    torch.manual_seed(0)
    norm, plain_norm = nn.BatchNorm2d(6), nn.BatchNorm2d(6)
    x = _input(True)
    x_plain = x.detach().clone().requires_grad_()
    scale = torch.rand(4, 6, 1, 1) if with_gate else torch.ones(4, 6, 1, 1)
    out = fused.batch_norm_gelu(x, norm, grad_in_place=True)
    if with_gate:
        out = fused.gate_(out, scale, grad_in_place=True)
    out.sum().backward()
    (F.gelu(plain_norm(x_plain)) * scale).sum().backward()
    torch.testing.assert_close(x.grad, x_plain.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", ["no-affine", "frozen", "input-without-grad"])
def test_batch_norm_gelu_with_some_gradients_not_needed(case):
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(6, affine=case != "no-affine")
    if case == "frozen":
        norm.requires_grad_(False)
    plain_norm = copy.deepcopy(norm)
    x = _input(True).requires_grad_(case != "input-without-grad")
    x_plain = x.detach().clone().requires_grad_(x.requires_grad)
    grad = torch.randn(x.shape)
    out = fused.batch_norm_gelu(x, norm, grad_in_place=True)
    assert type(out.grad_fn).__name__ == "_BatchNormGeluBackward"
    (out * 1.0).backward(grad)
    (F.gelu(plain_norm(x_plain)) * 1.0).backward(grad)
    if x.requires_grad:
        torch.testing.assert_close(x.grad, x_plain.grad, atol=1e-4, rtol=1e-4)
    for p, q in zip(norm.parameters(), plain_norm.parameters()):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4)


def test_batches_batch_norm_rejects_or_accepts_behave_as_it_does():
    norm = nn.BatchNorm2d(6)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fused.batch_norm_gelu(torch.randn(1, 6, 1, 1, requires_grad=True), norm)
    empty = torch.randn(0, 6, 4, 4, requires_grad=True)
    torch.testing.assert_close(fused.batch_norm_gelu(empty, norm), F.gelu(norm(empty)))
    assert fused.gate_(empty * 1.0, torch.ones(0, 6, 1, 1)).shape == empty.shape


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


def _mbconv_pair():
    from coatsearch.nn.blocks import MBConv

    torch.manual_seed(0)
    block = MBConv(16, 32, stride=2).train().to(memory_format=torch.channels_last)
    x = torch.randn(4, 16, 16, 16).contiguous(memory_format=torch.channels_last)
    return block, copy.deepcopy(block), x


def _plain(monkeypatch):
    monkeypatch.setattr(fused, "fused_training", lambda x: False)


def test_module_hooks_in_an_mbconv_see_what_the_plain_operators_give(monkeypatch):
    """Backward hooks on the convolutions and the SE keep gradients the fused backward
    would otherwise write over; a forward hook on a BatchNorm still fires."""
    block, plain_block, x = _mbconv_pair()
    caught: dict[str, dict[str, torch.Tensor]] = {"fused": {}, "plain": {}}
    for key, model in (("fused", block), ("plain", plain_block)):
        for name in ("depthwise", "se", "proj"):
            getattr(model, name).register_full_backward_hook(
                lambda mod, gi, go, key=key, name=name: caught[key].__setitem__(name, gi[0]))
        model.expand_norm.register_forward_hook(
            lambda mod, inp, out, key=key: caught[key].__setitem__("expand_norm", out))
    block(x).square().sum().backward()
    _plain(monkeypatch)
    plain_block(x).square().sum().backward()
    assert set(caught["fused"]) == {"depthwise", "se", "proj", "expand_norm"}
    for name, value in caught["fused"].items():
        torch.testing.assert_close(value, caught["plain"][name], atol=1e-4, rtol=1e-4, msg=name)


def test_inner_gradients_read_with_autograd_grad_when_writing_over_is_off(monkeypatch):
    """``autograd.grad`` hands back the very tensor a later backward would write over."""
    block, plain_block, x = _mbconv_pair()
    grads = {}
    monkeypatch.setattr(fused, "GRAD_IN_PLACE", False)
    for key, model in (("fused", block), ("plain", plain_block)):
        if key == "plain":
            _plain(monkeypatch)
        inner: list[torch.Tensor] = []
        model.depthwise.register_forward_pre_hook(lambda m, inp, inner=inner: inner.append(inp[0]))
        x_in = x.clone().requires_grad_()
        grads[key] = torch.autograd.grad(model(x_in).square().sum(), [inner[0], x_in])
    for fused_grad, plain_grad in zip(grads["fused"], grads["plain"]):
        torch.testing.assert_close(fused_grad, plain_grad, atol=1e-4, rtol=1e-4)
