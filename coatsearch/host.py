"""What this process may use of the machine it runs on: its cores, and whether another
process it recorded is still alive. One answer each, so every part sizes its thread
pools and judges a stale lock by the same rule."""

from __future__ import annotations

import os
from pathlib import Path


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask, which a container or
    ``taskset`` narrows; `os.cpu_count` counts the whole machine)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited. A zombie (exited, its parent's
    wait still missing) counts as gone; a process of another user counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if not Path("/proc").is_dir():  # not Linux: the signal check is all there is
        return True
    try:
        return stat.read_text().split(")")[-1].split()[0] != "Z"
    except OSError:  # it exited just now
        return False
