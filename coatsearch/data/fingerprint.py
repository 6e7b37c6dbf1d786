"""A source folder's images and their fingerprint (every file's path, size and mtime):
a prepared cache is used only while the fingerprint it was built from matches the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coatsearch.data.errors import DataError
from coatsearch.data.listing import has_split_folders, list_images
from coatsearch.errors import os_reason


@dataclass(frozen=True)
class Listing:
    """A source folder's images: per split, the files (relative paths) and labels."""

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, tuple[list[Path], list[int]]]

    def fingerprint(self) -> dict[str, list[list[Any]]]:
        """Every file's relative path, size and mtime (ns), per split."""
        out: dict[str, list[list[Any]]] = {}
        for split, (paths, _) in self.splits.items():
            rows = []
            for p in paths:
                try:
                    st = p.stat()
                except OSError as exc:
                    raise DataError(f"{p}: cannot read ({os_reason(exc)})") from None
                rows.append([str(p.relative_to(self.root)), st.st_size, st.st_mtime_ns])
            out[split] = rows
        return out


def list_source(root: Path) -> Listing:
    """The files of an image folder, as `read_image_folder` would read them."""
    if has_split_folders(root):
        paths, labels, names = list_images(root / "train", None)
        test_paths, test_labels, _ = list_images(root / "test", names)
        return Listing(root, tuple(names), {"train": (paths, labels), "test": (test_paths, test_labels)})
    paths, labels, names = list_images(root, None)
    return Listing(root, tuple(names), {"train": (paths, labels)})
