"""`export`: a checkpoint or a spec to an ONNX file, a `torch.export` program or a timm
module, with the output path checked before any work and the ONNX file checked after."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from coatsearch.checkpoint import read_checkpoint
from coatsearch.export.errors import ExportError
from coatsearch.nn import build, convert
from coatsearch.presets import load_spec
from coatsearch.spec import NetSpec

#: Output forms and their file suffixes.
FORMATS = {"onnx": ".onnx", "torch": ".pt2", "timm": ".py"}
#: What a file's suffix says it is: a checkpoint (weights) or a spec.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


@dataclass(frozen=True)
class Exported:
    """What `export` wrote: the file, its form, and for ONNX the largest |logit difference|
    from PyTorch over batches of 1 and 3 (None when not checked)."""

    path: Path
    form: str
    spec: NetSpec
    max_difference: float | None = None
    trained: bool = True


def load_network(source: str | Path, image_size: int | None = None) -> tuple[NetSpec, nn.Module, bool]:
    """``(spec, model in eval mode, trained)`` from a checkpoint file or a spec (a preset
    name or YAML file, built with seed-0 weights). ``image_size`` moves the network to that
    size (a checkpoint's bias tables are resized, `coatsearch.convert`)."""
    text = str(source)
    if text.endswith(CHECKPOINT_SUFFIXES):
        saved = read_checkpoint(text)
        spec, state = saved.spec, saved.state_dict
        if image_size is not None and image_size != spec.image_size:
            spec, state = convert(state, spec, image_size)
        model = build(spec)
        from coatsearch.checkpoint import load_weights

        load_weights(model, state, text)
        return spec, model.eval(), True
    spec = load_spec(text)
    if image_size is not None:
        spec = spec.replace(image_size=image_size)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build(spec)
    return spec, model.eval(), False


def output_path(source: str | Path, form: str, output: str | Path | None, spec: NetSpec | None = None) -> Path:
    """Where the export goes: ``output``, or the source's name with the form's suffix.
    `ExportError` for an unknown form, a folder, or a folder that does not exist."""
    if form not in FORMATS:
        raise ExportError(f"--to: expected one of {', '.join(FORMATS)}, got {form!r}")
    if output is None:
        stem = Path(str(source)).stem if Path(str(source)).suffix else str(source)
        name = stem.replace("-", "_") if form == "timm" else stem
        output = Path(f"{name}{'_timm' if form == 'timm' else ''}{FORMATS[form]}")
    path = Path(output)
    if path.is_dir():
        raise ExportError(f"-o {path}: is a folder, expected a file path")
    if not path.resolve().parent.is_dir():
        raise ExportError(f"-o {path}: the folder {path.parent} does not exist")
    return path


def export(source: str | Path, form: str, output: str | Path | None = None, *,
           image_size: int | None = None, check: bool = True) -> Exported:
    """Write the network of ``source`` (checkpoint or spec) as ``form`` (`FORMATS`).

    ONNX is checked with onnxruntime against PyTorch at batches 1 and 3 when ``check``;
    a timm module is refused, naming the first field, when timm cannot express the spec."""
    path = output_path(source, form, output)
    spec, model, trained = load_network(source, image_size)
    if form == "onnx":
        from coatsearch.export.onnx import onnx_difference, to_onnx

        to_onnx(model, spec, path)
        difference = onnx_difference(path, model, spec) if check else None
        return Exported(path, form, spec, difference, trained)
    if form == "torch":
        from coatsearch.export.program import to_program

        return Exported(to_program(model, spec, path), form, spec, None, trained)
    from coatsearch.export.timm import write_timm_module

    return Exported(write_timm_module(spec, path, model.state_dict() if trained else None), form, spec, None, trained)
