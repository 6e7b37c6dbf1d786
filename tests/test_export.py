"""Export: ONNX checked against PyTorch with onnxruntime, a torch.export program that runs
without coatsearch, torch.jit.trace, and one-line refusals of bad output paths."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coatsearch.export import ExportError, export, output_path
from coatsearch.nn import build
from coatsearch.spec import NetSpec
from tests.conftest import tiny_spec


def random_spec(seed: int) -> NetSpec:
    """A small random spec; over a few seeds every block kind and option appears."""
    rng = random.Random(seed)
    patch = seed % 3 == 2
    stages = []
    if not patch:
        for _ in range(rng.randint(1, 2)):
            stages.append({"kind": "C", "blocks": rng.randint(1, 2), "channels": rng.choice([16, 24, 32]),
                           "stride_mode": rng.choice(["1x1", "dw"]), "norm": rng.choice(["batch", "layer"]),
                           "se_ratio": rng.choice([0.0, 0.25]), "expansion": rng.choice([2.0, 4.0])})
    for i in range(rng.randint(1, 2)):
        stages.append({"kind": "T", "blocks": rng.randint(1, 2), "channels": rng.choice([32, 64]), "head_dim": 16,
                       "attention": rng.choice(["relative", "plain"]), "stride": 1 if patch or i else 2})
    stem = ({"kind": "patch", "channels": 32, "stride": 4, "norm": "layer"} if patch
            else {"channels": 16, "stride": rng.choice([1, 2])})
    spec = {"stem": stem, "stages": stages, "image_size": 32, "num_classes": 7, "in_channels": rng.choice([1, 3]),
            "head_hidden": rng.choice([None, 48])}
    return NetSpec.from_dict(spec)


def _kinds(specs: list[NetSpec]) -> set[str]:
    seen = set()
    for spec in specs:
        seen.add(f"stem {spec.stem.kind}")
        for stage in spec.stages:
            seen.add(stage.kind if stage.kind == "T" else f"C {stage.stride_mode} {stage.norm}")
            seen.add(f"T {stage.attention}" if stage.kind == "T" else f"se {stage.se_ratio > 0}")
            if stage.stride == 1 and stage.kind == "T":
                seen.add("T stride 1")
    return seen


RANDOM_SEEDS = (0, 3, 5, 7)


def test_the_random_specs_cover_every_block_kind() -> None:
    kinds = _kinds([random_spec(s) for s in RANDOM_SEEDS])
    assert {"stem conv", "stem patch", "C 1x1 batch", "C dw layer", "T relative", "T plain", "se True", "se False"} <= kinds


@pytest.mark.slow
@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_onnx_gives_pytorch_logits_at_batch_1_and_3(tmp_path: Path, seed: int) -> None:
    spec = random_spec(seed)
    (tmp_path / "net.yaml").write_text(spec.to_yaml())
    done = export(tmp_path / "net.yaml", "onnx", tmp_path / "net.onnx")
    assert done.max_difference is not None and done.max_difference <= 1e-4

    import onnx

    model = onnx.load(str(done.path))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # symbolic: any batch size


def test_jit_trace_gives_the_same_graph_on_every_call() -> None:
    model = build(tiny_spec()).eval()
    x = torch.randn(2, 3, 32, 32)
    traced = torch.jit.trace(model, (x,))  # checks that two traced calls agree (one without gradients)
    with torch.no_grad():
        assert torch.allclose(traced(x), model(x), atol=1e-5)


@pytest.mark.slow
def test_a_torch_program_runs_without_coatsearch(tmp_path: Path) -> None:
    spec = tiny_spec()
    (tmp_path / "net.yaml").write_text(spec.to_yaml())
    done = export(tmp_path / "net.yaml", "torch", tmp_path / "net.pt2")
    x = torch.randn(3, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    model = build_seeded(spec)
    with torch.inference_mode():
        torch.save(model(x), tmp_path / "want.pt")
    script = (
        "import sys; sys.modules['coatsearch'] = None\n"  # any import of it fails
        "import torch\n"
        f"program = torch.export.load({str(done.path)!r}).module()\n"
        f"x, want = torch.load({str(tmp_path / 'x.pt')!r}), torch.load({str(tmp_path / 'want.pt')!r})\n"
        "got = program(x)\n"
        "print(float((got - want).abs().max()))\n"
        "assert 'coatsearch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip()) < 1e-4


def build_seeded(spec: NetSpec) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(spec).eval()


def test_bad_outputs_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="is a folder, expected a file path"):
        output_path("coatnet-0", "onnx", tmp_path)
    with pytest.raises(ExportError, match="does not exist"):
        output_path("coatnet-0", "onnx", tmp_path / "no" / "x.onnx")
    with pytest.raises(ExportError, match="--to: expected one of onnx, torch, timm"):
        output_path("coatnet-0", "tflite", None)
    assert output_path("runs/x/best.pt", "torch", None) == Path("best.pt2")
    assert output_path("coatnet-0", "timm", None) == Path("coatnet_0_timm.py")
