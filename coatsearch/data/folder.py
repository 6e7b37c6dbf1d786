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

from coatsearch.data.errors import DataError
from coatsearch.data.images import fit_images

#: Modes read as one channel; everything else is converted to RGB.
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
#: Folders of at least this many images show a progress bar while they are read.
PROGRESS_MIN = 2000


def pil_to_tensor(image: Image.Image, mode: str, size: int) -> torch.Tensor:
    """A Pillow image as a uint8 ``(C, size, size)`` tensor (see `fit_images`)."""
    array = np.asarray(image.convert(mode), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy())
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return fit_images(tensor.unsqueeze(0), size)[0]


def _image_files(class_dir: Path) -> list[Path]:
    extensions = Image.registered_extensions()
    return sorted(
        p for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def _class_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(f"{root}: no class sub-folders (expected {root}/CLASS/IMAGE files)")
    return dirs


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


def _list(root: Path, classes: Sequence[str] | None) -> tuple[list[Path], list[int], list[str]]:
    """Image paths, their class indices and the class names of one folder tree."""
    dirs = _class_dirs(root)
    names = list(classes) if classes is not None else [d.name for d in dirs]
    paths: list[Path] = []
    labels: list[int] = []
    for class_dir in dirs:
        if class_dir.name not in names:
            raise DataError(f"{class_dir}: class {class_dir.name!r} is not among the training classes")
        files = _image_files(class_dir)
        if not files:
            raise DataError(f"{class_dir}: empty class folder (no image files)")
        paths += files
        labels += [names.index(class_dir.name)] * len(files)
    return paths, labels, names


def read_image_folder(
    root: Path, size: int, classes: Sequence[str] | None = None, mode: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    """uint8 ``(N, C, size, size)`` images, int64 labels, class names and the Pillow mode.

    ``classes``/``mode`` pin a test folder to its training folder's classes and channels.
    """
    paths, labels, names = _list(root, classes)
    if mode is None:
        mode = "L" if all(_mode_of(p) in GRAY_MODES for p in paths) else "RGB"
    stderr = Console(stderr=True)
    loaded = track(
        paths, description=f"reading {root}", console=stderr, transient=True,
        disable=len(paths) < PROGRESS_MIN,
    )
    images = torch.stack([_load(p, mode, size) for p in loaded])
    return images, torch.tensor(labels, dtype=torch.int64), names, mode


def has_split_folders(root: Path) -> bool:
    """Whether ``root`` holds ``train/`` and ``test/`` folders rather than class folders."""
    return (root / "train").is_dir() and (root / "test").is_dir()
