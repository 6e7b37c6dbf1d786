"""Bias tables resized with half-pixel centres, and checkpoints converted to a new resolution."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from coatsearch import SpecError, build, convert, preset
from coatsearch.cli import app
from coatsearch.nn.attention import resize_table
from tests.conftest import tiny_spec


def test_resizing_keeps_the_zero_offset_at_the_centre_and_uses_half_pixel_centres():
    # a table that is a linear ramp of the row offset: bilinear resizing keeps a ramp
    offsets = torch.arange(-3, 4, dtype=torch.float32)  # a 4-grid: offsets -3..3
    table = offsets[None, :, None].expand(1, 7, 7).clone()
    bigger = resize_table(table, (13, 13))  # a 7-grid
    assert bigger[0, 6, 6] == pytest.approx(0.0, abs=1e-6)  # the zero offset stays in the centre
    # half-pixel: output cell i reads input position (i + 0.5) * 7/13 - 0.5
    for i in (1, 4, 9):
        assert bigger[0, i, 0] == pytest.approx((i + 0.5) * 7 / 13 - 0.5 - 3, abs=1e-5)
    corners = torch.nn.functional.interpolate(table[None], size=(13, 13), mode="bilinear", align_corners=True)[0]
    assert not torch.allclose(bigger, corners)


def test_a_converted_model_computes_what_the_original_does_at_the_new_size():
    spec = tiny_spec(image_size=32)
    model = build(spec).eval()
    new_spec, state = convert(model.state_dict(), spec, 64)
    converted = build(new_spec).eval()
    converted.load_state_dict(state, strict=True)
    tables = [k for k in state if k.endswith("rel_bias.table")]
    assert tables and all(state[k].shape != model.state_dict()[k].shape for k in tables)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), converted(x), atol=1e-5)


def test_coatnet_0_from_224_to_384():
    spec = preset("coatnet-0")
    state = build(spec).state_dict()
    new_spec, new_state = convert(state, spec, 384)
    assert new_spec.image_size == 384
    s3 = next(k for k in new_state if k.endswith("rel_bias.table") and ".2." in k)  # an S3 table
    assert state[s3].shape[1:] == (27, 27) and new_state[s3].shape[1:] == (47, 47)  # 14 -> 24 tokens
    build(new_spec).load_state_dict(new_state, strict=True)
    with pytest.raises(SpecError, match="image_size"):
        convert(state, spec, 250)


def test_the_convert_command(tmp_path):
    spec = tiny_spec(image_size=32)
    torch.save(build(spec).state_dict(), tmp_path / "model.pt")
    (tmp_path / "net.yaml").write_text(spec.to_yaml())
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(tmp_path / "model.pt"), "--spec", str(tmp_path / "net.yaml"),
                                 "--image-size", "64", "-o", str(tmp_path / "model64.pt")])
    assert result.exit_code == 0, result.output
    saved = torch.load(tmp_path / "model64.pt", weights_only=True)
    assert saved["spec"]["image_size"] == 64
    bare = runner.invoke(app, ["convert", str(tmp_path / "model.pt"), "--image-size", "64", "-o", str(tmp_path / "x.pt")])
    assert bare.exit_code == 2 and "needs --spec" in bare.stderr
    nowhere = tmp_path / "nowhere" / "model64.pt"
    unwritable = runner.invoke(app, ["convert", str(tmp_path / "model.pt"), "--spec", str(tmp_path / "net.yaml"),
                                     "--image-size", "64", "-o", str(nowhere)])
    assert unwritable.exit_code == 2, unwritable.output
    assert unwritable.stderr.startswith(f"error: -o {nowhere}: cannot write (")
    assert len(unwritable.stderr.strip().splitlines()) == 1
