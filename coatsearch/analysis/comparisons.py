"""Comparisons of a factor's values: the one table behind ``comparisons.csv``, the report's
comparisons and a study README's verdicts.

For each factor of the `Design`, pairs of its values are tested on each metric in
`COMPARED`: neighbours in the space's order for an ordered (numeric) factor, every pair
for a categorical one. In a crossed design (a grid) the pairs are taken within each
combination of the other factors; otherwise over all trials. Each test is Welch's over
the seeds, accuracies with the evaluation set's binomial error added (`stats.welch`), and
Holm's correction runs across every comparison of the table.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from coatsearch.analysis.design import Design
from coatsearch.analysis.stats import holm, welch
from coatsearch.results import ranked
from coatsearch.units import value_label

#: Metrics compared, and the column holding the size of the set each was measured on
#: (None: the seeds' spread only; a gap is a difference of two measured accuracies).
COMPARED = {"val_acc": "val_images", "test_acc": "test_images", "gap": None}
#: Holm-corrected p below which a comparison's verdict names a direction.
ALPHA = 0.05

COLUMNS = ["factor", "within", "metric", "first", "second", "n_first", "n_second", "difference",
           "ci95_low", "ci95_high", "t", "df", "p", "p_holm", "verdict"]


def comparisons(table: pd.DataFrame, design: Design) -> pd.DataFrame:
    """One row per comparison (columns `COLUMNS`), ranked trials only; empty when no pair
    of values has two complete trials each."""
    rows = ranked(table)
    found: list[dict[str, Any] | None] = []
    for factor in design.factors if not rows.empty else ():
        strata = [c for c in design.factors if c != factor] if design.crossed else []
        values = design.order(rows, factor)
        pairs = list(zip(values, values[1:])) if design.ordered(rows, factor) else list(itertools.combinations(values, 2))
        for key, part in (rows.groupby(strata, sort=False, dropna=False) if strata else [((), rows)]):
            key = key if isinstance(key, tuple) else (key,)
            within = ", ".join(f"{c.removeprefix('param.')} {value_label(v)}" for c, v in zip(strata, key)) or "all trials"
            for metric, size in COMPARED.items():
                if metric in part and part[metric].notna().any():
                    found += [_test(part, factor, within, metric, size, a, b) for a, b in pairs]
    frame = pd.DataFrame([f for f in found if f is not None], columns=COLUMNS[:-2])
    frame["p_holm"] = holm(frame["p"].tolist()) if len(frame) else []
    frame["verdict"] = [verdict(r) for _, r in frame.iterrows()]
    return frame


def _test(part: pd.DataFrame, factor: str, within: str, metric: str, size: str | None,
          first: Any, second: Any) -> dict[str, Any] | None:
    a_rows, b_rows = part[part[factor] == first], part[part[factor] == second]
    a, b = a_rows[metric].dropna(), b_rows[metric].dropna()
    if len(a) < 2 or len(b) < 2:
        return None
    n_eval = None
    if size is not None and size in part and a_rows[size].notna().all() and b_rows[size].notna().all():
        n_eval = (int(a_rows[size].iloc[0]), int(b_rows[size].iloc[0]))
    test = welch(a, b, n_eval)
    return {"factor": factor.removeprefix("param."), "within": within, "metric": metric,
            "first": value_label(first), "second": value_label(second), "n_first": len(a), "n_second": len(b),
            "difference": test.difference, "ci95_low": test.ci95[0], "ci95_high": test.ci95[1],
            "t": test.t, "df": test.df, "p": test.p}


def verdict(row: pd.Series) -> str:
    """The direction a comparison supports at Holm's p < `ALPHA`, else none."""
    if row["p_holm"] >= ALPHA:
        return "no detectable difference"
    return f"{row['first']} > {row['second']}" if row["difference"] > 0 else f"{row['first']} < {row['second']}"
