"""Running a study: a plan in, a run directory with results out, on either backend.

`run_study` owns the run directory (see `coatsearch.results`), the progress display and
the stop signals; the backend only runs trials and keeps its ledger. The results table is
rebuilt from the ledger at the start and after every trial, so it always says exactly what
ran, and a damaged table heals on the next run.

Ctrl-C (SIGINT) and SIGTERM stop a run cleanly: trials in flight are marked
``interrupted``, the table and Pareto front are written, and `RunInterrupted` says how to
resume. Nothing that finished is lost or run again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from coatsearch.analysis import Analysis, Design, analyse
from coatsearch.analysis.overview import DEFAULT_OBJECTIVES
from coatsearch.analysis.ranking import pareto_set
from coatsearch.errors import CoatsearchError
from coatsearch.results import write_table
from coatsearch.search import Backend, SearchPlan, TrialRow, make_backend
from coatsearch.space import SpaceError, space_from_dict
from coatsearch.status import Status

log = logging.getLogger("coatsearch")


class RunInterrupted(Exception):
    """The run was stopped by a signal; what finished is written. ``signal`` is its number."""

    def __init__(self, run_dir: Path, signum: int) -> None:
        super().__init__(f"stopped; resume with: coatsearch resume {run_dir}")
        self.run_dir, self.signum = run_dir, signum


@dataclass(frozen=True)
class StudyOutcome:
    """A study run to its target (or found finished): where its files are, how many trials
    finished, and its results ``table`` as written, with the table's `Analysis` under the
    run's objectives (computed on first use), so nothing after the run reads back what it
    has just written. ``note`` says what the run did not do as asked."""

    run_dir: Path
    table_path: Path
    finished: int
    already_done: bool
    pareto_path: Path
    note: str = ""
    table: pd.DataFrame | None = None
    #: the space's params as written and its sampler: the experiment's design
    params: dict[str, Any] = field(default_factory=dict)
    sampler: str | None = None
    objectives: tuple[tuple[str, str], ...] = DEFAULT_OBJECTIVES

    @functools.cached_property
    def analysis(self) -> Analysis | None:
        """The results table's analysis (None for an outcome made without its table)."""
        if self.table is None:
            return None
        return analyse(self.table, Design.of(self.table, self.params, self.sampler), self.objectives)


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run directory, or say in one line why it cannot be used."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CoatsearchError(f"--out {run_dir}: cannot create the run directory ({exc.strerror or exc})") from None
    try:  # a probe of its own: workers starting together on one directory must not share one
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise CoatsearchError(f"--out {run_dir}: the run directory is not writable ({exc.strerror or exc})") from None
    for name in RUN_FILES:
        if (run_dir / name).is_dir():
            raise CoatsearchError(f"{run_dir / name}: is a directory, expected the run's file; move it away")


#: The files a run writes into its directory as it goes (the report's follow at the end).
RUN_FILES = ("space.yaml", "results.csv", "pareto.csv", "run.log")


def saved_space_note(plan: SearchPlan, run_dir: Path) -> tuple[bool, str]:
    """Whether to write ``space.yaml``, and a note for the user.

    A different space in the same directory is refused: its results would mean something
    else. ``trials`` may change: more trials extend the study; fewer change nothing (the
    saved space is kept, and the note says so). So may where trials run, which does not
    change what they measure (`PLACEMENT`): a study resumed on another machine, with more
    threads per trial or more at once, goes on.
    """
    saved = run_dir / "space.yaml"
    if not saved.exists():
        return True, ""
    try:
        before = space_from_dict(yaml.safe_load(saved.read_text()), source=str(saved)).to_dict()
    except (SpaceError, yaml.YAMLError):
        raise SpaceError(f"{saved}: the saved space is not a valid space; use another --out") from None
    now = plan.space.to_dict()
    before["base"] = _normalised_base(before.get("base"))  # fields added since take their defaults
    trials_before, trials_now = before.pop("trials", None), now.pop("trials", None)
    placement_changed = _pop_placement(before) != _pop_placement(now)
    if before != now:
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise SpaceError(
            f"{saved}: this run directory holds a different space (changed: {', '.join(changed)}); "
            "use another --out or study name"
        )
    if trials_now is not None and trials_before is not None and trials_now < trials_before:
        return False, f"the run directory's study has trials: {trials_before}; trials: {trials_now} changes nothing there"
    return trials_now != trials_before or placement_changed, ""


#: Space fields that say where and how many trials run, not what a trial measures.
#: (``resources.workers`` is not among them: it sets the global batch.)
PLACEMENT = ("concurrency", "address", "resources.cpu", "resources.gpu", "resources.accelerator_type",
             "resources.custom")


def _pop_placement(space: dict[str, Any]) -> dict[str, Any]:
    """Remove the `PLACEMENT` fields from a space's dict and return them."""
    resources = space.get("resources") or {}
    return {name: resources.pop(name[10:], None) if name.startswith("resources.") else space.pop(name, None)
            for name in PLACEMENT}


def _normalised_base(base: object) -> object:
    """A saved base spec as this version writes it (a field added later gets its default)."""
    from coatsearch.spec import NetSpec, SpecError

    if not isinstance(base, dict):
        return base
    try:
        return NetSpec.from_dict(base).to_dict()
    except SpecError:
        return base


def _setup_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """SIGTERM handled like Ctrl-C (a `KeyboardInterrupt`); the signal seen is recorded."""
    seen: list[int] = []

    def handler(signum: int, frame: object) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield seen
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_study(
    plan: SearchPlan,
    out: Path | None = None,
    address: str | None = None,
    console: Console | None = None,
) -> StudyOutcome:
    """Run a study to its target of finished trials, resuming whatever is already there."""
    console = console or Console(stderr=True)
    run_dir = Path(out) if out else Path("runs") / plan.study
    backend = make_backend(plan, run_dir, address)
    with backend.session():
        return _run_in_session(plan, run_dir, backend, console)


def _run_in_session(plan: SearchPlan, run_dir: Path, backend: Backend, console: Console) -> StudyOutcome:
    prepare_run_dir(run_dir)
    write_space, note = saved_space_note(plan, run_dir)
    table_path, pareto_path = run_dir / "results.csv", run_dir / "pareto.csv"
    target = plan.target_trials

    rows = backend.ledger()
    done = sum(row.finished for row in rows)
    if done >= target or (note and not write_space):  # finished, or asked for fewer trials
        table = _write_outputs(plan, rows, table_path, pareto_path)
        return _outcome(plan, run_dir, done, True, note, table)
    if write_space:
        (run_dir / "space.yaml").write_text(plan.space.to_yaml())

    handler = _setup_log(run_dir)
    log.info("study %s: %d/%d trials finished, backend %s", plan.study, done, target, backend.name)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, transient=False,
    )
    task = progress.add_task(f"{plan.study} trials", total=target, completed=done, best="")
    def on_rows(new_rows: list[TrialRow]) -> None:
        write_table(new_rows, table_path)
        finished = sum(row.finished for row in new_rows)
        scores = [row.val_acc for row in new_rows if row.status == Status.COMPLETE and row.val_acc is not None]
        progress.update(task, completed=min(finished, target), best=f"best val_acc {max(scores):.4f}" if scores else "")

    try:
        with _stop_signals() as seen, progress:
            try:
                backend.run(on_rows)
            except KeyboardInterrupt:
                rows = backend.ledger()
                _write_outputs(plan, rows, table_path, pareto_path)
                in_flight = sum(row.status == Status.INTERRUPTED for row in rows)
                log.info("interrupted with %d trials in flight", in_flight)
                raise RunInterrupted(run_dir, seen[0] if seen else signal.SIGINT) from None
    finally:
        log.removeHandler(handler)
        handler.close()
    rows = backend.ledger()
    table = _write_outputs(plan, rows, table_path, pareto_path)
    return _outcome(plan, run_dir, sum(row.finished for row in rows), False, note, table)


def _objectives(plan: SearchPlan) -> tuple[tuple[str, str], ...]:
    return tuple((o.metric, str(o.direction)) for o in plan.space.objectives)


def _outcome(plan: SearchPlan, run_dir: Path, finished: int, already_done: bool, note: str,
             table: pd.DataFrame) -> StudyOutcome:
    return StudyOutcome(run_dir, run_dir / "results.csv", finished, already_done, run_dir / "pareto.csv", note,
                        table, plan.space.to_dict().get("params", {}), plan.space.sampler, _objectives(plan))


def _write_outputs(plan: SearchPlan, rows: list[TrialRow], table_path: Path, pareto_path: Path) -> pd.DataFrame:
    """The results table and its Pareto front, written; the table as written."""
    frame = write_table(rows, table_path)
    front = pareto_set(frame, _objectives(plan))
    try:
        front.to_csv(pareto_path, index=False)
    except OSError as exc:
        raise CoatsearchError(f"{pareto_path}: cannot write the Pareto front ({exc.strerror or exc})") from None
    return frame
