"""The ``coatsearch`` command line.

Every command turns the library's own errors (bad spec, bad space, bad data) into one
line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from coatsearch.report.data import ReportError
from coatsearch.space import SpaceError
from coatsearch.spec import SpecError
from coatsearch.units import format_count as _fmt_count

app = typer.Typer(
    help="Search and scale CoAtNet-family vision networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

#: Errors that mean "the user's input is wrong": reported in one line, exit code 2.
USER_ERRORS: tuple[type[Exception], ...] = (SpecError, SpaceError, ReportError)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors_exit_2(func: F) -> F:
    """Report the library's input errors as ``error: ...`` and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
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
        _fmt_count(counts.per_stage_params["stem"]), _fmt_count(counts.per_stage["stem"]),
    )
    for name, stage, side in zip(net.stage_names, net.stages, net.resolutions(counts.image_size)):
        table.add_row(
            name, stage.kind, f"{side}x{side}", str(stage.blocks), str(stage.channels),
            str(stage.heads) if stage.kind == "T" else "-",
            _fmt_count(counts.per_stage_params[name]), _fmt_count(counts.per_stage[name]),
        )
    table.add_row(
        "head", "pool+fc", "1x1", "-", str(net.num_classes), "-",
        _fmt_count(counts.per_stage_params["head"]), _fmt_count(counts.per_stage["head"]),
    )
    table.add_section()
    table.add_row("total", "", "", "", "", "", _fmt_count(counts.params), _fmt_count(counts.flops))
    console.print(table)
    console.print("FLOPs are multiply-adds counted once (fvcore's convention).", style="dim")


@app.command()
@user_errors_exit_2
def presets(
    image_size: Optional[int] = typer.Option(None, "--image-size", help="count at this size"),
    flops: bool = typer.Option(
        True, "--flops/--no-flops", help="trace FLOPs (allocates each model; big ones take long)"
    ),
) -> None:
    """List the built-in presets with their parameters and FLOPs."""
    from coatsearch.flops import count, count_params
    from coatsearch.presets import PAPER_FLOPS, PAPER_PARAMS, PRESETS, preset

    table = Table(title="presets (FLOPs: multiply-adds)")
    for column in ("preset", "layout", "blocks", "channels", "params", "paper", "FLOPs", "paper "):
        table.add_column(column, justify="left" if column in ("preset", "layout") else "right")
    for name in PRESETS:
        net = preset(name)
        if image_size is not None:
            net = net.replace(image_size=image_size)
        params = count_params(net)
        # Tracing allocates the model: skip FLOPs for the billion-parameter presets.
        traced = flops and params < 400e6
        table.add_row(
            name,
            net.layout,
            ",".join(str(s.blocks) for s in net.stages),
            ",".join(str(s.channels) for s in net.stages),
            _fmt_count(params),
            _fmt_count(PAPER_PARAMS[name]) if name in PAPER_PARAMS else "-",
            _fmt_count(count(net).flops) if traced else "-",
            _fmt_count(PAPER_FLOPS[name]) if name in PAPER_FLOPS and image_size in (None, 224) else "-",
        )
    console.print(table)


@app.command()
@user_errors_exit_2
def run(
    space_file: str = typer.Argument(..., metavar="SPACE.yaml", help="a search space (see spaces/)"),
    out: Optional[str] = typer.Option(None, "--out", help="run directory (default runs/<study>)"),
    backend: Optional[str] = typer.Option(None, "--backend", help="optuna or ray (overrides the space)"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto or ray://host:port"),
    overrides: list[str] = typer.Option([], "--set", help="override a space field: dotted.key=value"),
) -> None:
    """Run (or resume) a search; write runs/<study>/ with the results table and Pareto front."""
    from pathlib import Path

    from coatsearch.space import load_space

    if backend is not None:
        overrides = [*overrides, f"backend={backend}"]
    if address is not None:
        overrides = [*overrides, "backend=ray"] if backend is None else overrides
    _run_and_report(load_space(space_file, overrides), Path(out) if out else None, address)


@app.command()
@user_errors_exit_2
def resume(
    run_dir: str = typer.Argument(..., help="a run directory written by `coatsearch run`"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto or ray://host:port"),
) -> None:
    """Finish an interrupted study from its run directory (the space saved there)."""
    from pathlib import Path

    from coatsearch.space import load_space

    saved = Path(run_dir) / "space.yaml"
    if not saved.exists():
        raise SpaceError(f"{run_dir}: not a run directory (no space.yaml)")
    _run_and_report(load_space(saved), Path(run_dir), address)


def _run_and_report(space: Any, out: Any, address: Optional[str]) -> None:
    from coatsearch.search import run_study

    outcome = run_study(space, out, address=address, console=err_console)
    if outcome.already_done:
        console.print(f"study {space.study} is complete ({outcome.finished} finished trials); nothing to do.")
    _print_pareto(space, outcome.pareto_path)
    console.print(f"results: {outcome.table_path}")
    from coatsearch.report import build_report

    console.print(f"report: {build_report(outcome.run_dir)}")


@app.command()
@user_errors_exit_2
def report(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR", help="a run directory (runs/<study>/)"),
    out: Optional[str] = typer.Option(None, "-o", "--out", help="HTML file (default RUN_DIR/report.html)"),
    color_by: str = typer.Option("layout", "--color-by", help="colour and group by this column or parameter"),
    fmt: str = typer.Option("html", "--format", help="html (write the page), csv or markdown (print tables)"),
    which: str = typer.Option("all", "--table", help="with csv/markdown: pareto, top, failures or all"),
    top: int = typer.Option(10, "--top", min=1, help="how many trials the top table holds"),
    flop_band: Optional[str] = typer.Option(None, "--flop-band", help="design-space band: 0.1 or 28M:36M"),
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


def _print_pareto(space: Any, pareto_path: Any) -> None:
    import pandas as pd

    if not pareto_path.exists() or pareto_path.stat().st_size == 0:
        return
    try:
        front = pd.read_csv(pareto_path)
    except pd.errors.EmptyDataError:
        return
    table = Table(title=f"Pareto front: {', '.join(f'{o.metric} ({o.direction})' for o in space.objectives)}")
    columns = ["trial", "layout", "blocks", "channels", "flops", "params", "val_acc", "gap", "fidelity"]
    columns += [c for c in front.columns if c.startswith("param.")]
    for column in columns:
        table.add_column(column)
    for _, row in front.iterrows():
        cells = []
        for column in columns:
            value = row.get(column)
            if column in ("flops", "params") and value == value:
                cells.append(_fmt_count(float(value)))
            elif isinstance(value, float):
                cells.append(f"{value:.4f}" if value == value else "-")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    console.print(table)
    console.print("FLOPs are multiply-adds counted once (fvcore's convention).", style="dim")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
