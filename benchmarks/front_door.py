"""The README's first command, timed: the default space run from scratch, several times.

    python benchmarks/front_door.py [--runs 3] [--space spaces/layout_split.yaml] [--reference SPACE] [--set KEY=VALUE ...]
    python benchmarks/front_door.py --load [--baseline] [--timeout S] [--runs 3]

Each run is `coatsearch run SPACE --out <fresh folder>` in a subprocess, exactly as a
newcomer types it (interpreter start, imports, data, every trial, the report). It prints
each run's wall time, the median and spread, and where the time went: each phase's share
of the trials' time (building and budget-matching the candidate, reading data, training,
evaluating, from the results table's ``phases``) and what the run spent outside trials
(start-up, report), with each run's folder (its ``run.log`` and ``effects.csv`` say what it
estimated and found). ``--reference SPACE`` runs a second space in every round, in
alternating order, and prints the ratio round by round. Run it alone: other processes on
the machine slow it down.

``--load`` measures the run on a machine it shares: each round runs it once alone and
once beside one competing process of two busy threads (`competing_load`), in alternating
order, and prints both times and their ratio per round, with the median and spread. On a
machine of N cores a run that keeps its fair share takes about 2x as long beside such a
load when N = 2; much more than that is time lost to waiting (threads that spin for a
preempted peer, locks). ``--baseline`` adds the same pair of runs under OpenMP's
default wait policy (spinning), which coatsearch replaced (`coatsearch.host`).
``--set`` passes space overrides on, to shorten each run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

#: The competing process: two threads hashing 1 MiB buffers (hashlib releases the GIL on
#: large inputs, so both threads run at once), until it is killed.
BUSY_TWO_THREADS = """
import hashlib, threading
block = bytes(1 << 20)
def burn():
    while True:
        hashlib.sha256(block).digest()
for _ in range(2):
    threading.Thread(target=burn, daemon=True).start()
threading.Event().wait()
"""


@contextlib.contextmanager
def competing_load() -> Iterator[None]:
    """One other process with two threads that never rest, for as long as the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_TWO_THREADS])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def one_run(space: str, overrides: list[str], policy: str | None = None,
            timeout: float | None = None) -> tuple[float, dict[str, float], float, Path]:
    """One run's wall time, its trials' phases and their summed wall time. ``policy``: the
    ``OMP_WAIT_POLICY`` to run under ("" is OpenMP's own default, spinning; None: the one
    coatsearch sets). A run stopped at ``timeout`` counts as ``timeout`` (a lower bound).
    Also the run's folder."""
    out = Path(tempfile.mkdtemp(prefix="front-door-")) / "run"
    sets = [arg for value in overrides for arg in ("--set", value)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "coatsearch.cli", "run", space, "--out", str(out), *sets], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        assert timeout is not None
        return timeout, {}, timeout, out
    wall = time.perf_counter() - start
    table = pd.read_csv(out / "results.csv")
    phases: dict[str, float] = {}
    for text in table["phases"].dropna():
        for name, seconds in json.loads(text).items():
            phases[name] = phases.get(name, 0.0) + seconds
    trials_wall = float(table["wall_time"].sum())
    return wall, phases, trials_wall, out


def quiet_runs(args: argparse.Namespace) -> None:
    """Runs alone; with ``--reference``, each round runs the reference space too, in
    alternating order, so the two are compared under the same conditions."""
    spaces = [args.space] + ([args.reference] if args.reference else [])
    walls: dict[str, list[float]] = {space: [] for space in spaces}
    all_phases, trial_walls, outside = [], [], []
    for i in range(args.runs):
        folders = {}
        for space in (spaces if i % 2 == 0 else spaces[::-1]):
            wall, phases, trials, folders[space] = one_run(space, args.set)
            walls[space].append(wall)
            if space == args.space:
                all_phases.append(phases)
                trial_walls.append(trials)
                outside.append(wall - trials)
        print(f"run {i + 1}: " + ", ".join(f"{space} {walls[space][-1]:.0f} s ({folders[space]})" for space in spaces),
              flush=True)
    for space in spaces:
        median = statistics.median(walls[space])
        print(f"median {median:.0f} s ({median / 60:.2f} min), min {min(walls[space]):.0f} s, "
              f"max {max(walls[space]):.0f} s, over {args.runs} runs of {space}")
    if args.reference:
        ratios = [a / b for a, b in zip(walls[args.space], walls[args.reference])]
        print(f"{args.space} / {args.reference}, round by round: median {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f})")
    names = sorted({n for p in all_phases for n in p})
    summed = statistics.median(trial_walls)
    print(f"{args.space}: trial time summed over the trials: {summed:.0f} s (trials may run side by side), split into:")
    for name in names:
        seconds = statistics.median(p.get(name, 0.0) for p in all_phases)
        print(f"  {name:<9} {seconds:7.1f} s  {seconds / summed:6.1%}")
    print(f"  other    {summed - sum(statistics.median(p.get(n, 0.0) for p in all_phases) for n in names):7.1f} s "
          "(latency, bookkeeping)")
    print(f"outside the trials (start-up, the report; the run's wall time less its trials' where they run one at "
          f"a time): median {statistics.median(outside):.0f} s")


def loaded_runs(args: argparse.Namespace) -> None:
    """Alone vs beside `competing_load`, interleaved: the slowdown a shared machine costs,
    under coatsearch's OpenMP wait policy and, with ``--baseline``, under OpenMP's default."""
    policies = {"coatsearch": None, **({"openmp-default": ""} if args.baseline else {})}
    times: dict[tuple[str, str], list[float]] = {}
    for i in range(args.runs):
        cells = [(policy, which) for policy in policies for which in ("alone", "loaded")]
        for policy, which in (cells if i % 2 == 0 else cells[::-1]):
            with competing_load() if which == "loaded" else contextlib.nullcontext():
                wall = one_run(args.space, args.set, policies[policy], args.timeout)[0]
            times.setdefault((policy, which), []).append(wall)
        print(f"round {i + 1}: " + ", ".join(
            f"{policy} {times[policy, 'alone'][-1]:.0f} s alone, {times[policy, 'loaded'][-1]:.0f} s loaded "
            f"({times[policy, 'loaded'][-1] / times[policy, 'alone'][-1]:.2f}x)" for policy in policies), flush=True)
    print(f"{args.runs} rounds of {args.space} {' '.join(args.set)}; loaded: beside one process of 2 busy threads"
          f"{f'; runs stopped at {args.timeout:.0f} s count as {args.timeout:.0f} s' if args.timeout else ''}")
    for policy in policies:
        alone, loaded = times[policy, "alone"], times[policy, "loaded"]
        ratios = [b / a for a, b in zip(alone, loaded)]
        print(f"  {policy:<15} alone median {statistics.median(alone):6.0f} s ({min(alone):.0f}-{max(alone):.0f}), "
              f"loaded median {statistics.median(loaded):6.0f} s ({min(loaded):.0f}-{max(loaded):.0f}), "
              f"slowdown median {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
    if args.baseline:
        quiet = [b / a for a, b in zip(times["openmp-default", "alone"], times["coatsearch", "alone"])]
        print(f"  alone, coatsearch's policy vs OpenMP's default: median {statistics.median(quiet):.2f}x "
              f"({min(quiet):.2f}-{max(quiet):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--space", default="spaces/layout_split.yaml")
    parser.add_argument("--reference", help="a second space run in every round, alternating order (quiet runs)")
    parser.add_argument("--set", action="append", default=[], help="a space override, passed to coatsearch run")
    parser.add_argument("--load", action="store_true", help="alone vs beside a competing 2-thread process")
    parser.add_argument("--baseline", action="store_true", help="with --load: OpenMP's default wait policy too")
    parser.add_argument("--timeout", type=float, help="stop a run after this many seconds (a lower bound)")
    args = parser.parse_args()
    if args.reference and args.load:
        parser.error("--reference compares quiet runs; with --load, run each space on its own")
    if args.reference and Path(args.reference).resolve() == Path(args.space).resolve():
        parser.error("--reference is the space itself: give the space it is compared with")
    (loaded_runs if args.load else quiet_runs)(args)


if __name__ == "__main__":
    main()
