"""The fused training pieces compute what the plain operators do (coatsearch/nn/fused.py);
off unless switched on, and plain wherever a hook could see their tensors."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as torch_module

from coatsearch.nn import fused

TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(autouse=True)
def fused_on():
    """Every test here runs with the path on (a test may switch it off); the setting the
    process had comes back afterwards."""
    with fused.fused_training():
        yield


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


def _plain():
    """The plain path from here on (the fixture restores the setting)."""
    fused.set_fused_training(False)


def test_module_hooks_in_an_mbconv_see_what_the_plain_operators_give():
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
    _plain()
    plain_block(x).square().sum().backward()
    assert set(caught["fused"]) == {"depthwise", "se", "proj", "expand_norm"}
    for name, value in caught["fused"].items():
        torch.testing.assert_close(value, caught["plain"][name], atol=1e-4, rtol=1e-4, msg=name)


class _KeepsInput(nn.Conv2d):
    """A convolution that keeps its input: a holder of an inner tensor no hook reveals."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return super().forward(x)


@pytest.mark.parametrize("grad_in_place", [False, True])
def test_inner_gradients_read_with_autograd_grad_when_writing_over_is_off(grad_in_place):
    """``autograd.grad`` hands back the very tensor a later backward would write over: right
    with ``grad_in_place=False``, and wrong without it (so the switch is what keeps it)."""
    block, plain_block, x = _mbconv_pair()
    grads = {}
    for key, model in (("fused", block), ("plain", plain_block)):
        fused.set_fused_training(key == "fused", grad_in_place=grad_in_place)
        model.depthwise.__class__ = _KeepsInput
        x_in = x.clone().requires_grad_()
        out = model(x_in).square().sum()
        grads[key] = torch.autograd.grad(out, [model.depthwise.seen, x_in])
    inner_error = _relative_error(grads["fused"][0], grads["plain"][0])
    if grad_in_place:
        assert inner_error > 0.1
    else:
        assert inner_error < 1e-4
    torch.testing.assert_close(grads["fused"][1], grads["plain"][1], atol=1e-4, rtol=1e-4)


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest difference over the largest magnitude expected."""
    return float((got - expected).abs().max() / expected.abs().max())


def test_a_tensor_hook_from_a_forward_pre_hook_on_the_depthwise_sees_the_plain_gradient():
    """A forward pre-hook on the consumer registers a tensor hook on its input and keeps the
    gradient it receives; the BatchNorm+GELU backward must not write over that gradient."""
    block, plain_block, x = _mbconv_pair()
    caught: dict[str, list[torch.Tensor]] = {"fused": [], "plain": []}
    for key, model in (("fused", block), ("plain", plain_block)):
        def pre_hook(module, inputs, store=caught[key]):
            inputs[0].register_hook(lambda g: store.append(g))
        model.depthwise.register_forward_pre_hook(pre_hook)
    block(x).square().sum().backward()
    _plain()
    plain_block(x).square().sum().backward()
    (got,), (expected,) = caught["fused"], caught["plain"]
    assert _relative_error(got, expected) < 1e-4


def _stem_and_block_pair():
    """A conv stem and an MBConv with an SE: every call site of the fused pieces."""
    from coatsearch.nn.blocks import ConvStem, MBConv

    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(stem=ConvStem(3, 16, 1, "batch"), block=MBConv(16, 32, stride=2)))
    model = model.train().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    return model, copy.deepcopy(model), x


def _keep_input_grad(inputs: tuple, store: list) -> None:
    """What a forward hook can reach: the gradient its module's input will receive."""
    if isinstance(inputs[0], torch.Tensor) and inputs[0].requires_grad:
        inputs[0].register_hook(store.append)


def _keep_grads(store: list, *grads) -> None:
    store.extend(g for g in grads if g is not None)


HOOK_KINDS = ["forward_pre", "forward", "backward_pre", "backward"]


def _register_hook(module: nn.Module, kind: str, store: list) -> None:
    if kind == "forward_pre":
        module.register_forward_pre_hook(lambda m, inputs: _keep_input_grad(inputs, store))
    elif kind == "forward":
        module.register_forward_hook(lambda m, inputs, output: _keep_input_grad(inputs, store))
    elif kind == "backward_pre":
        module.register_full_backward_pre_hook(lambda m, grad_out: _keep_grads(store, *grad_out))
    else:
        module.register_full_backward_hook(lambda m, grad_in, grad_out: _keep_grads(store, *grad_in, *grad_out))


def _register_global_hook(kind: str, store: list):
    if kind == "forward_pre":
        return torch_module.register_module_forward_pre_hook(lambda m, inputs: _keep_input_grad(inputs, store))
    if kind == "forward":
        return torch_module.register_module_forward_hook(lambda m, inputs, output: _keep_input_grad(inputs, store))
    if kind == "backward_pre":
        return torch_module.register_module_full_backward_pre_hook(lambda m, grad_out: _keep_grads(store, *grad_out))
    return torch_module.register_module_full_backward_hook(
        lambda m, grad_in, grad_out: _keep_grads(store, *grad_in, *grad_out))


def _step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward and backward; the input's gradient."""
    x = x.clone().requires_grad_()
    model(x).square().sum().backward()
    return x.grad


def _assert_same_step(caught: dict[str, list], grads: dict[str, torch.Tensor], models: dict[str, nn.Module]):
    assert len(caught["fused"]) == len(caught["plain"]) > 0
    for i, (got, expected) in enumerate(zip(caught["fused"], caught["plain"])):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4, msg=f"hooked gradient {i}")
    torch.testing.assert_close(grads["fused"], grads["plain"], atol=1e-4, rtol=1e-4)
    plain_params = dict(models["plain"].named_parameters())
    for name, param in models["fused"].named_parameters():
        torch.testing.assert_close(param.grad, plain_params[name].grad, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kind", HOOK_KINDS)
@pytest.mark.parametrize("target", ["stem.norm1", "stem.conv2", "block", "block.expand_norm", "block.depthwise",
                                    "block.depthwise_norm", "block.se", "block.proj"])
def test_module_hooks_of_every_kind_see_what_the_plain_path_gives(kind, target):
    """Whatever a hook on a module next to a fused piece keeps (its input's gradient through
    a tensor hook, or the gradients a backward hook receives) is the plain path's."""
    model, plain_model, x = _stem_and_block_pair()
    models = {"fused": model, "plain": plain_model}
    caught: dict[str, list] = {"fused": [], "plain": []}
    grads = {}
    for key in ("fused", "plain"):
        fused.set_fused_training(key == "fused")
        _register_hook(models[key].get_submodule(target), kind, caught[key])
        grads[key] = _step(models[key], x)
    _assert_same_step(caught, grads, models)


@pytest.mark.parametrize("kind", HOOK_KINDS)
def test_global_module_hooks_see_what_the_plain_path_gives(kind):
    model, plain_model, x = _stem_and_block_pair()
    models = {"fused": model, "plain": plain_model}
    caught: dict[str, list] = {"fused": [], "plain": []}
    grads = {}
    for key in ("fused", "plain"):
        fused.set_fused_training(key == "fused")
        handle = _register_global_hook(kind, caught[key])
        try:
            grads[key] = _step(models[key], x)
        finally:
            handle.remove()
    _assert_same_step(caught, grads, models)


def _graph_names(out: torch.Tensor) -> set[str]:
    """The names of every backward node behind ``out``."""
    names, seen, stack = set(), set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


FUSED_NODES = {"_BatchNormGeluBackward", "_GateInPlaceBackward"}


def test_with_the_path_off_the_blocks_run_the_plain_operators(monkeypatch):
    model, _, x = _stem_and_block_pair()
    assert FUSED_NODES <= _graph_names(model(x.clone().requires_grad_()))  # on: the fused nodes
    fused.set_fused_training(False)

    def refuse(*args):
        raise AssertionError("a fused function ran with the path off")
    monkeypatch.setattr(fused._BatchNormGelu, "apply", refuse)
    monkeypatch.setattr(fused._GateInPlace, "apply", refuse)
    out = model(x.clone().requires_grad_())
    names = _graph_names(out)
    assert not names & FUSED_NODES
    assert {"NativeBatchNormBackward0", "GeluBackward0", "MulBackward0"} <= names
    out.square().sum().backward()


def _enabled_in_a_new_process(value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != fused.ENV_VAR}
    if value is not None:
        env[fused.ENV_VAR] = value
    code = "from coatsearch.nn import fused_training_enabled; print(fused_training_enabled())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.mark.parametrize("value, expected", [(None, "False"), ("1", "True")])
def test_the_path_is_off_by_default_and_the_environment_turns_it_on(value, expected):
    assert _enabled_in_a_new_process(value) == expected


def test_environment_values():
    assert all(fused._enabled_by(v) for v in ("1", "true", " ON ", "yes"))
    assert not any(fused._enabled_by(v) for v in (None, "", "0", "false", "off", "no"))
    with pytest.raises(ValueError, match="COATSEARCH_FUSED_TRAINING='2'"):
        fused._enabled_by("2")


def test_the_context_manager_restores_the_setting_and_flags_must_be_bools():
    fused.set_fused_training(False)
    with pytest.raises(RuntimeError), fused.fused_training(grad_in_place=False):
        assert fused.fused_training_enabled() and not fused._grad_in_place
        raise RuntimeError
    assert not fused.fused_training_enabled() and fused._grad_in_place
    with pytest.raises(TypeError, match="enable: expected a bool"):
        fused.set_fused_training("0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="grad_in_place: expected a bool"):
        fused.set_fused_training(True, 0)  # type: ignore[arg-type]
    assert not fused.fused_training_enabled()


def test_grad_in_place_off_writes_over_no_incoming_gradient():
    torch.manual_seed(0)
    from coatsearch.nn.blocks import MBConv

    block = MBConv(16, 32)
    assert fused.owned_grad(block.depthwise)
    fused.set_fused_training(True, grad_in_place=False)
    assert not fused.owned_grad(block.depthwise)
    fused.set_fused_training(False)
    assert not fused.owned_grad(block.depthwise)
