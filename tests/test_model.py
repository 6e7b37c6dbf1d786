from __future__ import annotations

import pytest
import torch

from coatsearch import NetSpec, build
from coatsearch.flops import count
from tests.conftest import tiny_spec

LAYOUTS = ["C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T"]


def _vit_rel(image_size: int) -> NetSpec:
    return NetSpec.from_dict(
        {
            "stem": {"kind": "patch", "channels": 64, "stride": 16 if image_size > 64 else 4},
            "stages": [{"kind": "T", "blocks": 2, "channels": 64, "stride": 1}],
            "image_size": image_size,
            "num_classes": 10,
        }
    )


def _forward_backward(spec: NetSpec, batch: int = 2) -> None:
    model = build(spec)
    x = torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size)
    out = model(x)
    assert out.shape == (batch, spec.num_classes)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("image_size", [32, 224])
def test_every_layout_runs_forward_and_backward(layout, image_size):
    _forward_backward(tiny_spec(layout, image_size=image_size))


@pytest.mark.parametrize("image_size", [32, 224])
def test_vit_rel_runs_forward_and_backward(image_size):
    _forward_backward(_vit_rel(image_size))


def test_a_model_accepts_another_resolution():
    spec = tiny_spec(image_size=32)
    model = build(spec).eval()
    for size in (32, 48, 64):
        assert model(torch.randn(1, 3, size, size)).shape == (1, 10)
    # the learned tables keep their shape: a checkpoint loads at any resolution
    state = model.state_dict()
    build(spec).load_state_dict(state)


def test_stride_sits_on_the_first_1x1_conv():
    model = build(tiny_spec("C-C-C-C", image_size=32))
    first = model.stages[1][0]
    assert first.expand.stride == (2, 2)
    assert first.depthwise.stride == (1, 1)


@pytest.mark.parametrize("stride_mode", ["1x1", "dw"])
def test_stride_mode_places_the_stride_and_the_counts_follow(stride_mode):
    from tests.test_flops import assert_routes_agree

    spec = tiny_spec("C-C-T-T", image_size=32)
    spec = spec.with_stages([s.model_copy(update={"stride_mode": stride_mode}) for s in spec.stages])
    model = build(spec)
    first = model.stages[1][0]
    expand, depthwise = ((2, 2), (1, 1)) if stride_mode == "1x1" else ((1, 1), (2, 2))
    assert (first.expand.stride, first.depthwise.stride) == (expand, depthwise)
    assert model.stages[1][0].expand.stride == expand  # every C stage's first block
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert_routes_agree(count(spec, route="traced"), count(spec, route="analytic"))


def test_striding_the_depthwise_conv_costs_more_and_the_same_parameters():
    from coatsearch import preset

    paper = preset("coatnet-0")
    dw = paper.with_stages([s.model_copy(update={"stride_mode": "dw"}) for s in paper.stages])
    a, b = count(paper, route="analytic"), count(dw, route="analytic")
    assert a.params == b.params
    assert 1.05 < b.flops / a.flops < 1.15


def test_drop_path_rates_grow_linearly_and_only_act_in_training():
    spec = tiny_spec(drop_path=0.3)
    model = build(spec)
    rates = [m.rate for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates[0] == 0.0 and max(rates) == pytest.approx(0.3)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), model(x))


def test_channels_last_gives_the_same_result():
    torch.manual_seed(0)
    model = build(tiny_spec()).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_counts_per_stage_cover_the_whole_network():
    counts = count(tiny_spec())
    assert set(counts.per_stage) == {"stem", "S1", "S2", "S3", "S4", "head"}
    assert sum(counts.per_stage_params.values()) == counts.params


def _tiny(**extra):
    from coatsearch.spec import NetSpec

    stages = [{"kind": "C", "blocks": 1, "channels": 16, "stride": 1}, {"kind": "C", "blocks": 1, "channels": 32},
              {"kind": "T", "blocks": 1, "channels": 64, "head_dim": 16, "attention": "plain"}]
    return NetSpec.from_dict({"stem": {"kind": "conv", "channels": 16, "stride": 1}, "stages": stages,
                              "image_size": 32, "num_classes": 10, **extra})


def test_a_patch_stem_has_the_norm_its_spec_names():
    """ViT-REL's stem is a patch embedding then a LayerNorm; the analytic count agrees."""
    from coatsearch.analytic import tally
    from coatsearch.nn.layers import LayerNorm2d
    from coatsearch.nn.model import build
    from coatsearch.spec import NetSpec

    spec = NetSpec.from_dict({"stem": {"kind": "patch", "channels": 32, "stride": 4, "norm": "layer"},
                              "stages": [{"kind": "T", "blocks": 1, "channels": 32, "head_dim": 16, "stride": 1}],
                              "image_size": 32, "num_classes": 10})
    model = build(spec)
    assert isinstance(model.stem.norm, LayerNorm2d)
    assert sum(p.numel() for p in model.parameters()) == sum(tally(spec).per_stage_params.values())


def test_an_absolute_position_embedding_reaches_plain_attention():
    """With ``position_embedding: absolute`` the first attention stage's input carries a
    learned grid (counted in params); the network still runs at another image size."""
    from coatsearch.analytic import tally
    from coatsearch.nn.model import build

    plain, placed = build(_tiny()), build(_tiny(position_embedding="absolute"))
    added = sum(p.numel() for p in placed.parameters()) - sum(p.numel() for p in plain.parameters())
    assert added == 32 * 16 * 16 and placed.position_stage == 2
    assert sum(tally(_tiny(position_embedding="absolute")).per_stage_params.values()) == \
        sum(p.numel() for p in placed.parameters())
    placed.eval()
    x = torch.randn(2, 3, 32, 32)
    before = placed(x)
    with torch.no_grad():
        placed.position.add_(1.0)
    assert not torch.allclose(before, placed(x))
    assert placed(torch.randn(1, 3, 64, 64)).shape == (1, 10)
