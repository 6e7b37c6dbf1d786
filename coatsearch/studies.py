"""Studies: committed, re-runnable answers to one layout question each.

A study is a folder ``studies/<name>/`` holding ``space.yaml`` (a search space whose
parameters are the question's factors plus ``seed`` for repeats) and a README. Running
it (``coatsearch study studies/<name>``) runs the space, then writes beside it:

  results.csv   every trial (the run's results table)
  summary.csv   per configuration: n, mean and std over seeds of each metric
  report.html   the run's report

and rewrites the README's results table between the ``<!-- results:start -->`` and
``<!-- results:end -->`` markers, so the numbers a reader sees are always the CSV's.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

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
    readme = study_dir / "README.md"
    if readme.exists():
        text = replace_results(readme.read_text(), summary_markdown(summary, group_by))
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
