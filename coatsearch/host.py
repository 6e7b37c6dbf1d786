"""What this process may use of the machine it runs on: its cores, and whether another
process it recorded is still alive. One answer each, so every part sizes its thread
pools and judges a stale lock by the same rule."""

from __future__ import annotations

import os
import warnings
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


#: OpenMP's idle policy for coatsearch's processes (see `sleep_while_waiting`).
OPENMP_WAIT = {"OMP_WAIT_POLICY": "PASSIVE"}


def sleep_while_waiting() -> dict[str, str]:
    """Let OpenMP threads sleep, not spin, while they wait for one another, unless the user
    set ``OMP_WAIT_POLICY`` already; returns the variables in force, for processes started
    elsewhere (a Ray cluster's workers).

    Why: torch's intra-op threads (GNU OpenMP) busy-wait at the end of every parallel
    region. When another process takes one of the cores, the preempted thread holds up its
    peers, which spin away their own time slices; a training step on 2 threads ran 10-40x
    slower beside one competing process, 2x with the passive policy (the fair share), see
    ``benchmarks/front_door.py --load``. OpenMP reads the variable when it loads, with
    torch: the command line calls this before anything imports torch, and the processes it
    starts (trial workers, a local Ray) inherit it.
    """
    for key, value in OPENMP_WAIT.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in OPENMP_WAIT}


_warned = False


def warn_torch_loaded_first() -> bool:
    """Warn, once a process, that torch was imported before coatsearch with no
    ``OMP_WAIT_POLICY`` set, so OpenMP threads spin while they wait (see
    `sleep_while_waiting`); True when it warned."""
    global _warned
    if _warned or "OMP_WAIT_POLICY" in os.environ:
        return False
    _warned = True
    warnings.warn(
        "torch was imported before coatsearch, so OpenMP's threads spin while they wait: training "
        "beside other busy processes can run 10-40x slower. Import coatsearch first, or set "
        "OMP_WAIT_POLICY=PASSIVE before Python starts.", RuntimeWarning, stacklevel=3,
    )
    return True
