"""Build (or resume) a table of trained networks: one resumable command.

    python scripts/build_table.py tables/fmnist32 --runs runs/tables

Runs the table folder's studies in order on the optuna backend, each in
``RUNS/<study>/``: the main space's first block (so a partial table holds every layout,
split and budget), the seeds space, then the rest of the main space
(`coatsearch.search.table_build.stages`). Killed at any point (even with -9), the same
command resumes, losing only the trials in flight. On a machine without the run
directories, each study starts from the rows committed in the table folder
(``<name>.jsonl``) and trains only the points they do not hold.
Copy the rows into the folder as the build goes with scripts/sync_table.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coatsearch.errors import CoatsearchError
from coatsearch.runner import RunInterrupted, run_study
from coatsearch.search import compile_space
from coatsearch.search.table_build import first_block, rows_file, seed_study, stages
from coatsearch.space import load_space


def build(folder: Path, runs: Path) -> None:
    for space_file, trials in stages(folder):
        plan = compile_space(load_space(space_file), source=str(space_file))
        if trials == -1:
            trials = first_block(plan)
            plan = compile_space(load_space(space_file, [f"trials={trials}"]), source=str(space_file))
        run_dir = runs / plan.study
        committed = rows_file(space_file)
        if not (run_dir / "study.db").exists() and committed.exists():
            print(f"{run_dir}: seeded with {seed_study(plan, run_dir, committed)} rows from {committed}", flush=True)
        outcome = run_study(plan, run_dir)
        print(f"{plan.study}: {outcome.finished} finished trials ({space_file}, trials {plan.space.trials})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path, help="the table folder (tables/NAME)")
    parser.add_argument("--runs", type=Path, default=Path("runs/tables"), help="where the studies run")
    args = parser.parse_args()
    try:
        build(args.table, args.runs)
    except RunInterrupted as stop:
        print(f"error: stopped; resume with: python scripts/build_table.py {args.table} --runs {args.runs}",
              file=sys.stderr)
        return 128 + stop.signum
    except CoatsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
