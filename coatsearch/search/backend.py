"""The contract every search backend keeps, and the registry that picks one.

A backend runs the trials of one `SearchPlan` in one run directory. It owns a *ledger*,
the durable record of every trial that ended (the Optuna storage; a Ray run's JSON-lines
file), and the results table is always rebuilt from it. It never writes the table itself:
it hands every state of the ledger to ``on_rows`` and the runner writes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from coatsearch.search.plan import SearchPlan
from coatsearch.search.registries import BACKENDS
from coatsearch.search.rows import TrialRow

OnRows = Callable[[list[TrialRow]], None]
#: (trial number, epochs trained so far): 0 when a trial starts, then after each epoch
OnEpoch = Callable[[int, int], None]


class Backend(Protocol):
    name: str

    def session(self) -> AbstractContextManager[None]:
        """Whatever the run needs while it lasts (a Ray cluster joined or started), entered
        before anything is written; a `CoatsearchError` when it cannot be had."""
        ...

    def ledger(self) -> list[TrialRow]:
        """Every row the run holds: finished, infeasible and interrupted trials."""
        ...

    def warm(self, rows: list[TrialRow]) -> None:
        """Add an earlier run's trials (``warm_start``, `coatsearch.warm_start`) to the
        ledger, where the sampler sees them as finished trials, before the first trial;
        nothing when the ledger holds them already."""
        ...

    def run(self, on_rows: OnRows, on_epoch: OnEpoch | None = None) -> None:
        """Run trials until the plan's target holds; ``on_rows`` gets the whole ledger
        whenever a trial ends, ``on_epoch`` the progress of the trials in flight that this
        process sees (a backend may send none). Ctrl-C raises `KeyboardInterrupt` after the ledger holds
        what finished (in-flight trials are left for the next run)."""
        ...


def optuna_backend(plan: SearchPlan, run_dir: Path, address: str | None) -> Backend:
    from coatsearch.search.optuna_backend import OptunaBackend

    return OptunaBackend(plan, run_dir)


def ray_backend(plan: SearchPlan, run_dir: Path, address: str | None) -> Backend:
    from coatsearch.search.ray_backend import RayBackend

    return RayBackend(plan, run_dir, address)


def replay_backend(plan: SearchPlan, run_dir: Path, address: str | None) -> Backend:
    from coatsearch.search.replay import ReplayBackend

    return ReplayBackend(plan, run_dir)


def make_backend(plan: SearchPlan, run_dir: Path, address: str | None = None) -> Backend:
    """The plan's backend (``space.backend``, one of `BACKENDS`) for ``run_dir``."""
    return BACKENDS[plan.space.backend](plan, run_dir, address)  # type: ignore[no-any-return]
