"""Studies: committed, re-runnable answers to one layout question each.

A study is a folder ``studies/<name>/`` holding ``space.yaml`` (a search space whose
parameters are the question's factors plus ``seed`` for repeats) and a README. Running
it (``coatsearch study studies/<name>``) runs the space, then writes beside it:

  results.csv      every trial (the run's results table)
  summary.csv      per configuration: n, mean and std over seeds of each metric
  comparisons.csv  neighbouring values of the first factor, tested (`comparisons`)
  report.html      the run's report

and rewrites the README's generated sections (the results table between the
``<!-- results:start -->`` and ``<!-- results:end -->`` markers, the comparisons and their
verdicts between ``<!-- comparisons:start -->`` and ``<!-- comparisons:end -->``, a scaling
study's fits), so the numbers a reader sees are always the CSV's.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from coatsearch.results import ranked, read_table
from coatsearch.space import SearchSpace, SpaceError, load_space
from coatsearch.units import value_label

#: Metrics summarised per configuration, with how they are shown.
METRICS = {
    "val_acc": "val acc (%)",
    "test_acc": "test acc (%)",
    "train_eval_acc": "train acc, eval (%)",
    "gap": "gap (pp)",
    "train_acc_running": "train acc, running (%)",
    "train_loss_running": "train loss, running",
    "gap_running": "gap, running (pp)",  # tables written before train_eval_acc existed
}
_PERCENT = {"val_acc", "test_acc", "train_eval_acc", "gap", "train_acc_running", "gap_running"}
START, END = "<!-- results:start -->", "<!-- results:end -->"


def factors(space: SearchSpace) -> list[str]:
    """The study's factors: every sampled parameter but the seed (the repeat axis)."""
    return [f"param.{name}" for name in space.params if name != "seed"] or ["configuration"]


def summarise(table: pd.DataFrame, group_by: Sequence[str]) -> pd.DataFrame:
    """Mean and std over seeds of each metric per configuration, full-fidelity trials only."""
    rows = ranked(table)
    columns = list(group_by)
    if not columns or columns == ["configuration"]:  # seeds only: one configuration
        rows = rows.assign(configuration="all")
        columns = ["configuration"]
    aggregated = rows.groupby(columns, sort=False, dropna=False)
    summary = aggregated.size().rename("n").to_frame()
    for metric in METRICS:
        if metric in rows and rows[metric].notna().any():
            summary[f"{metric}_mean"] = aggregated[metric].mean()
            summary[f"{metric}_std"] = aggregated[metric].std(ddof=1)
    for metric, size in (("val_acc", "val_images"), ("test_acc", "test_images")):
        if metric in rows and rows[metric].notna().any():
            summary[f"{metric}_ci95"] = aggregated.apply(lambda g, m=metric, s=size: _ci_half_width(g, m, s))
    summary["flops_mean"] = aggregated["flops"].mean()
    summary["params_mean"] = aggregated["params"].mean()
    return summary.reset_index()


def _ci_half_width(group: pd.DataFrame, metric: str, size_column: str) -> float:
    """Half the 95% interval of the mean: seeds' spread plus, when the evaluation set's size
    is recorded, its binomial error (`coatsearch.stats.mean_ci`)."""
    from coatsearch.stats import mean_ci

    values = group[metric].dropna().to_numpy()
    if not len(values):
        return float("nan")
    sizes = group[size_column].dropna() if size_column in group else pd.Series(dtype=float)
    n_eval = int(sizes.iloc[0]) if len(sizes) else None
    if len(values) < 2 and n_eval is None:
        return float("nan")
    mean, low, high = mean_ci(values, n_eval)
    return (high - low) / 2


def _cell(mean: float, std: float, metric: str) -> str:
    scale = 100.0 if metric in _PERCENT else 1.0
    digits = 2 if metric in _PERCENT else 3
    if pd.isna(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"



def summary_markdown(summary: pd.DataFrame, group_by: Sequence[str]) -> str:
    """The README table: one row per configuration, ``mean ± std`` over seeds."""
    from coatsearch.units import format_count

    metrics = [m for m in METRICS if f"{m}_mean" in summary]
    intervals = [m for m in ("val_acc", "test_acc") if f"{m}_ci95" in summary]
    header = [c.removeprefix("param.") for c in group_by] + ["n", "FLOPs", "params"] + [METRICS[m] for m in metrics]
    header += [f"{METRICS[m].split(' (')[0]} 95% CI (± pp)" for m in intervals]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in summary.iterrows():
        cells = [value_label(row[c]) for c in group_by]
        cells += [str(int(row["n"])), format_count(row["flops_mean"]), format_count(row["params_mean"])]
        cells += [_cell(row[f"{m}_mean"], row[f"{m}_std"], m) for m in metrics]
        cells += ["–" if pd.isna(row[f"{m}_ci95"]) else f"{row[f'{m}_ci95'] * 100:.2f}" for m in intervals]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_results(readme: str, table: str) -> str:
    """The README text with the table between the results markers replaced."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SpaceError(f"README: no {START} ... {END} markers for the results table")
    return pattern.sub(lambda _: f"{START}\n{table}\n{END}", readme)


COMPARISONS_START, COMPARISONS_END = "<!-- comparisons:start -->", "<!-- comparisons:end -->"
#: Metrics compared, and the column holding the size of the set each was measured on
#: (None: the seeds' spread only; a gap is a difference of two measured accuracies).
COMPARED = {"val_acc": "val_images", "test_acc": "test_images", "gap": None}
#: Holm-corrected p below which a comparison's verdict names a direction.
ALPHA = 0.05


_COMPARISON_COLUMNS = ["factor", "within", "metric", "first", "second", "difference", "ci95_low", "ci95_high",
                       "t", "df", "p", "p_holm", "verdict"]


def comparisons(table: pd.DataFrame, group_by: Sequence[str], orders: dict[str, list[Any]]) -> pd.DataFrame:
    """For each factor, each pair of its neighbouring values (in the order of the space's
    choices) within each combination of the other factors, for each metric in `COMPARED`:
    Welch tests over seeds with the evaluation set's binomial error, Holm-corrected across
    the whole study. One row per comparison, with its verdict."""
    from coatsearch.stats import holm, welch

    rows = ranked(table)
    found: list[dict[str, Any]] = []
    for factor in group_by if list(group_by) != ["configuration"] and not rows.empty else []:
        strata = [c for c in group_by if c != factor]
        order = orders.get(factor) or sorted(rows[factor].dropna().unique())
        for key, part in (rows.groupby(strata, sort=False, dropna=False) if strata else [((), rows)]):
            key = key if isinstance(key, tuple) else (key,)
            within = ", ".join(f"{c.removeprefix('param.')} {value_label(v)}" for c, v in zip(strata, key)) or "–"
            present = [v for v in order if (part[factor] == v).any()]
            for metric, size in COMPARED.items():
                if metric not in part or part[metric].isna().all():
                    continue
                for first, second in zip(present, present[1:]):
                    a_rows, b_rows = part[part[factor] == first], part[part[factor] == second]
                    a, b = a_rows[metric].dropna(), b_rows[metric].dropna()
                    if len(a) < 2 or len(b) < 2:
                        continue
                    n_eval = None
                    if size is not None and size in part and part[size].notna().all():
                        n_eval = (int(a_rows[size].iloc[0]), int(b_rows[size].iloc[0]))
                    test = welch(a, b, n_eval)
                    found.append({"factor": factor.removeprefix("param."), "within": within, "metric": metric,
                                  "first": value_label(first), "second": value_label(second),
                                  "difference": test.difference, "ci95_low": test.ci95[0],
                                  "ci95_high": test.ci95[1], "t": test.t, "df": test.df, "p": test.p})
    frame = pd.DataFrame(found, columns=_COMPARISON_COLUMNS[:-2])
    frame["p_holm"] = holm(frame["p"].tolist()) if len(frame) else []
    frame["verdict"] = [_verdict(r) for _, r in frame.iterrows()]
    return frame


def _verdict(row: pd.Series) -> str:
    if row["p_holm"] >= ALPHA:
        return "no detectable difference"
    return f"{row['first']} > {row['second']}" if row["difference"] > 0 else f"{row['first']} < {row['second']}"


def comparisons_markdown(frame: pd.DataFrame) -> str:
    """The README's comparisons: differences in percentage points with 95% CIs, t (df), p
    and Holm's p, and the verdict each implies."""
    if frame.empty:
        return "No pair of values has two or more complete trials each: nothing to compare."
    header = ["factor", "within", "metric", "comparison", "difference (pp)", "95% CI (pp)", "t (df)", "p",
              "p, Holm", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join([
            row["factor"], row["within"],
            METRICS[row["metric"]].split(" (")[0], f"{row['first']} vs {row['second']}",
            f"{row['difference'] * 100:+.2f}", f"[{row['ci95_low'] * 100:+.2f}, {row['ci95_high'] * 100:+.2f}]",
            f"{row['t']:.2f} ({row['df']:.1f})", _p(row["p"]), _p(row["p_holm"]), row["verdict"],
        ]) + " |")
    tested = len(frame)
    lines.append("")
    lines.append(f"{tested} comparisons; a verdict names a direction where Holm's p across all {tested} is "
                 f"below {ALPHA:g}. Accuracy tests add the evaluation set's binomial error to the seeds' "
                 "spread; gap tests use the seeds' spread.")
    return "\n".join(lines)


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def factor_orders(space: SearchSpace) -> dict[str, list[Any]]:
    """Each factor's values in the order the space lists them."""
    orders: dict[str, list[Any]] = {}
    for name, param in space.params.items():
        choices = getattr(param, "choices", None)
        if choices:
            orders[f"param.{name}"] = list(choices)
    return orders


FITS_START, FITS_END = "<!-- fits:start -->", "<!-- fits:end -->"


def scaling_markdown(table: pd.DataFrame, group_column: str) -> str:
    """A scaling study's fits and verdict, from its table: per group, the fitted
    ``val error = a * (FLOPs / F0)**-b + c`` with bootstrap 95% CIs, then where (if
    anywhere) each pair of curves crosses inside the measured FLOPs."""
    from coatsearch.stats import crossing, fit_power_law
    from coatsearch.units import format_count

    rows = ranked(table).dropna(subset=["val_acc", "flops"])
    name = group_column.removeprefix("param.")
    lines = [f"| {name} | trials | FLOPs | val error at the least / most | b (95% CI) | c (95% CI) |",
             "|---|---|---|---|---|---|"]
    fits = {}
    for group, part in rows.groupby(rows[group_column].map(value_label), sort=False):
        flops = part["flops"].astype(float).to_numpy()
        error = 1 - part["val_acc"].astype(float).to_numpy()
        small, large = error[flops == flops.min()].mean(), error[flops == flops.max()].mean()
        try:
            fit = fit_power_law(flops, error)
        except (ValueError, RuntimeError):
            lines.append(f"| {group} | {len(part)} | {format_count(flops.min())}–{format_count(flops.max())} | "
                         f"{small:.2%} / {large:.2%} | – | – |")
            continue
        fits[group] = (fit, flops.min(), flops.max())
        lines.append(
            f"| {group} | {len(part)} | {format_count(flops.min())}–{format_count(flops.max())} | "
            f"{small:.2%} / {large:.2%} | {fit.b:.2f} ({fit.b_ci[0]:.2f}–{fit.b_ci[1]:.2f}) | "
            f"{fit.c:.2%} ({fit.c_ci[0]:.2%}–{fit.c_ci[1]:.2%}) |"
        )
    lines.append("")
    groups = list(fits)
    for i, first in enumerate(groups):
        for second in groups[i + 1:]:
            f1, lo1, hi1 = fits[first]
            f2, lo2, hi2 = fits[second]
            low, high = max(lo1, lo2), min(hi1, hi2)
            if low >= high:
                continue
            at = crossing(f1, f2, low, high)
            if at is None:
                better = first if f1(high) < f2(high) else second
                lines.append(f"- {first} vs {second}: the fitted curves do not cross between "
                             f"{format_count(low)} and {format_count(high)} FLOPs; {better} is lower throughout.")
            else:
                after = first if f1(high) < f2(high) else second
                lines.append(f"- {first} vs {second}: the fitted curves cross at {format_count(at)} FLOPs; "
                             f"above it {after} has the lower error.")
    lines.append("")
    lines.append("A crossing is a statement about the fitted curves: where the CIs of b and c overlap, "
                 "the data cannot tell the curves apart.")
    return "\n".join(lines)


def replace_between(readme: str, start: str, end: str, text: str) -> str:
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(readme):
        raise SpaceError(f"README: no {start} ... {end} markers")
    return pattern.sub(lambda _: f"{start}\n{text}\n{end}", readme)


def write_outputs(study_dir: Path, space: SearchSpace, run_dir: Path) -> pd.DataFrame:
    """Copy the run's table and report into the study folder; write summary and README table."""
    table = read_table(run_dir / "results.csv")
    shutil.copyfile(run_dir / "results.csv", study_dir / "results.csv")
    report = run_dir / "report.html"
    if report.exists():
        shutil.copyfile(report, study_dir / "report.html")
    group_by = factors(space)
    summary = summarise(table, group_by)
    summary.to_csv(study_dir / "summary.csv", index=False)
    tested = comparisons(table, group_by, factor_orders(space))
    tested.to_csv(study_dir / "comparisons.csv", index=False)
    readme = study_dir / "README.md"
    if readme.exists():
        text = replace_results(readme.read_text(), summary_markdown(summary, group_by))
        if COMPARISONS_START in text:
            text = replace_between(text, COMPARISONS_START, COMPARISONS_END, comparisons_markdown(tested))
        if "scale" in space.params and FITS_START in text:
            column = next((c for c in group_by if c != "param.scale"), "layout")
            text = replace_between(text, FITS_START, FITS_END, scaling_markdown(table, column))
        readme.write_text(text)
    return summary


def load_study(study_dir: Path, overrides: list[str] | None = None) -> SearchSpace:
    space_file = study_dir / "space.yaml"
    if not study_dir.is_dir() or not space_file.exists():
        raise SpaceError(f"{study_dir}: not a study folder (expected {space_file.name} inside)")
    return load_space(space_file, overrides)
