"""The README's first command, timed: the default space run from scratch, several times.

    python benchmarks/front_door.py [--runs 3] [--space spaces/layout_split.yaml]

Each run is `coatsearch run SPACE --out <fresh folder>` in a subprocess, exactly as a
newcomer types it (interpreter start, imports, data, every trial, the report). It prints
each run's wall time, the median and spread, and where the time went: each phase's share
of the trials' time (building and budget-matching the candidate, reading data, training,
evaluating, from the results table's ``phases``) and what the run spent outside trials
(start-up, report). Run it alone: other processes on the machine slow it down.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def one_run(space: str) -> tuple[float, dict[str, float], float]:
    out = Path(tempfile.mkdtemp(prefix="front-door-")) / "run"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "coatsearch.cli", "run", space, "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    table = pd.read_csv(out / "results.csv")
    phases: dict[str, float] = {}
    for text in table["phases"].dropna():
        for name, seconds in json.loads(text).items():
            phases[name] = phases.get(name, 0.0) + seconds
    trials_wall = float(table["wall_time"].sum())
    return wall, phases, trials_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--space", default="spaces/layout_split.yaml")
    args = parser.parse_args()
    walls, all_phases, trial_walls = [], [], []
    for i in range(args.runs):
        wall, phases, trials = one_run(args.space)
        walls.append(wall)
        all_phases.append(phases)
        trial_walls.append(trials)
        print(f"run {i + 1}: {wall:.0f} s")
    median = statistics.median(walls)
    print(f"median {median:.0f} s ({median / 60:.2f} min), min {min(walls):.0f} s, max {max(walls):.0f} s, "
          f"over {args.runs} runs of {args.space}")
    names = sorted({n for p in all_phases for n in p})
    summed = statistics.median(trial_walls)
    print(f"trial time summed over the trials: {summed:.0f} s (trials may run side by side), split into:")
    for name in names:
        seconds = statistics.median(p.get(name, 0.0) for p in all_phases)
        print(f"  {name:<9} {seconds:7.1f} s  {seconds / summed:6.1%}")
    print(f"  other    {summed - sum(statistics.median(p.get(n, 0.0) for p in all_phases) for n in names):7.1f} s "
          "(latency, bookkeeping)")


if __name__ == "__main__":
    main()
