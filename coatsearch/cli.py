"""The ``coatsearch`` command line.

Every command turns the library's own errors (bad spec, bad space, bad data) into one
line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from coatsearch.errors import CoatsearchError, first_line
from coatsearch.host import sleep_while_waiting
from coatsearch.status import Status
from coatsearch.units import FLOPS_NOTE, format_count

# Before any command imports torch: OpenMP threads that sleep while waiting keep a run
# near its fair share of a machine it shares (see `sleep_while_waiting`).
sleep_while_waiting()

app = typer.Typer(
    help="Search and scale CoAtNet-family vision networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables are wide: when output goes to a file or pipe, do not squeeze them into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr, in one line; the exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def write_output(path: Path, text: str, flag: str = "-o") -> None:
    """Write a command's output file, or say in one line why it cannot be written."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise CoatsearchError(f"{flag} {path}: cannot write ({exc.strerror or exc})") from None


def user_errors_exit_2(func: F) -> F:
    """Report the library's input errors (`CoatsearchError`) as ``error: ...``, exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CoatsearchError as exc:
            raise fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@user_errors_exit_2
def build(
    spec: str = typer.Argument(..., help="a preset name (see `coatsearch presets`) or a YAML spec file"),
    image_size: int | None = typer.Option(None, "--image-size", help="count at this size"),
) -> None:
    """Print the network a spec describes, stage by stage, with params and FLOPs."""
    from coatsearch.flops import count
    from coatsearch.presets import load_spec

    net = load_spec(spec)
    if image_size is not None:
        net = net.replace(image_size=image_size)
    counts = count(net)
    table = Table(title=f"{net.name or spec}  layout {net.layout}  at {counts.image_size}px")
    for column in ("stage", "kind", "resolution", "blocks", "channels", "heads", "params", "FLOPs"):
        table.add_column(column, justify="left" if column in ("stage", "kind") else "right")
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
    console.print(table)
    console.print(FLOPS_NOTE, style="dim")


@app.command()
@user_errors_exit_2
def presets(
    image_size: int | None = typer.Option(None, "--image-size", help="count at this size"),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="show FLOPs"),
) -> None:
    """List the built-in presets with their parameters and FLOPs (analytic counts)."""
    from coatsearch.flops import count_analytic
    from coatsearch.presets import FITTED_TO, PAPER_FLOPS, PAPER_PARAMS, PRESETS, preset

    table = Table(title="presets (FLOPs: multiply-adds)")
    for column in ("preset", "layout", "blocks", "channels", "params", "paper", "FLOPs", "paper "):
        table.add_column(column, justify="left" if column in ("preset", "layout") else "right")
    for name in PRESETS:
        net = preset(name)
        if image_size is not None:
            net = net.replace(image_size=image_size)
        counts = count_analytic(net)
        table.add_row(
            name,
            net.layout,
            ",".join(str(s.blocks) for s in net.stages),
            ",".join(str(s.channels) for s in net.stages),
            format_count(counts.params),
            format_count(PAPER_PARAMS[FITTED_TO.get(name, name)]) if FITTED_TO.get(name, name) in PAPER_PARAMS else "-",
            format_count(counts.flops) if flops else "-",
            format_count(PAPER_FLOPS[name]) if name in PAPER_FLOPS and image_size in (None, 224) else "-",
        )
    console.print(table)


def _relative(a: float, b: float) -> str:
    return f"{(a / b - 1) if b else 0.0:+.3%}"


@app.command("flops")
@user_errors_exit_2
def flops_command(
    spec: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    image_size: int | None = typer.Option(None, "--image-size", help="count at this size"),
    by_op: bool = typer.Option(False, "--by-op", help="also break FLOPs down by operator"),
    traced: bool = typer.Option(True, "--traced/--no-traced", help="also trace the model with fvcore"),
) -> None:
    """Count FLOPs, params and activations by the analytic and the traced route, side by side."""
    import time

    from coatsearch.flops import count
    from coatsearch.presets import load_spec

    net = load_spec(spec)
    if image_size is not None:
        net = net.replace(image_size=image_size)
    start = time.perf_counter()
    analytic = count(net, route="analytic")
    analytic_s = time.perf_counter() - start
    trace = traced
    counts = analytic
    if trace:
        with err_console.status(f"tracing {net.name or spec} with fvcore..."):
            start = time.perf_counter()
            counts = count(net, route="traced")
            traced_s = time.perf_counter() - start

    title = f"{net.name or spec}  layout {net.layout}  at {analytic.image_size}px"
    table = Table(title=title)
    for column in ("row", "params", "analytic FLOPs", "traced FLOPs", "difference"):
        table.add_column(column, justify="left" if column == "row" else "right")
    rows = [(k, analytic.per_stage[k], counts.per_stage.get(k, 0), analytic.per_stage_params[k])
            for k in analytic.per_stage]
    for row, a, t, p in rows:
        table.add_row(row, format_count(p), format_count(a), *(_pair(a, t) if trace else ("-", "-")))
    table.add_section()
    table.add_row("total", format_count(analytic.params), format_count(analytic.flops),
                  *(_pair(analytic.flops, counts.flops) if trace else ("-", "-")))
    table.add_row("activations", "", format_count(analytic.activations),
                  *(_pair(analytic.activations, counts.activations) if trace else ("-", "-")))
    console.print(table)
    if by_op:
        ops = Table(title="FLOPs by operator")
        for column in ("operator", "analytic", "traced", "difference"):
            ops.add_column(column, justify="left" if column == "operator" else "right")
        for op in dict.fromkeys([*analytic.by_op, *counts.by_op]):
            a = analytic.by_op.get(op, 0)
            ops.add_row(op, format_count(a), *(_pair(a, counts.by_op.get(op, 0)) if trace else ("-", "-")))
        console.print(ops)
    timing = f"analytic route {analytic_s * 1e3:.2f} ms"
    if trace:
        timing += f", traced route {traced_s:.2f} s"
        if counts.params != analytic.params:
            timing += f"; params differ: traced {counts.params}"
        if counts.uncounted:
            timing += f"; uncounted by the tracer: {', '.join(counts.uncounted)}"
    console.print(timing, style="dim")
    console.print(FLOPS_NOTE, style="dim")


def _pair(analytic: int, traced: int) -> tuple[str, str]:
    return format_count(traced), _relative(traced, analytic)


@app.command("match")
@user_errors_exit_2
def match_command(
    spec: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    flops: str | None = typer.Option(None, "--flops", help="FLOP target, e.g. 4.2G or 30M"),
    params: str | None = typer.Option(None, "--params", help="parameter target, e.g. 25M"),
    by: str = typer.Option("width", "--by", help="width, depth or both"),
    tolerance: float = typer.Option(0.01, "--tolerance", help="accepted relative error"),
    strict: bool = typer.Option(False, "--strict", help="fail (exit 2) when the target is missed"),
    image_size: int | None = typer.Option(None, "--image-size", help="match at this image size"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write the matched spec here"),
) -> None:
    """Scale a spec's widths or depths to a FLOP or parameter budget."""
    from coatsearch.budget import match_budget, parse_count
    from coatsearch.flops import count_analytic
    from coatsearch.presets import load_spec

    flops_target = parse_count(flops, "--flops") if flops is not None else None
    params_target = parse_count(params, "--params") if params is not None else None
    net = load_spec(spec)
    if image_size is not None:
        net = net.replace(image_size=image_size)
    result = match_budget(
        net, flops=flops_target, params=params_target, by=by,  # type: ignore[arg-type]
        tolerance=tolerance, strict=strict,
    )
    before = count_analytic(net)
    table = Table(title=f"{net.name or spec} matched to {format_count(result.target)} {result.metric}")
    for column in ("", "before", "after"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("stem channels", str(net.stem.channels), str(result.spec.stem.channels))
    for name, old, new in zip(net.stage_names, net.stages, result.spec.stages):
        table.add_row(f"{name} {old.kind} channels x blocks", f"{old.channels} x {old.blocks}",
                      f"{new.channels} x {new.blocks}")
    table.add_section()
    table.add_row("params", format_count(before.params), format_count(result.params))
    table.add_row("FLOPs", format_count(before.flops), format_count(result.flops))
    console.print(table)
    style = None if result.within_tolerance else "yellow"
    console.print(result.message, style=style, highlight=False, soft_wrap=True)
    if output is not None:
        write_output(output, result.spec.to_yaml())
        console.print(f"wrote {output}", style="dim")


@app.command("scale")
@user_errors_exit_2
def scale_command(
    spec: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    rule: str = typer.Option("coatnet", "--rule", help="coatnet, compound, depth, width or resolution"),
    flops: str | None = typer.Option(None, "--flops", help="target: a multiple (2x) or a count (8.4G)"),
    params: str | None = typer.Option(None, "--params", help="target: a multiple (2x) or a count (42M)"),
    tolerance: float = typer.Option(0.01, "--tolerance", help="accepted relative error of the final width match"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write the scaled spec here"),
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
) -> None:
    """Grow (or shrink) a network to a FLOP or parameter target by a scaling rule."""
    from coatsearch.presets import load_spec
    from coatsearch.scaling import scale

    net = load_spec(spec)
    result = scale(net, rule, flops=flops, params=params, tolerance=tolerance)
    if output is not None:
        write_output(output, result.spec.to_yaml())
    if as_json:
        print(json.dumps(_scaled_record(result)))
        return
    console.print(_family_table([_scaled_record(result)], f"{net.name or spec} by the {rule} rule"))
    if result.note:
        console.print(result.note, style="dim", highlight=False)
    if output is not None:
        console.print(f"wrote {output}", style="dim")


@app.command()
@user_errors_exit_2
def family(
    base: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    rule: str = typer.Option("coatnet", "--rule", help="coatnet, compound, depth, width or resolution"),
    steps: int = typer.Option(3, "--steps", help="members after the base, each at twice the cost"),
    factor: float = typer.Option(2.0, "--factor", help="cost multiple from one member to the next"),
    out_dir: Path | None = typer.Option(None, "-o", "--out", help="write each member's spec into this folder"),
    as_json: bool = typer.Option(False, "--json", help="print the family as JSON"),
) -> None:
    """A family grown from a base by a rule: the base and STEPS members at FACTOR x the cost each."""
    from coatsearch.presets import load_spec
    from coatsearch.scaling import family as grow

    net = load_spec(base)
    members = grow(net, rule, steps, factor)
    records = [_scaled_record(m) for m in members]
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CoatsearchError(f"--out {out_dir}: cannot create the folder ({exc.strerror or exc})") from None
        for k, member in enumerate(members):
            write_output(out_dir / f"{net.name or 'base'}-{rule}-{k}.yaml", member.spec.to_yaml(), "--out")
    if as_json:
        print(json.dumps(records))
        return
    console.print(_family_table(records, f"{net.name or base}: the {rule} family, x{factor:g} cost per step"))
    if members[-1].note:
        console.print(members[-1].note, style="dim", highlight=False)
    console.print(FLOPS_NOTE, style="dim")


def _scaled_record(result: Any) -> dict[str, Any]:
    spec = result.spec
    return {
        "rule": result.rule, "target": result.target, "metric": result.metric, "flops": result.flops,
        "params": result.params, "relative_error": result.relative_error, "image_size": spec.image_size,
        "stem": spec.stem.channels, "blocks": [s.blocks for s in spec.stages],
        "channels": [s.channels for s in spec.stages], "factors": result.factors, "spec": spec.to_dict(),
    }


def _family_table(records: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("target", "FLOPs", "params", "error", "image", "stem", "blocks", "channels"):
        table.add_column(column, justify="right" if column not in ("blocks", "channels") else "left")
    for r in records:
        table.add_row(format_count(r["target"]), format_count(r["flops"]), format_count(r["params"]),
                      f"{r['relative_error']:+.2%}", str(r["image_size"]), str(r["stem"]),
                      ",".join(map(str, r["blocks"])), ",".join(map(str, r["channels"])))
    return table


@app.command()
@user_errors_exit_2
def run(
    space_file: str = typer.Argument(..., metavar="SPACE.yaml", help="a search space (see spaces/)"),
    out: str | None = typer.Option(None, "--out", help="run directory (default runs/<study>)"),
    backend: str | None = typer.Option(None, "--backend", help="optuna or ray (overrides the space)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster: auto or ray://host:port"),
    overrides: list[str] = typer.Option([], "--set", help="override a space field: dotted.key=value"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list every candidate (network, FLOPs, params) without training"),
    as_json: bool = typer.Option(False, "--json", help="with --dry-run: print the candidates as JSON"),
) -> None:
    """Run (or resume) a search; write runs/<study>/ with the results table and Pareto front."""
    from coatsearch.space import SpaceError, load_space

    if dry_run:
        _dry_run(load_space(space_file, overrides), space_file, as_json)
        return
    if backend is not None:
        overrides = [*overrides, f"backend={backend}"]
    if address is not None:
        if backend not in (None, "ray"):
            raise SpaceError(f"--address: a Ray cluster address needs --backend ray, not {backend}")
        overrides = [*overrides, "backend=ray"]
    _run_and_report(load_space(space_file, overrides), Path(out) if out else None, address, source=space_file)


def _dry_run(space: Any, source: str, as_json: bool) -> None:
    from coatsearch.report.tables import preview_rich_table
    from coatsearch.search import compile_space
    from coatsearch.search.preview import preview

    plan = compile_space(space, source=source, check_data=False, check_storage=False)
    candidates = preview(plan)
    timing = _estimate(plan, candidates)
    if as_json:
        records = [c.to_dict() for c in candidates]
        if timing is not None:
            for record, seconds in zip(records, timing.per_trial_s):
                record["estimated_s"] = seconds
        print(json.dumps({"candidates": records, "estimated_run_s": timing and timing.run_s,
                          "estimate_basis": timing and timing.basis}, default=str))
        return
    console.print(preview_rich_table(candidates, f"{plan.study}: {len(candidates)} candidates (dry run, nothing trained)",
                                     timing.per_trial_s if timing else None))
    console.print(FLOPS_NOTE, style="dim")
    if timing is not None:
        console.print(f"estimated run time: {timing.run_s / 60:.1f} min ({timing.basis})", highlight=False)


def _estimate(plan: Any, candidates: list[Any]) -> Any:
    """Wall-time estimates from timed steps, when the data source can be sized cheaply."""
    from coatsearch.search.estimate import estimate
    from coatsearch.search.inputs import load_trial_data

    try:
        data = load_trial_data(plan.space.data, plan.base.image_size, plan.space.seed)
    except CoatsearchError:
        return None  # no data here (a cluster's path): candidates only
    # a searched train_size sets each candidate's own; a larger one than the data has is
    # refused when the trial loads its data
    sizes = [min(int(c.params.get("data.train_size") or len(data.train)), len(data.train)) for c in candidates]
    return estimate(plan, [c.spec for c in candidates], sizes, len(data.val), data.in_channels, data.num_classes)


@app.command()
@user_errors_exit_2
def resume(
    run_dir: str = typer.Argument(..., help="a run directory written by `coatsearch run`"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster: auto or ray://host:port"),
) -> None:
    """Finish an interrupted study from its run directory (the space saved there)."""
    from coatsearch.space import SpaceError, load_space

    saved = Path(run_dir) / "space.yaml"
    if not saved.exists():
        raise SpaceError(f"{run_dir}: not a run directory (no space.yaml)")
    _run_and_report(load_space(saved), Path(run_dir), address, source=str(saved))


def _run_and_report(space: Any, out: Path | None, address: str | None, source: str | None = None) -> Any:
    """Compile the space (every check before any trial), run it, print and report."""
    from coatsearch.report import build_report
    from coatsearch.report.tables import effects_rich_table, pareto_rich_table
    from coatsearch.runner import RunInterrupted, run_study
    from coatsearch.search import compile_space

    plan = compile_space(space, source=source)
    try:
        outcome = run_study(plan, out, address=address, console=err_console)
    except RunInterrupted as stop:
        report_path = build_report(stop.run_dir)
        console.print(f"results: {stop.run_dir / 'results.csv'}\nreport: {report_path}")
        raise fail(str(stop), 128 + stop.signum) from None
    if outcome.note:
        err_console.print(f"[yellow]warning:[/] {escape(outcome.note)}", highlight=False, soft_wrap=True)
    if outcome.already_done:
        console.print(f"study {space.study} is complete ({outcome.finished} finished trials); nothing to do.")
    table = pareto_rich_table(outcome.pareto_path, [(o.metric, o.direction) for o in space.objectives])
    if table is not None:
        console.print(table)
        console.print(FLOPS_NOTE, style="dim")
    report_path = build_report(outcome.run_dir)
    effects_path = outcome.run_dir / "effects.csv"
    if effects_path.exists() and effects_path.stat().st_size:
        import pandas as pd

        found = effects_rich_table(pd.read_csv(effects_path), "validation accuracy per searched value (95% interval)")
        if found is not None:
            console.print(found)
    console.print(f"results: {outcome.table_path}")
    console.print(f"report: {report_path}")
    best = _best_row(outcome.run_dir)
    if best is not None:
        console.print(f"best: trial {int(best['trial'])}, val acc {best['val_acc']:.2%}; to train it fully:\n"
                      f"  coatsearch best {outcome.run_dir} -o best.yaml && coatsearch train best.yaml --epochs 20",
                      highlight=False, soft_wrap=True)
    return outcome


def _best_row(run_dir: Path) -> Any:
    """The ranked trial with the best validation accuracy, or None."""
    from coatsearch.report import load_run

    ranked = load_run(run_dir).ranked.dropna(subset=["val_acc", "spec"])
    if ranked.empty:
        return None
    return ranked.sort_values(["val_acc", "trial"], ascending=[False, True]).iloc[0]


@app.command()
@user_errors_exit_2
def best(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR", help="a run directory (runs/<study>/)"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write the best trial's spec here"),
) -> None:
    """The best trial of a run (highest validation accuracy at full fidelity) as a spec."""
    from coatsearch.report import ReportError
    from coatsearch.spec import NetSpec, SpecError

    row = _best_row(Path(run_dir))
    if row is None:
        raise ReportError(f"{run_dir}: no complete trial at full fidelity yet")
    try:
        spec = NetSpec.from_dict(json.loads(row["spec"]))
    except SpecError as exc:
        raise ReportError(f"{Path(run_dir) / 'results.csv'}: trial {int(row['trial'])}, spec: {exc}") from None
    params = {k.removeprefix("param."): getattr(row[k], "item", lambda v=row[k]: v)()
              for k in row.index if k.startswith("param.") and row[k] == row[k]}
    console.print(f"trial {int(row['trial'])}: val acc {row['val_acc']:.2%}, {format_count(row['flops'])} FLOPs, "
                  f"{format_count(row['params'])} params; {params}", highlight=False, soft_wrap=True)
    if output is not None:
        write_output(output, spec.to_yaml())
        console.print(f"wrote {output}; train it with: coatsearch train {output} --epochs 20", highlight=False)
    else:
        typer.echo(spec.to_yaml(), nl=False)


@app.command()
@user_errors_exit_2
def study(
    study_dir: str = typer.Argument(..., metavar="STUDY_DIR", help="a study folder (studies/<name>/)"),
    out: str | None = typer.Option(None, "--out", help="run directory (default runs/<study>)"),
    overrides: list[str] = typer.Option([], "--set", help="override a space field: dotted.key=value"),
    regenerate: bool = typer.Option(False, "--regenerate",
                                    help="train nothing: rebuild the report, tables and README from results.csv"),
) -> None:
    """Run a study's space, then write its results.csv, report, tables and README sections.

    The outputs are written into STUDY_DIR, replacing the committed ones: run a smoke
    configuration (``--set``) on a copy of the folder.
    """
    from coatsearch import studies

    folder = Path(study_dir)
    if regenerate:
        if overrides or out:
            raise studies.SpaceError("--regenerate: trains nothing, so --set and --out do not apply")
        studies.regenerate(folder)
    else:
        space = studies.load_study(folder, overrides)
        outcome = _run_and_report(space, Path(out) if out else None, None, source=str(folder / "space.yaml"))
        studies.write_outputs(folder, outcome.run_dir)
    console.print(f"study written: {folder}/results.csv, report.html, effects.csv, comparisons.csv, summary.csv, "
                  "README.md", highlight=False, soft_wrap=True)


@app.command()
@user_errors_exit_2
def report(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR", help="a run directory (runs/<study>/)"),
    out: str | None = typer.Option(None, "-o", "--out", help="HTML file (default RUN_DIR/report.html)"),
    color_by: str | None = typer.Option(
        None, "--color-by", help="colour and group by this column or parameter (default: the first searched one)"),
    fmt: str = typer.Option("html", "--format", help="html (write the page), csv or markdown (print tables)"),
    which: str = typer.Option("all", "--table", help="with csv/markdown: pareto, top, failures or all"),
    top: int = typer.Option(10, "--top", min=1, help="how many trials the top table holds"),
    flop_band: str | None = typer.Option(None, "--flop-band", help="design-space band: 0.1 or 28M:36M"),
    static: list[str] = typer.Option([], "--static", help="also export each figure as png or svg (kaleido)"),
) -> None:
    """Write a study's HTML report (Pareto fronts, curves, design space, tables), or print its tables."""
    from coatsearch.report import build_report, load_run
    from coatsearch.report.data import parse_band
    from coatsearch.report.tables import render_text

    if fmt != "html":
        typer.echo(render_text(load_run(run_dir), fmt, which, top), nl=False)
        return
    path = build_report(run_dir, out, color_by=color_by, top=top, flop_band=parse_band(flop_band), static=static)
    console.print(f"report: {path}")


@app.command("convert")
@user_errors_exit_2
def convert_command(
    checkpoint: Path = typer.Argument(..., help="a torch file: a state_dict, or {'spec': ..., 'state_dict': ...}"),
    image_size: int = typer.Option(..., "--image-size", help="the resolution to fine-tune at, e.g. 384"),
    spec: str | None = typer.Option(None, "--spec", help="the network's spec (a preset or YAML file) for a bare state_dict"),
    output: Path = typer.Option(..., "-o", "--output", help="where to write {'spec', 'state_dict'} at the new size"),
) -> None:
    """Enlarge a checkpoint's relative-bias tables to a new resolution, for fine-tuning there."""
    import torch

    from coatsearch.nn import convert
    from coatsearch.presets import load_spec
    from coatsearch.spec import NetSpec, SpecError

    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise SpecError(f"{checkpoint}: not a readable torch checkpoint ({first_line(exc)})") from None
    if isinstance(saved, dict) and "state_dict" in saved:
        state, net = saved["state_dict"], NetSpec.from_dict(saved["spec"]) if spec is None else load_spec(spec)
    elif spec is not None:
        state, net = saved, load_spec(spec)
    else:
        raise SpecError(f"{checkpoint}: a bare state_dict needs --spec (the network it belongs to)")
    new_spec, new_state = convert(state, net, image_size)
    try:
        torch.save({"spec": new_spec.to_dict(), "state_dict": new_state}, output)
    except (OSError, RuntimeError) as exc:  # torch reports a missing folder as a RuntimeError
        raise CoatsearchError(f"-o {output}: cannot write ({first_line(exc)})") from None
    resized = sum(1 for k in new_state if k.endswith("rel_bias.table") and new_state[k].shape != state[k].shape)
    console.print(f"wrote {output}: {new_spec.name or 'network'} at {image_size}px, {resized} bias tables resized")


@app.command()
@user_errors_exit_2
def train(
    spec: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    data: str = typer.Option(
        "fashion-mnist", "--data",
        help="fashion-mnist, fashion-mnist-full[:PATH], idx:PATH, imagefolder:PATH, torchvision:NAME[:ROOT]",
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="default: the config's (5)"),
    steps: int | None = typer.Option(None, "--steps", help="N optimiser steps in all, in --epochs rounds (any data size)"),
    seed: int | None = typer.Option(None, "--seed", help="initialisation, batch order and validation split"),
    train_size: int | None = typer.Option(None, "--train-size", help="train on a stratified subset of N images"),
    augment: str = typer.Option("none", "--augment", help="none, light (crop + flip) or randaugment"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: torch's)"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, mps or xla"),
    config: Path | None = typer.Option(None, "--config", help="YAML file of trainer fields"),
    test: bool = typer.Option(True, "--test/--no-test", help="evaluate on the test split at the end"),
    as_json: bool = typer.Option(False, "--json", help="print the final metrics as one JSON object"),
) -> None:
    """Train one spec on a dataset and report per-epoch metrics and the test accuracy."""
    from coatsearch.data import load_data
    from coatsearch.presets import load_spec
    from coatsearch.train import TrainConfig, fit
    from coatsearch.train.device import resolve_device
    from coatsearch.train.progress import TrainProgress

    net = load_spec(spec)
    base = TrainConfig.from_yaml_file(config) if config else TrainConfig()
    overrides = dict(
        epochs=epochs, steps=steps, seed=seed, batch_size=batch_size, lr=lr, threads=threads, device=device
    )
    trainer = base.replace(
        eval_test=test, **{k: v for k, v in overrides.items() if v is not None}
    )
    resolve_device(trainer.device)  # an unavailable device is an input error: say so first
    bundle = load_data(
        data, image_size=net.image_size, train_size=train_size, seed=trainer.seed, augment=augment
    )
    with TrainProgress(err_console, trainer.epochs) as progress:
        result = fit(
            net, trainer, bundle, callback=progress.epoch_done, log=progress.log,
            on_batch=progress.batch_done,
        )
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        summary = f"{result.status}: {format_count(result.params)} params, {result.wall_time:.0f}s"
        if result.final:
            summary += f", val acc {result.final.val_acc:.2%}"
        if result.test_acc is not None:
            summary += f", test acc {result.test_acc:.2%}"
        console.print(summary + (f" ({result.reason})" if result.reason else ""), highlight=False)
    if result.status in (Status.DIVERGED, Status.FAILED):
        raise typer.Exit(1)



# --------------------------------------------------------------------------- data
data_app = typer.Typer(help="Prepared datasets: image folders decoded once into a shared cache.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


def _image_folder(source: str) -> Path:
    from coatsearch.data import DataError
    from coatsearch.data.listing import folder_of

    folder = folder_of(source)
    if folder is None:
        if ":" not in source and source != "fashion-mnist" and not Path(source).exists():
            raise DataError(f"{source}: no such data folder")
        raise DataError(f"{source}: not an image folder (only image folders are prepared; other sources load in memory)")
    return folder


@data_app.command("prepare")
@user_errors_exit_2
def data_prepare(
    source: str = typer.Argument(..., help="an image folder (ROOT/CLASS/IMAGE, or ROOT/train + ROOT/test)"),
    size: int = typer.Option(..., "--size", help="image side in pixels (the spec's image_size)"),
    workers: int | None = typer.Option(None, "--workers", help="decoding processes (default: every core)"),
    exact: bool = typer.Option(False, "--exact", help="decode JPEGs at full size (no draft mode): pixels as data.mode memory"),
    on_bad_file: str = typer.Option("fail", "--on-bad-file", help="fail or skip an unreadable image"),
    force: bool = typer.Option(False, "--force", help="rebuild even when the cache is up to date"),
) -> None:
    """Decode an image folder once into the cache that `coatsearch run` and `train` map."""
    import time

    from coatsearch.data.prepared import prepare

    start = time.perf_counter()
    prepared = prepare(_image_folder(source), size, workers=workers, draft=not exact,
                       on_bad_file=on_bad_file, force=force)
    elapsed = time.perf_counter() - start
    counts = ", ".join(f"{n['count']} {s}" for s, n in prepared.manifest["splits"].items())
    console.print(f"{prepared.path}: {counts} images at {size}px, {len(prepared.classes)} classes, "
                  f"{format_count(prepared.nbytes)}B ({elapsed:.1f}s)", highlight=False, soft_wrap=True)


@data_app.command("info")
@user_errors_exit_2
def data_info(
    source: str = typer.Argument(..., help="an image folder"),
) -> None:
    """What is cached for an image folder: one line per prepared size."""
    from coatsearch.data.prepared import cache_root, inspect_cache

    entries = inspect_cache(_image_folder(source))
    if not entries:
        console.print(f"{source}: nothing prepared under {cache_root() / 'prepared'}", highlight=False)
        return
    table = Table("size", "images", "classes", "mode", "bytes", "state", "path")
    for e in entries:
        if "size" not in e:
            table.add_row("?", "", "", "", "", e["state"], e["path"])
            continue
        images = " / ".join(f"{n} {s}" for s, n in e["images"].items())
        skipped = f" ({e['skipped']} skipped)" if e["skipped"] else ""
        table.add_row(f"{e['size']}px" + ("" if e["draft"] else " exact"), images + skipped, str(e["classes"]),
                      e["mode"], f"{format_count(e['bytes'])}B", e["state"], e["path"])
    console.print(table)


def main() -> None:  # pragma: no cover - console entry point
    app()


# Last, so that `python -m coatsearch.cli` sees every command (the data sub-app included).
if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
