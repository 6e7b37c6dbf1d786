"""The two counting routes: attention is counted, and traced and analytic agree."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coatsearch import NetSpec, build, preset
from coatsearch.flops import Counts, count, count_analytic, count_params
from coatsearch.presets import PAPER_FLOPS, PRESETS
from coatsearch.spec import SpecError
from tests.conftest import tiny_spec

ROUTES = ["traced", "analytic"]
BIG = ["coatnet-4", "coatnet-5", "coatnet-6", "coatnet-6-fitted", "coatnet-7"]
TRACED_AT_FULL_SIZE = [name for name in PRESETS if name not in BIG]


def assert_routes_agree(traced: Counts, analytic: Counts) -> None:
    """Every number the same, to the unit (the acceptance bar is 1% on FLOPs)."""
    assert traced.route == "traced" and analytic.route == "analytic"
    assert traced.uncounted == ()
    assert abs(traced.flops / analytic.flops - 1) < 0.01
    assert dataclasses.replace(traced, route="analytic") == analytic


def transformer_only(head_dim: int = 16, relative: bool = True) -> NetSpec:
    """Patch stem, a T stage at 16x16 tokens, then a downsampling T stage at 8x8."""
    attention = "relative" if relative else "plain"
    return NetSpec.from_dict(
        {
            "image_size": 64,
            "num_classes": 10,
            "stem": {"kind": "patch", "channels": 32, "stride": 4, "norm": "layer"},
            "stages": [
                {"kind": "T", "blocks": 2, "channels": 64, "stride": 1, "head_dim": head_dim,
                 "attention": attention},
                {"kind": "T", "blocks": 3, "channels": 128, "stride": 2, "head_dim": head_dim,
                 "attention": attention},
            ],
        }
    )


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("relative", [True, False])
def test_attention_core_is_heads_n2_times_2_head_dim_per_block(route, relative):
    spec = transformer_only(relative=relative)
    counts = count(spec, route=route)
    core = bias = 0
    for stage, side in zip(spec.stages, spec.resolutions()):
        tokens = side * side
        core += stage.blocks * stage.heads * tokens**2 * (2 * stage.head_dim)
        bias += stage.blocks * stage.heads * tokens**2
    assert counts.by_op["scaled_dot_product_attention"] == core
    assert counts.by_op.get("attention_bias", 0) == (bias if relative else 0)
    assert sum(counts.by_op.values()) == counts.flops == sum(counts.per_stage.values())


@pytest.mark.parametrize("route", ROUTES)
def test_activations_are_the_outputs_of_conv_linear_and_attention(route):
    spec = transformer_only()
    side = spec.image_size // spec.stem.stride
    expected = spec.stem.channels * side * side  # patch embedding
    width = spec.stem.channels
    for stage, side in zip(spec.stages, spec.resolutions()):
        n, c, h = side * side, stage.channels, stage.heads
        # qkv, attention weights and output (pycls), proj, the two FFN layers
        per_block = 3 * c * n + (h * n * n + n * c) + c * n + (4 * c * n + c * n)
        expected += stage.blocks * per_block + c * n  # + the widening shortcut's 1x1 conv
        assert width != c
        width = c
    expected += spec.num_classes  # classifier
    assert count(spec, route=route).activations == expected


@pytest.mark.parametrize("route", ROUTES)
def test_coatnet_0_counts_within_2_percent_of_the_paper(route, traced_count):
    counts = traced_count(preset("coatnet-0")) if route == "traced" else count_analytic(preset("coatnet-0"))
    assert abs(counts.flops / PAPER_FLOPS["coatnet-0"] - 1) < 0.02, counts.flops


@pytest.mark.parametrize("name", TRACED_AT_FULL_SIZE)
@pytest.mark.slow
def test_routes_agree_on_the_presets(name, traced_count):
    spec = preset(name)
    assert_routes_agree(traced_count(spec), count_analytic(spec))


@pytest.mark.parametrize("name", BIG)
def test_routes_agree_on_the_billion_parameter_presets(name):
    """Params: the full spec on the meta device. FLOPs: tracing the full presets takes
    4-15 s each (`benchmarks/flops_speed.py --big` does it), so here a copy with at most two
    blocks per stage (every kind of block, at full width) is traced at 64 px; the
    remaining blocks repeat the second one exactly."""
    spec = preset(name)
    assert count_analytic(spec).params == count_params(spec)
    short = spec.with_stages([s.model_copy(update={"blocks": min(2, s.blocks)}) for s in spec.stages])
    short = short.replace(image_size=64)
    assert_routes_agree(count(short, route="traced"), count_analytic(short))


def test_routes_agree_at_another_image_size_than_the_spec_was_built_for(traced_count):
    spec = preset("coatnet-0")
    assert_routes_agree(traced_count(spec, 160), count_analytic(spec, 160))
    # the relative-bias tables keep their size: params do not change with the image size
    assert count_analytic(spec, 160).params == count_analytic(spec).params


def test_a_built_model_counts_like_its_spec():
    spec = tiny_spec()
    model = build(spec)
    assert count(model) == count(spec)
    assert count(model, route="analytic") == count_analytic(spec)
    assert model.training  # counting put it in eval mode only while tracing


def test_an_image_size_the_network_cannot_take_is_a_spec_error():
    with pytest.raises(SpecError, match="image_size: 36 is not a positive multiple"):
        count_analytic(tiny_spec(), 36)
    with pytest.raises(SpecError, match="image_size: 36"):
        count(tiny_spec(), 36)


def test_ops_the_tracer_does_not_know_are_listed_not_logged(caplog):
    model = build(tiny_spec())
    model.classifier.register_forward_hook(lambda module, args, out: out.cumsum(-1))
    with caplog.at_level(logging.DEBUG):
        counts = count(model)
    assert counts.uncounted == ("aten::cumsum",)
    assert not [r for r in caplog.records if "cumsum" in r.getMessage()]


# ---------------------------------------------------------------- random specs
@st.composite
def small_specs(draw: st.DrawFn) -> tuple[NetSpec, int]:
    """A random valid network with widths up to 128 for images up to 64 px, and an image
    size to count it at (sometimes another than it was built for)."""
    n = draw(st.integers(1, 4))
    n_conv = draw(st.integers(0, n))
    patch = draw(st.booleans())
    stem_stride = draw(st.sampled_from([2, 4])) if patch else draw(st.sampled_from([1, 2]))
    strides = [draw(st.sampled_from([1, 2])) for _ in range(n)]
    total = stem_stride
    for s in strides:
        total *= s
    side = draw(st.integers(1, max(1, 64 // total)))
    stages = []
    for i in range(n):
        kind = "C" if i < n_conv else "T"
        head_dim = draw(st.sampled_from([8, 16, 32]))
        channels = head_dim * draw(st.integers(1, 128 // head_dim)) if kind == "T" else draw(st.integers(4, 128))
        stages.append(
            {
                "kind": kind,
                "blocks": draw(st.integers(1, 2)),
                "channels": channels,
                "stride": strides[i],
                "expansion": draw(st.sampled_from([1.0, 2.5, 4.0])),
                "head_dim": head_dim,
                "se_ratio": draw(st.sampled_from([0.0, 0.25, 0.5])),
                "norm": draw(st.sampled_from(["batch", "layer"])),
                "attention": draw(st.sampled_from(["relative", "plain"])),
                "pool": draw(st.sampled_from(["max", "avg"])),
                "se_base": draw(st.sampled_from(["in", "out"])),
            }
        )
    spec = NetSpec.from_dict(
        {
            "image_size": total * side,
            "num_classes": draw(st.integers(2, 20)),
            "head_hidden": draw(st.none() | st.integers(4, 64)),
            "stem": {
                "kind": "patch" if patch else "conv",
                "channels": draw(st.integers(4, 64)),
                "stride": stem_stride,
                "norm": draw(st.sampled_from(["batch", "layer"])),
                "bias": draw(st.booleans()),
            },
            "stages": stages,
            "layer_norm_eps": draw(st.sampled_from([1e-5, 1e-6])),
        }
    )
    size = total * draw(st.sampled_from([side, side + 1]))
    return spec, size


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_specs())
def test_routes_agree_on_random_specs(spec_and_size):
    spec, size = spec_and_size
    assert_routes_agree(count(spec, size, route="traced"), count_analytic(spec, size))
