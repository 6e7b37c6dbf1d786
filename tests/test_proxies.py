"""The zero-cost proxies (`coatsearch.proxies`) and `coatsearch rank`: every proxy scores a
tiny network, deterministically for a seed; NASWOT reads every GELU's pre-activation."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_SPACE, tiny_spec
from typer.testing import CliRunner

from coatsearch.flops import count_analytic
from coatsearch.nn import build
from coatsearch.nn.blocks import MBConv, TransformerBlock
from coatsearch.proxies import PROXIES, ProxyData, ProxyError, random_data, score
from coatsearch.proxies.naswot import gelu_inputs

SPEC = tiny_spec("C-C-T-T", image_size=16)


@pytest.fixture(scope="module")
def data() -> ProxyData:
    return random_data(SPEC, 32, seed=0, val=16)


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n == "fidelity" else [])
                                  for n in PROXIES])
def test_every_proxy_scores_a_network_the_same_for_a_seed(name, data):
    first, again = score(name, SPEC, data, seed=3), score(name, SPEC, data, seed=3)
    assert math.isfinite(first) and first == again


@pytest.mark.parametrize("name", ["synflow", "naswot", "snip", "zico"])
def test_the_initial_weights_follow_the_seed(name, data):
    assert score(name, SPEC, data, seed=0) != score(name, SPEC, data, seed=1)


def test_the_counts_are_the_analytic_ones():
    counts = count_analytic(SPEC)
    assert score("params", SPEC) == counts.params and score("flops", SPEC) == counts.flops


def test_a_proxy_that_reads_images_says_so_without_them():
    with pytest.raises(ProxyError, match="snip: needs images"):
        score("snip", SPEC)
    assert math.isfinite(score("synflow", SPEC))  # reads none


def test_naswot_hooks_every_gelu_input():
    model = build(SPEC)
    mbconvs = sum(isinstance(m, MBConv) for m in model.modules())
    transformers = sum(isinstance(m, TransformerBlock) for m in model.modules())
    # the stem's first norm, two per MBConv, the FFN's GELU in every Transformer block
    assert len(gelu_inputs(model)) == 1 + 2 * mbconvs + transformers


def test_naswot_separates_distinct_images_and_not_copies(data):
    same = ProxyData(data.images[:1].repeat(16, 1, 1, 1), data.labels[:16], batch=16)
    assert score("naswot", SPEC, same) == float("-inf")  # identical codes: a singular kernel
    assert math.isfinite(score("naswot", SPEC, ProxyData(data.images[:16], data.labels[:16], batch=16)))


def test_the_fidelity_baseline_learns_an_easy_task():
    # two classes told apart by the sign of the mean pixel: a fraction of an epoch learns it
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (256,), generator=g)
    images = torch.randn(256, 3, 16, 16, generator=g) * 0.3 + (labels.float() * 2 - 1)[:, None, None, None]
    easy = ProxyData(images[:192], labels[:192], images[192:], labels[192:], lr=3e-3, batch_size=32)
    assert score("fidelity", SPEC, easy) > 0.8


@pytest.mark.slow
def test_rank_orders_a_space_by_the_proxy(tmp_path):
    import yaml

    from coatsearch.cli import app

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_SPACE, "trials": 4, "params": {"split": {"choices": [1, 2]},
                                                             "layout": {"choices": ["C-C-T-T", "C-C-C-C"]}}}))
    out = CliRunner().invoke(app, ["rank", str(path), "--proxy", "params", "--json"])
    assert out.exit_code == 0, out.output
    import json

    ranked = json.loads(out.stdout)
    assert len(ranked) == 4 and [r["rank"] for r in ranked] == [1, 2, 3, 4]
    assert [r["score"] for r in ranked] == sorted((r["n_params"] for r in ranked), reverse=True)
    bad = CliRunner().invoke(app, ["rank", str(path), "--proxy", "nope"])
    assert bad.exit_code == 2 and "unknown proxy 'nope'" in bad.output
