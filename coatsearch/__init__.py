"""coatsearch: search and scale CoAtNet-family vision networks."""

from coatsearch.spec import NetSpec, SpecError, StageSpec, StemSpec, load_spec
from coatsearch.presets import PRESETS, preset
from coatsearch.nn import CoAtNet, build
from coatsearch.flops import Counts, count, count_analytic, count_params
from coatsearch.budget import BudgetError, BudgetMatch, match_budget

__all__ = [
    "BudgetError", "BudgetMatch", "CoAtNet", "Counts", "NetSpec", "PRESETS", "SpecError",
    "StageSpec", "StemSpec", "build", "count", "count_analytic", "count_params", "load_spec",
    "match_budget", "preset",
]
__version__ = "0.1.0"
