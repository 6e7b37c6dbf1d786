"""A latency model of this device: the family's building blocks timed once
(`calibrate`, into a `Profile`), a network's latency predicted as the sum of its blocks
(`predict`). See docs/latency.md."""

from coatsearch.latency.model import calibrate, predict, time_calls
from coatsearch.latency.profile import LatencyError, Profile, conditions
from coatsearch.latency.randspec import random_specs

__all__ = ["LatencyError", "Profile", "calibrate", "conditions", "predict", "random_specs", "time_calls"]
