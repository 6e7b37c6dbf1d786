"""Each kind of part joins by name from a module of its own: here a toy block kind, a toy
scaling rule, a toy early-stopping scheduler and a toy data source are registered from this
test module alone, and a tiny search runs through all four."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from coatsearch.analytic import Ledger
from coatsearch.block_kinds import BLOCK_KINDS, BlockKind
from coatsearch.data.sources import SOURCES, RawData
from coatsearch.flops import count_analytic
from coatsearch.nn import build
from coatsearch.results import read_table
from coatsearch.runner import run_study
from coatsearch.scaling import RULES
from coatsearch.search import compile_space
from coatsearch.search.registries import SCHEDULERS
from coatsearch.space import load_space
from coatsearch.spec import NetSpec, SpecError


# ----------------------------------------------------------------------------- a block kind
def plain_conv(stage, in_channels: int, stride: int, grid, drop_path: float, eps: float) -> nn.Module:
    """``X``: a 3x3 convolution, BatchNorm and GELU (no shortcut)."""
    return nn.Sequential(nn.Conv2d(in_channels, stage.channels, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(stage.channels), nn.GELU())


def plain_conv_cost(ledger: Ledger, stage, c_in: int, stride: int, side: int, grid: int) -> None:
    ledger.conv(c_in, stage.channels, 3, side, bias=False)
    ledger.norm("batch", stage.channels, stage.channels * side * side)


def at_most_64_wide(stage) -> str | None:
    return None if stage.channels <= 64 else f"channels: an X stage is at most 64 wide, got {stage.channels}"


# ----------------------------------------------------------------------------- a scaling rule
TOY_CALLS: list[float] = []


def widen(spec: NetSpec, metric: str, target: float, ratio: float, tolerance: float):
    """Every width times the square root of the cost ratio, rounded as the spec rounds."""
    TOY_CALLS.append(ratio)
    factor = ratio ** 0.5
    return spec.scaled(width=factor), {"width": factor}, ""


# ----------------------------------------------------------------------------- a scheduler
class FirstComesFirst:
    """Stops every trial at epoch 1 once another trial has a record there."""

    def decides_at(self, epoch: int) -> bool:
        return epoch == 1

    def stop_among(self, epoch: int, value: float, peers: list[float]) -> bool:
        return epoch == 1 and len(peers) > 0


# ----------------------------------------------------------------------------- a data source
def stripes(arg: str | None, size: int, mode: str, on_bad_file: str) -> RawData:
    """Two classes of gray images: bright left half, or bright right half (``stripes:N``)."""
    n = int(arg or 64)
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 60, (n, 1, size, size), generator=generator, dtype=torch.uint8)
    half = size // 2
    images[labels == 0, :, :, :half] += 150
    images[labels == 1, :, :, half:] += 150
    return RawData(f"stripes:{n}", images, labels, None, None, ("left", "right"))


@pytest.fixture
def toys() -> Iterator[None]:
    BLOCK_KINDS.register("X", BlockKind(module=plain_conv, cost=plain_conv_cost, check=at_most_64_wide))
    RULES.register("toy", widen)
    SCHEDULERS.register("first-come", lambda early, max_epochs: FirstComesFirst())
    SOURCES.register("stripes", stripes)
    TOY_CALLS.clear()
    try:
        yield
    finally:
        BLOCK_KINDS.unregister("X")
        RULES.unregister("toy")
        SCHEDULERS.unregister("first-come")
        SOURCES.unregister("stripes")


BASE = {
    "image_size": 16, "in_channels": 1, "num_classes": 2, "stem": {"channels": 8, "stride": 1},
    "stages": [
        {"kind": "X", "blocks": 1, "channels": 8},
        {"kind": "C", "blocks": 1, "channels": 16},
        {"kind": "T", "blocks": 1, "channels": 32, "head_dim": 16},
    ],
}


def test_a_block_kind_registers_its_module_cost_and_constraints_together(toys) -> None:
    spec = NetSpec.from_dict(BASE)
    assert spec.layout == "X-C-T"
    model = build(spec)
    assert count_analytic(spec).params == sum(p.numel() for p in model.parameters())
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 2)
    with pytest.raises(SpecError, match=r"stages\[0\]\.channels: an X stage is at most 64 wide, got 72"):
        NetSpec.from_dict({**BASE, "stages": [{**BASE["stages"][0], "channels": 72}, *BASE["stages"][1:]]})
    assert spec.with_layout("X-X-T").layout == "X-X-T"


@pytest.mark.slow
def test_a_tiny_search_runs_through_a_toy_kind_rule_scheduler_and_source(toys, tmp_path: Path) -> None:
    space = {
        "study": "toys", "base": BASE, "sampler": "grid", "trials": 2, "resources": {"cpu": 1},
        "params": {"rule": {"choices": ["toy"]}, "scale": {"choices": [1.0, 2.0]}},
        "objectives": ["val_acc", "flops"], "early_stopping": {"kind": "first-come"},
        "train": {"epochs": 2, "batch_size": 16}, "data": {"source": "stripes:64", "val_fraction": 0.25},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    outcome = run_study(compile_space(load_space(path)), tmp_path / "run")
    table = read_table(outcome.table_path).sort_values("trial")
    assert list(table["layout"]) == ["X-C-T", "X-C-T"]  # the toy kind trained
    assert TOY_CALLS and max(TOY_CALLS) == pytest.approx(2.0, rel=0.05)  # the toy rule grew the network
    assert table["flops"].iloc[1] > table["flops"].iloc[0]  # twice the cost, as widths round allow
    assert list(table["status"]) == ["complete", "stopped"]  # the toy scheduler stopped the second trial
    assert list(table["fidelity"]) == [2, 1]
    assert table["val_images"].iloc[0] == 14  # the toy source's 64 images: 6 held out for test, 14 to validate
