"""coatsearch: search and scale CoAtNet-family vision networks.

The public API, layer by layer:

- spec: `NetSpec`, `StageSpec`, `StemSpec`, `preset`, `load_spec`, `PRESETS`
- network: `build`, `CoAtNet`, `convert` (to another resolution)
- counting: `count`, `count_analytic`, `count_params`, `Counts`
- budgets: `match_budget`, `BudgetMatch`
- training: `load_data`, `DataBundle`, `fit`, `TrainConfig`, `TrialResult`, `EpochMetrics`
- search: `load_space`, `SearchSpace`, `KNOBS`, `compile_space`, `SearchPlan`, `run_study`,
  `TrialRow`, `Status`
- reports: `build_report`, `load_run`
- errors: `CoatsearchError` and its kinds (`SpecError`, `SpaceError`, `BudgetError`,
  `DataError`, `TrainConfigError`, `ReportError`)
"""

from coatsearch.budget import BudgetError, BudgetMatch, match_budget
from coatsearch.data import DataBundle, DataError, load_data
from coatsearch.errors import CoatsearchError
from coatsearch.flops import Counts, count, count_analytic, count_params
from coatsearch.knobs import KNOBS
from coatsearch.nn import CoAtNet, build, convert
from coatsearch.presets import PRESETS, load_spec, preset
from coatsearch.report import ReportError, build_report, load_run
from coatsearch.runner import StudyOutcome, run_study
from coatsearch.search import SearchPlan, TrialRow, compile_space
from coatsearch.space import SearchSpace, SpaceError, load_space
from coatsearch.spec import NetSpec, SpecError, StageSpec, StemSpec
from coatsearch.status import Status
from coatsearch.train import EpochMetrics, TrainConfig, TrainConfigError, TrialResult, fit

__all__ = [
    "KNOBS", "PRESETS", "BudgetError", "BudgetMatch", "CoAtNet", "CoatsearchError", "Counts", "DataBundle",
    "DataError", "EpochMetrics", "NetSpec", "ReportError", "SearchPlan", "SearchSpace", "SpaceError",
    "SpecError", "StageSpec", "Status", "StemSpec", "StudyOutcome", "TrainConfig", "TrainConfigError",
    "TrialResult", "TrialRow", "build", "build_report", "compile_space", "convert", "count", "count_analytic",
    "count_params", "fit", "load_data", "load_run", "load_space", "load_spec", "match_budget", "preset", "run_study",
]
__version__ = "0.1.0"
