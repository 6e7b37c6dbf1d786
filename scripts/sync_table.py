"""Copy a table build's rows into the table folder, to commit them.

    python scripts/sync_table.py tables/fmnist32 --runs runs/tables

For each of the folder's spaces whose study has a run directory under RUNS, writes every
trial that ended (or was infeasible) as JSON lines to ``<name>.jsonl`` beside
``<name>.yaml``, replacing the file atomically. Safe while the build runs (it reads the
SQLite study as another worker would). scripts/build_table.py resumes from these files
on a machine without the run directories. Then rewrites the generated sections of the
folder's README.md from the rows (`coatsearch.search.table_summary`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coatsearch.errors import CoatsearchError
from coatsearch.search import SearchPlan, compile_space
from coatsearch.search.plan import InfeasibleCandidate
from coatsearch.search.rows import point_key
from coatsearch.search.table import load_table
from coatsearch.search.table_build import SPACES, export_rows, rows_file
from coatsearch.search.table_summary import write_readme
from coatsearch.space import load_space


def sync(folder: Path, runs: Path) -> None:
    feasible, points = {}, []
    for name in SPACES:
        space_file = folder / f"{name}.yaml"
        if not space_file.exists():
            continue
        plan = compile_space(load_space(space_file), source=str(space_file), check_data=False)
        feasible[name] = plan.target_trials
        points += network_points(plan)
        run_dir = runs / plan.study
        if not (run_dir / "study.db").exists():
            print(f"{plan.study}: no run at {run_dir}; {rows_file(space_file)} left as it is")
            continue
        print(f"{rows_file(space_file)}: {export_rows(plan, run_dir, rows_file(space_file))} rows from {run_dir}")
    write_readme(load_table(str(folder)), feasible, points)


def network_points(plan: SearchPlan) -> list[tuple[str, float, float]]:
    """(table key, FLOPs, depth multiplier) of every network a space trains."""
    out = []
    for params in plan.grid or ():
        try:
            candidate = plan.candidate(params)
        except InfeasibleCandidate:
            continue
        point = {k: v for k, v in params.items() if k != "seed"}
        point["seed"] = params.get("seed", plan.space.seed)
        out.append((point_key(point), float(candidate.net.flops), float(params.get("depth_multiplier", 1))))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path, help="the table folder (tables/NAME)")
    parser.add_argument("--runs", type=Path, default=Path("runs/tables"), help="where the build's studies run")
    args = parser.parse_args()
    try:
        sync(args.table, args.runs)
    except CoatsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
