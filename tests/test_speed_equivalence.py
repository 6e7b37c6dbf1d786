"""The optimised modules compute what the original ones did, with the same weights.

`tests/reference_nn.py` is a frozen copy of the modules before the speed work. Each test
builds both from one spec, loads the new model's state_dict into the reference (strict:
the keys are unchanged, so old checkpoints load) and compares outputs and gradients.
"""

from __future__ import annotations

import pytest
import torch

from coatsearch import NetSpec, build
from coatsearch.nn import fused_training
from tests import reference_nn
from tests.conftest import tiny_spec

ATOL = 1e-5


def _specs() -> dict[str, NetSpec]:
    small = NetSpec.from_layout(
        "C-C-T-T", [1, 1, 2, 2, 1], [32, 32, 64, 128, 256], image_size=32, num_classes=10
    )
    patch = NetSpec.from_dict(
        {
            "image_size": 32, "num_classes": 10, "head_hidden": 24,
            "stem": {"kind": "patch", "channels": 32, "stride": 4},
            "stages": [
                {"kind": "T", "blocks": 2, "channels": 32, "stride": 1, "head_dim": 16},
                {"kind": "T", "blocks": 1, "channels": 64, "stride": 2, "head_dim": 16,
                 "attention": "plain"},
            ],
        }
    )
    return {
        "small-cctt": small,
        "cccc-layer-norm": tiny_spec("C-C-C-C", norm="layer"),
        "cttt": tiny_spec("C-T-T-T"),
        "no-se": tiny_spec("C-C-T-T", se_ratio=0.0),
        "patch-stem": patch,
    }


SPECS = _specs()


def _pair(spec: NetSpec, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    model = build(spec)
    with torch.no_grad():  # non-trivial norms and bias tables, so a dropped term shows
        for name, tensor in model.state_dict().items():
            if name.endswith(("running_mean", "table")):
                tensor.normal_(0, 0.5)
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith(("norm.weight", "norm1.weight")):
                tensor.uniform_(0.5, 1.5)
    reference = reference_nn.CoAtNet(spec)
    reference.load_state_dict(model.state_dict(), strict=True)
    return model, reference


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_matches_the_original(name, channels_last):
    spec = SPECS[name]
    model, reference = _pair(spec)
    model.eval()
    reference.eval()
    x = torch.randn(3, spec.in_channels, spec.image_size, spec.image_size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = reference(x)
    with torch.inference_mode():
        first = model(x)
        second = model(x)  # cached bias / folded weights
    with torch.no_grad():
        third = model(x)
    for out in (first, second, third):
        torch.testing.assert_close(out, expected, atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_training_step_matches_the_original(name, fused):
    spec = SPECS[name]
    model, reference = _pair(spec)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(3, spec.in_channels, spec.image_size, spec.image_size)
    with fused_training(fused):  # the setting is read by the forward; the backward follows it
        out = model(x.contiguous(memory_format=torch.channels_last))
    expected = reference(x)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=ATOL)
    out.square().sum().backward()
    expected.square().sum().backward()
    grads = dict(reference.named_parameters())
    for pname, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[pname].grad, atol=1e-4, rtol=1e-4, msg=pname)
    # BN running statistics moved the same way
    ref_state = reference.state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, ref_state[key], atol=ATOL, rtol=ATOL, msg=key)


def test_caches_follow_weight_changes_and_mode_switches():
    spec = SPECS["small-cctt"]
    model, reference = _pair(spec)
    model.eval()
    reference.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        model(x)
    # an optimiser-like in-place update, then a checkpoint load: both must be seen
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    reference.load_state_dict(model.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=ATOL)
    other, _ = _pair(spec, seed=1)
    model.load_state_dict(other.state_dict())
    reference.load_state_dict(other.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=ATOL)
    # a training step after cached inference, then inference again
    model.train()
    reference.train()
    model(x).sum().backward()
    reference(x).sum().backward()
    model.eval()
    reference.eval()
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=ATOL)


def test_another_resolution_matches_the_original(monkeypatch):
    # The resize rule itself changed on purpose (half-pixel centres, `resize_table`): give the
    # frozen original the same rule, so this compares the fast paths and nothing else.
    import tests.reference_nn as reference_nn
    from coatsearch.nn.attention import resize_table

    monkeypatch.setattr(reference_nn.RelativePositionBias, "table_for",
                        lambda self, h, w: resize_table(self.table, (2 * h - 1, 2 * w - 1)))
    spec = SPECS["small-cctt"]
    model, reference = _pair(spec)
    model.eval()
    reference.eval()
    for size in (48, 32):
        x = torch.randn(2, 3, size, size)
        with torch.inference_mode():
            torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=ATOL)


def test_eval_mode_with_gradients_still_reaches_the_weights():
    spec = SPECS["small-cctt"]
    model, _ = _pair(spec)
    model.eval()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_compile_without_a_cpp_compiler_fails_in_one_line(monkeypatch):
    from coatsearch.train import loop
    from coatsearch.train.config import TrainConfig, TrainConfigError

    assert TrainConfig(compile=True).compile and not TrainConfig().compile
    monkeypatch.setattr(loop.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(TrainConfigError, match=r"^compile: .*C\+\+ compiler") as info:
        loop.compile_model(torch.nn.Linear(2, 2), torch.device("cpu"))
    assert "\n" not in str(info.value)


def test_the_traced_count_sees_the_reference_operators():
    """fvcore's trace must not see the fused or folded kernels (the counts name operators)."""
    from coatsearch.flops import count

    spec = SPECS["small-cctt"]
    traced, analytic = count(spec, route="traced"), count(spec, route="analytic")
    assert traced.by_op == analytic.by_op and traced.flops == analytic.flops
