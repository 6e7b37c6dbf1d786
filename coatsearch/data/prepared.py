"""Prepared datasets: an image folder decoded once into memory-mapped uint8 arrays.

`prepare` lists a folder (``ROOT/CLASS/IMAGE`` or ``ROOT/train`` + ``ROOT/test``), decodes
every image once over a process pool (`coatsearch.data.decode`), fits it to the size and
writes the cache (`coatsearch.data.cache_format`) in a temporary folder renamed into
place under a lock (`coatsearch.data.cache_io`). An up-to-date cache is reused; one
whose source changed is rebuilt.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from coatsearch.data.cache_format import FORMAT_VERSION, Prepared, cache_dir_for, valid_cache
from coatsearch.data.cache_io import fsync, locked, remove_stale, writable
from coatsearch.data.decode import REPLICATED_GRAY, decode_fitted, mark_worker_process, needs_resize
from coatsearch.data.errors import DataError
from coatsearch.data.fingerprint import Listing, list_source
from coatsearch.data.listing import GRAY_MODES
from coatsearch.errors import os_reason
from coatsearch.host import available_cpus

#: Images per task sent to a worker process.
CHUNK = 256
#: Folders with fewer images are decoded in the calling process (no pool start-up).
POOL_MIN = 512
#: Folders of at least this many images show a progress bar while they are prepared.
PROGRESS_MIN = 2000


def _worker_init() -> None:
    """Decoding processes: one torch thread each (where a resize loads torch), and (Linux)
    killed with their parent."""
    mark_worker_process()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


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
        else:  # other gray modes (16-bit, float): decode again as L, and say so
            mode_found[0] = "L"
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
            if needs_resize(first, size, draft):
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
            fsync(f)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        fsync(tmp / "manifest.json")
        if final.exists():
            old = final.with_name(f".{final.name}.tmp-old-{os.getpid()}-0")
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
        fsync(final.parent)
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
            found, _ = valid_cache(final, fingerprint, draft)
            if found is not None:
                return _checked(found, on_bad_file)
        writable(final.parent)
        with locked(final):
            if not force:  # another process may have built it while we waited
                found, _ = valid_cache(final, fingerprint, draft)
                if found is not None:
                    return _checked(found, on_bad_file)
            remove_stale(final.parent, final.name)
            try:
                _build(listing, fingerprint, final, size, draft, on_bad_file == "skip", workers, progress)
            except _Changed:
                continue
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DataError(f"{final.parent}: no space left for the prepared cache of {root}") from None
                raise DataError(f"{final}: cannot write the prepared cache ({os_reason(exc)})") from None
            found, why = valid_cache(final, fingerprint, draft)
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
