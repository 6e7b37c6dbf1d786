"""Running a study: a space in, a run directory with results out, on either backend.

`run_study` owns the run directory (see `coatsearch.results`) and the progress display;
the backends only run trials and hand back rows.
"""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from coatsearch.results import count_finished, pareto_front, read_table, to_frame, write_table
from coatsearch.space import SearchSpace, SpaceError, space_from_dict

log = logging.getLogger("coatsearch")


@dataclass(frozen=True)
class StudyOutcome:
    run_dir: Path
    table_path: Path
    finished: int
    already_done: bool
    pareto_path: Path


def _check_run_dir(space: SearchSpace, run_dir: Path) -> None:
    """Refuse to mix two different spaces in one run directory (the trial count may grow)."""
    saved = run_dir / "space.yaml"
    if not saved.exists():
        return
    try:
        before = space_from_dict(yaml.safe_load(saved.read_text()), source=str(saved)).resolved().to_dict()
    except SpaceError:
        raise SpaceError(f"{saved}: the saved space is no longer valid; use another --out") from None
    now = space.resolved().to_dict()
    before.pop("trials", None)
    now.pop("trials", None)
    if before != now:
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise SpaceError(
            f"{saved}: this run directory holds a different space (changed: {', '.join(changed)}); "
            "use another --out or study name"
        )


def finished_rows(table_path: Path) -> int:
    if not table_path.exists():
        return 0
    return count_finished(read_table(table_path))


def _setup_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _optuna_worker(space_data: dict[str, Any], run_dir: str, threads: int) -> None:
    """Entry point of extra optuna worker processes (``concurrency`` > 1)."""
    from coatsearch.search.optuna_backend import run_optuna
    from coatsearch.space import space_from_dict

    run_optuna(space_from_dict(space_data), Path(run_dir), lambda rows: None, threads=threads)


def run_study(
    space: SearchSpace,
    out: Path | None = None,
    address: str | None = None,
    console: Console | None = None,
) -> StudyOutcome:
    """Run a study to ``space.trials`` finished trials, resuming whatever is already there."""
    console = console or Console(stderr=True)
    run_dir = Path(out) if out else Path("runs") / space.study
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_run_dir(space, run_dir)
    (run_dir / "space.yaml").write_text(space.resolved().to_yaml())
    table_path = run_dir / "results.csv"
    pareto_path = run_dir / "pareto.csv"
    target = space.target_trials

    done = finished_rows(table_path)
    if done >= target:
        _write_pareto(space, table_path, pareto_path)
        return StudyOutcome(run_dir, table_path, done, True, pareto_path)

    handler = _setup_log(run_dir)
    log.info("study %s: %d/%d trials finished, backend %s", space.study, done, target, space.backend)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, transient=False,
    )
    task = progress.add_task(f"{space.study} trials", total=target, completed=done, best="")

    def show(frame: Any) -> None:
        finished = count_finished(frame)
        complete = frame[frame["status"] == "complete"] if len(frame) else frame
        best = f"best val_acc {complete['val_acc'].max():.4f}" if len(complete) else ""
        progress.update(task, completed=min(finished, target), best=best)

    def on_rows(rows: list[dict[str, Any]]) -> None:
        show(write_table(rows, table_path))

    try:
        with progress:
            if space.backend == "optuna":
                from coatsearch.search.optuna_backend import run_optuna

                threads = space.trial_threads
                extra = []
                ctx = multiprocessing.get_context("spawn")
                for _ in range(space.concurrency - 1):
                    proc = ctx.Process(target=_optuna_worker, args=(space.to_dict(), str(run_dir), threads))
                    proc.start()
                    extra.append(proc)
                try:
                    run_optuna(space, run_dir, on_rows, threads=threads)
                finally:
                    for proc in extra:
                        proc.join()
                from coatsearch.search.optuna_backend import open_study, rows_of

                on_rows(rows_of(open_study(space, run_dir)))
            else:
                from coatsearch.search.ray_backend import run_ray

                run_ray(space, run_dir, table_path, on_rows=lambda rows: show(to_frame(rows)), address=address)
    finally:
        log.removeHandler(handler)
        handler.close()
    _write_pareto(space, table_path, pareto_path)
    return StudyOutcome(run_dir, table_path, finished_rows(table_path), False, pareto_path)


def _write_pareto(space: SearchSpace, table_path: Path, pareto_path: Path) -> None:
    if not table_path.exists():
        return
    front = pareto_front(read_table(table_path), [(o.metric, o.direction) for o in space.objectives])
    front.to_csv(pareto_path, index=False)
