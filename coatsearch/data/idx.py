"""MNIST-format IDX files: the parser and the reader of a four-file folder (which files
make one: `coatsearch.data.listing`).

The format is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data. Files may be gzipped,
as MNIST and Fashion-MNIST are distributed.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from coatsearch.data.errors import DataError
from coatsearch.data.listing import IDX_PARTS, find_idx_files
from coatsearch.errors import os_reason

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """The array stored in one IDX file (gzipped or not)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({os_reason(exc)})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc})") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = math.prod(dims)
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(
            f"{path}: shape {dims} needs {count * dtype.itemsize} data bytes, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype, count=count, offset=header).reshape(dims)


def _images(path: Path) -> torch.Tensor:
    array = read_idx(path)
    if array.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images, found {array.dtype}")
    if array.ndim == 3:
        return torch.from_numpy(array.copy()).unsqueeze(1)
    if array.ndim == 4 and array.shape[-1] in (1, 3):
        return torch.from_numpy(array.copy()).permute(0, 3, 1, 2).contiguous()
    raise DataError(f"{path}: expected images of shape (N, H, W), found {array.shape}")


def _labels(path: Path, images: int, images_path: Path) -> torch.Tensor:
    array = read_idx(path)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(f"{path}: expected a 1-D array of integer labels, found {array.shape} {array.dtype}")
    if len(array) != images:
        raise DataError(f"{path}: {len(array)} labels for {images} images in {images_path.name}")
    if len(array) and array.min() < 0:
        raise DataError(f"{path}: negative label {int(array.min())}")
    return torch.from_numpy(array.astype(np.int64))


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(N, C, H, W)`` images and int64 labels, checked to match in length."""
    images = _images(images_path)
    return images, _labels(labels_path, len(images), images_path)


def read_idx_folder(
    folder: Path,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
    """The training pair and, when present, the test pair of an IDX directory."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such directory of IDX files")
    parts = find_idx_files(folder)
    missing = [p for p in ("train_images", "train_labels") if p not in parts]
    if missing:
        wanted = " and ".join(IDX_PARTS[p][0] + "-*" for p in missing)
        raise DataError(f"{folder}: no {wanted} IDX file")
    train = read_idx_pair(parts["train_images"], parts["train_labels"])
    if ("test_images" in parts) != ("test_labels" in parts):
        have = "test_images" if "test_images" in parts else "test_labels"
        raise DataError(f"{parts[have]}: test {have.split('_')[1]} without the matching file")
    test = (
        read_idx_pair(parts["test_images"], parts["test_labels"]) if "test_images" in parts else None
    )
    return train, test
