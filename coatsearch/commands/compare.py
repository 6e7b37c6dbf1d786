"""`coatsearch compare RUN_A RUN_B ...`: runs side by side in one HTML page, their fronts
overlaid and their common configurations in one table (`coatsearch.report.compare`)."""

from __future__ import annotations

import typer

from coatsearch.commands.common import app, console, user_errors_exit_2


@app.command("compare")
@user_errors_exit_2
def compare_command(
    run_dirs: list[str] = typer.Argument(..., metavar="RUN_DIR...", help="two or more run directories"),
    out: str = typer.Option("compare.html", "-o", "--out", help="the HTML file to write"),
) -> None:
    """Compare runs: their Pareto fronts overlaid (a colour per run), the configurations two
    or more of them trained side by side, and each run's settings, in one HTML page."""
    from coatsearch.report.compare import build_compare

    console.print(f"comparison: {build_compare(run_dirs, out)}")
