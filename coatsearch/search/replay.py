"""The replay backend: a search run over a table of trained networks instead of training.

Each trial draws its parameters from the space's sampler exactly as on the optuna
backend (the same per-trial seeding, grid queue, ASHA rungs, ledger and rows), but
instead of training it reads the candidate's recorded curve from the table
(`coatsearch.search.table`) one epoch at a time: early stopping sees the epochs it would
have seen, and a stopped trial keeps the metrics of the epoch it stopped at.

A simulated clock stands in for time. Each epoch takes the CPU seconds it took when the
table was built (its training and both evaluations, at the table's thread count: on a
shared machine CPU time stays near what the epoch costs alone where wall time does not),
and ``concurrency`` workers run side by side: a worker that finishes a trial draws the
next one at that moment, seeing every trial finished before it, as the optuna backend's
workers do. Rows record ``wall_time`` (the trial's simulated seconds) and ``clock_start``
/ ``clock_end``, so a run says what compute it would have spent and when each trial
would have ended. Events at the same time are taken in a fixed order, so a replay is
deterministic for a seed.

The ledger is ``RUN_DIR/ledger.jsonl`` (as the ray backend's); a stopped replay resumes
from it, the finished trials told to the sampler first.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from coatsearch.search.jsonl_ledger import add_warm, append_ledger, read_ledger
from coatsearch.search.optuna_storage import quiet_optuna
from coatsearch.search.plan import SearchPlan
from coatsearch.search.rows import TrialRow, point_key
from coatsearch.search.rungs import CONTINUE, Course, Courses, Verdict, judge, make_scheduler
from coatsearch.search.samplers import make_sampler
from coatsearch.search.table import Entry, Table, load_table
from coatsearch.search.table_build import trial_of
from coatsearch.space import SpaceError
from coatsearch.status import Status

#: Stop drawing after this many infeasible draws in a row (as the optuna backend does).
MAX_INFEASIBLE_STREAK = 200
#: Seconds between results tables written while a replay runs (each costs more than a trial).
TABLE_EVERY_S = 1.0


@dataclass(order=True)
class _Event:
    """The end of a trial's next epoch, at ``time`` on the simulated clock."""

    time: float
    order: int
    flight: _Flight = field(compare=False)


@dataclass
class _Flight:
    """A trial on a simulated worker."""

    trial: optuna.trial.Trial
    number: int
    params: dict[str, Any]
    entry: Entry
    worker: int
    start: float
    epochs: int = 0
    verdict: Verdict = CONTINUE  # the scheduler's last verdict with a prediction


def replayed_row(entry: Entry, number: int, sampled: dict[str, Any], status: Status, epochs: int,
                 start: float, end: float, worker: str | None, latency: float | None) -> TrialRow:
    """The row a trial replayed for ``epochs`` epochs reports: the table's row, cut to
    those epochs when it stopped early (its end-of-training records, the test accuracy and
    per-image correctness, belong to the last epoch only)."""
    kept = entry.epochs[:epochs]
    changes: dict[str, Any] = dict(
        trial=number, sampled=sampled, status=status, fidelity=epochs, history=kept,
        wall_time=round(sum(entry.seconds[:epochs]), 3), clock_start=round(start, 3), clock_end=round(end, 3),
        node="replay", worker=worker, phases=None, latency_ms=latency,
    )
    row = entry.row.replace(**changes)
    if epochs < len(entry.epochs):
        row = row.at_epoch(kept[-1] if kept else None).replace(
            test_acc=None, val_correct=None, test_correct=None, reason=None)
    return row


class ReplayBackend:
    """Trials read from a table (`coatsearch.search.table`) on a simulated clock."""

    name = "replay"

    def __init__(self, plan: SearchPlan, run_dir: Path) -> None:
        self.plan, self.run_dir = plan, run_dir
        self.table: Table | None = None

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        ref = self.plan.space.table
        if ref is None:
            raise SpaceError("table: the replay backend needs a table (--table PATH or NAME)")
        table = load_table(ref)
        table.check_space(self.plan.space)
        read_ledger(self.run_dir)  # a damaged ledger is refused before anything is written
        self.table = table
        yield

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Reads the table and checks the space against it: every point the space can
        draw must be in the table, before anything is written."""
        return self._session()

    def warm(self, rows: list[TrialRow]) -> None:
        add_warm(self.run_dir, rows)

    def ledger(self) -> list[TrialRow]:
        return read_ledger(self.run_dir)

    def run(self, on_rows: Callable[[list[TrialRow]], None], on_epoch: Any = None) -> None:
        """Replay the space over the table; no epoch progress is sent (a replay takes seconds)."""
        if self.table is None:
            with self.session():
                return self.run(on_rows)
        with quiet_optuna():
            Replay(self.plan, self.table, self.run_dir, on_rows).run()
        return None


class Replay:
    """One replayed search: the event loop of `ReplayBackend.run`."""

    def __init__(self, plan: SearchPlan, table: Table, run_dir: Path, on_rows: Callable[[list[TrialRow]], None]) -> None:
        self.plan, self.table, self.run_dir, self.on_rows = plan, table, run_dir, on_rows
        self.rows = [r for r in read_ledger(run_dir) if r.status != Status.INTERRUPTED]
        # a resumed replay numbers its new trials after the ledger's (the study numbers from 0)
        self.offset = (max((r.trial for r in self.rows), default=-1) + 1) - len(self.rows)
        self.study = optuna.create_study(directions=plan.study_directions, sampler=make_sampler(plan, self.offset))
        self.study.add_trials([trial_of(plan, row, number) for number, row in enumerate(self.rows)])
        self.now = max((r.clock_end or 0.0 for r in self.rows), default=0.0)
        self.stopper = make_scheduler(plan)
        self.courses = Courses(plan)
        self.finished: list[Course] = []
        for row in self.rows:
            self._record_peers(row)
        held = {r.point for r in self.rows}
        self.queue = collections.deque(p for p in plan.grid_points if point_key(p) not in held)
        self.events: list[_Event] = []
        self.order = 0
        self.written = time.monotonic()

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        grid = self.plan.grid is not None
        target = self.plan.target_trials
        finished = sum(r.finished for r in self.rows)
        idle = list(range(self.plan.space.concurrency))
        streak = 0
        while True:
            while idle and finished + len(self.events) < target and (self.queue or not grid):
                if grid:
                    self.study.enqueue_trial(self.queue.popleft())
                trial = self.study.ask()
                params = self.plan.sample(trial)
                entry = self.table.lookup(params)
                # a space's prefilter leaves some of the table's networks out (`coatsearch.search.prefilter`)
                cut = self.plan.kept is not None and point_key(params) not in self.plan.kept
                if cut or entry.row.status == Status.INFEASIBLE:
                    row = replayed_row(entry, trial.number + self.offset, params, Status.INFEASIBLE, 0,
                                       self.now, self.now, None, None).replace(wall_time=0.0)
                    if cut:
                        prefilter = self.plan.space.prefilter
                        row = row.replace(reason=f"prefiltered: not in the best {prefilter.keep:.0%} of the "  # type: ignore[union-attr]
                                                 f"candidates by {prefilter.proxy}")  # type: ignore[union-attr]
                    self._record(row)
                    self.study.tell(trial, state=TrialState.PRUNED)
                    streak += 1
                    if streak >= MAX_INFEASIBLE_STREAK:
                        raise SpaceError(f"{MAX_INFEASIBLE_STREAK} candidates in a row were infeasible; "
                                         "widen the space or the budget")
                    continue
                streak = 0
                flight = _Flight(trial, trial.number + self.offset, params, entry, idle.pop(0), self.now)
                if entry.epochs:
                    self._push(flight)
                else:  # it failed before its first epoch ended: it took no recorded time
                    finished += self._finish(flight, entry.row.status)
                    idle.append(flight.worker)
                    idle.sort()
            if not self.events:
                break
            event = heapq.heappop(self.events)
            flight, self.now = event.flight, event.time
            flight.epochs += 1
            if flight.epochs >= len(flight.entry.epochs):
                finished += self._finish(flight, flight.entry.row.status)
            elif self._judge(flight):
                finished += self._finish(flight, Status.STOPPED)
            else:
                self._push(flight)
                continue
            idle.append(flight.worker)
            idle.sort()
        self.on_rows(list(self.rows))

    def _judge(self, flight: _Flight) -> bool:
        """Whether the scheduler stops the flight after the epoch it just ended."""
        if self.stopper is None:
            return False
        row = flight.entry.row
        course = self.courses.of(flight.number, flight.entry.epochs[:flight.epochs],
                                 {"flops": row.flops, "params": row.params})
        verdict = judge(self.stopper, course, self.finished)
        if verdict.prediction is not None:
            flight.verdict = verdict
        return verdict.stop

    def _push(self, flight: _Flight) -> None:
        """Schedule the end of the flight's next epoch."""
        self.order += 1
        heapq.heappush(self.events, _Event(self.now + flight.entry.seconds[flight.epochs], self.order, flight))

    def _finish(self, flight: _Flight, status: Status) -> int:
        """Record a trial that ended now; 1 when it counts as finished."""
        row = replayed_row(flight.entry, flight.number, flight.params, status, flight.epochs, flight.start,
                           self.now, f"replay:{flight.worker}", self.table.latency_of(flight.entry.row))
        if flight.verdict.prediction is not None:
            row = row.replace(curve_prediction=flight.verdict.prediction, curve_sd=flight.verdict.sd,
                              curve_epoch=flight.verdict.epoch)
        self._record(row)
        self._record_peers(row)
        if status in (Status.COMPLETE, Status.STOPPED):
            values = [row.objective(m) for m in self.plan.metrics]
            self.study.tell(flight.trial, values)
        else:
            self.study.tell(flight.trial, state=TrialState.FAIL)
        return int(row.finished)

    def _record(self, row: TrialRow) -> None:
        append_ledger(self.run_dir, row, sync=False)
        self.rows.append(row)
        if time.monotonic() - self.written > TABLE_EVERY_S:
            self.on_rows(list(self.rows))
            self.written = time.monotonic()

    def _record_peers(self, row: TrialRow) -> None:
        """A finished trial's course: what later trials meet at each rung."""
        if row.finished and row.history:
            self.finished.append(self.courses.of_row(row))
