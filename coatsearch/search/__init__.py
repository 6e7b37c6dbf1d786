"""Search: a space compiled into a plan, candidates, trials and the backends that run them.

`compile_space` checks a space once; `SearchPlan.candidate` turns sampled parameters into
a budget-matched network; `run_trial` trains one; a `Backend` (optuna or ray) decides
which parameters to try and where, and keeps the ledger of what ran.

Names are imported on first use, so reading a ledger's rows (`coatsearch.search.rows`,
which the results table needs) does not load the network and training stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coatsearch.search.backend import Backend, make_backend
    from coatsearch.search.plan import Candidate, InfeasibleCandidate, SearchPlan, compile_space
    from coatsearch.search.rows import COLUMNS, TrialRow
    from coatsearch.search.trial import run_trial

_EXPORTS = {
    "Backend": "coatsearch.search.backend",
    "make_backend": "coatsearch.search.backend",
    "Candidate": "coatsearch.search.plan",
    "InfeasibleCandidate": "coatsearch.search.plan",
    "SearchPlan": "coatsearch.search.plan",
    "compile_space": "coatsearch.search.plan",
    "COLUMNS": "coatsearch.search.rows",
    "TrialRow": "coatsearch.search.rows",
    "run_trial": "coatsearch.search.trial",
}

__all__ = ["COLUMNS", "Backend", "Candidate", "InfeasibleCandidate", "SearchPlan", "TrialRow", "compile_space",
           "make_backend", "run_trial"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'coatsearch.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
