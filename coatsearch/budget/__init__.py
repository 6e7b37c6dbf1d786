"""Scale a spec to a FLOP or parameter budget.

Why: the paper's layout comparisons only mean something because every candidate has
"similar parameter size and computational cost". `match_budget` makes that a call: it
scales a spec's widths (one factor for every stage and the stem) or the block counts of its
middle stages, preserving the layout and the ratios between stages, until the analytic
count (`coatsearch.flops.count_analytic`, exact and sub-millisecond) meets the target.

Widths and blocks are integers, so a target is met only as closely as they allow: channels
move in multiples of 8 (and of ``head_dim`` in ``T`` stages), blocks one at a time. The
cost is monotone in the scale factor, so a bisection finds the two specs on either side of
the target and the closer one wins. When neither is within tolerance, width matching also
lets each width sit one multiple off its nearest (narrow search specs need it: at 16-32
channels one multiple is 25-50% of a width) and keeps the fitting spec closest to the
exact ratios; ``by="both"`` also moves the depth, by as few blocks as it takes. A spec that
still misses is returned with a message that says so, or `BudgetError` is raised with
``strict=True``.

FLOPs and parameters together (the paper's "similar parameter size and computational
cost") leave the depth almost free, since both grow about as depth x width squared: of
the shapes that meet both, the one nearest the spec's own depth is kept.
"""

from coatsearch.budget.match import match_budget
from coatsearch.budget.result import SANITY_BOUND, BudgetError, BudgetMatch, Metric, ScaleBy, parse_count
from coatsearch.budget.scaler import MAX_SCALE

__all__ = ["MAX_SCALE", "SANITY_BOUND", "BudgetError", "BudgetMatch", "Metric", "ScaleBy", "match_budget", "parse_count"]
