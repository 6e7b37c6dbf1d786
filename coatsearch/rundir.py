"""The run-folder rule: a run writes only inside a folder that is its own.

A folder is a run's own when it is new or empty, or when it holds `MARKER`, which a run
writes first thing (a folder written by an earlier version, with a saved space and a
study database or ledger, counts too and is marked). Any other folder is the user's: a run
refuses it rather than overwrite a ``results.csv`` or ``report.html`` of theirs. Inside its
folder a run never writes through a link: a run file that is a symbolic link, a named pipe
or a device is refused before anything is written, and files are replaced by rename
(`coatsearch.files.write_atomic`), which replaces a link instead of following it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from coatsearch.errors import CoatsearchError, os_reason
from coatsearch.files import file_kind

#: The file that marks a folder as a coatsearch run's.
MARKER = ".coatsearch-run"

#: Every file a run or its report writes in the run folder (SQLite's journals included).
RUN_FILES = (
    "space.yaml", "results.csv", "pareto.csv", "run.log", "study.db", "study.db-journal", "study.db-wal",
    "study.db-shm", "ledger.jsonl", "report.html", "top.csv", "effects.csv", "comparisons.csv",
    "summary.csv", "tune",
)

#: Files whose presence (with ``space.yaml``) shows an unmarked folder is an earlier run.
_EARLIER_RUN = ("study.db", "ledger.jsonl")


class RunDirError(CoatsearchError):
    """A run folder that is not the run's own, or holds a link or special file where a run
    file goes."""


def is_own(run_dir: Path) -> bool:
    """Whether ``run_dir`` (an existing folder) may be written by a run: marked, empty
    (but for a run's own temporary files), or an earlier version's run."""
    # one listing decides: a marker checked apart from it could be created in between by
    # another worker claiming the same folder, which the listing would then show as a stranger
    names = [n for n in os.listdir(run_dir) if not n.startswith(".write-test-")]
    if not names or MARKER in names:  # a marker that is not a regular file is refused by `check_run_files`
        return True
    return "space.yaml" in names and any(n in names for n in _EARLIER_RUN)


def check_run_files(run_dir: Path) -> None:
    """Refuse a run file that exists as anything but a regular file (a symbolic link, a
    directory, a named pipe, a device)."""
    for name in (MARKER, *RUN_FILES):
        path = run_dir / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode) and name == "tune":  # the Ray backend's folder
            continue
        if stat.S_ISDIR(mode):
            raise RunDirError(f"{path}: is a directory, expected the run's file; move it away")
        if not stat.S_ISREG(mode):
            raise RunDirError(f"{path}: is {file_kind(mode)}, expected the run's own file; a run never "
                              "writes through it; move it away")


def check(run_dir: Path, flag: str = "--out") -> None:
    """Refuse, without creating anything, a ``run_dir`` that exists and is not a run's
    own folder or holds a link or special file where a run file goes (see `claim`)."""
    if not os.path.lexists(run_dir):
        return
    if not run_dir.exists():
        raise RunDirError(f"{flag} {run_dir}: is a symbolic link to nothing; expected a folder")
    if not run_dir.is_dir():
        raise RunDirError(f"{flag} {run_dir}: is a file, expected a run folder")
    try:
        own = is_own(run_dir)
    except OSError as exc:
        raise RunDirError(f"{flag} {run_dir}: cannot read the run directory ({os_reason(exc)})") from None
    if not own:
        raise RunDirError(
            f"{flag} {run_dir}: the folder holds files and is not a coatsearch run (no {MARKER}); "
            "a run writes only into a new or empty folder or its own; use another --out"
        )
    check_run_files(run_dir)


def claim(run_dir: Path, flag: str = "--out") -> None:
    """Make ``run_dir`` this run's folder, or say in one line why it cannot be: it is not
    a folder, it holds files of the user's, a run file is a link or special file, or it
    cannot be created or written."""
    check(run_dir, flag)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"{flag} {run_dir}: cannot create the run directory ({os_reason(exc)})") from None
    check(run_dir, flag)  # another process may have made it meanwhile
    marker = run_dir / MARKER
    if not marker.exists():
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            os.write(fd, b"coatsearch run folder: coatsearch writes and replaces the files here\n")
            os.close(fd)
        except OSError as exc:
            raise RunDirError(f"{flag} {run_dir}: the run directory is not writable ({os_reason(exc)})") from None


def open_log(path: Path) -> int:
    """A descriptor appending to the run's log, never through a link."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
