"""Datasets for trials: a source name in, deterministic train/val/test image sets out.

`load_data` (in `coatsearch.data.loading`, which says how the splits are drawn) reads a
built-in set, IDX files or an image folder (`coatsearch.data.sources`); image folders are
prepared once into a shared memory-mapped cache (`coatsearch.data.prepared`) or streamed
(`coatsearch.data.stream`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it, imported on first use: the prepared-cache
#: builder (`coatsearch data prepare`) imports this package without loading torch.
_EXPORTS = {
    "AUGMENTATIONS": "coatsearch.data.augment",
    "BAD_FILE_POLICIES": "coatsearch.data.loading",
    "DATA_MODES": "coatsearch.data.loading",
    "DataBundle": "coatsearch.data.bundle",
    "DataError": "coatsearch.data.errors",
    "FASHION_MNIST_CLASSES": "coatsearch.data.sources",
    "ImageSet": "coatsearch.data.images",
    "TEST_SPLIT_SEED": "coatsearch.data.bundle",
    "load_data": "coatsearch.data.loading",
    "split_rows": "coatsearch.data.bundle",
}

__all__ = [
    "AUGMENTATIONS", "BAD_FILE_POLICIES", "DATA_MODES", "DataBundle", "DataError", "FASHION_MNIST_CLASSES",
    "ImageSet", "TEST_SPLIT_SEED", "load_data", "split_rows",
]

if TYPE_CHECKING:
    from coatsearch.data.augment import AUGMENTATIONS
    from coatsearch.data.bundle import TEST_SPLIT_SEED, DataBundle, split_rows
    from coatsearch.data.errors import DataError
    from coatsearch.data.images import ImageSet
    from coatsearch.data.loading import BAD_FILE_POLICIES, DATA_MODES, load_data
    from coatsearch.data.sources import FASHION_MNIST_CLASSES


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
