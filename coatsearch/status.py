"""How a trial ended: one vocabulary for the trainer, the backends, tables and reports."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A trial's status. Members compare equal to their strings (``"complete"``), which is
    how tables store them."""

    COMPLETE = "complete"  # trained every epoch
    STOPPED = "stopped"  # stopped early on purpose (ASHA, a callback)
    DIVERGED = "diverged"  # a non-finite loss
    FAILED = "failed"  # raised (out of memory, a dead worker, a bad file)
    INFEASIBLE = "infeasible"  # no valid network within the budget: never trained
    INTERRUPTED = "interrupted"  # in flight when the run was stopped: runs again on resume

    @property
    def finished(self) -> bool:
        """Ran to its end: counts towards the study's trials and is never run again."""
        return self in FINISHED

    @property
    def ranked(self) -> bool:
        """May stand on a Pareto front (with full fidelity)."""
        return self is Status.COMPLETE


FINISHED = frozenset({Status.COMPLETE, Status.STOPPED, Status.DIVERGED, Status.FAILED})
