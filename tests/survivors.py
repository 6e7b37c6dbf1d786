"""What a command leaves alive: every process it started, however far down, still running
some seconds after the command ended.

``python -m tests.survivors WAIT [--signal SIG --when FILE:LINES] -- COMMAND...`` runs
COMMAND as a child subreaper (Linux's PR_SET_CHILD_SUBREAPER), so a process that outlives
its parent is reparented to this one instead of init and cannot escape the count. With
``--signal``, SIG is sent to COMMAND once FILE has LINES lines (a trial finished), ``--delay``
seconds later. It
prints one JSON object: COMMAND's exit code and the descendants alive WAIT seconds after
it ended (pid and command line), then ends those, so a test leaves nothing behind either.
The count is taken earlier when no descendant is left: none can appear after that.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def _children() -> dict[int, list[int]]:
    by_parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z":  # exited: collect it if it is ours
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass
            continue
        by_parent.setdefault(int(fields[1]), []).append(int(entry))
    return by_parent


def descendants() -> list[int]:
    by_parent, found, todo = _children(), [], [os.getpid()]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _lines(path: Path) -> int:
    try:
        return len(path.read_bytes().splitlines())
    except OSError:
        return 0


def run_counting_survivors(command: list[str], wait: float = 10.0, stop: int | None = None,
                           when: tuple[Path, int] | None = None, timeout: float = 600, delay: float = 0.0) -> dict:
    """``command`` run under this module's watch; its exit code, stderr and survivors."""
    watch = [sys.executable, "-m", "tests.survivors", str(wait), "--limit", str(timeout - wait - 60)]
    if stop is not None and when is not None:
        watch += ["--signal", str(stop), "--when", f"{when[0]}:{when[1]}", "--delay", str(delay)]
    result = subprocess.run([*watch, "--", *command], capture_output=True, text=True, timeout=timeout,
                            cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"the watch failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("wait", type=float)
    parser.add_argument("--limit", type=float, default=540.0, help="seconds before a hung command is aborted")
    parser.add_argument("--signal", type=int)
    parser.add_argument("--when", help="FILE:LINES")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between FILE reaching LINES and the signal")
    split = sys.argv.index("--")
    args, command = parser.parse_args(sys.argv[1:split]), sys.argv[split + 1:]
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # a command that hangs is made to print where (faulthandler dumps every thread on SIGABRT)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    deadline = time.monotonic() + args.limit
    if args.signal:
        path, lines = args.when.rsplit(":", 1)
        while proc.poll() is None and _lines(Path(path)) < int(lines) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(args.delay)
        proc.send_signal(args.signal)
    try:
        _, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, stderr = proc.communicate()
        stderr = f"the command did not end within {args.limit:.0f} s; where it was:\n".encode() + stderr
    # none left alive stays so (an orphan is reparented here, and none is left to start one):
    # the count ends as soon as that holds, and at WAIT seconds otherwise
    settled = time.monotonic() + args.wait
    while descendants() and time.monotonic() < settled:
        time.sleep(0.2)
    alive = []
    for pid in descendants():
        try:
            alive.append([pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:300]])
        except OSError:
            continue
    for pid, _ in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    print(json.dumps({"returncode": proc.returncode, "alive": alive, "stderr": stderr.decode()[-12000:]}))


if __name__ == "__main__":
    main()
