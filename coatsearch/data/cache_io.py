"""Writing a prepared cache safely: an exclusive lock beside it, a writability probe,
temporary folders of dead prepares removed, and files made durable before the rename
that publishes them. A prepare killed half-way leaves only a temporary folder (removed by
the next prepare), and concurrent trial processes decode the source once between them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from coatsearch.data.errors import DataError
from coatsearch.errors import os_reason
from coatsearch.host import pid_alive


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside the cache folder, released when the holder dies. A POSIX
    record lock (`fcntl.lockf`): unlike `flock`, the decoding processes it forks do not
    inherit it, so a killed prepare's workers can never keep it."""
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-")
        probe.close()
    except OSError as exc:
        raise DataError(
            f"{folder}: cache folder not writable ({os_reason(exc)}); "
            "set COATSEARCH_CACHE to a writable folder or data.mode to memory"
        ) from None


def remove_stale(folder: Path, name: str) -> None:
    """Temporary folders of prepares that died (their process is gone)."""
    for tmp in folder.glob(f".{name}.tmp-*"):
        pid = tmp.name.rsplit("-", 2)[-2]
        if not pid.isdigit() or not pid_alive(int(pid)) or int(pid) == os.getpid():
            shutil.rmtree(tmp, ignore_errors=True)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
