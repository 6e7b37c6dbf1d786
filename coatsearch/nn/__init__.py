"""Network modules of the family; `build` turns a `NetSpec` into one.

`set_fused_training` (or ``COATSEARCH_FUSED_TRAINING=1``) opts training on a CPU into the
fused MBConv pieces of `coatsearch.nn.fused`; off by default.
"""

from coatsearch.nn.convert import convert
from coatsearch.nn.fused import fused_training, fused_training_enabled, set_fused_training
from coatsearch.nn.model import CoAtNet, build

__all__ = ["CoAtNet", "build", "convert", "fused_training", "fused_training_enabled", "set_fused_training"]
