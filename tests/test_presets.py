"""The presets reproduce the paper's Table 3 sizes."""

from __future__ import annotations

import pytest

from coatsearch import preset
from coatsearch.flops import count_params
from coatsearch.presets import FITTED_TO, KNOWN_DEVIATIONS, PAPER_FLOPS, PAPER_PARAMS


@pytest.mark.parametrize("name", sorted(set(PAPER_PARAMS) - set(KNOWN_DEVIATIONS)) + sorted(FITTED_TO))
def test_params_within_2_percent_of_the_paper(name):
    # meta device: the 1-2 billion parameter presets are counted without allocation
    params = count_params(preset(name))
    assert abs(params / PAPER_PARAMS[FITTED_TO.get(name, name)] - 1) < 0.02, params


@pytest.mark.parametrize("name", sorted(KNOWN_DEVIATIONS))
def test_known_deviations_are_what_the_docstring_says(name):
    params = count_params(preset(name))
    assert params / PAPER_PARAMS[name] - 1 == pytest.approx(KNOWN_DEVIATIONS[name], abs=0.01)


@pytest.mark.parametrize("name", sorted(PAPER_FLOPS))
def test_flops_within_3_percent_of_the_paper(name, traced_count):
    counts = traced_count(preset(name))
    assert abs(counts.flops / PAPER_FLOPS[name] - 1) < 0.03, counts.flops
    assert counts.params == count_params(preset(name))
    assert sum(counts.per_stage.values()) == counts.flops


def test_attention_is_counted(traced_count):
    counts = traced_count(preset("coatnet-0"))
    assert counts.by_op.get("scaled_dot_product_attention", 0) > 0
    assert counts.uncounted == ()


def test_vit_rel_is_a_patch_stem_and_transformer_blocks_only():
    spec = preset("vit-rel")
    assert spec.stem.kind == "patch" and spec.stem.stride == 16
    assert {s.kind for s in spec.stages} == {"T"}
