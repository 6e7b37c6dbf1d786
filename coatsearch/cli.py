"""The ``coatsearch`` command line.

Every command turns the library's own errors (bad spec, bad space, bad data) into one
line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from coatsearch.data.errors import DataError
from coatsearch.spec import SpecError
from coatsearch.train.config import TrainConfigError

app = typer.Typer(
    help="Search and scale CoAtNet-family vision networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

#: Errors that mean "the user's input is wrong": reported in one line, exit code 2.
USER_ERRORS: tuple[type[Exception], ...] = (SpecError, DataError, TrainConfigError)

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


def _fmt_count(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


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
def train(
    spec: str = typer.Argument(..., help="a preset name or a YAML spec file"),
    data: str = typer.Option(
        "fashion-mnist", "--data",
        help="fashion-mnist, fashion-mnist-full[:PATH], idx:PATH, imagefolder:PATH, torchvision:NAME[:ROOT]",
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="default: the config's (5)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="initialisation, batch order and validation split"),
    train_size: Optional[int] = typer.Option(None, "--train-size", help="train on a stratified subset of N images"),
    augment: str = typer.Option("none", "--augment", help="none, light (crop + flip) or randaugment"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default: torch's)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, mps or xla"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of trainer fields"),
    test: bool = typer.Option(True, "--test/--no-test", help="evaluate on the test split at the end"),
    as_json: bool = typer.Option(False, "--json", help="print the final metrics as one JSON object"),
) -> None:
    """Train one spec on a dataset and report per-epoch metrics and the test accuracy."""
    from coatsearch.data import load_data
    from coatsearch.spec import load_spec
    from coatsearch.train import TrainConfig, fit
    from coatsearch.train.device import resolve_device
    from coatsearch.train.progress import TrainProgress

    net = load_spec(spec)
    base = TrainConfig.from_yaml_file(config) if config else TrainConfig()
    overrides = dict(
        epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, threads=threads, device=device
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
        summary = f"{result.status}: {result.params / 1e6:.2f}M params, {result.wall_time:.0f}s"
        if result.final:
            summary += f", val acc {result.final.val_acc:.2%}"
        if result.test_acc is not None:
            summary += f", test acc {result.test_acc:.2%}"
        console.print(summary + (f" ({result.reason})" if result.reason else ""), highlight=False)
    if result.status in ("diverged", "failed"):
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
