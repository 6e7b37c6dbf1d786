"""coatsearch: search and scale CoAtNet-family vision networks.

The public API, layer by layer:

- spec: `NetSpec`, `StageSpec`, `StemSpec`, `preset`, `load_spec`, `PRESETS`
- network: `build`, `CoAtNet`, `convert` (to another resolution)
- counting: `count`, `count_analytic`, `count_params`, `Counts`
- budgets: `match_budget`, `BudgetMatch`; scaling: `scale`, `family`
- training: `load_data`, `DataBundle`, `fit`, `TrainConfig`, `TrialResult`, `EpochMetrics`
- search: `load_space`, `SearchSpace`, `KNOBS`, `compile_space`, `SearchPlan`, `run_study`,
  `TrialRow`, `Status`
- reports: `build_report`, `load_run`
- errors: `CoatsearchError` and its kinds (`SpecError`, `SpaceError`, `BudgetError`,
  `DataError`, `TrainConfigError`, `ReportError`)
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from coatsearch.host import sleep_while_waiting, warn_torch_loaded_first

# OpenMP reads its wait policy once, when torch loads: set it now if torch is not loaded
# yet (the command line does the same), else say once that it is too late
# (`coatsearch.host.sleep_while_waiting`: 10-40x slower steps on a shared machine).
if "torch" in sys.modules:
    warn_torch_loaded_first()
else:
    sleep_while_waiting()

#: Public name -> the module that defines it (imported on first use: `import coatsearch.nn`
#: or a benchmark that needs only the network does not load the search and report stack).
_EXPORTS = {
    "BudgetError": "coatsearch.budget",
    "BudgetMatch": "coatsearch.budget",
    "CoAtNet": "coatsearch.nn",
    "CoatsearchError": "coatsearch.errors",
    "Counts": "coatsearch.flops",
    "DataBundle": "coatsearch.data",
    "DataError": "coatsearch.data",
    "EpochMetrics": "coatsearch.train",
    "KNOBS": "coatsearch.knobs",
    "NetSpec": "coatsearch.spec",
    "PRESETS": "coatsearch.presets",
    "ReportError": "coatsearch.report",
    "SearchPlan": "coatsearch.search",
    "SearchSpace": "coatsearch.space",
    "SpaceError": "coatsearch.space",
    "SpecError": "coatsearch.spec",
    "StageSpec": "coatsearch.spec",
    "Status": "coatsearch.status",
    "StemSpec": "coatsearch.spec",
    "StudyOutcome": "coatsearch.runner",
    "TrainConfig": "coatsearch.train",
    "TrainConfigError": "coatsearch.train",
    "TrialResult": "coatsearch.train",
    "TrialRow": "coatsearch.search",
    "build": "coatsearch.nn",
    "build_report": "coatsearch.report",
    "compile_space": "coatsearch.search",
    "convert": "coatsearch.nn",
    "count": "coatsearch.flops",
    "count_analytic": "coatsearch.flops",
    "count_params": "coatsearch.flops",
    "fit": "coatsearch.train",
    "load_data": "coatsearch.data",
    "load_run": "coatsearch.report",
    "load_space": "coatsearch.space",
    "load_spec": "coatsearch.presets",
    "match_budget": "coatsearch.budget",
    "preset": "coatsearch.presets",
    "run_study": "coatsearch.runner",
    "scale": "coatsearch.scaling",
    "family": "coatsearch.scaling",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'coatsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
