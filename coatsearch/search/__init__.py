"""Search: a space compiled into a plan, candidates, trials and the backends that run them.

`compile_space` checks a space once; `SearchPlan.candidate` turns sampled parameters into
a budget-matched network; `run_trial` trains one; a `Backend` (optuna or ray) decides
which parameters to try and where, and keeps the ledger of what ran.
"""

from coatsearch.search.backend import Backend, make_backend
from coatsearch.search.plan import Candidate, InfeasibleCandidate, SearchPlan, compile_space
from coatsearch.search.rows import COLUMNS, TrialRow
from coatsearch.search.trial import run_trial

__all__ = [
    "COLUMNS", "Backend", "Candidate", "InfeasibleCandidate", "SearchPlan", "TrialRow", "compile_space",
    "make_backend", "run_trial",
]
