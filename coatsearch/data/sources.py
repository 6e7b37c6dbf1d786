"""Where images come from: the source names of `load_data` and what each one reads.

================================  ==================================================
``fashion-mnist``                 the subset shipped inside the package (offline)
``fashion-mnist-full[:PATH]``     all 60,000 + 10,000 images, from IDX files under PATH
                                  (default: the Debian package's folder)
``idx:PATH``                      a folder of MNIST-format IDX files
``imagefolder:PATH``              a folder of class sub-folders of images
``torchvision:NAME[:ROOT]``       ``torchvision.datasets.NAME`` already on disk under ROOT
a folder path                     ``idx:`` when it holds IDX files, else ``imagefolder:``
================================  ==================================================

Every reader returns uint8 images already fitted to the requested size, so the rest of
the data layer never sees a source's format.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coatsearch.data.errors import DataError
from coatsearch.data.folder import pil_to_tensor, read_image_folder
from coatsearch.data.idx import read_idx_folder
from coatsearch.data.images import fit_images
from coatsearch.data.listing import find_idx_files, has_split_folders
from coatsearch.errors import first_line
from coatsearch.registry import Registry

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
#: Where Debian's ``dataset-fashion-mnist`` package puts the IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The shipped subset, made by ``scripts/make_fashion_mnist_subset.py``.
BUILTIN_FILE = "fashion-mnist-subset.npz"
#: Where ``torchvision:NAME`` looks when no ROOT is given.
TORCHVISION_ROOT = Path("~/.cache/coatsearch/torchvision")

SOURCE_FORMS = (
    "fashion-mnist, fashion-mnist-full[:PATH], idx:PATH, imagefolder:PATH, "
    "torchvision:NAME[:ROOT] or a folder path"
)


@dataclass(frozen=True)
class RawData:
    """A source's images before splitting: uint8 ``(N, C, S, S)``, int64 labels.

    ``test_*`` is ``None`` when the source has no test split of its own.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor | None
    test_labels: torch.Tensor | None
    classes: tuple[str, ...]
    #: Per-image, per-channel pixel sums and sums of squares (prepared sources): the
    #: normalisation of any subset without a pass over its images.
    train_sums: torch.Tensor | None = None
    #: The images are a memory map shared with other processes: splits index into them
    #: instead of copying.
    mapped: bool = False


def _class_names(labels: list[torch.Tensor], known: tuple[str, ...] | None = None) -> tuple[str, ...]:
    top = max(int(t.max()) for t in labels if len(t)) + 1
    if known is not None and top <= len(known):
        return known
    return tuple(str(i) for i in range(top))


def _from_pairs(
    name: str, size: int, train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor] | None, known: tuple[str, ...] | None = None,
) -> RawData:
    labels = [train[1]] + ([test[1]] if test else [])
    return RawData(
        name,
        fit_images(train[0], size),
        train[1],
        fit_images(test[0], size) if test else None,
        test[1] if test else None,
        _class_names(labels, known),
    )


def read_builtin(size: int) -> RawData:
    """The shipped stratified Fashion-MNIST subset."""
    path = resources.files("coatsearch") / "datasets" / BUILTIN_FILE
    try:
        with resources.as_file(path) as file, np.load(file) as npz:
            arrays = {k: torch.from_numpy(npz[k]) for k in npz.files}
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(
            f"{path}: built-in fashion-mnist subset unreadable ({exc}); "
            "rebuild it with scripts/make_fashion_mnist_subset.py"
        ) from None

    def pair(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return arrays[f"{split}_images"].unsqueeze(1), arrays[f"{split}_labels"].long()

    return _from_pairs("fashion-mnist", size, pair("train"), pair("test"), FASHION_MNIST_CLASSES)


def read_idx_source(name: str, folder: Path, size: int, known: tuple[str, ...] | None = None) -> RawData:
    train, test = read_idx_folder(folder)
    return _from_pairs(name, size, train, test, known)


def read_fashion_mnist_full(folder: Path, size: int) -> RawData:
    if not folder.is_dir() or "train_images" not in find_idx_files(folder):
        hint = (
            "install Debian's dataset-fashion-mnist package or give fashion-mnist-full:PATH"
            if folder == FASHION_MNIST_DIR else "expected the four Fashion-MNIST IDX files there"
        )
        raise DataError(f"{folder}: no Fashion-MNIST IDX files ({hint})")
    return read_idx_source("fashion-mnist-full", folder, size, FASHION_MNIST_CLASSES)


def read_prepared_source(root: Path, size: int, on_bad_file: str = "fail") -> RawData:
    """An image folder through its prepared cache (built on first use)."""
    from coatsearch.data.prepared import prepare

    prepared = prepare(root, size, on_bad_file=on_bad_file)
    test = "test" in prepared.images
    return RawData(
        root.name, torch.from_numpy(prepared.images["train"]), torch.from_numpy(prepared.labels["train"]),
        torch.from_numpy(prepared.images["test"]) if test else None,
        torch.from_numpy(prepared.labels["test"]) if test else None,
        prepared.classes, train_sums=torch.from_numpy(prepared.sums["train"]), mapped=True,
    )


def read_folder_source(root: Path, size: int, mode: str = "prepared", on_bad_file: str = "fail") -> RawData:
    if mode == "prepared":
        return read_prepared_source(root, size, on_bad_file)
    if has_split_folders(root):
        images, labels, classes, mode = read_image_folder(root / "train", size)
        test_images, test_labels, _, _ = read_image_folder(root / "test", size, classes, mode)
        return RawData(root.name, images, labels, test_images, test_labels, tuple(classes))
    images, labels, classes, _ = read_image_folder(root, size)
    return RawData(root.name, images, labels, None, None, tuple(classes))


# ----------------------------------------------------------------------------- torchvision
def _torchvision_split(cls: type, root: Path, train: bool, source: str) -> Any | None:
    """One split of a ``torchvision.datasets`` class, never downloading."""
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {"download": False} if "download" in params else {}
    if "train" in params:
        kwargs["train"] = train
    elif "split" in params:
        kwargs["split"] = "train" if train else "test"
    elif not train:
        return None
    try:
        return cls(str(root), **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        reason = first_line(exc)
        raise DataError(f"{source}: cannot open under {root} ({reason})") from None


def _torchvision_arrays(dataset: Any, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NCHW images and labels, from ``.data``/``.targets`` when the class has them,
    else sample by sample (Pillow images fitted to ``size`` as they come)."""
    targets = getattr(dataset, "targets", getattr(dataset, "labels", None))
    data = getattr(dataset, "data", None)
    if data is not None and targets is not None:
        array = np.asarray(data)
        if array.dtype == np.uint8 and array.ndim in (3, 4):
            images = torch.from_numpy(array.copy())
            if images.ndim == 3:
                images = images.unsqueeze(1)
            elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
                images = images.permute(0, 3, 1, 2)  # NHWC (CIFAR) -> NCHW; SVHN is NCHW
            return images.contiguous(), torch.as_tensor(np.asarray(targets)).long()
    samples = [dataset[i] for i in range(len(dataset))]
    mode = "L" if all(img.mode in ("1", "L") for img, _ in samples) else "RGB"
    images = torch.stack([pil_to_tensor(img, mode, size) for img, _ in samples])
    return images, torch.tensor([int(t) for _, t in samples], dtype=torch.int64)


def read_torchvision(name: str, root: Path, size: int) -> RawData:
    source = f"torchvision:{name}"
    try:
        import torchvision.datasets as tv_datasets
    except ImportError:
        raise DataError(
            f"{source}: torchvision is not installed (pip install 'coatsearch[vision]')"
        ) from None
    cls = getattr(tv_datasets, name, None)
    if not isinstance(cls, type):
        raise DataError(f"{source}: torchvision.datasets has no dataset class {name!r}")
    root = root.expanduser()
    train_set = _torchvision_split(cls, root, True, source)
    test_set = _torchvision_split(cls, root, False, source)
    train = _torchvision_arrays(train_set, size)
    test = _torchvision_arrays(test_set, size) if test_set is not None else None
    known = getattr(train_set, "classes", None)
    return _from_pairs(source, size, train, test, tuple(known) if known else None)


# ----------------------------------------------------------------------------- dispatch
#: ``(arg, size, mode, on_bad_file) -> RawData``: a source ``KIND`` or ``KIND:ARG`` (``arg``
#: None without a colon); a path that names no kind is read as a folder.
DataSource = Callable[[str | None, int, str, str], RawData]
SOURCES: Registry[DataSource] = Registry("data source")


@SOURCES.register("fashion-mnist")
def _builtin(arg: str | None, size: int, mode: str, on_bad_file: str) -> RawData:
    if arg is not None:
        raise DataError(f"data: unknown source {'fashion-mnist:' + arg!r}; expected {SOURCE_FORMS}")
    return read_builtin(size)


@SOURCES.register("fashion-mnist-full")
def _fashion_mnist_full(arg: str | None, size: int, mode: str, on_bad_file: str) -> RawData:
    return read_fashion_mnist_full(Path(arg) if arg else FASHION_MNIST_DIR, size)


@SOURCES.register("idx")
def _idx(arg: str | None, size: int, mode: str, on_bad_file: str) -> RawData:
    if not arg:
        raise DataError(f"data: unknown source 'idx'; expected {SOURCE_FORMS}")
    return read_idx_source(Path(arg).name, Path(arg), size)


@SOURCES.register("imagefolder")
def _imagefolder(arg: str | None, size: int, mode: str, on_bad_file: str) -> RawData:
    if not arg:
        raise DataError(f"data: unknown source 'imagefolder'; expected {SOURCE_FORMS}")
    return read_folder_source(Path(arg), size, mode, on_bad_file)


@SOURCES.register("torchvision")
def _torchvision(arg: str | None, size: int, mode: str, on_bad_file: str) -> RawData:
    if not arg:
        raise DataError(f"data: unknown source 'torchvision'; expected {SOURCE_FORMS}")
    name, _, root = arg.partition(":")
    return read_torchvision(name, Path(root) if root else TORCHVISION_ROOT, size)


def read_source(source: str, size: int, mode: str = "prepared", on_bad_file: str = "fail") -> RawData:
    """The images a source name or path stands for, fitted to ``size``.

    Image folders go through their prepared cache (``mode`` ``prepared``) or are decoded
    into this process's memory (``memory``); other sources are always read into memory.
    """
    kind, sep, arg = source.partition(":")
    if sep and not arg:
        raise DataError(f"data: {source!r} needs a path or name after the colon")
    if kind in SOURCES:
        return SOURCES[kind](arg if sep else None, size, mode, on_bad_file)
    path = Path(source)
    if path.is_dir():
        if find_idx_files(path):
            return read_idx_source(path.name, path, size)
        return read_folder_source(path, size, mode, on_bad_file)
    if "/" in source or path.suffix:
        raise DataError(f"{source}: no such data folder")
    raise DataError(f"data: unknown source {source!r}; expected {SOURCE_FORMS}")
