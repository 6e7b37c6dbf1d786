"""Studies: committed, re-runnable answers to one layout question each.

A study is a folder ``studies/<name>/`` holding ``space.yaml`` (a search space whose
parameters are the question's factors plus ``seed`` for repeats) and a README. Running
it (``coatsearch study studies/<name>``) runs the space, then writes beside it:

  results.csv      every trial (the run's results table)
  report.html      the study's report, and the tables it points at:
  effects.csv, comparisons.csv, summary.csv, pareto.csv, top.csv
                   (`coatsearch.analysis`: computed once, the same wherever they appear)

and rewrites the README's generated sections (the results table between the
``<!-- results:start -->`` and ``<!-- results:end -->`` markers, the comparisons and their
verdicts between ``<!-- comparisons:start -->`` and ``<!-- comparisons:end -->``, a scaling
study's fits, and where the README asks for them between ``<!-- equal_loss:start -->`` and
``<!-- equal_loss:end -->`` the comparisons at equal training loss, also written to
``equal_loss.csv``, and between ``<!-- train_fit:start -->`` and ``<!-- train_fit:end -->``
which configurations' networks fit their training images and when, also
``train_fit.csv``), so the numbers a reader sees are always the CSV's.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from coatsearch.analysis import Analysis, Design
from coatsearch.analysis.comparisons import ALPHA
from coatsearch.analysis.equal_loss import equal_loss
from coatsearch.analysis.fits import ScalingFits, crossing
from coatsearch.analysis.summaries import METRICS, SHAPE
from coatsearch.analysis.train_fit import FIT, train_fit
from coatsearch.generated import replace_section
from coatsearch.report import build_report, load_run
from coatsearch.space import SearchSpace, SpaceError, load_space
from coatsearch.units import format_count, value_label

_PERCENT = {"val_acc", "test_acc", "train_eval_acc", "gap", "train_acc_running", "gap_running"}
SHAPE_LABELS = {"blocks": "blocks", "channels": "widths"}
START, END = "<!-- results:start -->", "<!-- results:end -->"
COMPARISONS_START, COMPARISONS_END = "<!-- comparisons:start -->", "<!-- comparisons:end -->"


def _cell(mean: float, std: float, metric: str) -> str:
    """An accuracy in % to two decimals; any other metric (a loss) to three decimals, or in
    powers of ten below 0.01, where a network that fits its training images takes it."""
    if metric in _PERCENT:
        number = "{:.2f}"
        mean, std = mean * 100, std * 100
    else:
        number = "{:.3f}" if abs(mean) >= 0.01 else "{:.2e}"
    return number.format(mean) + ("" if pd.isna(std) else " ± " + number.format(std))


def _shape(value: object) -> str:
    return "–" if pd.isna(value) else str(value).replace(",", "/")  # type: ignore[arg-type]


def summary_markdown(summary: pd.DataFrame, group_by: Sequence[str]) -> str:
    """The README table: one row per configuration, ``mean ± std`` over seeds."""
    metrics = [m for m in METRICS if f"{m}_mean" in summary]
    intervals = [m for m in ("val_acc", "test_acc") if f"{m}_ci95" in summary]
    shapes = [c for c in SHAPE if c in summary]
    header = [c.removeprefix("param.") for c in group_by] + ["n", "FLOPs", "params"] + [SHAPE_LABELS[c] for c in shapes]
    header += [METRICS[m] for m in metrics]
    header += [f"{METRICS[m].split(' (')[0]} 95% CI (± pp)" for m in intervals]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in summary.iterrows():
        cells = [value_label(row[c]) for c in group_by]
        cells += [str(int(row["n"])), format_count(row["flops_mean"]), format_count(row["params_mean"])]
        cells += [_shape(row[c]) for c in shapes]
        cells += [_cell(row[f"{m}_mean"], row[f"{m}_std"], m) for m in metrics]
        cells += ["–" if pd.isna(row[f"{m}_ci95"]) else f"{row[f'{m}_ci95'] * 100:.2f}" for m in intervals]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_results(readme: str, table: str) -> str:
    """The README text with the table between the results markers replaced."""
    return replace_between(readme, START, END, table)



def comparisons_markdown(frame: pd.DataFrame, design: Design) -> str:
    """The README's comparisons, one question's family after another: the test each used,
    differences in percentage points with their own 95% CIs and the family's simultaneous
    ones, the smallest difference each could resolve, t (df), p and Holm's p within the
    family, and the verdict each implies; then how they were made, with the count of each
    test."""
    if frame.empty:
        return "No pair of values has the trials a test needs: nothing to compare."
    header = ["family (role)", "within", "comparison", "test", "difference (pp)", "95% CI (pp)",
              "simultaneous 95% CI (pp)", "detectable (pp)", "t (df)", "p", "p, Holm", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        per = {"trend": "/step", "curvature": "/step²"}.get(row["kind"], "")
        label = {"trend": "trend", "curvature": "curvature"}.get(row["kind"])
        lines.append("| " + " | ".join([
            f"{row['factor']}: {METRICS[row['metric']].split(' (')[0]} ({row['role']})", row["within"],
            f"{label} {row['first']} → {row['second']}" if label else f"{row['first']} vs {row['second']}",
            row["test"], f"{row['difference'] * 100:+.2f}{per}",
            _interval(row["ci95_low"], row["ci95_high"]),
            _interval(row["ci_simultaneous_low"], row["ci_simultaneous_high"]), f"{row['detectable'] * 100:.2f}",
            f"{row['t']:.2f} ({_df(row['df'])})", _p(row["p"]), _p(row["p_holm"]), row["verdict"],
        ]) + " |")
    tested = len(frame)
    families = frame.groupby("family", sort=False).size()
    where = "within each combination of the other factors" if design.crossed else "over all trials"
    kinds = frame["kind"].value_counts()
    used = ", ".join(f"{name} ({count})" for name, count in frame["test"].value_counts(sort=False).items())
    resolved = frame.groupby("family", sort=False)["p_holm"].apply(lambda p: int((p < ALPHA).sum()))
    lines.append("")
    lines.append(
        f"{tested} comparisons ({int(kinds.get('pair', 0))} pairs, {int(kinds.get('trend', 0))} trends, "
        f"{int(kinds.get('curvature', 0))} curvatures), {where}: neighbouring values of a numeric factor, a "
        "trend over all of its values (the least-squares slope on the value's place in the order, per step) and "
        "its curvature (the quadratic term, per step²: negative where the middle beats the ends), every pair of a "
        "categorical one. Pairs of values that build identical networks are not compared. "
        "Each factor is one question; its validation accuracy is the primary endpoint, the test accuracy "
        "confirms it and the gap describes. Holm's correction runs within each family only ("
        + "; ".join(f"{name}: {count} rows, {resolved[name]} resolved" for name, count in families.items())
        + f"), and a verdict names a direction where Holm's p is below {ALPHA:g}; \"not resolved\" states the "
        "smallest true difference the test would resolve with 80% power (noncentral t) at the strictest step of "
        "its family's correction. The simultaneous intervals (Bonferroni within the family) hold for all of a "
        "family's rows at once; the plain ones for one row alone. A row whose interval is wider than any "
        f"possible difference says so and gives none. Tests used: {used}. "
        "Accuracies are tested with the seeds' spread and the evaluation images' error as separate variance "
        "parts, with Welch-Satterthwaite degrees of freedom: paired image by image where every trial stored "
        "which images it got right, else with each configuration's binomial bound p(1-p)/n (unpaired: cautious, "
        "since configurations scored on the same images err together); the gap with the seeds' spread only. "
        "`coatsearch.analysis.stats` says why each is built as it is.")
    return "\n".join(lines)


def _interval(low: float, high: float) -> str:
    return "–" if pd.isna(low) else f"[{low * 100:+.2f}, {high * 100:+.2f}]"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _df(df: float) -> str:
    return "∞" if not math.isfinite(df) else f"{df:.1f}"


EQUAL_LOSS_START, EQUAL_LOSS_END = "<!-- equal_loss:start -->", "<!-- equal_loss:end -->"


def equal_loss_markdown(frame: pd.DataFrame) -> str:
    """The README's comparisons at equal training loss (`coatsearch.analysis.equal_loss`):
    each pair at each loss level both reached, its difference in validation accuracy with
    the 95% CIs, Holm's p within the family and the verdict; then how they were made."""
    if frame.empty:
        return ("Nothing to compare at equal training loss: no two configurations have two or more fully "
                "trained trials each with per-round records whose training-probe curves share a loss both reached "
                "after their first measurement.")
    header = ["factor", "within", "comparison", "train loss", "n", "difference (pp)", "95% CI (pp)",
              "simultaneous 95% CI (pp)", "p, Holm", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join([
            row["factor"], row["within"], f"{row['first']} vs {row['second']}", f"{row['level']:.3g}",
            f"{row['n_first']} / {row['n_second']}", f"{row['difference'] * 100:+.2f}",
            _interval(row["ci95_low"], row["ci95_high"]),
            _interval(row["ci_simultaneous_low"], row["ci_simultaneous_high"]), _p(row["p_holm"]), row["verdict"],
        ]) + " |")
    families = frame.groupby("family", sort=False).size()
    lines.append("")
    lines.append(
        f"{len(frame)} comparisons in {_families(len(families))}. Each trial's validation accuracy where its "
        "training-probe loss (the network in eval mode on a fixed share of its training images, measured every "
        "round) first fell to the level, linear in log loss between the rounds around it; the levels are spaced "
        "evenly in log loss inside the range both configurations' trials reached after their first measurement, "
        "so a pair whose ranges do not overlap is not compared. Welch over seeds with the validation set's "
        "binomial bound (only the last round keeps per-image records); Holm's correction runs over each "
        "family (one factor's pairs and levels over every combination of the others), and the simultaneous "
        "intervals are Bonferroni's within it. Generated by `coatsearch.analysis.equal_loss`.")
    return "\n".join(lines)


TRAIN_FIT_START, TRAIN_FIT_END = "<!-- train_fit:start -->", "<!-- train_fit:end -->"


def _families(count: int) -> str:
    return "one family" if count == 1 else f"{count} families (one per factor)"


def train_fit_markdown(frame: pd.DataFrame, steps_per_round: int | None, target: float = FIT) -> str:
    """The README's table of how each configuration fitted its training images
    (`coatsearch.analysis.train_fit`): trials at ``target`` or above at the end, their final
    eval-mode training accuracy, and by when those that ended there had first got there, in
    steps where the study trains a fixed number of steps per round (else in epochs)."""
    if frame.empty:
        return "No fully trained trial with an eval-mode training accuracy: nothing to say of fitting."
    factors = [c for c in frame.columns if c.startswith("param.")]
    unit, scale = ("step", steps_per_round) if steps_per_round else ("epoch", 1)
    header = [f.removeprefix("param.") for f in factors] + [
        "trials", f"at ≥ {target:.0%} at the end", "eval-mode train acc, mean (lowest)",
        f"those at ≥ {target:.0%}: first there by {unit}, median (range)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        measured, fitted, timed = int(row["measured"]), int(row["fitted"]), int(row["with_rounds"])
        if not fitted:
            first = "–"
        elif not timed:
            first = "not recorded"
        else:
            first = (f"{_amount(row['round_median'] * scale)} ({row['round_min'] * scale:,.0f}–"
                     f"{row['round_max'] * scale:,.0f})" + (f", {timed} of them" if timed < fitted else ""))
        accuracy = ("–" if not measured else
                    f"{row['train_eval_acc_mean']:.2%} ({row['train_eval_acc_min']:.2%})")
        cells = [value_label(row[f]) for f in factors] + [
            str(int(row["n"])), f"{fitted} of {measured}", accuracy, first]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"A network fits its training images here at {target:.0%} eval-mode accuracy on them, measured "
                 "by the training probe: the network in eval mode on a fixed share of its training images, after "
                 f"every round and at the end. For the trials at or above it at the end, the {unit} of the first "
                 "round at which their probe reached it: an upper bound at the rounds' resolution. Fully trained "
                 "trials only. Generated by `coatsearch.analysis.train_fit`.")
    return "\n".join(lines)


def _amount(value: float) -> str:
    """A count of steps or epochs; a median between two rounds keeps its half (2.5 epochs)."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


FITS_START, FITS_END = "<!-- fits:start -->", "<!-- fits:end -->"


def scaling_markdown(fits: ScalingFits | None) -> str:
    """A scaling study's fits and verdict: per group, the log-linear fit
    ``val error = a * FLOPs^-b`` with the 95% CI of ``b``, the change of error per doubling
    and the lack-of-fit test of the line (or why the fit failed); then each pair's
    difference of ``b`` (Holm-corrected across the pairs) and where the fitted lines
    cross inside the measured FLOPs."""
    if fits is None:
        return "No complete trial at full fidelity: nothing to fit."
    name = fits.group_column.removeprefix("param.")
    lines = [f"| {name} | trials | budgets | FLOPs | val error at the least / most | b (95% CI) | "
             "error per doubling | line vs budget means (lack-of-fit p) |",
             "|---|---|---|---|---|---|---|---|"]
    for ladder in fits.ladders:
        cells = [ladder.group, str(len(ladder.flops)), str(len(set(ladder.flops))),
                 f"{format_count(min(ladder.flops))}–{format_count(max(ladder.flops))}",
                 f"{ladder.error_at('min'):.2%} / {ladder.error_at('max'):.2%}"]
        fit = ladder.fit
        if fit is None:
            cells += [f"no fit: {ladder.failure}", "–", "–"]
        else:
            lof = "–" if fit.lack_of_fit_p is None else _p(fit.lack_of_fit_p)
            cells += [f"{fit.b:.3f} ({fit.b_ci[0]:+.3f} to {fit.b_ci[1]:+.3f})", f"{fit.per_doubling:+.1%}", lof]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    failed = fits.failed()
    fitted = fits.fitted()
    lines.append(f"{len(fitted)} of {len(fits.ladders)} ladders fitted"
                 + (": " + "; ".join(f"{ladder.group} failed ({ladder.failure})" for ladder in failed) if failed else "")
                 + ". A lack-of-fit p below 0.05 says the budget means bend away from a straight line in log-log "
                   "space: b is then an average rate over the ladder, not a constant one.")
    slopes = fits.slope_tests()
    if len(slopes):
        lines += ["", "| comparison | difference of b (95% CI) | t (df) | p | p, Holm | verdict |", "|---|---|---|---|---|---|"]
        for _, row in slopes.iterrows():
            if row["p_holm"] < ALPHA:
                steeper = row["first"] if row["difference"] > 0 else row["second"]
                said = f"larger b: {steeper}"
            else:
                said = "not resolved"
            lines.append(f"| {row['first']} vs {row['second']} | {row['difference']:+.3f} "
                         f"({row['ci95_low']:+.3f} to {row['ci95_high']:+.3f}) | {row['t']:.2f} ({_df(row['df'])}) | "
                         f"{_p(row['p'])} | {_p(row['p_holm'])} | {said} |")
        lines.append("")
    ladders = list(fitted.values())
    for i, first in enumerate(ladders):
        for second in ladders[i + 1:]:
            assert first.fit is not None and second.fit is not None
            low, high = max(min(first.flops), min(second.flops)), min(max(first.flops), max(second.flops))
            if low >= high:
                continue
            at = crossing(first.fit, second.fit, low, high)
            lower = first.group if first.fit(high) < second.fit(high) else second.group
            if at is None:
                lines.append(f"- {first.group} vs {second.group}: the fitted lines do not cross between "
                             f"{format_count(low)} and {format_count(high)} FLOPs; {lower} is lower throughout.")
            else:
                lines.append(f"- {first.group} vs {second.group}: the fitted lines cross at {format_count(at)} FLOPs; "
                             f"above it {lower} has the lower error.")
    lines.append("")
    lines.append("Each fit is least squares of log error on log FLOPs over every trial of the ladder "
                 "(`coatsearch.analysis.fits`: a three-parameter power law is not identifiable from four budgets). "
                 "A crossing is a statement about the fitted lines; whether the rates differ is the test above.")
    return "\n".join(lines)


def replace_between(readme: str, start: str, end: str, text: str) -> str:
    """The README text with the section between ``start`` and ``end`` replaced; a README
    without them is an error (a study's README must hold every generated section)."""
    replaced = replace_section(readme, start, end, text)
    if replaced is None:
        raise SpaceError(f"README: no {start} ... {end} markers")
    return replaced


def write_outputs(study_dir: Path, run_dir: Path) -> Analysis:
    """Copy the run's results table into the study folder, then `regenerate` it."""
    shutil.copyfile(run_dir / "results.csv", study_dir / "results.csv")
    return regenerate(study_dir)


def regenerate(study_dir: Path) -> Analysis:
    """Rebuild a study's report, tables and README sections from its ``results.csv`` and
    ``space.yaml`` alone (no training): the report and the README draw one analysis."""
    if not (study_dir / "results.csv").exists():
        raise SpaceError(f"{study_dir}: no results.csv to regenerate from (run the study first)")
    space = load_study(study_dir)  # the space must still be valid
    run = load_run(study_dir)
    build_report(run)
    analysis = run.analysis
    readme = study_dir / "README.md"
    if readme.exists():
        group_by = list(analysis.design.factors) or ["configuration"]
        text = replace_results(readme.read_text(), summary_markdown(analysis.summary, group_by))
        if COMPARISONS_START in text:
            text = replace_between(text, COMPARISONS_START, COMPARISONS_END,
                                   comparisons_markdown(analysis.comparisons, analysis.design))
        if EQUAL_LOSS_START in text:
            at_equal_loss = equal_loss(run.table, analysis.design)
            at_equal_loss.to_csv(study_dir / "equal_loss.csv", index=False)
            text = replace_between(text, EQUAL_LOSS_START, EQUAL_LOSS_END, equal_loss_markdown(at_equal_loss))
        if TRAIN_FIT_START in text:
            fitted = train_fit(run.table, analysis.design)
            fitted.to_csv(study_dir / "train_fit.csv", index=False)
            text = replace_between(text, TRAIN_FIT_START, TRAIN_FIT_END,
                                   train_fit_markdown(fitted, _steps_per_round(space)))
        if analysis.scaling is not None and FITS_START in text:
            text = replace_between(text, FITS_START, FITS_END, scaling_markdown(analysis.scaling))
        readme.write_text(text)
    return analysis


def _steps_per_round(space: SearchSpace) -> int | None:
    """Optimiser steps per round (epoch) where the space trains a fixed number of steps that
    its rounds divide evenly; None otherwise (a round a pass over the data, or uneven)."""
    steps = space.train.get("steps")
    if not isinstance(steps, int) or steps % space.epochs:
        return None
    return steps // space.epochs


def load_study(study_dir: Path, overrides: list[str] | None = None) -> SearchSpace:
    space_file = study_dir / "space.yaml"
    if not study_dir.is_dir() or not space_file.exists():
        raise SpaceError(f"{study_dir}: not a study folder (expected {space_file.name} inside)")
    return load_space(space_file, overrides)
