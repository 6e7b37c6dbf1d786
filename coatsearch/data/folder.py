"""Folders of class sub-folders of images, read with Pillow.

``ROOT/CLASS/*.png`` (any format Pillow knows); or ``ROOT/train/CLASS/..`` beside
``ROOT/test/CLASS/..`` when the data comes with its own test split. Images of any size
and mode are fitted to one square size; the set is grayscale when every image is,
RGB otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import track

from coatsearch.data.decode import eight_bit
from coatsearch.data.errors import DataError
from coatsearch.data.images import fit_images
from coatsearch.data.listing import GRAY_MODES, list_images

#: Folders of at least this many images show a progress bar while they are read.
PROGRESS_MIN = 2000


def pil_to_tensor(image: Image.Image, mode: str, size: int) -> torch.Tensor:
    """A Pillow image as a uint8 ``(C, size, size)`` tensor (see `fit_images`)."""
    array = np.asarray(eight_bit(image).convert(mode), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy())
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return fit_images(tensor.unsqueeze(0), size)[0]


def _mode_of(path: Path) -> str:
    try:
        with Image.open(path) as image:
            return image.mode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


def _load(path: Path, mode: str, size: int) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            return pil_to_tensor(image, mode, size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


def read_image_folder(
    root: Path, size: int, classes: Sequence[str] | None = None, mode: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    """uint8 ``(N, C, size, size)`` images, int64 labels, class names and the Pillow mode.

    ``classes``/``mode`` pin a test folder to its training folder's classes and channels.
    """
    paths, labels, names = list_images(root, classes)
    if mode is None:
        mode = "L" if all(_mode_of(p) in GRAY_MODES for p in paths) else "RGB"
    stderr = Console(stderr=True)
    loaded = track(
        paths, description=f"reading {root}", console=stderr, transient=True,
        disable=len(paths) < PROGRESS_MIN,
    )
    images = torch.stack([_load(p, mode, size) for p in loaded])
    return images, torch.tensor(labels, dtype=torch.int64), names, mode
