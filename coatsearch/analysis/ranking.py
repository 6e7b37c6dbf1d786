"""Ranking a results table's trials: which one is best.

`best_trial` reads a table of rankable trials (`coatsearch.results.ranked`) and returns
the row that `coatsearch best` turns into a spec and that a run's last line names.
"""

from __future__ import annotations

import pandas as pd


def best_trial(ranked: pd.DataFrame) -> pd.Series | None:
    """The trial with the highest validation accuracy (ties: the earlier trial), or None."""
    ranked = ranked.dropna(subset=["val_acc", "spec"])
    if ranked.empty:
        return None
    return ranked.sort_values(["val_acc", "trial"], ascending=[False, True]).iloc[0]
