"""The hand-off: `best` picks the configuration best by the run's objectives over seeds and
writes a training file; `train FILE` reproduces its trial; a plain spec says it trains on
the built-in data; checkpoints from `train -o`; bad input is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from coatsearch.analysis.ranking import best_configuration
from coatsearch.checkpoint import read_checkpoint
from coatsearch.cli import app
from coatsearch.handoff import best_training_file
from coatsearch.results import read_table
from coatsearch.runner import run_study
from coatsearch.search import compile_space
from coatsearch.space import load_space
from coatsearch.trainfile import TrainingFile, read_training_file
from tests.conftest import TINY_SPACE, tiny_spec


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _table(rows: list[tuple[int, int, int, float, int]]) -> pd.DataFrame:
    return pd.DataFrame([{"trial": t, "param.split": split, "param.seed": seed, "val_acc": acc, "flops": flops,
                          "spec": "{}"} for t, split, seed, acc, flops in rows])


def test_the_best_configuration_is_the_best_mean_over_seeds_not_the_luckiest_trial() -> None:
    table = _table([(0, 1, 0, 0.90, 10), (1, 1, 1, 0.50, 10), (2, 2, 0, 0.80, 10), (3, 2, 1, 0.78, 10)])
    found = best_configuration(table, [("val_acc", "max"), ("flops", "min")])
    assert found is not None and found.values == {"split": 2} and found.seeds == 2
    assert found.means["val_acc"] == pytest.approx(0.79)
    assert int(found.trial["trial"]) == 2  # its trial nearest the mean (0.80 vs 0.78: tie -> earlier)
    # the first objective decides: a run minimising FLOPs first takes the cheapest
    cheap = _table([(0, 1, 0, 0.9, 30), (1, 2, 0, 0.5, 20)])
    assert best_configuration(cheap, [("flops", "min"), ("val_acc", "max")]).values == {"split": 2}
    # later objectives break ties
    tied = _table([(0, 1, 0, 0.8, 30), (1, 2, 0, 0.8, 20)])
    assert best_configuration(tied, [("val_acc", "max"), ("flops", "min")]).values == {"split": 2}


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory) -> Path:
    """A grid of 2 splits x 2 seeds, trained (4 small trials)."""
    folder = tmp_path_factory.mktemp("handoff")
    data = yaml.safe_load(yaml.safe_dump(TINY_SPACE))
    data["params"] = {"split": {"choices": [1, 2]}, "seed": {"choices": [0, 1]}}
    data["trials"] = 4
    data["train"] = {"epochs": 1, "batch_size": 64}
    data["data"] = {**data["data"], "augment": "light"}
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    run_study(compile_space(load_space(path)), folder / "run")
    return folder / "run"


@pytest.mark.slow
def test_train_file_reproduces_the_trial_of_the_best_configuration(seeded_run: Path, tmp_path: Path) -> None:
    made, found = best_training_file(seeded_run)
    table = read_table(seeded_run / "results.csv")
    means = table.groupby("param.split")["val_acc"].mean()
    assert found.values == {"split": int(means.idxmax())} and found.seeds == 2
    # the search's data, split and trainer settings, with the trial's seed and threads
    assert made.data.train_size == 256 and made.data.val_fraction == 0.04 and made.data.augment == "light"
    row = table[table["trial"] == made.origin["trial"]].iloc[0]
    assert made.train["seed"] == row["param.seed"] and made.train["threads"] == 1 and made.train["batch_size"] == 64
    best_yaml = tmp_path / "best.yaml"
    result = _invoke("best", str(seeded_run), "-o", str(best_yaml))
    assert result.exit_code == 0, result.output
    assert read_training_file(best_yaml) == made
    # its trials trained 1 epoch: the hint trains it longer
    assert f"train it with: coatsearch train {best_yaml} --epochs 20 -o runs/best-trained" in result.output
    trained = _invoke("train", str(best_yaml), "--json", "--no-test", "-o", str(tmp_path / "ckpt"))
    assert trained.exit_code == 0, trained.output
    out = json.loads(trained.stdout.strip().splitlines()[-1])
    assert out["final"]["val_acc"] == row["val_acc"]  # the same accuracy: the same trial, trained again
    last = read_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert last.settings["data"]["source"] == "fashion-mnist" and last.settings["train"]["seed"] == made.train["seed"]
    assert read_training_file(tmp_path / "ckpt" / "train.yaml") is not None
    # run again: it resumes, finds every epoch done, and ends with the same numbers
    again = _invoke("train", str(best_yaml), "--json", "--no-test", "-o", str(tmp_path / "ckpt"))
    assert json.loads(again.stdout.strip().splitlines()[-1])["final"]["val_acc"] == row["val_acc"]
    # the checkpoints are read by export, convert and --init-from
    onnx = _invoke("export", str(tmp_path / "ckpt" / "best.pt"), "--to", "onnx", "-o", str(tmp_path / "best.onnx"))
    assert onnx.exit_code == 0, onnx.output
    assert float(onnx.output.rsplit("max |logit difference| ", 1)[1].split()[0]) <= 1e-4
    converted = _invoke("convert", str(tmp_path / "ckpt" / "last.pt"), "--image-size", "32", "-o", str(tmp_path / "c.pt"))
    assert converted.exit_code == 0, converted.output
    assert read_checkpoint(tmp_path / "c.pt").spec.image_size == 32
    other = tmp_path / "other.yaml"
    other.write_text(tiny_spec(image_size=16).map_stages("T", head_dim=16).to_yaml())
    refused = _invoke("train", str(other), "--init-from", str(tmp_path / "ckpt" / "best.pt"), "--epochs", "1")
    assert refused.exit_code == 2 and "--init-from: " in refused.output and ("missing key" in refused.output
                                                                            or "does not match" in refused.output)


def test_a_plain_spec_says_it_trains_on_the_built_in_data(tmp_path: Path) -> None:
    spec = tmp_path / "net.yaml"
    spec.write_text(tiny_spec(image_size=16).map_stages("T", head_dim=16).to_yaml())
    result = _invoke("train", str(spec), "--epochs", "1", "--train-size", "64", "--threads", "1", "--no-test")
    assert result.exit_code == 0, result.output
    assert "training on the built-in fashion-mnist" in result.output


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    spec = tmp_path / "net.yaml"
    spec.write_text(tiny_spec(image_size=16).to_yaml())
    for args, message in (
        (["train", str(spec), "--config", str(space)], "a search space, not trainer settings"),
        (["train", str(spec), "-o", str(space)], "is a file, expected a folder"),
        (["best", str(tmp_path), "-o", str(tmp_path)], "is a folder, expected a file path"),
        (["export", str(spec), "--to", "onnx", "-o", str(tmp_path)], "is a folder, expected a file path"),
        (["export", str(spec), "--to", "tflite"], "--to: expected one of onnx, torch, timm"),
        (["export", str(tmp_path / "missing.pt"), "--to", "onnx", "-o", str(tmp_path / "x.onnx")], "no such checkpoint file"),
        (["train", str(spec), "--init-from", str(space)], "not a readable torch checkpoint"),
    ):
        result = _invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], (args, result.output)


def test_a_training_file_with_a_bad_field_names_it(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"spec": tiny_spec().to_dict(), "train": {"epochs": 0}}))
    result = _invoke("train", str(path))
    assert result.exit_code == 2 and "train: " in result.output and "epochs" in result.output
    made = TrainingFile(spec=tiny_spec(), train={"epochs": 2})
    path.write_text(made.to_yaml())
    assert read_training_file(path) == made
