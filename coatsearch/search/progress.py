"""What a run shows while it runs: a bar of finished trials with an ETA from the start,
one line per trial that ends (network -> accuracy, time), and the epochs of each trial
in flight; the same lines go to ``run.log``.

The ETA starts from a dry-run estimate of the trials still to run (`run_estimate`: one
timed training step of each of their first networks) and is refined as trials end: the
trials' measured wall times over their estimates scale the rest, and the epochs already
trained by the trials in flight are taken off. Between updates it counts down.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from coatsearch.search.plan import SearchPlan
from coatsearch.search.rows import TrialRow, point_key
from coatsearch.status import Status

#: Networks timed for the ETA at most; the other candidates take their mean.
ETA_NETWORKS = 8


@dataclass(frozen=True)
class TrialEstimates:
    """Estimated seconds of the trials a run still has to train: by grid point, and a mean
    for draws not known in advance."""

    by_point: dict[str, float] = field(default_factory=dict)
    mean_s: float | None = None
    basis: str = ""


def run_estimate(plan: SearchPlan, rows: Sequence[TrialRow]) -> TrialEstimates:
    """The dry run's estimate of the candidates a run has not trained yet (the grid's
    points no row holds, or the sampler's first draws), each timed for one training step
    (`ETA_NETWORKS` networks at most); empty when nothing can be timed."""
    from coatsearch.search.estimate import estimate_candidates
    from coatsearch.search.preview import preview

    held = {row.point for row in rows if row.status != Status.INTERRUPTED}
    candidates = [c for c in preview(plan) if point_key(c.sampled) not in held]
    todo = [c for c in candidates if c.status == "ok"][:ETA_NETWORKS]
    timing = estimate_candidates(plan, todo, steps=1) if todo else None
    if timing is None or not timing.per_trial_s:
        return TrialEstimates()
    by_point = {point_key(c.sampled): 0.0 for c in candidates if c.status != "ok"}  # never trained
    by_point.update({point_key(c.sampled): s for c, s in zip(todo, timing.per_trial_s)})
    return TrialEstimates(by_point, statistics.fmean(timing.per_trial_s), timing.basis)


def trial_line(row: TrialRow, epochs: int) -> str:
    """One ended trial as a line: its parameters, network and result, and its wall time."""
    params = " ".join(f"{k}={v}" for k, v in row.sampled.items())
    network = " ".join(str(part) for part in (row.layout, row.blocks, row.channels) if part)
    if row.flops:
        network += f" {row.flops / 1e6:.1f}M FLOPs"
    if row.params:
        network += f" {row.params / 1e6:.2f}M params"
    head = f"trial {row.trial} [{params}] {network}".rstrip()
    took = f" in {_duration(row.wall_time)}" if row.wall_time else ""
    if row.status == Status.INFEASIBLE:
        return f"{head}: infeasible ({row.reason})"
    if row.status in (Status.COMPLETE, Status.STOPPED) and row.val_acc is not None:
        stopped = f" (stopped after epoch {row.fidelity}/{epochs})" if row.status == Status.STOPPED else ""
        return f"{head} -> val acc {row.val_acc:.2%}{stopped}{took}"
    return f"{head}: {row.status}{f' ({row.reason})' if row.reason else ''}{took}"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class EtaColumn(ProgressColumn):
    """The run's ETA: the last estimate, counting down since it was made ("eta ?" before any)."""

    def render(self, task: Task) -> Text:
        eta, made = task.fields.get("eta_s"), task.fields.get("eta_at")
        if eta is None or made is None or task.finished:
            return Text("eta -:--" if task.fields.get("run") and not task.finished else "", style="progress.remaining")
        left = max(0.0, eta - (time.monotonic() - made))
        minutes, seconds = divmod(round(left), 60)
        return Text(f"eta ~{minutes}:{seconds:02d}", style="progress.remaining")


class RunProgress:
    """The run's display (enter it around the backend's run): `rows` is the backend's
    ``on_rows`` display part, `epoch` its ``on_epoch``."""

    def __init__(self, plan: SearchPlan, console: Console, rows: Sequence[TrialRow], estimates: TrialEstimates,
                 log: logging.Logger) -> None:
        self.plan, self.estimates, self.log = plan, estimates, log
        self.target = plan.target_trials
        self.seen = {row.trial for row in rows if row.status != Status.INTERRUPTED}
        self.rows: list[TrialRow] = list(rows)
        self.in_flight: dict[int, tuple[TaskID, int]] = {}
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"), TimeElapsedColumn(), EtaColumn(), console=console, transient=False,
        )
        finished = sum(row.finished for row in rows)
        self.task = self.progress.add_task(f"{plan.study} trials", total=self.target, completed=min(finished, self.target),
                                           best=_best(rows), eta_s=None, eta_at=None, run=True)
        self._update_eta()

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()

    def print(self, line: str, style: str | None = None) -> None:
        """A line above the bars, and in the run's log."""
        self.progress.console.print(escape(line), style=style, highlight=False, soft_wrap=True)
        self.log.info("%s", line)

    def on_rows(self, rows: list[TrialRow]) -> None:
        """The ledger as it stands: a line for each trial that ended since, the bar and ETA updated."""
        self.rows = rows
        for row in sorted(rows, key=lambda r: r.trial):
            if row.trial in self.seen or row.status == Status.INTERRUPTED:
                continue
            self.seen.add(row.trial)
            self._drop_trial(row.trial)
            self.print(trial_line(row, self.plan.epochs), style="dim" if row.status == Status.INFEASIBLE else None)
        finished = sum(row.finished for row in rows)
        self.progress.update(self.task, completed=min(finished, self.target), best=_best(rows))
        self._update_eta()

    def on_epoch(self, trial: int, epoch: int) -> None:
        """Trial ``trial`` started (``epoch`` 0) or trained its ``epoch``-th epoch."""
        if trial in self.seen:
            return
        if trial not in self.in_flight:
            task = self.progress.add_task(f"  trial {trial} epochs", total=self.plan.epochs, best="", eta_s=None,
                                          eta_at=None)
            self.in_flight[trial] = (task, 0)
        task, _ = self.in_flight[trial]
        self.in_flight[trial] = (task, epoch)
        self.progress.update(task, completed=epoch)
        if epoch:
            self._update_eta()

    def _drop_trial(self, trial: int) -> None:
        if trial in self.in_flight:
            task, _ = self.in_flight.pop(trial)
            self.progress.remove_task(task)

    def _update_eta(self) -> None:
        eta = self.eta_s()
        self.progress.update(self.task, eta_s=eta, eta_at=time.monotonic())

    def eta_s(self) -> float | None:
        """Seconds left: the estimate of every trial still to train, scaled by how the
        trials that ended compared with their estimates, less the epochs in flight."""
        ended = [r for r in self.rows if r.finished and r.wall_time and r.status != Status.INFEASIBLE]
        known = [(r.wall_time or 0.0, self._estimate(r.point)) for r in ended]
        pairs = [(w, e) for w, e in known if e]
        if pairs:
            scale = sum(w for w, _ in pairs) / sum(e for _, e in pairs)
            per_trial = [e * scale for e in self._remaining()]
            mean = (self.estimates.mean_s or 0.0) * scale
        elif ended:  # no estimate: the trials' own mean
            mean = statistics.fmean(w for w, _ in known)
            per_trial = [mean] * self._left()
        elif self.estimates.mean_s is not None:
            mean = self.estimates.mean_s
            per_trial = list(self._remaining())
        else:
            return None
        done = sum(epoch / self.plan.epochs * mean for _, epoch in self.in_flight.values())
        workers = max(1, min(self.plan.space.concurrency, len(per_trial)))
        return max(0.0, sum(per_trial) - done) / workers

    def _left(self) -> int:
        return max(0, self.target - sum(r.finished for r in self.rows))

    def _estimate(self, point: str) -> float | None:
        return self.estimates.by_point.get(point, self.estimates.mean_s)

    def _remaining(self) -> list[float]:
        """Estimated seconds of each trial still to train (grid points in order, else draws)."""
        left = self._left()
        if self.plan.grid is not None:
            ended = {r.point for r in self.rows if r.status != Status.INTERRUPTED}
            points = [point_key(p) for p in self.plan.grid_points[: self.plan.grid_walk]]
            known = [self._estimate(p) for p in points if p not in ended]
            return [e for e in known if e is not None][:left]
        return [self.estimates.mean_s or 0.0] * left


def _best(rows: Sequence[TrialRow]) -> str:
    scores = [row.val_acc for row in rows if row.status == Status.COMPLETE and row.val_acc is not None]
    return f"best val_acc {max(scores):.4f}" if scores else ""


def estimate_line(estimates: TrialEstimates, trials: int, concurrency: int) -> str | None:
    """The run's first estimate as a line, or None without one."""
    if estimates.mean_s is None:
        return None
    timed = [s for s in estimates.by_point.values() if s]
    total = sum(timed) + estimates.mean_s * max(0, trials - len(timed))
    return (f"estimated: {trials} trial(s), about {_duration(total / max(1, min(concurrency, trials)))} "
            f"({estimates.basis})")

