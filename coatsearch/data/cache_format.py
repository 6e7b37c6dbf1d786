"""The prepared cache's format: where a cache lives, what its manifest holds, and opening
(mapping) one that is complete and up to date.

A cache lives under ``$COATSEARCH_CACHE/prepared`` (default ``~/.cache/coatsearch``), one
folder per source folder and size: per split ``SPLIT.npy`` (``(N, C, S, S)`` uint8),
``SPLIT_labels.npy`` and ``SPLIT_sums.npy`` (per-image, per-channel pixel sums and sums of
squares), then ``manifest.json``. A cache is used only when its manifest has this
`FORMAT_VERSION`, its source fingerprint matches the folder now, and its arrays have the
manifest's shapes.

Opened arrays are mapped, not read: every process of a node that trains on one source
shares its pages through the page cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coatsearch.data.errors import DataError
from coatsearch.data.fingerprint import list_source
from coatsearch.errors import first_line

#: Bumped whenever the files' layout or meaning changes; other versions are rebuilt.
#: 2: multi-picture JPEGs (Pillow's "MPO") are draft-decoded like other JPEGs.
FORMAT_VERSION = 2


def cache_root() -> Path:
    """``$COATSEARCH_CACHE`` or ``~/.cache/coatsearch``."""
    return Path(os.environ.get("COATSEARCH_CACHE") or "~/.cache/coatsearch").expanduser()


def cache_dir_for(root: Path, size: int, draft: bool = True, cache: Path | None = None) -> Path:
    """The cache folder of a source folder at one size."""
    resolved = root.expanduser().resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    name = f"{resolved.name or 'root'}-{digest}-{size}px" + ("" if draft else "-exact")
    return (cache or cache_root()) / "prepared" / name


@dataclass(frozen=True)
class Prepared:
    """An opened cache: mapped arrays per split and the manifest."""

    path: Path
    manifest: dict[str, Any]
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    sums: dict[str, np.ndarray]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"])

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def open_cache(path: Path) -> Prepared:
    """Map a cache folder; `ValueError`/`OSError`/`EOFError`/`KeyError`/`TypeError` when it
    is not a complete cache of this format (a manifest of another shape, arrays of other
    shapes or types, labels that name no class)."""
    manifest = json.loads((path / "manifest.json").read_text())
    if not isinstance(manifest, dict):
        raise ValueError("manifest.json: expected a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
    missing = [key for key in ("image_size", "mode", "classes", "splits", "draft", "files") if key not in manifest]
    if missing:
        raise ValueError(f"manifest.json: no {missing[0]}")
    size, channels = manifest["image_size"], 1 if manifest["mode"] == "L" else 3
    classes, splits = manifest["classes"], manifest["splits"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"manifest.json: classes: expected a list of class names, got {classes!r}")
    if not isinstance(splits, dict) or not all(
        isinstance(info, dict) and isinstance(info.get("count"), int) and isinstance(info.get("skipped"), list)
        for info in splits.values()
    ):
        raise ValueError("manifest.json: splits: expected {split: {count, skipped}}")
    images, labels, sums = {}, {}, {}
    for split, info in splits.items():
        n = info["count"]
        arrays = {}
        for key, shape, dtype in (
            (split, (n, channels, size, size), np.uint8),
            (f"{split}_labels", (n,), np.int64),
            (f"{split}_sums", (n, channels, 2), np.int64),
        ):
            # mmap_mode "c": private, writable views (no torch warning); reads share the
            # page cache with every other process mapping the file
            array = np.load(path / f"{key}.npy", mmap_mode="c", allow_pickle=False)
            if array.shape != shape or array.dtype != dtype:
                raise ValueError(f"{key}.npy: shape {array.shape} {array.dtype}, expected {shape} {np.dtype(dtype)}")
            arrays[key] = array
        images[split], labels[split], sums[split] = arrays[split], arrays[f"{split}_labels"], arrays[f"{split}_sums"]
        if n and not 0 <= labels[split].min() <= labels[split].max() < len(classes):
            raise ValueError(f"{split}_labels.npy: labels outside 0..{len(classes) - 1} (the manifest's classes)")
    return Prepared(path, manifest, images, labels, sums)


def valid_cache(path: Path, fingerprint: dict[str, Any], draft: bool) -> tuple[Prepared | None, str]:
    """The cache at ``path`` when it is complete and matches the source, else why not."""
    if not (path / "manifest.json").exists():
        return None, "not prepared yet"
    try:
        prepared = open_cache(path)
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        return None, f"unusable cache ({first_line(exc)})"
    if prepared.manifest.get("draft") != draft:
        return None, "prepared with other decoding"
    if prepared.manifest.get("files") != fingerprint:
        return None, "the source folder changed"
    return prepared, "up to date"


def inspect_cache(root: Path | str, cache: Path | None = None) -> list[dict[str, Any]]:
    """What is cached for a source folder: one entry per prepared size."""
    root = Path(root).expanduser()
    prefix = cache_dir_for(root, 1, True, cache).name.rsplit("-", 1)[0]
    folder = (cache or cache_root()) / "prepared"
    entries = []
    try:
        listing = list_source(root)
        fingerprint: dict[str, Any] | None = listing.fingerprint()
    except DataError:
        fingerprint = None
    for path in sorted(folder.glob(f"{prefix}-*px*")) if folder.is_dir() else []:
        if not path.is_dir() or path.name.startswith("."):
            continue
        entry: dict[str, Any] = {"path": str(path)}
        try:
            prepared = open_cache(path)
        except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
            entry["state"] = f"unusable ({first_line(exc)})"
            entries.append(entry)
            continue
        m = prepared.manifest
        entry.update(
            size=m["image_size"], mode=m["mode"], classes=len(m["classes"]), draft=m["draft"],
            images={s: i["count"] for s, i in m["splits"].items()}, bytes=prepared.nbytes,
            skipped=sum(len(i["skipped"]) for i in m["splits"].values()),
            state="up to date" if fingerprint is not None and m["files"] == fingerprint else "stale (the source changed)",
        )
        entries.append(entry)
    return entries
