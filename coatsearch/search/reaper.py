"""No process of a local Ray run outlives the command, however the command ends.

A local run keeps Ray's files in a folder of its own (`ray_folder`), so its processes are
the ones that name that folder or hold a file open under it (`processes_using`). The
driver ends them itself after `ray.shutdown()` on every exit it sees (normal end, error,
Ctrl-C, SIGTERM). For the exits it cannot see (kill -9, an out-of-memory kill), `guard`
starts a small watchdog in a session of its own: it waits for the driver's end of a pipe
to close, which the kernel does however the driver dies, and then ends what is left.

Kept free of Ray and torch imports, so the watchdog starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from coatsearch.host import pid_alive


def ray_folder(run_dir: Path) -> Path:
    """Ray's folder for a run directory: short (socket paths are limited to ~100 bytes)
    and the same on every run of that directory."""
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"coatsearch-ray-{digest}"


def processes_using(folder: Path) -> list[int]:
    """PIDs of processes of a run's Ray: their command line names ``folder``, or they hold
    a file open under it (Ray renames its workers and agents, ``ray::IDLE``, but they keep
    their session's log files open)."""
    needle = str(folder)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle.encode() in (entry / "cmdline").read_bytes() or any(
                os.readlink(fd).startswith(needle) for fd in (entry / "fd").iterdir()
            ):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def reap(folder: Path, timeout: float = 5.0) -> int:
    """End every process still using ``folder`` (SIGTERM, then SIGKILL after ``timeout``)
    and remove its sessions; how many would not end."""
    pids = processes_using(folder) if Path("/proc").is_dir() else []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.time() + timeout
        while time.time() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if pid_alive(p)]
        if not pids:
            break
    shutil.rmtree(folder, ignore_errors=True)
    return len(pids)


@contextlib.contextmanager
def guard(folder: Path) -> Iterator[None]:
    """A watchdog that reaps ``folder`` when this process dies before leaving the block.

    The folder goes through the pipe, not the command line, so the watchdog is not one of
    the processes it reaps. Leaving the block normally closes the pipe with a word that
    tells the watchdog to exit at once (the driver reaps for itself)."""
    if not Path("/proc").is_dir():
        yield
        return
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "coatsearch.search.reaper"], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    assert watchdog.stdin is not None
    watchdog.stdin.write(f"{folder}\n".encode())
    watchdog.stdin.flush()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            watchdog.stdin.write(b"done\n")
            watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            watchdog.wait(timeout=5)


def _watch() -> None:
    """The watchdog: read the folder, wait for the pipe to close, reap unless told not to."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the terminal is the driver's to handle
    folder = Path(sys.stdin.readline().strip())
    rest = sys.stdin.read()  # returns when the driver closes the pipe, or dies
    if rest.strip() != "done" and str(folder):
        reap(folder)


if __name__ == "__main__":
    _watch()
