"""coatsearch: search and scale CoAtNet-family vision networks."""

from coatsearch.spec import NetSpec, SpecError, StageSpec, StemSpec, load_spec
from coatsearch.presets import PRESETS, preset
from coatsearch.nn import CoAtNet, build
from coatsearch.flops import Counts, count, count_analytic, count_params
from coatsearch.budget import BudgetError, BudgetMatch, match_budget
from coatsearch.data import DataBundle, DataError, load_data
from coatsearch.train import EpochMetrics, TrainConfig, TrainConfigError, TrialResult, fit

__all__ = [
    "BudgetError", "BudgetMatch", "CoAtNet", "Counts", "DataBundle", "DataError",
    "EpochMetrics", "NetSpec", "PRESETS", "SpecError", "StageSpec", "StemSpec", "TrainConfig",
    "TrainConfigError", "TrialResult", "build", "count", "count_analytic", "count_params",
    "fit", "load_data", "load_spec", "match_budget", "preset",
]
__version__ = "0.1.0"
