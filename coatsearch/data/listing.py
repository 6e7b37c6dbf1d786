"""Which files a data folder holds: class folders, their images, split folders, IDX parts;
which sources name an image folder.

No torch here: the prepared-cache builder (`coatsearch.data.prepared`) lists and
fingerprints folders in a process that never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from coatsearch.data.errors import DataError

#: Modes read as one channel; everything else is converted to RGB.
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})

#: File-name prefixes of each part, as MNIST, Fashion-MNIST and KMNIST name them.
IDX_PARTS = {
    "train_images": ("train-images",),
    "train_labels": ("train-labels",),
    "test_images": ("t10k-images", "test-images"),
    "test_labels": ("t10k-labels", "test-labels"),
}


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


def list_images(root: Path, classes: Sequence[str] | None) -> tuple[list[Path], list[int], list[str]]:
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


def has_split_folders(root: Path) -> bool:
    """Whether ``root`` holds ``train/`` and ``test/`` folders rather than class folders."""
    return (root / "train").is_dir() and (root / "test").is_dir()


def find_idx_files(folder: Path) -> dict[str, Path]:
    """The IDX parts present in ``folder`` (unpacked files preferred over ``.gz``)."""
    found: dict[str, Path] = {}
    files = sorted(folder.iterdir(), key=lambda p: (p.suffix == ".gz", p.name))
    for part, prefixes in IDX_PARTS.items():
        for file in files:
            if file.is_file() and file.name.startswith(prefixes):
                found[part] = file
                break
    return found


#: Sources whose argument is a path (``KIND:PATH``); ``torchvision:NAME:ROOT`` has one after its name.
PATH_KINDS = ("fashion-mnist-full", "idx", "imagefolder")


def source_from(source: str, folder: Path) -> str:
    """``source`` as written in a file in ``folder``: a relative path in it (a bare folder,
    ``idx:``/``imagefolder:``/``fashion-mnist-full:PATH``, ``torchvision:NAME:ROOT``) taken
    from ``folder``, so a space file means the same data from any working directory. Named
    sources, absolute and ``~`` paths and sources of kinds registered elsewhere are kept."""
    kind, sep, arg = source.partition(":")

    def rooted(path: str) -> str:
        return path if not path or Path(path).is_absolute() or path.startswith("~") else str(folder / path)

    if not sep:  # a path has a slash or names a folder there; anything else is a source's name
        return rooted(source) if "/" in source or (folder / source).is_dir() else source
    if kind in PATH_KINDS:
        return f"{kind}:{rooted(arg)}"
    if kind == "torchvision":
        name, colon, root = arg.partition(":")
        return f"{kind}:{name}{colon}{rooted(root)}"
    return source


def folder_of(source: str) -> Path | None:
    """The image folder a source names (``imagefolder:PATH`` or a folder without IDX
    files), or None for every other kind of source."""
    kind, sep, arg = source.partition(":")
    if kind == "imagefolder" and sep and arg:
        return Path(arg)
    if sep or source == "fashion-mnist":
        return None
    path = Path(source)
    return path if path.is_dir() and not find_idx_files(path) else None


def image_folder(source: str) -> Path:
    """The image folder a data source names, for preparing or inspecting its cache; a
    `DataError` for a missing folder or a source that is not an image folder."""
    folder = folder_of(source)
    if folder is None:
        if ":" not in source and source != "fashion-mnist" and not Path(source).exists():
            raise DataError(f"{source}: no such data folder")
        raise DataError(f"{source}: not an image folder (only image folders are prepared; other sources load in memory)")
    return folder
