"""timm's form of a spec: the conventions as spec fields, one-line refusals naming the first
field, weights mapped both ways, the module text, and --init-from a timm state dict.
The same-function check against timm itself runs where timm imports (benchmarks/timm_check.py
runs it in timm's own environment; its figures are in benchmarks/RESULTS.md)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from coatsearch.checkpoint import CheckpointError
from coatsearch.export import ExportError, export
from coatsearch.export.timm import module_text, state_from_timm, state_to_timm, timm_config, with_timm_conventions
from coatsearch.export.timm_weights import read_init_weights
from coatsearch.flops import count_analytic
from coatsearch.nn import build
from coatsearch.presets import preset
from coatsearch.spec import NetSpec


def small_timm_spec(**changes) -> NetSpec:
    spec = NetSpec.from_layout("C-C-T-T", [1, 1, 1, 2, 1], [16, 16, 32, 64, 64], image_size=64, stem_stride=2,
                               num_classes=5, head_hidden=64)
    return with_timm_conventions(spec).replace(**changes)


def test_the_conventions_are_spec_fields_that_change_the_network() -> None:
    base = preset("coatnet-0")
    timm_like = with_timm_conventions(base)
    model = build(timm_like)
    assert isinstance(model.stages[0][0].shortcut.pool, torch.nn.AvgPool2d)
    assert model.stem.conv2.bias is None and model.head_norm.eps == 1e-6
    assert model.stages[2][0].attn_norm.eps == 1e-6
    # SE from the output width: CoAtNet-0's S1 block 0 goes 64 -> 96, so 24 instead of 16
    assert model.stages[0][0].se.reduce.out_channels == 24
    assert build(base).stages[0][0].se.reduce.out_channels == 16
    # the counts follow the fields
    assert count_analytic(timm_like).params == sum(p.numel() for p in model.parameters())
    assert count_analytic(timm_like).params != count_analytic(base).params


@pytest.mark.parametrize("spec,field", [
    (preset("coatnet-0"), "stem.bias"),
    (preset("vit-rel"), "stem.kind"),
    (with_timm_conventions(preset("coatnet-6")), "stages[3].stride"),
    (small_timm_spec(head_hidden=None), "head_hidden"),
    (small_timm_spec().with_field("stages[3].head_dim", 16), "stages[3].head_dim"),
    (small_timm_spec().with_field("stages[2].attention", "plain"), "stages[2].attention"),
    (small_timm_spec().with_field("stages[0].se_base", "in"), "stages[0].se_base"),
    (small_timm_spec().with_field("stages[1].expansion", 3.0), "stages[1].expansion"),
])
def test_a_spec_timm_cannot_express_is_refused_naming_the_first_field(spec, field) -> None:
    with pytest.raises(ExportError, match="^timm: " + re.escape(field) + ": "):
        timm_config(spec)


def test_weights_map_to_timm_and_back_unchanged() -> None:
    spec = small_timm_spec()
    state = build(spec).state_dict()
    theirs = state_to_timm(state, spec)
    assert "stages.2.blocks.0.attn.rel_pos.relative_position_bias_table" in theirs
    assert theirs["stages.2.blocks.0.attn.qkv.weight"].ndim == 4  # timm's 1x1 convolutions
    assert "stages.2.blocks.0.norm1.norm.weight" in theirs and "stages.2.blocks.1.norm1.weight" in theirs  # pooled, or not
    back = state_from_timm(theirs, spec)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    # qkv channels are reordered per head, not copied
    assert not torch.equal(theirs["stages.2.blocks.0.attn.qkv.weight"].flatten(1), state["stages.2.0.attn.qkv.weight"])


def test_timm_weights_that_do_not_fit_are_refused_by_key_or_shape(tmp_path: Path) -> None:
    spec = small_timm_spec()
    theirs = state_to_timm(build(spec).state_dict(), spec)
    missing = {k: v for k, v in theirs.items() if k != "stem.conv2.weight"}
    with pytest.raises(CheckpointError, match="missing key 'stem.conv2.weight'"):
        state_from_timm(missing, spec)
    wrong = {**theirs, "head.fc.weight": torch.zeros(3, 64)}
    with pytest.raises(CheckpointError, match=r"head.fc.weight: shape \(3, 64\) does not match"):
        state_from_timm(wrong, spec)
    with pytest.raises(CheckpointError, match="stem.bias"):  # a preset without timm's conventions
        state_from_timm(theirs, spec.replace(stem={**spec.stem.model_dump(), "bias": True}))
    # --init-from reads a timm state dict file into the spec's names
    torch.save(theirs, tmp_path / "timm.pth")
    loaded = read_init_weights(tmp_path / "timm.pth", spec)
    assert set(loaded) == set(build(spec).state_dict())


def test_the_module_registers_the_network(tmp_path: Path) -> None:
    spec = small_timm_spec(name="tiny")
    text = module_text(spec, "coatsearch_tiny")
    compile(text, "tiny_timm.py", "exec")
    assert "@register_model\ndef coatsearch_tiny(" in text and "embed_dim=(16, 32, 64, 64)" in text
    (tmp_path / "net.yaml").write_text(spec.to_yaml())
    done = export(tmp_path / "net.yaml", "timm", tmp_path / "tiny_timm.py")
    assert done.path.read_text() == text
    with pytest.raises(ExportError, match="^timm: stem.kind"):
        export("vit-rel", "timm", tmp_path / "vit_timm.py")
    assert not (tmp_path / "vit_timm.py").exists()


def test_a_checkpoint_exports_with_its_weights_in_timm_names(tmp_path: Path) -> None:
    from coatsearch.checkpoint import Checkpoint, save_checkpoint

    spec = small_timm_spec(name="tiny")
    state = build(spec).state_dict()
    save_checkpoint(Checkpoint(spec=spec, state_dict=state), tmp_path / "tiny.pt")
    done = export(tmp_path / "tiny.pt", "timm", tmp_path / "tiny_timm.py")
    weights = torch.load(tmp_path / "tiny_timm.pth", weights_only=True)
    assert weights.keys() == state_to_timm(state, spec).keys() and "pretrained" in done.path.read_text()
    back = state_from_timm(weights, spec)
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed (see benchmarks/timm_check.py)")
def test_timm_builds_the_same_function(tmp_path: Path) -> None:  # pragma: no cover - needs timm
    import timm

    spec = small_timm_spec(name="tiny")
    (tmp_path / "net.yaml").write_text(spec.to_yaml())
    path = export(tmp_path / "net.yaml", "timm", tmp_path / "tiny_timm.py").path
    sys.path.insert(0, str(tmp_path))
    try:
        __import__("tiny_timm")
        theirs = timm.create_model("coatsearch_tiny").eval()
    finally:
        sys.path.remove(str(tmp_path))
    ours = build(spec).eval()
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    theirs.load_state_dict(state_to_timm(ours.state_dict(), spec))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert (theirs(x) - ours(x)).abs().max() < 1e-4
    assert path.exists()
