"""A network as an ONNX file with a dynamic batch, checked against PyTorch with onnxruntime.

The file comes from torch's dynamo exporter (`torch.onnx.export(dynamo=True)`, which
needs ``onnxscript``): the model is traced by `torch.export` with the fast paths off
(`coatsearch.nn.tracing`), so the graph holds plain operators (convolutions, LayerNorm,
`scaled_dot_product_attention` with the relative bias as its mask). One input,
``images`` ``(batch, C, H, W)``; one output, ``logits`` ``(batch, classes)``; the batch
is symbolic, the image size is the spec's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from coatsearch.export.errors import ExportError, needs
from coatsearch.spec import NetSpec

#: The largest batch the exported graph is traced to accept (a bound torch.export asks for).
MAX_BATCH = 4096


def example(spec: NetSpec, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random input batch for ``spec`` (the exporters trace with batch 2: a traced size
    of 1 would be taken for a constant)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size, generator=generator)


def to_onnx(model: nn.Module, spec: NetSpec, path: str | Path) -> Path:
    """Write ``model`` (eval mode, CPU, float32) to ``path`` as ONNX with a dynamic batch."""
    needs("onnxscript", "the ONNX exporter", "export")
    path = Path(path)
    model = model.eval().float().cpu()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # the exporter prints its progress and logs what it skips: not ours to show
    quiet = logging.getLogger("torch.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _level(quiet, logging.ERROR):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model, (example(spec),), dynamo=True, input_names=["images"], output_names=["logits"],
                dynamic_shapes=({0: batch},), verbose=False,
            )
        except Exception as exc:  # the exporter raises many kinds; one line names it
            raise ExportError(f"onnx: the exporter failed: {type(exc).__name__}: {_first(exc)}") from None
        if program is None:
            raise ExportError("onnx: the exporter returned no program")
        program.save(str(path))
    return path


def onnx_logits(path: str | Path, images: torch.Tensor, providers: list[str] | None = None) -> np.ndarray:
    """The logits onnxruntime computes for ``images`` from the file at ``path``."""
    needs("onnxruntime", "checking an ONNX file", "export")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"images": images.numpy()})
    return np.asarray(out)


def onnx_difference(path: str | Path, model: nn.Module, spec: NetSpec, batches: tuple[int, ...] = (1, 3)) -> float:
    """The largest |logit difference| between onnxruntime and PyTorch over random batches
    of each size in ``batches``."""
    model = model.eval().float().cpu()
    worst = 0.0
    for n in batches:
        images = example(spec, n, seed=n)
        with torch.inference_mode():
            want = model(images).numpy()
        got = onnx_logits(path, images)
        if got.shape != want.shape:
            raise ExportError(f"onnx: {path} gives logits of shape {got.shape} for a batch of {n}, expected {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def _first(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # torch's ConversionError starts with advice; the cause follows "Exception summary"
    for i, line in enumerate(lines):
        if "Exception summary" in line and i + 1 < len(lines):
            return lines[i + 1]
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def _level(logger: logging.Logger, level: int) -> Iterator[None]:
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
