"""What a results table says: computed once, drawn by the report, the studies and the
command line. Needs no torch: a table can be analysed where no network was ever built.

- design: `Design`, the factors, their order, and whether a grid crossed them
- effects: each factor's values with 95% intervals; importances
- comparisons: the one table of tests between a factor's values and of an ordered
  factor's trend (``comparisons.csv``)
- summaries: per configuration, means and intervals over seeds (``summary.csv``)
- fronts: non-dominated sets, hypervolume, a table's Pareto front
- fits: a scaling ladder's log-linear slope per group, slope tests, where two lines cross
- equal_loss: configurations compared at equal training loss (``equal_loss.csv``)
- stats: seeds' and images' errors as variance parts; Welch, paired, McNemar and trend
  tests; detectable differences; Holm's correction
- overview: `analyse` (all of the above for one table) and `write_tables`
"""

from coatsearch.analysis.design import Design
from coatsearch.analysis.overview import Analysis, analyse, write_tables

__all__ = ["Analysis", "Design", "analyse", "write_tables"]
