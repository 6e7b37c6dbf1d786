"""`coatsearch data`: image folders decoded once into a shared cache, and what is cached."""

from __future__ import annotations

import typer

from coatsearch.commands.common import app, console, user_errors_exit_2

data_app = typer.Typer(help="Prepared datasets: image folders decoded once into a shared cache.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


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

    from coatsearch.data.listing import image_folder
    from coatsearch.data.prepared import prepare
    from coatsearch.report.terminal import prepared_summary

    start = time.perf_counter()
    prepared = prepare(image_folder(source), size, workers=workers, draft=not exact, on_bad_file=on_bad_file, force=force)
    console.print(prepared_summary(prepared, size, time.perf_counter() - start), highlight=False, soft_wrap=True)


@data_app.command("info")
@user_errors_exit_2
def data_info(
    source: str = typer.Argument(..., help="an image folder"),
) -> None:
    """What is cached for an image folder: one line per prepared size."""
    from coatsearch.data.cache_format import cache_root, inspect_cache
    from coatsearch.data.listing import image_folder
    from coatsearch.report.terminal import prepared_table

    entries = inspect_cache(image_folder(source))
    if not entries:
        console.print(f"{source}: nothing prepared under {cache_root() / 'prepared'}", highlight=False)
        return
    console.print(prepared_table(entries))
