"""Comparisons of a factor's values: the one table behind ``comparisons.csv``, the report's
comparisons and a study README's verdicts.

For each factor of the `Design`, pairs of its values are tested on each metric in
`COMPARED`: neighbours in the space's order for an ordered (numeric) factor, every pair
for a categorical one; an ordered factor with three or more values also gets a trend
test over all of its trials (`stats.trend`) and a curvature test (`stats.curvature`: is
there a sweet spot inside the order?). In a crossed design (a grid) the tests run
within each combination of the other factors; otherwise over all trials. Two values that
build the same networks (the same specs, for a factor that shapes the network) are not
compared: a test of a configuration against itself only dilutes its family.

Which test (the ``test`` column, `coatsearch.analysis.stats`):

- accuracies whose trials all stored per-image correctness on one set: `stats.paired`
  (at least two trials each) or `stats.mcnemar` (one each);
- accuracies without them (tables written before trials stored them): `stats.welch`
  with each configuration's binomial bound;
- the gap (a difference of two accuracies, the training probe's images not stored):
  `stats.welch` over the seeds.

One question, one family: each factor is a question, its endpoint per `ROLES` (the
validation accuracy is primary; the test accuracy confirms it; the gap describes), and
Holm's correction runs within each (factor, metric) family only, so adding an endpoint
or a data size never weakens another question's verdicts. A row whose Holm p is below
`ALPHA` names a direction; any other is "not resolved", with the smallest true
difference it would have resolved (``detectable``: 80% power at ``ALPHA / m``, the
strictest step of Holm's correction over its family's ``m`` rows, so a true difference of
that size is resolved whatever the other rows hold). Beside Holm's verdicts stand
simultaneous intervals (``ci_simultaneous_*``, `stats.simultaneous_ci`), which hold for
the whole family at once; the plain 95% interval holds for its row alone. A row whose
95% interval is wider than any difference the metric can take says so
("too few trials") and gives no interval.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
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
#: Each metric's part in a question: its Holm family is (factor, metric) either way.
ROLES = {"val_acc": "primary", "test_acc": "confirmation", "gap": "descriptive"}
#: The widest a difference of each metric can be (accuracies in [0, 1]; the gap in [-1, 1]).
RANGE = {"val_acc": 1.0, "test_acc": 1.0, "gap": 2.0}
#: Parameters that set training or data rather than the network: equal specs are expected.
NOT_NETWORK = ("param.train.", "param.data.", "param.seed")

#: ``kind``: ``pair`` (first vs second), ``trend`` (first .. second, all values; the
#: difference is the slope per step of the order) or ``curvature`` (the quadratic term per
#: step squared: negative for a peak inside). ``trials``: the trials the test used.
#: ``family``: the rows Holm's correction runs over (``factor: metric``).
COLUMNS = ["family", "role", "factor", "within", "metric", "kind", "first", "second", "n_first", "n_second",
           "trials", "test", "difference", "se", "ci95_low", "ci95_high", "t", "df", "p", "p_holm",
           "ci_simultaneous_low", "ci_simultaneous_high", "detectable", "verdict"]
#: Columns the tests fill; the rest are computed over each family.
_TESTED = [c for c in COLUMNS if c not in ("p_holm", "ci_simultaneous_low", "ci_simultaneous_high", "detectable",
                                           "verdict")]


def comparisons(table: pd.DataFrame, design: Design) -> pd.DataFrame:
    """One row per comparison (columns `COLUMNS`), ranked trials only; empty when no pair
    of values has the trials a test needs."""
    rows = ranked(table)
    found: list[dict[str, Any] | None] = []
    for factor in design.factors if not rows.empty else ():
        values = design.order(rows, factor)
        ordered = design.ordered(rows, factor)
        pairs = list(zip(values, values[1:])) if ordered else list(itertools.combinations(values, 2))
        for within, part in strata(rows, design, factor):
            for metric in COMPARED:
                if metric in part and part[metric].notna().any():
                    found += [_pair(part, factor, within, metric, a, b) for a, b in pairs
                              if not same_networks(part, factor, a, b)]
                    if ordered and len(values) >= 3:
                        found.append(_ordered(part, factor, within, metric, values, stats.trend, "trend"))
                        found.append(_ordered(part, factor, within, metric, values, stats.curvature, "curvature"))
    frame = pd.DataFrame([f for f in found if f is not None], columns=_TESTED)
    parts = [corrected_family(family) for _, family in frame.groupby("family", sort=False)] if len(frame) else []
    return pd.concat(parts)[COLUMNS].sort_index() if parts else pd.DataFrame(columns=COLUMNS)


def strata(rows: pd.DataFrame, design: Design, factor: str) -> Iterator[tuple[str, pd.DataFrame]]:
    """``(within, part)`` for each combination of the other factors of a crossed design
    (``within`` names it, as the tables print it), or all trials at once otherwise."""
    others = [c for c in design.factors if c != factor] if design.crossed else []
    if not others:
        yield "all trials", rows
        return
    for key, part in rows.groupby(others, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        yield ", ".join(f"{c.removeprefix('param.')} {value_label(v)}" for c, v in zip(others, key)), part


def corrected_family(family: pd.DataFrame) -> pd.DataFrame:
    """One family's rows with Holm's p, simultaneous intervals, detectable differences and
    verdicts."""
    family = family.copy()
    size = len(family)
    family["p_holm"] = stats.holm(family["p"].tolist())
    together = [stats.simultaneous_ci(_as_test(r), size, ALPHA) for _, r in family.iterrows()]
    family["ci_simultaneous_low"] = [low for low, _ in together]
    family["ci_simultaneous_high"] = [high for _, high in together]
    family["detectable"] = [stats.detectable(se, df, ALPHA / size) for se, df in zip(family["se"], family["df"])]
    impossible = family["ci95_low"].isna()
    family.loc[impossible, ["ci_simultaneous_low", "ci_simultaneous_high"]] = math.nan
    family["verdict"] = [verdict(r) for _, r in family.iterrows()]
    return family


def _as_test(row: pd.Series) -> stats.Test:
    return stats.Test(row["test"], row["difference"], row["se"], row["t"], row["df"], row["p"],
                      (row["ci95_low"], row["ci95_high"]))


def same_networks(part: pd.DataFrame, factor: str, first: Any, second: Any) -> bool:
    """Whether two values of a factor that shapes the network build exactly the same
    networks here (the same set of specs): comparing them tests a configuration against
    itself (e.g. two scaling rules at x1)."""
    if factor.startswith(NOT_NETWORK) or "spec" not in part:
        return False
    specs = [{_spec_key(s) for s in part.loc[part[factor] == value, "spec"]} for value in (first, second)]
    return bool(specs[0]) and specs[0] == specs[1]


def _spec_key(spec: Any) -> str:
    return json.dumps(spec, sort_keys=True) if isinstance(spec, dict) else str(spec)


def _per_image(rows: pd.DataFrame, metric: str) -> Any:
    """Trials x images of ``rows``' correctness on the set ``metric`` was measured on, or
    None unless every row has it, on one set."""
    column = COMPARED[metric][1]
    return perimage.matrix(rows[column]) if column is not None and column in rows else None


def eval_size(rows: pd.DataFrame, metric: str) -> int | None:
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
        n_a, n_b = eval_size(a_rows, metric), eval_size(b_rows, metric)
        test = stats.welch(a, b, (n_a, n_b) if n_a and n_b else None)
    return comparison_row(factor, within, metric, "pair", first, second, len(a), len(b), test, widest=RANGE[metric])


def _ordered(part: pd.DataFrame, factor: str, within: str, metric: str, values: list[Any],
             test_of: Callable[..., stats.Test], kind: str) -> dict[str, Any] | None:
    """A test over all of an ordered factor's trials: ``stats.trend`` or ``stats.curvature``."""
    rows = part[part[metric].notna() & part[factor].notna()]  # a trial without the factor's value has no place
    position = {value_label(v): i for i, v in enumerate(values)}
    places = [position[value_label(v)] for v in rows[factor]]
    try:
        test = test_of(places, rows[metric].to_numpy(float), _per_image(rows, metric), eval_size(rows, metric))
    except ValueError:  # fewer than three values or four trials here
        return None
    n_first = int((rows[factor] == values[0]).sum())
    n_second = int((rows[factor] == values[-1]).sum())
    return comparison_row(factor, within, metric, kind, values[0], values[-1], n_first, n_second, test, len(rows),
                _widest(kind, places, RANGE[metric]))


def _widest(kind: str, places: list[int], span: float) -> float:
    """The largest magnitude an estimate of ``kind`` can take when each trial's metric lies
    in a range ``span`` wide: for a least-squares coefficient ``sum w_j y_j``, ``span``
    times the positive weights' sum."""
    if kind == "pair":
        return span
    shape = stats.direction(places, 1 if kind == "trend" else 2)
    weights = shape / (shape**2).sum()
    return span * float(weights[weights > 0].sum())


def comparison_row(factor: str, within: str, metric: str, kind: str, first: Any, second: Any, n_first: int, n_second: int,
         test: stats.Test, trials: int | None = None, widest: float = math.inf) -> dict[str, Any]:
    """A comparison's row; its interval left out (NaN) where it reaches past ``widest``,
    the largest difference the metric allows: the data then say nothing at 95%."""
    low, high = test.ci95
    if low < -widest or high > widest:
        low, high = math.nan, math.nan
    name = factor.removeprefix("param.")
    return {"family": f"{name}: {metric}", "role": ROLES.get(metric, "descriptive"),
            "factor": name, "within": within, "metric": metric, "kind": kind,
            "first": value_label(first), "second": value_label(second), "n_first": n_first, "n_second": n_second,
            "trials": trials if trials is not None else n_first + n_second, "test": test.test,
            "difference": test.difference, "se": test.se, "ci95_low": low, "ci95_high": high,
            "t": test.t, "df": test.df, "p": test.p}


def verdict(row: pd.Series) -> str:
    """The direction a comparison supports at Holm's p < `ALPHA` within its family; else
    "not resolved" and the difference (a trend: per step) that would have been, in points;
    "too few trials" where the 95% interval is wider than the metric allows."""
    kind = row.get("kind")
    if pd.isna(row["ci95_low"]):
        return "too few trials to say (the 95% interval is wider than any possible difference)"
    if row["p_holm"] >= ALPHA:
        per = {"trend": " per step", "curvature": " per step²"}.get(str(kind), "")
        return f"not resolved (detectable: {row['detectable'] * 100:.1f} pp{per})"
    if kind == "trend":
        return f"{'rises' if row['difference'] > 0 else 'falls'} from {row['first']} to {row['second']}"
    if kind == "curvature":
        return f"curves {'down' if row['difference'] < 0 else 'up'} from {row['first']} to {row['second']}"
    return f"{row['first']} > {row['second']}" if row["difference"] > 0 else f"{row['first']} < {row['second']}"
