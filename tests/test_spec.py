from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from coatsearch import NetSpec, SpecError, load_spec, preset
from tests.conftest import tiny_spec


def test_from_layout_fills_stages_in_order():
    spec = NetSpec.from_layout("C-C-T-T", blocks=[2, 2, 3, 5, 2], channels=[64, 96, 192, 384, 768])
    assert spec.layout == "C-C-T-T"
    assert [s.kind for s in spec.stages] == ["C", "C", "T", "T"]
    assert [s.blocks for s in spec.stages] == [2, 3, 5, 2]
    assert spec.stem.channels == 64 and spec.stem.stride == 2
    assert spec.resolutions() == [56, 28, 14, 7]
    assert spec.stages[2].heads == 12


def test_small_images_get_a_stride_1_stem_so_the_last_stage_keeps_2x2_tokens():
    spec = tiny_spec(image_size=32)
    assert spec.stem.stride == 1
    assert spec.resolutions()[-1] == 2
    explicit = tiny_spec(image_size=64, stem_stride=2)
    assert explicit.stem.stride == 2 and explicit.resolutions()[-1] == 2


def test_explicit_stage_strides_override_the_default():
    spec = tiny_spec(image_size=32, strides=[1, 2, 2, 2])
    assert spec.resolutions() == [32, 16, 8, 4]


@pytest.mark.parametrize("name", ["coatnet-0", "coatnet-6", "vit-rel"])
def test_dict_and_yaml_round_trip(name):
    spec = preset(name)
    assert NetSpec.from_dict(spec.to_dict()) == spec
    assert NetSpec.from_yaml(spec.to_yaml()) == spec


def test_spec_is_immutable_and_hashable():
    spec = preset("coatnet-0")
    with pytest.raises(ValidationError):
        spec.image_size = 32  # type: ignore[misc]
    assert hash(spec) == hash(preset("coatnet-0"))


def test_mixed_stage_layout_names():
    spec = preset("coatnet-6")
    assert spec.layout == "C-C-C+T-T"
    assert spec.stage_names == ["S1", "S2", "S3a", "S3b", "S4"]
    assert spec.resolutions() == [56, 28, 14, 14, 7]


def test_load_spec_reads_presets_and_files(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(tiny_spec().to_yaml())
    assert load_spec(path) == tiny_spec()
    assert load_spec("coatnet-1") == preset("coatnet-1")


BAD_SPECS = [
    # (mutation of a valid dict, expected start of the message)
    (lambda d: d["stages"][0].update(kind="X"), "stages[0].kind:"),
    (lambda d: d["stages"][1].update(blocks=0), "stages[1].blocks:"),
    (lambda d: d["stages"][2].update(channels=190), "stages[2].channels: 190 is not divisible by head_dim 32"),
    (lambda d: d.update(stages=[d["stages"][2], d["stages"][0]]), "stages[1].kind: a C stage follows a T stage"),
    (lambda d: d.update(image_size=36), "image_size: 36 is not divisible by the total stride 16"),
    (lambda d: d.update(drop_path=-0.1), "drop_path:"),
    (lambda d: d.update(colour="red"), "colour: unknown field"),
    (lambda d: d["stages"][0].update(stride=3), "stages[0].stride:"),
    (lambda d: d["stem"].update(kind="conv", stride=4), "stem.stride: a conv stem has stride 1 or 2"),
    (lambda d: d["stages"][3].update(norm="group"), "stages[3].norm:"),
    (lambda d: d["stages"][3].update(attention="linear"), "stages[3].attention:"),
    (lambda d: d.update(stages=[]), "stages:"),
    (lambda d: d["stages"][0].pop("channels"), "stages[0].channels: required field is missing"),
    (lambda d: d.update(num_classes="ten"), "num_classes:"),
]


@pytest.mark.parametrize("mutate,message", BAD_SPECS)
def test_bad_specs_raise_one_line_naming_the_field(mutate, message):
    data = tiny_spec().to_dict()
    mutate(data)
    with pytest.raises(SpecError) as info:
        NetSpec.from_dict(data)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_t_before_c_is_allowed_when_asked():
    data = tiny_spec().to_dict()
    data["stages"] = [data["stages"][2], data["stages"][0]]
    data["allow_any_order"] = True
    assert NetSpec.from_dict(data).layout == "T-C"


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: NetSpec.from_layout("C-Q", [2, 1, 1], [8, 8, 8]), "layout:"),
        (lambda: NetSpec.from_layout("C-C", [2, 1], [8, 8, 8]), "blocks: expected 3 values"),
        (lambda: preset("coatnet-9"), "preset: unknown preset 'coatnet-9'"),
        (lambda: NetSpec.from_yaml("stages: [\n", source="x.yaml"), "x.yaml: malformed YAML at line 2"),
        (lambda: NetSpec.from_yaml("- 1\n- 2\n", source="x.yaml"), "x.yaml: expected a mapping"),
        (lambda: load_spec("missing/net.yaml"), "missing/net.yaml: no such spec file"),
    ],
)
def test_other_bad_inputs_name_what_was_wrong(call, message):
    with pytest.raises(SpecError) as info:
        call()
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    "content,message",
    [
        ("stages:\n  - {kind: T, blocks: 2, channels: 190}\n", "stages[0].channels: 190 is not divisible"),
        ("stages: [\n", "malformed YAML"),
    ],
)
def test_cli_prints_one_line_and_exits_2(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "coatsearch.cli", "build", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
