"""Comparisons of a factor's values: the one table behind ``comparisons.csv``, the report's
comparisons and a study README's verdicts.

For each factor of the `Design`, pairs of its values are tested on each metric in
`COMPARED`: neighbours in the space's order for an ordered (numeric) factor, every pair
for a categorical one; an ordered factor with three or more values also gets a trend
test over all of its trials (`stats.trend`). In a crossed design (a grid) the tests run
within each combination of the other factors; otherwise over all trials.

Which test (the ``test`` column, `coatsearch.analysis.stats`):

- accuracies whose trials all stored per-image correctness on one set: `stats.paired`
  (at least two trials each) or `stats.mcnemar` (one each);
- accuracies without them (tables written before trials stored them): `stats.welch`
  with each configuration's binomial bound;
- the gap (a difference of two accuracies, the training probe's images not stored):
  `stats.welch` over the seeds.

Holm's correction runs across every row of the table. A row whose Holm p is below
`ALPHA` names a direction; any other is "not resolved", with the smallest true
difference it would have resolved (``detectable``: 80% power at ``ALPHA / m``, the
strictest step of Holm's correction over the table's ``m`` rows, so a true difference of
that size is resolved whatever the other rows hold).
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from coatsearch import perimage
from coatsearch.analysis import stats
from coatsearch.analysis.design import Design
from coatsearch.results import ranked
from coatsearch.units import value_label

#: Metrics compared: the column holding the size of the set each was measured on, and the
#: one holding each trial's per-image correctness on it (None: not measured on a set).
COMPARED: dict[str, tuple[str | None, str | None]] = {
    "val_acc": ("val_images", "val_correct"), "test_acc": ("test_images", "test_correct"), "gap": (None, None),
}
#: Holm-corrected p below which a comparison's verdict names a direction.
ALPHA = 0.05

#: ``kind``: ``pair`` (first vs second) or ``trend`` (first .. second, all values; the
#: difference is the slope per step of the order). ``trials``: the trials the test used.
COLUMNS = ["factor", "within", "metric", "kind", "first", "second", "n_first", "n_second", "trials", "test",
           "difference", "se", "ci95_low", "ci95_high", "t", "df", "p", "p_holm", "detectable", "verdict"]


def comparisons(table: pd.DataFrame, design: Design) -> pd.DataFrame:
    """One row per comparison (columns `COLUMNS`), ranked trials only; empty when no pair
    of values has the trials a test needs."""
    rows = ranked(table)
    found: list[dict[str, Any] | None] = []
    for factor in design.factors if not rows.empty else ():
        strata = [c for c in design.factors if c != factor] if design.crossed else []
        values = design.order(rows, factor)
        ordered = design.ordered(rows, factor)
        pairs = list(zip(values, values[1:])) if ordered else list(itertools.combinations(values, 2))
        for key, part in (rows.groupby(strata, sort=False, dropna=False) if strata else [((), rows)]):
            key = key if isinstance(key, tuple) else (key,)
            within = ", ".join(f"{c.removeprefix('param.')} {value_label(v)}" for c, v in zip(strata, key)) or "all trials"
            for metric in COMPARED:
                if metric in part and part[metric].notna().any():
                    found += [_pair(part, factor, within, metric, a, b) for a, b in pairs]
                    if ordered and len(values) >= 3:
                        found.append(_trend(part, factor, within, metric, values))
    frame = pd.DataFrame([f for f in found if f is not None], columns=COLUMNS[:-3])
    frame["p_holm"] = stats.holm(frame["p"].tolist()) if len(frame) else []
    level = ALPHA / max(len(frame), 1)
    frame["detectable"] = [stats.detectable(se, df, level) for se, df in zip(frame["se"], frame["df"])]
    frame["verdict"] = [verdict(r) for _, r in frame.iterrows()]
    return frame


def _per_image(rows: pd.DataFrame, metric: str) -> Any:
    """Trials x images of ``rows``' correctness on the set ``metric`` was measured on, or
    None unless every row has it, on one set."""
    column = COMPARED[metric][1]
    return perimage.matrix(rows[column]) if column is not None and column in rows else None


def _n_eval(rows: pd.DataFrame, metric: str) -> int | None:
    size = COMPARED[metric][0]
    if size is None or size not in rows or not rows[size].notna().all() or rows.empty:
        return None
    return int(rows[size].iloc[0])


def _pair(part: pd.DataFrame, factor: str, within: str, metric: str, first: Any, second: Any) -> dict[str, Any] | None:
    a_rows = part[(part[factor] == first) & part[metric].notna()]
    b_rows = part[(part[factor] == second) & part[metric].notna()]
    a, b = a_rows[metric].to_numpy(float), b_rows[metric].to_numpy(float)
    both = _per_image(pd.concat([a_rows, b_rows]), metric) if len(a) and len(b) else None
    if both is not None and len(a) == 1 and len(b) == 1:
        test = stats.mcnemar(both[0] > 0.5, both[1] > 0.5)
    elif len(a) < 2 or len(b) < 2:
        return None
    elif both is not None:
        test = stats.paired(both[: len(a)], both[len(a):])
    else:
        n_a, n_b = _n_eval(a_rows, metric), _n_eval(b_rows, metric)
        test = stats.welch(a, b, (n_a, n_b) if n_a and n_b else None)
    return _row(factor, within, metric, "pair", first, second, len(a), len(b), test)


def _trend(part: pd.DataFrame, factor: str, within: str, metric: str, values: list[Any]) -> dict[str, Any] | None:
    rows = part[part[metric].notna()]
    position = {value_label(v): i for i, v in enumerate(values)}
    places = [position[value_label(v)] for v in rows[factor]]
    try:
        test = stats.trend(places, rows[metric].to_numpy(float), _per_image(rows, metric), _n_eval(rows, metric))
    except ValueError:  # fewer than three values or four trials here
        return None
    n_first = int((rows[factor] == values[0]).sum())
    n_second = int((rows[factor] == values[-1]).sum())
    return _row(factor, within, metric, "trend", values[0], values[-1], n_first, n_second, test, len(rows))


def _row(factor: str, within: str, metric: str, kind: str, first: Any, second: Any, n_first: int, n_second: int,
         test: stats.Test, trials: int | None = None) -> dict[str, Any]:
    return {"factor": factor.removeprefix("param."), "within": within, "metric": metric, "kind": kind,
            "first": value_label(first), "second": value_label(second), "n_first": n_first, "n_second": n_second,
            "trials": trials if trials is not None else n_first + n_second, "test": test.test,
            "difference": test.difference, "se": test.se, "ci95_low": test.ci95[0], "ci95_high": test.ci95[1],
            "t": test.t, "df": test.df, "p": test.p}


def verdict(row: pd.Series) -> str:
    """The direction a comparison supports at Holm's p < `ALPHA`; else "not resolved" and
    the difference (a trend: per step) that would have been, in points."""
    trend = row.get("kind") == "trend"
    if row["p_holm"] >= ALPHA:
        per = " per step" if trend else ""
        return f"not resolved (detectable: {row['detectable'] * 100:.1f} pp{per})"
    if trend:
        return f"{'rises' if row['difference'] > 0 else 'falls'} from {row['first']} to {row['second']}"
    return f"{row['first']} > {row['second']}" if row["difference"] > 0 else f"{row['first']} < {row['second']}"
