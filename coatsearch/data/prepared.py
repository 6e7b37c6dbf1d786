"""Prepared datasets: an image folder decoded once into memory-mapped uint8 arrays.

`prepare` lists a folder (``ROOT/CLASS/IMAGE`` or ``ROOT/train`` + ``ROOT/test``), decodes
every image once over a process pool (a JPEG at least twice the target side is decoded
shrunken, straight from the DCT, at the scale Pillow's ``draft`` mode picks: through
simplejpeg for RGB JPEGs, through Pillow for the rest), fits it to the
size with `fit_images` and writes, per split, ``SPLIT.npy`` (``(N, C, S, S)`` uint8),
``SPLIT_labels.npy`` and ``SPLIT_sums.npy`` (per-image, per-channel pixel sums and sums
of squares, so the normalisation of any training subset is exact without a pass over the
images), then ``manifest.json``.

A cache lives under ``$COATSEARCH_CACHE/prepared`` (default ``~/.cache/coatsearch``), one
folder per source folder and size. It is built in a temporary folder and renamed into
place, under a lock: a prepare killed half-way leaves only a temporary folder (removed by
the next prepare), and concurrent trial processes decode the source once between them.
A cache is used only when its manifest has this `FORMAT_VERSION`, its source fingerprint
(every file's path, size and mtime) matches the folder now, and its arrays have the
manifest's shapes; otherwise it is rebuilt.

Opened arrays are mapped, not read: every process of a node that trains on one source
shares its pages through the page cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from coatsearch.data.errors import DataError
from coatsearch.data.listing import GRAY_MODES, has_split_folders, list_images
from coatsearch.errors import first_line
from coatsearch.host import available_cpus, pid_alive

try:  # a dependency; where its wheel is missing, Pillow decodes everything (see `_decode_scaled_jpeg`)
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - exercised where the wheel is missing
    _simplejpeg = None

#: File suffixes worth trying simplejpeg on (others are not read twice).
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})

#: Bumped whenever the files' layout or meaning changes; other versions are rebuilt.
#: 2: multi-picture JPEGs (Pillow's "MPO") are draft-decoded like other JPEGs.
FORMAT_VERSION = 2
#: Images per task sent to a worker process.
CHUNK = 256
#: Folders with fewer images are decoded in the calling process (no pool start-up).
POOL_MIN = 512
#: Folders of at least this many images show a progress bar while they are prepared.
PROGRESS_MIN = 2000
READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def cache_root() -> Path:
    """``$COATSEARCH_CACHE`` or ``~/.cache/coatsearch``."""
    return Path(os.environ.get("COATSEARCH_CACHE") or "~/.cache/coatsearch").expanduser()


# ----------------------------------------------------------------------------- decoding
#: Gray modes whose RGB conversion replicates the gray value exactly: a set of them all is
#: decoded as RGB and keeps channel 0, with no separate pass to find the set's mode.
REPLICATED_GRAY = frozenset({"1", "L"})


def draft_scale(width: int, height: int, size: int) -> int:
    """The JPEG scale (1, 2, 4 or 8) that draft decoding uses for a target side ``size``:
    Pillow's rule in ``JpegImageFile.draft`` for the request `_decode` makes (a power of two
    at most ``short side // size``, so the decoded short side is never below ``size``)."""
    scale = min(width, height) // size
    if scale < 2:
        return 1
    request = (width // scale, height // scale)
    fits = min(width // request[0], height // request[1])
    return next(s for s in (8, 4, 2, 1) if fits >= s)


def draft_shape(width: int, height: int, size: int) -> tuple[int, int]:
    """``(height, width)`` of a JPEG decoded at its `draft_scale` (sides rounded up, as
    libjpeg's scaled decode and Pillow's ``draft`` round them)."""
    scale = draft_scale(width, height, size)
    return (height + scale - 1) // scale, (width + scale - 1) // scale


def _decode_scaled_jpeg(path: Path, mode: str, size: int, modes: set[str] | None) -> np.ndarray | None:
    """An RGB JPEG decoded by simplejpeg at the draft scale, ``(H, W, 3)``; None where that
    does not apply (no simplejpeg, not a 3-channel JPEG, another mode, over Pillow's
    decompression-bomb limit, a decode error or an unexpected size) and Pillow decodes,
    or raises the error that names the file.

    Both call libjpeg-turbo's scaled inverse DCT with the same settings (accurate DCT, fancy
    upsampling), so the pixels are Pillow's draft pixels (a test checks it); simplejpeg
    skips Pillow's Python-side marker parsing and copies, about 25% less time a file.
    """
    if _simplejpeg is None or mode != "RGB" or path.suffix.lower() not in JPEG_SUFFIXES:
        return None
    try:
        data = path.read_bytes()
        if not _simplejpeg.is_jpeg(data):
            return None
        height, width, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "RGB") or (Image.MAX_IMAGE_PIXELS and width * height > 2 * Image.MAX_IMAGE_PIXELS):
            return None
        shape = draft_shape(width, height, size)
        array = _simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=shape[0], min_width=shape[1])
    except (OSError, ValueError):
        return None  # Pillow reads it again and names the error
    if array.shape[:2] != shape:
        return None
    if modes is not None:
        modes.add("RGB")
    return array


def _needs_resize(path: Path, size: int, draft: bool) -> bool:
    """Whether ``path`` (a folder's first image, its header only) decodes to another short
    side than ``size``: then `decode_fitted` resizes with torch, most likely for the whole
    folder. False for an unreadable file (the decode names it)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            scaled = draft and image.format in ("JPEG", "MPO")
    except READ_ERRORS:
        return False
    return min(draft_shape(width, height, size) if scaled else (height, width)) != size


def _decode(path: Path, mode: str, size: int, draft: bool, modes: set[str] | None) -> np.ndarray:
    """One image file as uint8 ``(H, W)`` or ``(H, W, C)`` in ``mode``, at the draft scale
    with ``draft``."""
    if draft:
        array = _decode_scaled_jpeg(path, mode, size, modes)
        if array is not None:
            return array
    try:
        with Image.open(path) as image:
            if modes is not None:
                modes.add(image.mode)
            if draft and image.format in ("JPEG", "MPO"):  # MPO: multi-picture JPEG (cameras)
                scale = min(image.size) // size
                if scale >= 2:
                    # keep the short side >= size after scaling (draft keeps the aspect)
                    image.draft(mode, (image.size[0] // scale, image.size[1] // scale))
            return np.asarray(image.convert(mode), dtype=np.uint8)
    except READ_ERRORS as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


def decode_fitted(path: Path, mode: str, size: int, draft: bool = True, modes: set[str] | None = None) -> np.ndarray:
    """One image file as uint8 ``(C, size, size)``, as `fit_images` makes it; `DataError`
    naming the file when it cannot be read. ``modes`` collects the files' own modes.

    With ``draft``, a JPEG at least twice the target side is decoded at a reduced scale
    (1/2, 1/4 or 1/8, never below the target side): several times faster, and the resize
    that follows starts from a DCT-downscaled image instead of the full one.
    """
    array = _decode(path, mode, size, draft, modes)
    if array.ndim == 2:
        array = array[:, :, None]
    height, width = array.shape[:2]
    side = min(height, width)
    if side == size:  # the centre crop of `fit_images` is all there is to do (draft output, often)
        top, left = (height - side) // 2, (width - side) // 2
        return array[top : top + side, left : left + side].transpose(2, 0, 1)
    # a resize: torch's, as `data.mode: memory` does it (imported here, not at the top: a
    # folder whose draft output is already the size is prepared without loading torch)
    import torch

    from coatsearch.data.images import fit_images

    if _IN_WORKER:
        torch.set_num_threads(1)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return fit_images(tensor.unsqueeze(0), size)[0].numpy()


def _modes(paths: Sequence[str], skip: bool = False) -> tuple[set[str], str | None]:
    """The Pillow modes of some files (headers only), and the first unreadable one (passed
    over with ``skip``)."""
    found: set[str] = set()
    for p in paths:
        try:
            with Image.open(p) as image:
                found.add(image.mode)
        except READ_ERRORS as exc:
            if not skip:
                return found, f"{p}: unreadable image ({exc})"
    return found, None


def _decode_task(task: tuple[str, int, Sequence[str], str, int, bool, bool]) -> tuple[np.ndarray, list[int], set[str]]:
    """Decode ``paths`` into rows ``start..`` of the array file; per-image pixel sums, the
    rows of unreadable files (``skip``) and the files' modes back. Runs in a worker process.

    The chunk is decoded into a buffer of its own, summed at once and written to the map
    in one slice: per-image sums and writes cost about a fifth of a draft decode."""
    array_path, start, paths, mode, size, draft, skip = task
    out = np.load(array_path, mmap_mode="r+")
    chunk = np.zeros((len(paths), *out.shape[1:]), dtype=np.uint8)
    bad: list[int] = []
    modes: set[str] = set()
    for i, p in enumerate(paths):
        try:
            chunk[i] = decode_fitted(Path(p), mode, size, draft, modes)
        except DataError:
            if not skip:
                raise
            bad.append(start + i)
    out[start : start + len(paths)] = chunk
    out.flush()
    del out
    flat = chunk.reshape(len(paths), chunk.shape[1], -1)
    sums = np.empty((len(paths), chunk.shape[1], 2), dtype=np.int64)
    for row in range(0, len(paths), 32):  # squares 32 images at a time: a small uint16 copy
        block = flat[row : row + 32]
        sums[row : row + 32, :, 0] = block.sum(-1, dtype=np.int64)
        sums[row : row + 32, :, 1] = np.square(block, dtype=np.uint16).sum(-1, dtype=np.int64)
    return sums, bad, modes


# ----------------------------------------------------------------------------- fingerprint
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
                    raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from None
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


def cache_dir_for(root: Path, size: int, draft: bool = True, cache: Path | None = None) -> Path:
    """The cache folder of a source folder at one size."""
    resolved = root.expanduser().resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    name = f"{resolved.name or 'root'}-{digest}-{size}px" + ("" if draft else "-exact")
    return (cache or cache_root()) / "prepared" / name


# ----------------------------------------------------------------------------- opened cache
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


def _open(path: Path) -> Prepared:
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


def _valid(path: Path, fingerprint: dict[str, Any], draft: bool) -> tuple[Prepared | None, str]:
    """The cache at ``path`` when it is complete and matches the source, else why not."""
    if not (path / "manifest.json").exists():
        return None, "not prepared yet"
    try:
        prepared = _open(path)
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        return None, f"unusable cache ({first_line(exc)})"
    if prepared.manifest.get("draft") != draft:
        return None, "prepared with other decoding"
    if prepared.manifest.get("files") != fingerprint:
        return None, "the source folder changed"
    return prepared, "up to date"


# ----------------------------------------------------------------------------- building
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside the cache folder, released when the holder dies. A POSIX
    record lock (`fcntl.lockf`): unlike `flock`, the decoding processes it forks do not
    inherit it, so a killed prepare's workers can never keep it."""
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


#: True in a decoding process of the pool (its resizes then use one torch thread).
_IN_WORKER = False


def _worker_init() -> None:
    """Decoding processes: one torch thread each (where a resize loads torch), and (Linux)
    killed with their parent."""
    global _IN_WORKER
    _IN_WORKER = True
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-")
        probe.close()
    except OSError as exc:
        raise DataError(
            f"{folder}: cache folder not writable ({exc.strerror or exc}); "
            "set COATSEARCH_CACHE to a writable folder or data.mode to memory"
        ) from None


def _remove_stale(folder: Path, name: str) -> None:
    """Temporary folders of prepares that died (their process is gone)."""
    for tmp in folder.glob(f".{name}.tmp-*"):
        pid = tmp.name.rsplit("-", 2)[-2]
        if not pid.isdigit() or not pid_alive(int(pid)) or int(pid) == os.getpid():
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mode_of_all(paths: list[Path], skip: bool = False) -> str:
    """``L`` when every (readable, with ``skip``) file is gray, else ``RGB`` (headers only)."""
    chunks = [[str(p) for p in paths[i : i + 4 * CHUNK]] for i in range(0, len(paths), 4 * CHUNK)]
    results = (_modes(chunk, skip) for chunk in chunks)
    found: set[str] = set()
    for modes, error in results:
        if error:
            raise DataError(error)
        found |= modes
    return "L" if found <= GRAY_MODES else "RGB"


Progress = Callable[[int], None]


def _decode_split(
    tmp: Path, split: str, paths: list[Path], labels: list[int], mode: str | None, size: int,
    draft: bool, skip: bool, pool: ProcessPoolExecutor | None, advance: Progress,
    mode_found: list[str] | None = None,
) -> tuple[int, list[str]]:
    """Write one split's three arrays into ``tmp``; its image count and skipped files.
    ``mode`` None: the split's mode is found while decoding (into ``mode_found[0]``)."""
    find_mode = mode is None
    mode_found = mode_found if mode_found is not None else [""]
    if mode is None:
        mode = "RGB"
    channels = 1 if mode == "L" else 3
    array_path = tmp / f"{split}.npy"
    out = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=(len(paths), channels, size, size))
    del out
    tasks = [(str(array_path), i, [str(p) for p in paths[i : i + CHUNK]], mode, size, draft, skip)
             for i in range(0, len(paths), CHUNK)]
    sums = np.zeros((len(paths), channels, 2), dtype=np.int64)
    bad: list[int] = []
    results = pool.map(_decode_task, tasks) if pool is not None else map(_decode_task, tasks)
    modes: set[str] = set()
    for task, (chunk_sums, chunk_bad, chunk_modes) in zip(tasks, results):
        sums[task[1] : task[1] + len(chunk_sums)] = chunk_sums
        bad += chunk_bad
        modes |= chunk_modes
        advance(len(task[2]))
    if find_mode:
        if not modes <= GRAY_MODES:
            found = "RGB"
        elif modes <= REPLICATED_GRAY:  # gray images decoded as RGB: keep one channel
            found, channels = "L", 1
            full = np.load(array_path, mmap_mode="r")
            gray = np.lib.format.open_memmap(tmp / f"{split}.gray.npy", mode="w+", dtype=np.uint8,
                                             shape=(len(paths), 1, size, size))
            for start in range(0, len(paths), 4096):
                gray[start : start + 4096] = full[start : start + 4096, :1]
            gray.flush()
            del gray, full
            os.replace(tmp / f"{split}.gray.npy", array_path)
            sums = np.ascontiguousarray(sums[:, :1])
        else:  # other gray modes (16-bit, float): decode again as L
            return _decode_split(tmp, split, paths, labels, "L", size, draft, skip, pool, lambda n: None)
        mode_found[0] = found
    keep = np.setdiff1d(np.arange(len(paths)), np.array(bad, dtype=np.int64))
    label_array = np.asarray(labels, dtype=np.int64)
    if bad:  # rewrite without the skipped rows (rare: only with on_bad_file skip)
        full = np.load(array_path, mmap_mode="r")
        compact = np.lib.format.open_memmap(tmp / f"{split}.part.npy", mode="w+", dtype=np.uint8,
                                            shape=(len(keep), channels, size, size))
        for start in range(0, len(keep), 4096):
            compact[start : start + 4096] = full[keep[start : start + 4096]]
        compact.flush()
        del compact, full
        os.replace(tmp / f"{split}.part.npy", array_path)
    np.save(tmp / f"{split}_labels.npy", label_array[keep])
    np.save(tmp / f"{split}_sums.npy", sums[keep])
    return len(keep), [str(paths[i]) for i in bad]


def _channel_stats(sums: np.ndarray, pixels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (n-1) on the [0, 1] scale from per-image pixel sums."""
    total = sums.sum(0).astype(np.float64)  # (C, 2)
    n = pixels * len(sums)
    mean = total[:, 0] / n
    var = (total[:, 1] - total[:, 0] ** 2 / n) / max(1, n - 1)
    return (mean / 255).tolist(), (np.sqrt(np.maximum(var, 0)) / 255).tolist()


def _build(
    listing: Listing, fingerprint: dict[str, Any], final: Path, size: int, draft: bool, skip: bool,
    workers: int, progress: bool,
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = sum(len(paths) for paths, _ in listing.splits.values())
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{time.time_ns() % 10**9}")
    tmp.mkdir()
    bar = Progress(TextColumn("preparing {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True, disable=not progress or total < PROGRESS_MIN)
    pool = None
    try:
        if workers > 1 and total >= POOL_MIN:
            first = next(iter(listing.splits.values()))[0][0]
            if _needs_resize(first, size, draft):
                import torch  # noqa: F401  (loaded once here, and shared by the forked workers)
            pool = ProcessPoolExecutor(workers, mp_context=get_context("fork" if os.name == "posix" else "spawn"),
                                       initializer=_worker_init)
        with bar:
            task = bar.add_task(f"{listing.root} at {size}px", total=total)
            found = [""]
            splits: dict[str, Any] = {}
            for split, (paths, labels) in listing.splits.items():
                # the training split's mode is found as it is decoded; the test split takes it
                count, skipped = _decode_split(tmp, split, paths, labels, found[0] or None, size, draft, skip,
                                               pool, lambda n: bar.advance(task, n), found)
                splits[split] = {"count": count, "skipped": skipped}
        if list_source(listing.root).fingerprint() != fingerprint:  # files changed, added or removed
            raise _Changed()
        mode = found[0]
        sums = np.load(tmp / "train_sums.npy")
        mean, std = _channel_stats(sums, size * size)
        manifest = {
            "format_version": FORMAT_VERSION, "source": str(listing.root.resolve()), "image_size": size,
            "mode": mode, "channels": 1 if mode == "L" else 3, "classes": list(listing.classes),
            "draft": draft, "splits": splits, "mean": mean, "std": std, "files": fingerprint,
        }
        for f in tmp.iterdir():
            _fsync(f)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        _fsync(tmp / "manifest.json")
        if final.exists():
            old = final.with_name(f".{final.name}.tmp-old-{os.getpid()}-0")
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
        _fsync(final.parent)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        shutil.rmtree(tmp, ignore_errors=True)


class _Changed(Exception):
    """The source folder changed while it was being decoded."""


def prepare(
    root: Path | str, size: int, *, workers: int | None = None, draft: bool = True,
    on_bad_file: str = "fail", cache: Path | None = None, progress: bool = True, force: bool = False,
) -> Prepared:
    """The prepared cache of ``root`` at ``size``: reused when up to date, else built.

    ``workers``: decoding processes (default: every core). ``on_bad_file``: ``fail``
    raises `DataError` naming an unreadable file; ``skip`` leaves it out (the manifest
    lists it). A folder that changes while it is decoded is decoded again (twice at most).
    """
    root = Path(root).expanduser()
    if not isinstance(size, int) or size <= 0:
        raise DataError(f"image_size: expected a positive integer, got {size!r}")
    if on_bad_file not in ("fail", "skip"):
        raise DataError(f"on_bad_file: expected fail or skip, got {on_bad_file!r}")
    final = cache_dir_for(root, size, draft, cache)
    workers = max(1, workers or available_cpus())
    for _attempt in range(3):
        listing = list_source(root)
        fingerprint = listing.fingerprint()
        if not force:
            found, _ = _valid(final, fingerprint, draft)
            if found is not None:
                return _checked(found, on_bad_file)
        _writable(final.parent)
        with _locked(final):
            if not force:  # another process may have built it while we waited
                found, _ = _valid(final, fingerprint, draft)
                if found is not None:
                    return _checked(found, on_bad_file)
            _remove_stale(final.parent, final.name)
            try:
                _build(listing, fingerprint, final, size, draft, on_bad_file == "skip", workers, progress)
            except _Changed:
                continue
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DataError(f"{final.parent}: no space left for the prepared cache of {root}") from None
                raise DataError(f"{final}: cannot write the prepared cache ({exc.strerror or exc})") from None
            found, why = _valid(final, fingerprint, draft)
            if found is None:
                raise DataError(f"{final}: the cache just written is unusable ({why})")
            return _checked(found, on_bad_file)
    raise DataError(f"{root}: the folder kept changing while it was being prepared; try again when it is still")


def _checked(prepared: Prepared, on_bad_file: str) -> Prepared:
    if on_bad_file == "fail":
        for info in prepared.manifest["splits"].values():
            if info["skipped"]:
                raise DataError(f"{info['skipped'][0]}: unreadable image (prepared with on_bad_file: skip)")
    return prepared


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
            prepared = _open(path)
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
