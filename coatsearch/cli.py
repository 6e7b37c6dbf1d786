"""The ``coatsearch`` command line (also ``python -m coatsearch``): the search, study and
report commands here; the network, data, training (`best`, `train`) and `export` commands
in `coatsearch.commands`.

Every command turns the library's own errors (bad spec, bad space, bad data) into one
line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from coatsearch.commands import compare as _compare  # noqa: F401  (registers `coatsearch compare`)
from coatsearch.commands import data as _data  # noqa: F401  (registers `coatsearch data`)
from coatsearch.commands import export as _export  # noqa: F401  (registers `coatsearch export`)
from coatsearch.commands import latency as _latency  # noqa: F401  (registers `coatsearch latency`)
from coatsearch.commands import nets as _nets  # noqa: F401  (registers the network commands)
from coatsearch.commands import rank as _rank  # noqa: F401  (registers `coatsearch rank`)
from coatsearch.commands import training as _training  # noqa: F401  (registers `best` and `train`)
from coatsearch.commands.common import app, console, err_console, fail, user_errors_exit_2
from coatsearch.units import FLOPS_NOTE

__all__ = ["app", "main"]


@app.command()
@user_errors_exit_2
def run(
    space_file: str = typer.Argument(..., metavar="SPACE.yaml", help="a search space (see spaces/)"),
    out: str | None = typer.Option(None, "--out", help="run directory (default runs/<study>)"),
    backend: str | None = typer.Option(None, "--backend", help="optuna, ray or replay (overrides the space)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster: auto, its head's host:port, or ray://host:port"),
    table: str | None = typer.Option(None, "--table", help="replay over this table of trained networks (a folder or name)"),
    overrides: list[str] = typer.Option([], "--set", help="override a space field: dotted.key=value"),
    warm_start: str | None = typer.Option(None, "--warm-start", metavar="RUN_DIR",
                                          help="hand an earlier run's finished trials to the sampler first"),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="list every candidate (network, FLOPs, params) and an estimated time, without training"),
    as_json: bool = typer.Option(False, "--json", help="with --dry-run: print the candidates as JSON"),
) -> None:
    """Run (or resume) a search; write runs/<study>/ with the results table and Pareto front."""
    from coatsearch.space import SpaceError, load_space

    if warm_start is not None:
        overrides = [*overrides, f"warm_start={json.dumps(str(Path(warm_start).absolute()))}"]
    if dry_run:
        _dry_run(load_space(space_file, overrides), space_file, as_json)
        return
    if backend is not None:
        overrides = [*overrides, f"backend={backend}"]
    if address is not None:
        if backend not in (None, "ray"):
            raise SpaceError(f"--address: a Ray cluster address needs --backend ray, not {backend}")
        overrides = [*overrides, "backend=ray"]
    if table is not None:
        if backend not in (None, "replay"):
            raise SpaceError(f"--table: a table is replayed by --backend replay, not {backend}")
        overrides = [*overrides, f"table={table}", "backend=replay"]
    _run_and_report(load_space(space_file, overrides), Path(out) if out else None, address, source=space_file)


def _dry_run(space: Any, source: str, as_json: bool) -> None:
    """The candidates and their estimated time, after the checks a run makes before training
    (the data read too; a storage server is not reached). Data that cannot be read here
    still lets the candidates be listed, then stops as the run would: one line, exit 2."""
    from coatsearch.report.terminal import preview_json, preview_rich_table
    from coatsearch.search import compile_space
    from coatsearch.search.estimate import estimate_candidates
    from coatsearch.search.plan import check_data_source
    from coatsearch.search.preview import preview
    from coatsearch.space import SpaceError
    from coatsearch.warm_start import warm_rows

    plan = compile_space(space, source=source, check_data=False, check_storage=False)
    warm_rows(plan)  # an earlier run whose trials cannot be shared stops a run: here too
    candidates = preview(plan)
    unreadable = None
    try:
        check_data_source(plan.space.data, plan.base.image_size, plan.space.seed)
    except SpaceError as exc:
        unreadable = exc
    timing = estimate_candidates(plan, candidates) if unreadable is None else None
    if as_json:
        print(json.dumps(preview_json(candidates, timing), default=str))
    else:
        console.print(preview_rich_table(candidates, f"{plan.study}: {len(candidates)} candidates (dry run, nothing trained)",
                                         timing.per_trial_s if timing else None))
        console.print(FLOPS_NOTE, style="dim")
        if timing is not None:
            console.print(f"estimated run time: {timing.run_s / 60:.1f} min ({timing.basis})", highlight=False)
            if timing.scheduled_s is not None:
                console.print(f"with {plan.space.early_stopping.kind}: about {timing.scheduled_s / 60:.1f} min "
                              f"({timing.scheduled_basis})", highlight=False)
    if unreadable is not None:
        raise SpaceError(f"{source}: {unreadable}; a run would stop here (no time estimated)")


@app.command()
@user_errors_exit_2
def resume(
    run_dir: str = typer.Argument(..., help="a run directory written by `coatsearch run`"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster: auto, its head's host:port, or ray://host:port"),
) -> None:
    """Finish an interrupted study from its run directory (the space saved there)."""
    from coatsearch.space import SpaceError, load_space

    saved = Path(run_dir) / "space.yaml"
    if not saved.exists():
        raise SpaceError(f"{run_dir}: not a run directory (no space.yaml)")
    _run_and_report(load_space(saved, relative_data=False), Path(run_dir), address, source=str(saved))


def _run_and_report(space: Any, out: Path | None, address: str | None, source: str | None = None) -> Any:
    """Compile the space (every check before any trial), run it, print and report."""
    from coatsearch.report import Run, build_report, load_run
    from coatsearch.report.confounds import shape_notes
    from coatsearch.report.data import study_of
    from coatsearch.report.terminal import best_line, outcome_tables
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
    # the run as written, with its analysis: reported and printed without reading it back
    run = (load_run(outcome.run_dir) if outcome.table is None
           else Run.of(outcome.run_dir, study_of(plan.space.to_dict(), outcome.run_dir), outcome.table, outcome.analysis))
    for part in outcome_tables(run.analysis):
        console.print(part)
    for note in shape_notes(run).values():  # an effect that is not its parameter's alone
        console.print(note, style="yellow", highlight=False, soft_wrap=True)
    console.print(f"results: {outcome.table_path}\nreport: {build_report(run)}")
    if space.backend == "replay":
        console.print(_replay_line(run.table, space.concurrency), highlight=False)
    if run.analysis.best is not None:
        console.print(best_line(run), highlight=False, soft_wrap=True)
    return outcome


def _replay_line(table: Any, workers: int) -> str:
    """What a replayed run would have cost: its trials' simulated compute and its span on
    the simulated clock. Infeasible points are counted apart: they train nothing and are
    not among the space's ``trials``."""
    from coatsearch.results import own_trials
    from coatsearch.status import Status

    table = own_trials(table)  # an earlier run's trials (warm_start) cost this run nothing
    infeasible = int((table["status"] == str(Status.INFEASIBLE)).sum())
    compute, span = float(table["wall_time"].fillna(0).sum()), float(table["clock_end"].max() or 0)
    skipped = f" (and {infeasible} infeasible point(s), not trained)" if infeasible else ""
    return (f"replayed: {len(table) - infeasible} trials{skipped} would have taken {compute / 3600:.2f} CPU-hours of "
            f"compute, {span / 3600:.2f} hours on {workers} worker(s) (recorded CPU seconds of every epoch; nothing "
            "trained)")


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
    run_dirs: list[str] = typer.Argument(..., metavar="RUN_DIR", help="a run directory (runs/<study>/)"),
    out: str | None = typer.Option(None, "-o", "--out", help="HTML file (default RUN_DIR/report.html)"),
    color_by: str | None = typer.Option(
        None, "--color-by", help="colour and group by this column or parameter (default: the first searched one)"),
    fmt: str = typer.Option("html", "--format", help="html (write the page), csv or markdown (print tables)"),
    which: str = typer.Option("all", "--table", help="with csv/markdown: pareto, top, failures or all"),
    top: int = typer.Option(10, "--top", min=1, help="how many trials the top table holds"),
    flop_band: str | None = typer.Option(None, "--flop-band", help="design-space band: 0.1 or 28M:36M"),
    static: list[str] = typer.Option([], "--static", help="also export each figure as png or svg (kaleido)"),
) -> None:
    """Write a run's HTML report (Pareto fronts, curves, design space, tables), or print its tables."""
    from coatsearch.report import build_report, load_run
    from coatsearch.report.data import parse_band
    from coatsearch.report.tables import render_text

    if len(run_dirs) != 1:  # several runs are compared, not reported one over another
        raise fail(f"report: one run directory at a time, got {len(run_dirs)}; to compare runs: "
                   f"coatsearch compare {' '.join(run_dirs)}")
    run_dir = run_dirs[0]
    if fmt != "html":
        typer.echo(render_text(load_run(run_dir), fmt, which, top), nl=False)
        return
    path = build_report(run_dir, out, color_by=color_by, top=top, flop_band=parse_band(flop_band), static=static)
    console.print(f"report: {path}")


def main() -> None:  # pragma: no cover - console entry point
    app()


# Last, so that `python -m coatsearch.cli` sees every command (the data sub-app included).
if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
