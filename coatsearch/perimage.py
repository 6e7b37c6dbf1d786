"""Per-image correctness: which evaluation images a trained network got right.

Every trial of a study is scored on the same validation (and test) images, so two
configurations can be compared image by image (`coatsearch.analysis.stats.paired`), which
is far more precise than comparing two accuracies as if they had been measured on
independent sets. A trial stores its final network's correctness on each set as one short
text cell of its results row (``val_correct``, ``test_correct``):

    1:<images>:<fingerprint>:<base64 of the bits, packed eight to a byte>

1,000 images take 168 characters, so a table stays small, and the cell travels wherever
a row does (the ledger, Optuna's attributes, ``results.csv``), so resuming a run keeps it.
The bits are in the set's fixed order; the fingerprint (of the set's labels in that
order) is what says two trials were scored on the same images in the same order: only
cells with equal fingerprints and sizes are ever paired. numpy only: the analysis reads
these without torch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

VERSION = "1"


@dataclass(frozen=True)
class Correctness:
    """One trial's correctness on one evaluation set: ``bits[i]`` is image ``i``."""

    fingerprint: str
    bits: np.ndarray  # bool, one per image

    @property
    def accuracy(self) -> float:
        return float(self.bits.mean()) if len(self.bits) else float("nan")


def fingerprint(labels: Any) -> str:
    """12 hex digits identifying a set by its labels in order (a numpy array, list or a
    CPU tensor's ``.numpy()``)."""
    data = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
    return hashlib.sha1(data.tobytes()).hexdigest()[:12]


def encode(correct: Any, labels: Any) -> str:
    """The cell for a set whose images were right where ``correct`` is true."""
    bits = np.asarray(correct, dtype=bool).ravel()
    packed = base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")
    return f"{VERSION}:{len(bits)}:{fingerprint(labels)}:{packed}"


def decode(cell: Any) -> Correctness | None:
    """The correctness a cell holds; None for an empty cell (a table written before
    correctness was stored, a trial that never finished) or one that does not parse."""
    if not isinstance(cell, str) or not cell:
        return None
    parts = cell.split(":")
    if len(parts) != 4 or parts[0] != VERSION:
        return None
    try:
        size = int(parts[1])
        raw = np.frombuffer(base64.b64decode(parts[3], validate=True), dtype=np.uint8)
    except (ValueError, binascii.Error):
        return None
    bits = np.unpackbits(raw)[:size].astype(bool)
    return Correctness(parts[2], bits) if len(bits) == size else None


def matrix(cells: Any) -> np.ndarray | None:
    """Trials x images (float 0/1) from a column of cells, or None unless every cell holds
    correctness on one set (same fingerprint, same size)."""
    decoded = [decode(c) for c in cells]
    if not decoded or any(d is None for d in decoded):
        return None
    first = decoded[0]
    assert first is not None
    if any(d.fingerprint != first.fingerprint or len(d.bits) != len(first.bits) for d in decoded if d is not None):
        return None
    return np.stack([d.bits for d in decoded if d is not None]).astype(float)
