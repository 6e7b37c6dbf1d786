"""Commands that hand a search's result on to training: `best` (a run's best configuration
as a training file) and `train` (a training file or a spec, with checkpoints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from coatsearch.commands.common import app, console, err_console, user_errors_exit_2, write_output
from coatsearch.errors import CoatsearchError
from coatsearch.status import Status


def _writable_file(path: Path, flag: str = "-o") -> Path:
    if path.is_dir():
        raise CoatsearchError(f"{flag} {path}: is a folder, expected a file path")
    return path


@app.command()
@user_errors_exit_2
def best(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR", help="a run directory (runs/<study>/)"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write the training file here"),
) -> None:
    """The run's best configuration (its objectives, averaged over seeds) as a training file:
    spec, data and split, trainer settings; `coatsearch train FILE` trains it again."""
    from coatsearch.handoff import best_training_file
    from coatsearch.report.hand_off import train_command

    if output is not None:
        _writable_file(output)
    made, found = best_training_file(run_dir)
    if output is not None:
        write_output(output, made.to_yaml())
    means = ", ".join(f"{m} {v:.4g}" for m, v in found.means.items())
    err_console.print(f"best configuration {found.values or '(one)'}: mean {means} over {found.seeds} seed(s); "
                      f"its trial {made.origin['trial']} (seed {made.train['seed']}) val acc "
                      f"{made.origin['trial_val_acc']:.2%}", highlight=False, soft_wrap=True)
    if output is None:
        typer.echo(made.to_yaml(), nl=False)
        return
    console.print(f"wrote {output}; train it with: {train_command(str(output), made.train)} -o runs/best-trained",
                  highlight=False, soft_wrap=True)


@app.command()
@user_errors_exit_2
def train(
    spec: str = typer.Argument(..., help="a training file (`coatsearch best RUN -o FILE`), a preset or a YAML spec"),
    data: str | None = typer.Option(
        None, "--data",
        help="fashion-mnist, fashion-mnist-full[:PATH], idx:PATH, imagefolder:PATH, torchvision:NAME[:ROOT] "
             "(default: the training file's, else the built-in fashion-mnist)",
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="default: the file's or the config's (5)"),
    steps: int | None = typer.Option(None, "--steps", help="N optimiser steps in all, in --epochs rounds (any data size)"),
    seed: int | None = typer.Option(None, "--seed", help="initialisation and batch order (and a spec's validation split)"),
    train_size: int | None = typer.Option(None, "--train-size", help="train on a stratified subset of N images"),
    augment: str | None = typer.Option(None, "--augment", help="none, light (crop + flip) or randaugment"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: the file's, else torch's)"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, mps or xla"),
    config: Path | None = typer.Option(None, "--config", help="YAML file of trainer fields"),
    test: bool = typer.Option(True, "--test/--no-test", help="evaluate on the test split at the end"),
    out: Path | None = typer.Option(None, "-o", "--out", help="checkpoint folder: last.pt and best.pt, resumed from"),
    init_from: Path | None = typer.Option(None, "--init-from", help="start from these weights (a checkpoint or timm file)"),
    as_json: bool = typer.Option(False, "--json", help="print the final metrics as one JSON object"),
) -> None:
    """Train a training file or a spec; per-epoch metrics and the test accuracy; with -o,
    checkpoints every epoch (run the same command again to resume)."""
    from coatsearch.presets import load_spec
    from coatsearch.report.terminal import fit_summary
    from coatsearch.space import DataSettings
    from coatsearch.train import TrainConfig, fit
    from coatsearch.train.checkpoints import Checkpoints
    from coatsearch.train.device import resolve_device
    from coatsearch.train.progress import TrainProgress
    from coatsearch.trainfile import TrainingFile, read_training_file

    overrides: dict[str, Any] = dict(epochs=epochs, steps=steps, seed=seed, batch_size=batch_size, lr=lr,
                                     threads=threads, device=device)
    given = {k: v for k, v in overrides.items() if v is not None}
    found = read_training_file(spec)
    if found is None:
        net = load_spec(spec)
        base = TrainConfig.from_yaml_file(config) if config else TrainConfig()
        trainer = base.replace(eval_test=test, **given)
        if data is None:
            err_console.print(f"{spec} is a spec, with no data: training on the built-in fashion-mnist subset "
                              "(--data to choose; `coatsearch best RUN -o FILE` keeps a search's data)",
                              style="dim", highlight=False, soft_wrap=True)
        plan = TrainingFile(spec=net, data=DataSettings(source=data or "fashion-mnist", train_size=train_size,
                                                        augment=augment or "none"),  # type: ignore[arg-type]
                            data_seed=trainer.seed, train=trainer.to_dict())
    else:
        fields = dict(found.train)
        if config:
            fields.update(TrainConfig.from_yaml_file(config).model_dump(exclude_unset=True))
        trainer = TrainConfig.from_dict({**fields, **given, "eval_test": test})
        changes = {k: v for k, v in (("train_size", train_size), ("augment", augment)) if v is not None}
        plan = found.model_copy(update={"data": found.data.model_copy(update=changes), "train": trainer.to_dict()})
    resolve_device(trainer.device)  # an unavailable device is an input error: say so first
    if out is not None:
        _writable_folder(out)
    init = _init_weights(init_from, plan.spec) if init_from is not None else None
    bundle = plan.load_data(data)
    checkpoints = None
    if out is not None:
        checkpoints = Checkpoints(out, plan.settings(), plan.to_yaml())
    with TrainProgress(err_console, trainer.epochs) as progress:
        result = fit(plan.spec, trainer, bundle, callback=progress.epoch_done, log=progress.log,
                     on_batch=progress.batch_done, checkpoints=checkpoints, init_weights=init)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        console.print(fit_summary(result), highlight=False)
        if out is not None:
            console.print(f"checkpoints: {out / 'last.pt'}, {out / 'best.pt'}", highlight=False)
    if result.status in (Status.DIVERGED, Status.FAILED):
        raise typer.Exit(1)


def _writable_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise CoatsearchError(f"-o {path}: is a file, expected a folder for the checkpoints")


def _init_weights(path: Path, spec: Any) -> Any:
    """The weights ``--init-from`` names: a coatsearch checkpoint's, or a timm CoAtNet
    file's mapped onto ``spec`` (`coatsearch.export.timm_weights`)."""
    from coatsearch.export.timm_weights import read_init_weights

    return read_init_weights(path, spec)
