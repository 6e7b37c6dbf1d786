"""A network as a `torch.export` program: one ``.pt2`` file that loads and runs with torch
alone (``torch.export.load(path).module()(images)``), without coatsearch installed.

The program is traced with the fast paths off (`coatsearch.nn.tracing`), so it holds
only ATen operators; the batch dimension is symbolic.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from coatsearch.export.errors import ExportError
from coatsearch.export.onnx import MAX_BATCH, example
from coatsearch.spec import NetSpec


def export_program(model: nn.Module, spec: NetSpec) -> torch.export.ExportedProgram:
    """``model`` (eval mode, CPU, float32) traced by `torch.export` with a dynamic batch."""
    model = model.eval().float().cpu()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.export.export(model, (example(spec),), dynamic_shapes=({0: batch},))
        except Exception as exc:  # the tracer raises many kinds; one line names it
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ExportError(f"torch: torch.export failed: {type(exc).__name__}: {first}") from None


def to_program(model: nn.Module, spec: NetSpec, path: str | Path) -> Path:
    """Write the `export_program` of ``model`` to ``path`` (``.pt2``)."""
    path = Path(path)
    torch.export.save(export_program(model, spec), str(path))
    return path
