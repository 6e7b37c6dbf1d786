"""The command line's view: rich tables of specs, counts, budgets, families, dry runs,
Pareto fronts, effects and prepared caches.

Each function turns a computed result into something a `rich.console.Console` prints;
nothing here computes a number the library does not already hold, so the terminal shows
the same values as the HTML report and a study's README.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from rich.table import Table
from rich.text import Text

from coatsearch.analysis import Analysis
from coatsearch.analysis.effects import effects_frame
from coatsearch.report.data import Run
from coatsearch.report.hand_off import best_train_settings, train_command, trains_longer
from coatsearch.report.tables import HEADERS, format_cell, shown_columns
from coatsearch.units import FLOPS_NOTE, format_count


def _table(title: str | None, columns: Sequence[str], left: Sequence[str]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    return table


def spec_table(net: Any, counts: Any, label: str) -> Table:
    """A network stage by stage (`coatsearch build`): resolution, blocks, widths, params, FLOPs."""
    table = _table(f"{net.name or label}  layout {net.layout}  at {counts.image_size}px",
                   ("stage", "kind", "resolution", "blocks", "channels", "heads", "params", "FLOPs"), ("stage", "kind"))
    stem_side = counts.image_size // net.stem.stride
    table.add_row(
        "stem", net.stem.kind, f"{stem_side}x{stem_side}", "-", str(net.stem.channels), "-",
        format_count(counts.per_stage_params["stem"]), format_count(counts.per_stage["stem"]),
    )
    for name, stage, side in zip(net.stage_names, net.stages, net.resolutions(counts.image_size)):
        table.add_row(
            name, stage.kind, f"{side}x{side}", str(stage.blocks), str(stage.channels),
            str(stage.heads) if stage.kind == "T" else "-",
            format_count(counts.per_stage_params[name]), format_count(counts.per_stage[name]),
        )
    table.add_row(
        "head", "pool+fc", "1x1", "-", str(net.num_classes), "-",
        format_count(counts.per_stage_params["head"]), format_count(counts.per_stage["head"]),
    )
    table.add_section()
    table.add_row("total", "", "", "", "", "", format_count(counts.params), format_count(counts.flops))
    return table


def presets_table(image_size: int | None, show_flops: bool) -> Table:
    """The built-in presets with their analytic counts beside the paper's."""
    from coatsearch.flops import count_analytic
    from coatsearch.presets import FITTED_TO, PAPER_FLOPS, PAPER_PARAMS, PRESETS, preset

    table = _table("presets (FLOPs: multiply-adds)",
                   ("preset", "layout", "blocks", "channels", "params", "paper", "FLOPs", "paper "), ("preset", "layout"))
    for name in PRESETS:
        net = preset(name)
        if image_size is not None:
            net = net.replace(image_size=image_size)
        counts = count_analytic(net)
        fitted = FITTED_TO.get(name, name)
        table.add_row(
            name, net.layout, ",".join(str(s.blocks) for s in net.stages), ",".join(str(s.channels) for s in net.stages),
            format_count(counts.params), format_count(PAPER_PARAMS[fitted]) if fitted in PAPER_PARAMS else "-",
            format_count(counts.flops) if show_flops else "-",
            format_count(PAPER_FLOPS[name]) if name in PAPER_FLOPS and image_size in (None, 224) else "-",
        )
    return table


def _pair(analytic: int, traced: int | None) -> tuple[str, str]:
    """The traced count and its difference from the analytic one ("-" when not traced)."""
    if traced is None:
        return "-", "-"
    return format_count(traced), f"{(traced / analytic - 1) if analytic else 0.0:+.3%}"


def counts_tables(net: Any, label: str, analytic: Any, traced: Any | None, by_op: bool) -> list[Table]:
    """`coatsearch flops`: per stage the analytic and (when traced) the traced counts."""
    table = _table(f"{net.name or label}  layout {net.layout}  at {analytic.image_size}px",
                   ("row", "params", "analytic FLOPs", "traced FLOPs", "difference"), ("row",))
    for row, flops in analytic.per_stage.items():
        table.add_row(row, format_count(analytic.per_stage_params[row]), format_count(flops),
                      *_pair(flops, None if traced is None else traced.per_stage.get(row, 0)))
    table.add_section()
    table.add_row("total", format_count(analytic.params), format_count(analytic.flops),
                  *_pair(analytic.flops, None if traced is None else traced.flops))
    table.add_row("activations", "", format_count(analytic.activations),
                  *_pair(analytic.activations, None if traced is None else traced.activations))
    if not by_op:
        return [table]
    ops = _table("FLOPs by operator", ("operator", "analytic", "traced", "difference"), ("operator",))
    for op in dict.fromkeys([*analytic.by_op, *(traced.by_op if traced is not None else ())]):
        a = analytic.by_op.get(op, 0)
        ops.add_row(op, format_count(a), *_pair(a, None if traced is None else traced.by_op.get(op, 0)))
    return [table, ops]


def counts_timing(analytic: Any, analytic_s: float, traced: Any | None, traced_s: float) -> str:
    """The dim line under `coatsearch flops`: each route's time, and what the tracer missed."""
    timing = f"analytic route {analytic_s * 1e3:.2f} ms"
    if traced is not None:
        timing += f", traced route {traced_s:.2f} s"
        if traced.params != analytic.params:
            timing += f"; params differ: traced {traced.params}"
        if traced.uncounted:
            timing += f"; uncounted by the tracer: {', '.join(traced.uncounted)}"
    return timing


def match_table(net: Any, label: str, result: Any, before: Any) -> Table:
    """`coatsearch match`: widths and depths, params and FLOPs before and after matching."""
    table = _table(f"{net.name or label} matched to {format_count(result.target)} {result.metric}",
                   ("", "before", "after"), ("",))
    table.add_row("stem channels", str(net.stem.channels), str(result.spec.stem.channels))
    for name, old, new in zip(net.stage_names, net.stages, result.spec.stages):
        table.add_row(f"{name} {old.kind} channels x blocks", f"{old.channels} x {old.blocks}",
                      f"{new.channels} x {new.blocks}")
    table.add_section()
    table.add_row("params", format_count(before.params), format_count(result.params))
    table.add_row("FLOPs", format_count(before.flops), format_count(result.flops))
    return table


def scaled_record(result: Any) -> dict[str, Any]:
    """A scaled network (`coatsearch.scaling.Scaled`) as plain values, for JSON and tables."""
    spec = result.spec
    return {
        "rule": result.rule, "target": result.target, "metric": result.metric, "flops": result.flops,
        "params": result.params, "relative_error": result.relative_error, "image_size": spec.image_size,
        "stem": spec.stem.channels, "blocks": [s.blocks for s in spec.stages],
        "channels": [s.channels for s in spec.stages], "factors": result.factors, "spec": spec.to_dict(),
    }


def family_table(records: list[dict[str, Any]], title: str) -> Table:
    """Scaled networks (`scaled_record`s), one row each."""
    table = Table(title=title)
    for column in ("target", "FLOPs", "params", "error", "image", "stem", "blocks", "channels"):
        table.add_column(column, justify="right" if column not in ("blocks", "channels") else "left")
    for r in records:
        table.add_row(format_count(r["target"]), format_count(r["flops"]), format_count(r["params"]),
                      f"{r['relative_error']:+.2%}", str(r["image_size"]), str(r["stem"]),
                      ",".join(map(str, r["blocks"])), ",".join(map(str, r["channels"])))
    return table


def preview_rich_table(candidates: Sequence[Any], title: str, seconds: Sequence[float] | None = None) -> Table:
    """A dry run's candidates (`coatsearch.search.preview.Preview`) as a terminal table,
    with each trial's estimated seconds when given."""
    table = Table(title=title)
    names = list(dict.fromkeys(k for c in candidates for k in c.sampled))
    columns = [*names, "layout", "blocks", "channels", "image", "FLOPs", "params", "budget error", "status"]
    for column in columns + (["est. time"] if seconds is not None else []):
        table.add_column(column)
    for i, c in enumerate(candidates):
        error = "-" if c.budget_error is None else f"{c.budget_error:+.2%}"
        status = c.status if c.reason is None else f"{c.status}: {c.reason}"
        net = c.net
        cells = [*(format_cell(n, c.sampled.get(n)) for n in names), *(
            [net.layout, net.blocks, net.channels, format_cell("image_size", net.image_size),
             format_cell("flops", net.flops), format_cell("params", net.params)] if net else ["-"] * 6), error, status]
        if seconds is not None:
            cells.append(f"{seconds[i]:.0f} s" if c.status == "ok" else "-")
        table.add_row(*cells)
    return table


def preview_json(candidates: Sequence[Any], timing: Any | None) -> dict[str, Any]:
    """A dry run as one JSON object: the candidates, each with its estimated seconds."""
    records = [c.to_dict() for c in candidates]
    if timing is not None:
        for record, seconds in zip(records, timing.per_trial_s):
            record["estimated_s"] = seconds
    return {"candidates": records, "estimated_run_s": timing and timing.run_s,
            "estimate_basis": timing and timing.basis,
            "estimated_scheduled_run_s": timing and timing.scheduled_s,
            "scheduled_basis": timing and timing.scheduled_basis}


def pareto_rich_table(front: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> Table | None:
    """The Pareto front of a run (`Analysis.front`) as a terminal table (None when it is empty)."""
    if front.empty:
        return None
    columns = shown_columns(front, ["trial", "layout", "blocks", "channels", "flops", "params", "val_acc", "gap", "fidelity"])
    ranked_by = ", ".join(f"{m} ({d})" for m, d in objectives)
    # one objective ranked (a matched cost left out, `front_objectives`): the best, no front
    title = f"Pareto front: {ranked_by}" if len(objectives) > 1 else f"Best by {ranked_by} (one objective: no Pareto front)"
    table = Table(title=title)
    for column in columns:
        table.add_column(HEADERS.get(column, column))
    for _, row in front.iterrows():
        table.add_row(*(format_cell(c, row.get(c)) for c in columns))
    return table


def effects_rich_table(frame: pd.DataFrame, title: str) -> Table | None:
    """The effects table (as ``effects.csv`` holds it) for the terminal: per value, n and
    mean [95% interval]."""
    if frame.empty:
        return None
    table = Table(title=title)
    for column in ("parameter", "value", "trials", "val acc", "95% interval"):
        table.add_column(column)
    for _, row in frame.iterrows():
        table.add_row(str(row["parameter"]), str(row["value"]), str(int(row["n"])), f"{row['val_acc_mean']:.2%}",
                      f"[{row['val_acc_ci95_low']:.2%}, {row['val_acc_ci95_high']:.2%}]")
    return table


def best_line(run: Run) -> str:
    """The closing line of a run: its best trial and how to train it on."""
    best = run.analysis.best
    if best is None:
        return "best: no complete trial at full fidelity yet"
    train = best_train_settings(run)
    longer = "fully" if trains_longer(train) else "again, as its search did"
    return (f"best: trial {int(best.trial['trial'])}, val acc {best.trial['val_acc']:.2%}; to train it {longer}:\n"
            f"  coatsearch best {run.run_dir} -o best.yaml && {train_command('best.yaml', train)}")


def prepared_table(entries: list[dict[str, Any]]) -> Table:
    """`coatsearch data info`: one row per prepared size of an image folder."""
    table = Table("size", "images", "classes", "mode", "bytes", "state", "path")
    for e in entries:
        if "size" not in e:
            table.add_row("?", "", "", "", "", e["state"], e["path"])
            continue
        images = " / ".join(f"{n} {s}" for s, n in e["images"].items())
        skipped = f" ({e['skipped']} skipped)" if e["skipped"] else ""
        table.add_row(f"{e['size']}px" + ("" if e["draft"] else " exact"), images + skipped, str(e["classes"]),
                      e["mode"], f"{format_count(e['bytes'])}B", e["state"], e["path"])
    return table


def outcome_tables(analysis: Analysis) -> list[Any]:
    """What a finished run prints from its analysis: the Pareto front under its objectives
    (with the FLOPs note) and the effects of its searched values; empty parts left out."""
    shown: list[Any] = []
    table = pareto_rich_table(analysis.front, analysis.objectives)
    if table is not None:
        shown += [table, Text(FLOPS_NOTE, style="dim")]
    found = effects_rich_table(effects_frame(list(analysis.effects)), "validation accuracy per searched value (95% interval)")
    if found is not None:
        shown.append(found)
    return shown


def trial_summary(row: Any) -> str:
    """One trial (a results-table row) in a line: accuracy, counts and sampled values."""
    params = {k.removeprefix("param."): getattr(row[k], "item", lambda v=row[k]: v)()
              for k in row.index if k.startswith("param.") and row[k] == row[k]}
    return (f"trial {int(row['trial'])}: val acc {row['val_acc']:.2%}, {format_count(row['flops'])} FLOPs, "
            f"{format_count(row['params'])} params; {params}")


def fit_summary(result: Any) -> str:
    """A training run (`coatsearch.train.metrics.TrialResult`) in a line: status, size, time, accuracies."""
    summary = f"{result.status}: {format_count(result.params)} params, {result.wall_time:.0f}s"
    if result.final:
        summary += f", val acc {result.final.val_acc:.2%}"
    if result.test_acc is not None:
        summary += f", test acc {result.test_acc:.2%}"
    return summary + (f" ({result.reason})" if result.reason else "")


def prepared_summary(prepared: Any, size: int, elapsed: float) -> str:
    """A prepared cache in a line: where, how many images per split, classes, bytes, time."""
    counts = ", ".join(f"{n['count']} {s}" for s, n in prepared.manifest["splits"].items())
    return (f"{prepared.path}: {counts} images at {size}px, {len(prepared.classes)} classes, "
            f"{format_count(prepared.nbytes)}B ({elapsed:.1f}s)")
