"""The ``coatsearch`` command line.

Every command turns the library's own errors (bad spec, bad space, bad data) into one
line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from coatsearch.budget import BudgetError
from coatsearch.flops import format_count
from coatsearch.spec import SpecError

app = typer.Typer(
    help="Search and scale CoAtNet-family vision networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

#: Errors that mean "the user's input is wrong": reported in one line, exit code 2.
USER_ERRORS: tuple[type[Exception], ...] = (SpecError, BudgetError)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors_exit_2(func: F) -> F:
    """Report the library's input errors as ``error: ...`` and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@user_errors_exit_2
def build(
    spec: str = typer.Argument(..., help="a preset name (see `coatsearch presets`) or a YAML spec file"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="count at this size"),
) -> None:
    """Print the network a spec describes, stage by stage, with params and FLOPs."""
    from coatsearch.flops import count
    from coatsearch.spec import load_spec

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
    console.print("FLOPs are multiply-adds counted once (fvcore's convention).", style="dim")


@app.command()
@user_errors_exit_2
def presets(
    image_size: Optional[int] = typer.Option(None, "--image-size", help="count at this size"),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="show FLOPs"),
) -> None:
    """List the built-in presets with their parameters and FLOPs (analytic counts)."""
    from coatsearch.flops import count_analytic
    from coatsearch.presets import PAPER_FLOPS, PAPER_PARAMS, PRESETS, preset

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
            format_count(PAPER_PARAMS[name]) if name in PAPER_PARAMS else "-",
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
    image_size: Optional[int] = typer.Option(None, "--image-size", help="count at this size"),
    by_op: bool = typer.Option(False, "--by-op", help="also break FLOPs down by operator"),
    traced: bool = typer.Option(True, "--traced/--no-traced", help="also trace the model with fvcore"),
) -> None:
    """Count FLOPs, params and activations by the analytic and the traced route, side by side."""
    import time

    from coatsearch.flops import count
    from coatsearch.spec import load_spec

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
    console.print("FLOPs are multiply-adds counted once (fvcore's convention).", style="dim")


def _pair(analytic: int, traced: int) -> tuple[str, str]:
    return format_count(traced), _relative(traced, analytic)


@app.command("match")
@user_errors_exit_2
def match_command(
    spec: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    flops: Optional[str] = typer.Option(None, "--flops", help="FLOP target, e.g. 4.2G or 30M"),
    params: Optional[str] = typer.Option(None, "--params", help="parameter target, e.g. 25M"),
    by: str = typer.Option("width", "--by", help="width, depth or both"),
    tolerance: float = typer.Option(0.01, "--tolerance", help="accepted relative error"),
    strict: bool = typer.Option(False, "--strict", help="fail (exit 2) when the target is missed"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="match at this image size"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="write the matched spec here"),
) -> None:
    """Scale a spec's widths or depths to a FLOP or parameter budget."""
    from coatsearch.budget import match_budget, parse_count
    from coatsearch.flops import count_analytic
    from coatsearch.spec import load_spec

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
        output.write_text(result.spec.to_yaml())
        console.print(f"wrote {output}", style="dim")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
