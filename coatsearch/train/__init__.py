"""One trial's training: `fit(spec, TrainConfig, DataBundle)` -> `TrialResult`."""

from coatsearch.train.config import TrainConfig, TrainConfigError
from coatsearch.train.loop import BatchHook, EpochCallback, adapt_spec, evaluate, fit
from coatsearch.train.metrics import EpochMetrics, TrialResult

__all__ = [
    "BatchHook", "EpochCallback", "EpochMetrics", "TrainConfig", "TrainConfigError",
    "TrialResult", "adapt_spec", "evaluate", "fit",
]
