"""Every trial's TensorBoard events, read back with TensorBoard's own event reader, and its
MLflow run (``tracking: {mlflow: URI}``), read back with MLflow's client."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from coatsearch.cli import app
from coatsearch.runner import run_study
from coatsearch.search import compile_space
from coatsearch.search.rows import Epoch, TrialRow
from coatsearch.search.tracking import trial_folder, write_trial_events
from coatsearch.space import load_space
from coatsearch.status import Status

TABLE = "tables/fmnist32"
#: A corner of the shipped table every point of which is trained: 8 networks, replayed.
SUBSPACE = ["params.depth_multiplier.choices=[1]", "params.scale.choices=[1]", "backend=replay", f"table={TABLE}",
            "sampler=random", "trials=3"]


def read_events(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, object]]:
    """A trial folder's scalars (tag -> [(step, value)]) and hyperparameters, as TensorBoard reads them."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventAccumulator(str(folder))
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    start = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = {}
    for name, value in start.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        hparams[name] = getattr(value, kind)
    return scalars, hparams


def test_a_trials_events_hold_its_epochs_and_hyperparameters(tmp_path):
    history = tuple(Epoch(epoch=i, val_acc=acc, train_loss_running=loss, lr=1e-3)
                    for i, (acc, loss) in enumerate([(0.25, 2.0), (0.5, float("nan"))], start=1))
    row = TrialRow(trial=7, status=Status.COMPLETE, sampled={"split": 3, "train.lr": 0.002}, fidelity=2,
                   max_fidelity=2, layout="C-C-T-T", blocks="1,3,3,1", channels="8,16,32,32", flops=1_200_000,
                   params=50_000, val_acc=0.5, history=history)
    folder = write_trial_events(tmp_path, row, ["val_acc", "flops"])
    assert folder == trial_folder(tmp_path, 7) == tmp_path / "tensorboard" / "trial-0007"
    scalars, hparams = read_events(folder)
    assert scalars["val_acc"] == [(1, 0.25), (2, 0.5)]
    assert scalars["train_loss_running"] == [(1, 2.0)]  # a non-finite value is left out
    assert scalars["final/val_acc"] == [(2, 0.5)] and scalars["final/flops"] == [(2, 1_200_000)]
    assert hparams["param.split"] == 3 and hparams["param.train.lr"] == pytest.approx(0.002)
    assert hparams["layout"] == "C-C-T-T" and hparams["flops"] == 1_200_000 and hparams["status"] == "complete"
    # written again (a row rewritten), the folder holds one file, not two
    write_trial_events(tmp_path, row, ["val_acc"])
    assert len(list(folder.iterdir())) == 1


def test_a_row_with_nothing_trained_writes_nothing(tmp_path):
    row = TrialRow(trial=1, status=Status.INFEASIBLE, sampled={"split": 9}, reason="no network")
    assert write_trial_events(tmp_path, row, ["val_acc"]) is None
    assert not (tmp_path / "tensorboard").exists()


def _replay(out: Path, uri: str) -> pd.DataFrame:
    """A replayed run of three trials logging to MLflow at ``uri``; its results table."""
    space = load_space(f"{TABLE}/space.yaml", [*SUBSPACE, f"tracking.mlflow={uri}"])
    run_study(compile_space(space, check_data=False), out, console=Console(file=io.StringIO()))
    return pd.read_csv(out / "results.csv")


@pytest.mark.parametrize("store", ["folder", pytest.param("sqlite", marks=pytest.mark.slow)])
def test_each_trial_is_one_mlflow_run_with_its_epochs_and_values(tmp_path, monkeypatch, store):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    if store == "folder":  # MLflow's folder store: quick to open, refused unless allowed
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = str(tmp_path / "mlruns") if store == "folder" else f"sqlite:///{tmp_path / 'mlflow.db'}"  # a new SQLite file takes seconds
    table = _replay(tmp_path / "run", uri)
    client = MlflowClient(tracking_uri=uri if store == "sqlite" else (tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("table-fmnist32")  # the study's name
    assert experiment is not None
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    finished = table[table["status"].isin(["complete", "stopped", "diverged", "failed"])]
    assert len(finished) == 3 and set(runs) == {f"trial-{n:04d}" for n in finished["trial"]}
    for _, row in finished.iterrows():
        run = runs[f"trial-{row['trial']:04d}"]
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, row["fidelity"] + 1))
        assert sorted(history, key=lambda m: m.step)[-1].value == pytest.approx(row["val_acc"])
        assert run.data.params["param.layout"] == row["param.layout"]
        assert run.data.params["param.split"] == str(row["param.split"])
        assert run.data.params["flops"] == str(row["flops"]) and run.data.params["channels"] == row["channels"]
        assert run.data.metrics["final/val_acc"] == pytest.approx(row["val_acc"])
        assert run.data.metrics["fidelity"] == row["fidelity"]
        assert run.data.tags["status"] == row["status"] and run.data.tags["backend"] == "replay"
        assert run.info.status == "FINISHED"


@pytest.mark.parametrize("fault", ["cannot-open", "disk-full"])
def test_a_store_that_fails_loses_no_trial(tmp_path, monkeypatch, fault):
    pytest.importorskip("mlflow")
    if fault == "cannot-open":
        (tmp_path / "a-file").write_text("")
        uri = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"  # no folder to write in
    else:  # the store opens, then every write fails as on a full disk
        from mlflow.tracking import MlflowClient

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        monkeypatch.setattr(MlflowClient, "log_batch", full)
        uri = str(tmp_path / "mlruns")
    table = _replay(tmp_path / "run", uri)
    assert (table["status"] == "complete").sum() == 3
    warned = [line for line in (tmp_path / "run" / "run.log").read_text().splitlines() if "MLflow" in line]
    assert len(warned) == 1 and "warning: MLflow runs not logged" in warned[0], warned


def test_a_relative_mlflow_path_is_taken_from_the_space_files_folder(tmp_path):
    (tmp_path / "spaces").mkdir()
    path = tmp_path / "spaces" / "s.yaml"
    for written, loaded in (("../runs/mlflow.db", str(tmp_path / "runs" / "mlflow.db")),
                            ("sqlite:///mlflow.db", f"sqlite:///{tmp_path / 'spaces' / 'mlflow.db'}"),
                            ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db"),
                            ("http://localhost:5000", "http://localhost:5000")):
        path.write_text(f"study: s\nbase: coatnet-0\ntrials: 1\ntracking: {{mlflow: '{written}'}}\n")
        space = load_space(path)
        assert space.tracking is not None and space.tracking.mlflow == loaded


def test_mlflow_asked_for_but_not_installed_is_refused_before_any_trial(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails, as where it is not installed
    sets = [arg for s in [*SUBSPACE, f"tracking.mlflow=sqlite:///{tmp_path / 'm.db'}"] for arg in ("--set", s)]
    for extra in (["--dry-run"], ["--out", str(tmp_path / "run")]):
        result = CliRunner().invoke(app, ["run", f"{TABLE}/space.yaml", *sets, *extra])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "tracking.mlflow" in lines[0] and "coatsearch[mlflow]" in lines[0], result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "m.db").exists()


def test_a_folder_store_is_refused_unless_mlflow_is_told_to_allow_it(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    sets = [arg for s in [*SUBSPACE, f"tracking.mlflow={tmp_path / 'mlruns'}"] for arg in ("--set", s)]
    result = CliRunner().invoke(app, ["run", f"{TABLE}/space.yaml", *sets, "--dry-run"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "tracking.mlflow" in lines[0] and "sqlite:///" in lines[0], result.output


def test_tracking_may_be_added_to_a_run_directory(tmp_path):
    from coatsearch.search.saved_space import saved_space_note

    space = load_space(f"{TABLE}/space.yaml", SUBSPACE)
    run_study(compile_space(space, check_data=False), tmp_path / "run", console=Console(file=io.StringIO()))
    logged = load_space(f"{TABLE}/space.yaml", [*SUBSPACE, f"tracking.mlflow=sqlite:///{tmp_path / 'm.db'}"])
    assert saved_space_note(compile_space(logged, check_data=False), tmp_path / "run") == (True, "")
