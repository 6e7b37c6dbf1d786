"""A corpus of malformed inputs, each refused before any trial starts.

Every case is a command line as a user would type it, over files the case writes:
malformed spaces, specs, data folders, flags and tampered run folders. Each must exit
with code 2 and one line on stderr (``error: ...``) that names the field or file at
fault, start no trial, and leave every file already in the run folder byte for byte as
it was. Valid controls beside them show the same commands do run when nothing is wrong.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from coatsearch.cli import app
from coatsearch.search.rows import TrialRow
from tests.conftest import TINY_SPACE

runner = CliRunner()
ONE_TRIAL = {"trials": 1, "params": {"seed": {"choices": [0]}}, "train": {"epochs": 1, "batch_size": 64}}


@dataclass
class Case:
    """``argv`` (with ``{space}``, ``{out}``, ``{dir}`` filled in) after ``setup`` wrote the
    files; the error line must contain ``expect``."""

    name: str
    argv: list[str]
    expect: str
    space: dict[str, Any] | str | None = None
    setup: Callable[[Path], None] | None = None
    prior_run: bool = False  # a finished run is in {out} before the command
    files: dict[str, bytes] = field(default_factory=dict)
    absent: str | None = None  # text (a password) that must appear in no output


def space_with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(TINY_SPACE)
    data.update(ONE_TRIAL)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def params(**domains: Any) -> dict[str, Any]:
    return space_with(params=domains, trials=2, sampler="grid")


def base_with(**changes: Any) -> dict[str, Any]:
    base = copy.deepcopy(TINY_SPACE["base"])
    base.update(changes)
    return space_with(base=base)


def image_folder(root: Path, classes: int = 2, per_class: int = 12, broken: str | None = None) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    if broken == "truncated":
        path = root / "class0" / "0.png"
        path.write_bytes(path.read_bytes()[:40])
    elif broken == "text":
        (root / "class1" / "notes.png").write_text("not an image")


def data_space(kind: str) -> dict[str, Any]:
    return space_with(data={"source": f"imagefolder:{{dir}}/{kind}", "val_fraction": 0.25})


def edit_table(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    """A setup that hand-edits the prior run's results.csv."""
    def setup(tmp: Path) -> None:
        path = tmp / "run" / "results.csv"
        edit(pd.read_csv(path)).to_csv(path, index=False)
    return setup


def replace_with_folder(name: str) -> Callable[[Path], None]:
    """A setup that puts a folder where the prior run has the file ``name``."""
    def setup(tmp: Path) -> None:
        (tmp / "run" / name).unlink()
        (tmp / "run" / name).mkdir()
    return setup


def without_header(tmp: Path) -> None:
    path = tmp / "run" / "results.csv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))


#: A ledger row as a Ray run appends it (one JSON object a line).
LEDGER_ROW = TrialRow(trial=0, status="complete", sampled={"seed": 0}, max_fidelity=1, fidelity=1, val_acc=0.5).to_json()


def fifo(name: str) -> Callable[[Path], None]:
    """A setup that puts a named pipe at ``name`` (under the case's folder): a reader
    that opens it waits for a writer for ever."""
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.unlink(missing_ok=True)
        os.mkfifo(path)
    return setup


def link(name: str, target: str) -> Callable[[Path], None]:
    """A setup that replaces ``name`` with a symbolic link to ``target`` (a file of the
    user's, outside the run, that must stay as it is)."""
    def setup(tmp: Path) -> None:
        (tmp / target).write_text("the user's own file\n")
        (tmp / name).unlink(missing_ok=True)
        (tmp / name).symlink_to(tmp / target)
    return setup


def users_folder(tmp: Path) -> None:
    """A folder of the user's at {out}, holding files named like a run's."""
    (tmp / "run").mkdir()
    (tmp / "run" / "results.csv").write_text("my,own,table\n1,2,3\n")
    (tmp / "run" / "report.html").write_text("<p>my report</p>\n")


#: A space whose ``description`` is a "billion laughs": nine levels of aliases, each
#: nine times the one before: 9**9 strings once expanded, in a few hundred bytes.
ALIAS_BOMB = yaml.safe_dump(space_with()) + "description: &a9 [*a8, *a8, *a8, *a8, *a8, *a8, *a8, *a8, *a8]\n"
ALIAS_BOMB = "\n".join(
    ["x0: &a0 lol"] + [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
) + "\n" + ALIAS_BOMB

#: Eight parameters of ten values each: a grid of 10**8 points.
EIGHT_BY_TEN = {
    "seed": {"choices": list(range(10))},
    **{f"train.{name}": {"choices": [round(0.01 * (i + 1), 2) for i in range(10)]}
       for name in ("lr", "weight_decay", "label_smoothing", "mixup", "warmup_epochs")},
    "train.batch_size": {"choices": list(range(2, 12))},
    "train.epochs": {"choices": list(range(1, 11))},
}


def ray_run(*lines: str) -> Callable[[Path], None]:
    """A setup that writes a Ray run's folder: its space and a ledger of ``lines``."""
    def setup(tmp: Path) -> None:
        (tmp / "run").mkdir()
        (tmp / "run" / "space.yaml").write_text(yaml.safe_dump(space_with(backend="ray")))
        (tmp / "run" / "ledger.jsonl").write_text("".join(line + "\n" for line in lines))
    return setup


MALFORMED: list[Case] = [
    # ------------------------------------------------------------------ spaces: shape
    Case("unknown-parameter", ["run", "{space}"], "params.colour: unknown parameter", params(colour={"choices": [1]})),
    Case("empty-choices", ["run", "{space}"], "params.split.choices: the choice list is empty", params(split={"choices": []})),
    Case("negative-budget", ["run", "{space}"], "budget.flops: the target must be positive", space_with(budget={"flops": -5})),
    Case("zero-budget", ["run", "{space}"], "budget.flops: the target must be positive", space_with(budget={"flops": 0})),
    Case("tiny-budget", ["run", "{space}"], "budget.flops: target 10 is below the smallest spec", space_with(budget={"flops": 10})),
    Case("huge-budget", ["run", "{space}"], "budget.params: target", space_with(budget={"params": "1e15"})),
    Case("budget-units", ["run", "{space}"], "budget.flops: expected a number", space_with(budget={"flops": "lots"})),
    Case("both-budgets", ["run", "{space}"], "budget.params: target 1000.00T is above the sanity bound", space_with(budget={"flops": "1M", "params": "1e15"})),
    Case("backend", ["run", "{space}"], "backend:", space_with(backend="slurm")),
    Case("sampler", ["run", "{space}"], "sampler:", space_with(sampler="cmaes2")),
    Case("asha-metric", ["run", "{space}"], "early_stopping.metric: asha needs", space_with(early_stopping={"kind": "asha", "metric": "layout"})),
    Case("no-trials", ["run", "{space}"], "trials: required field is missing", space_with(trials=None)),
    Case("zero-trials", ["run", "{space}"], "trials:", space_with(trials=0)),
    Case("negative-concurrency", ["run", "{space}"], "concurrency:", space_with(concurrency=-1)),
    Case("unknown-field", ["run", "{space}"], "colour: unknown field", space_with(colour=1)),
    Case("low-above-high", ["run", "{space}"], "params.split.low: 3 is above high 1", params(split={"low": 3, "high": 1})),
    Case("float-grid", ["run", "{space}"], "params.train.lr: a range needs integer", params(**{"train.lr": {"low": 0.001, "high": 0.01}})),
    Case("log-step", ["run", "{space}"], "step: a log range cannot have a step", params(**{"train.lr": {"low": 0.001, "high": 0.1, "log": True, "step": 0.01}})),
    Case("log-zero", ["run", "{space}"], "low: a log range needs low > 0", params(**{"train.lr": {"low": 0, "high": 0.1, "log": True}})),
    Case("objective", ["run", "{space}"], "objectives[0].metric:", space_with(objectives=["accuracy"])),
    Case("objective-twice", ["run", "{space}"], "objectives: each metric may appear once", space_with(objectives=["val_acc", "val_acc"])),
    Case("storage-on-ray", ["run", "{space}"], "storage: a storage URL is for the optuna backend", space_with(storage="sqlite:///x.db", backend="ray")),
    Case("study-name", ["run", "{space}"], "study:", space_with(study="my study/1")),
    Case("train-setting", ["run", "{space}"], "train.lr: Input should be greater than 0", space_with(train={"lr": -1})),
    Case("train-unknown", ["run", "{space}"], "train.colour", space_with(train={"colour": 1})),
    Case("data-fraction", ["run", "{space}"], "data.val_fraction:", space_with(data={"val_fraction": 1.5})),
    Case("augment", ["run", "{space}"], "data.augment:", space_with(data={"augment": "heavy"})),
    Case("base-type", ["run", "{space}"], "base: expected a preset name", space_with(base=3)),
    Case("not-a-mapping", ["run", "{space}"], "expected a mapping of space fields", "- 1\n- 2\n"),
    Case("malformed-yaml", ["run", "{space}"], "malformed YAML", "study: [\n"),
    Case("empty-file", ["run", "{space}"], "expected a mapping of space fields", ""),
    Case("no-params-many-trials", ["run", "{space}"], "params: the space has no parameters, so all 2 trials", space_with(params={}, trials=2)),
    # ------------------------------------------------------------------ spaces: values against the base
    Case("head-dim-zero", ["run", "{space}"], "params.head_dim: 0 does not apply", params(head_dim={"choices": [0, 16]})),
    Case("head-dim-text", ["run", "{space}"], "params.head_dim: 'wide' does not apply", params(head_dim={"choices": ["wide"]})),
    Case("split-out-of-range", ["run", "{space}"], "params.split: 3 does not apply", params(split={"choices": [3]})),
    Case("split-float", ["run", "{space}"], "params.split: 1.5 does not apply", params(split={"choices": [1.5]})),
    Case("layout-length", ["run", "{space}"], "params.layout: 'C-C' does not apply", params(layout={"choices": ["C-C"]})),
    Case("layout-kind", ["run", "{space}"], "params.layout: 'C-X-T-T' does not apply", params(layout={"choices": ["C-X-T-T"]})),
    Case("stage-index", ["run", "{space}"], "params.stages[9].blocks: 1 does not apply", params(**{"stages[9].blocks": {"choices": [1]}})),
    Case("stage-blocks", ["run", "{space}"], "params.stages[1].blocks: 0 does not apply", params(**{"stages[1].blocks": {"choices": [0, 1]}})),
    Case("width-negative", ["run", "{space}"], "params.width_multiplier: -1 does not apply", params(width_multiplier={"choices": [-1, 1]})),
    Case("attention-kind", ["run", "{space}"], "params.attention: 'global' does not apply", params(attention={"choices": ["global"]})),
    Case("norm-kind", ["run", "{space}"], "params.norm: 'group' does not apply", params(norm={"choices": ["group"]})),
    Case("train-param-unknown", ["run", "{space}"], "params.train.bogus: the trainer has no setting", params(**{"train.bogus": {"choices": [1]}})),
    Case("train-param-value", ["run", "{space}"], "params.train.lr: -1 is not a valid trainer setting", params(**{"train.lr": {"choices": [-1, 0.01]}})),
    Case("data-param-value", ["run", "{space}"], "params.data.train_size: 0 is not a valid data setting", params(**{"data.train_size": {"choices": [0, 100]}})),
    Case("seed-text", ["run", "{space}"], "params.seed: 'a' does not apply", params(seed={"choices": ["a", 1]})),
    Case("unknown-preset", ["run", "{space}"], "base.preset: unknown preset", space_with(base="coatnet-9")),
    Case("base-file-missing", ["run", "{space}"], "base: nets/missing.yaml: no such spec file", space_with(base="nets/missing.yaml")),
    Case("base-invalid", ["run", "{space}"], "base: stages[2].channels: 40 is not divisible by head_dim 16",
         base_with(stages=[{"kind": "C", "blocks": 1, "channels": 8}, {"kind": "C", "blocks": 1, "channels": 16},
                           {"kind": "T", "blocks": 2, "channels": 40, "head_dim": 16}])),
    Case("storage-scheme", ["run", "{space}"], "storage: unknown database scheme 'mongodb'", space_with(storage="mongodb://localhost/x")),
    Case("storage-garbage", ["run", "{space}"], "storage: 'not a url' is not a database URL", space_with(storage="not a url")),
    Case("storage-folder", ["run", "{space}"], "storage: the folder of /nonexistent/dir/study.db does not exist", space_with(storage="sqlite:////nonexistent/dir/study.db")),
    # ------------------------------------------------------------------ data folders
    Case("data-missing", ["run", "{space}"], "data.source: {dir}/nowhere: no such directory", data_space("nowhere")),
    Case("dry-run-data-missing", ["run", "{space}", "--dry-run"], "data.source: {dir}/nowhere: no such directory; a run would stop here",
         data_space("nowhere")),
    Case("data-empty", ["run", "{space}"], "data.source: {dir}/empty: no class sub-folders", data_space("empty"),
         setup=lambda d: (d / "empty").mkdir()),
    Case("data-empty-class", ["run", "{space}"], "empty class folder", data_space("hollow"),
         setup=lambda d: (image_folder(d / "hollow"), (d / "hollow" / "class2").mkdir())),
    Case("data-truncated-image", ["run", "{space}"], "0.png: unreadable image", data_space("cut"),
         setup=lambda d: image_folder(d / "cut", broken="truncated")),
    Case("data-not-an-image", ["run", "{space}"], "notes.png: unreadable image", data_space("text"),
         setup=lambda d: image_folder(d / "text", broken="text")),
    Case("data-one-class", ["run", "{space}"], "has one class only", data_space("single"),
         setup=lambda d: image_folder(d / "single", classes=1)),
    Case("data-unknown-source", ["run", "{space}"], "data.source:", space_with(data={"source": "cifar-11"})),
    Case("data-idx-missing", ["run", "{space}"], "data.source: {dir}/idx: no such directory", space_with(data={"source": "idx:{dir}/idx"})),
    # ------------------------------------------------------------------ flags
    Case("set-syntax", ["run", "{space}", "--set", "trials"], "--set trials: expected dotted.key=value", space_with()),
    Case("set-yaml", ["run", "{space}", "--set", "trials=[1"], "the value is not valid YAML", space_with()),
    Case("set-value", ["run", "{space}", "--set", "trials=many"], "trials:", space_with()),
    Case("backend-flag", ["run", "{space}", "--backend", "slurm"], "backend:", space_with()),
    Case("address-without-ray", ["run", "{space}", "--backend", "optuna", "--address", "auto"], "--address: a Ray cluster address needs --backend ray", space_with()),
    Case("space-missing", ["run", "{dir}/nope.yaml"], "nope.yaml: no such space file"),
    Case("space-is-dir", ["run", "{dir}"], "is a directory, expected a YAML space file"),
    Case("out-under-file", ["run", "{space}", "--out", "{dir}/afile/run"], "--out {dir}/afile/run: cannot create the run directory", space_with(),
         setup=lambda d: (d / "afile").write_text("x")),
    Case("out-under-proc", ["run", "{space}", "--out", "/proc/coatsearch-run"], "--out /proc/coatsearch-run: cannot create", space_with()),
    Case("address-no-cluster", ["run", "{space}", "--backend", "ray", "--address", "auto"], "--address auto: cannot join the Ray cluster", space_with()),
    Case("address-nothing-listens", ["run", "{space}", "--backend", "ray", "--address", "127.0.0.1:1"], "--address 127.0.0.1:1: cannot join the Ray cluster (nothing answers at ", space_with()),
    Case("address-no-client", ["run", "{space}", "--backend", "ray", "--address", "ray://127.0.0.1:1"], "--address ray://127.0.0.1:1: cannot join", space_with()),
    Case("resume-missing", ["resume", "{dir}/norun"], "norun: not a run directory (no space.yaml)"),
    Case("build-missing", ["build", "{dir}/net.yaml"], "net.yaml: no such spec file"),
    Case("build-bad-spec", ["build", "{dir}/net.yaml"], "stages[0].channels: 190 is not divisible by head_dim 32",
         setup=lambda d: (d / "net.yaml").write_text("stages:\n  - {kind: T, blocks: 2, channels: 190}\n")),
    Case("match-units", ["match", "coatnet-0", "--flops", "lots"], "--flops: expected a number"),
    Case("match-both", ["match", "coatnet-0", "--flops", "1G", "--params", "1M", "--strict"], "no spec of this layout meets both"),
    Case("report-missing", ["report", "{dir}/norun"], "norun: no such run directory"),
    # ------------------------------------------------------------------ tampered run folders
    Case("run-other-space", ["run", "{space}", "--out", "{out}", "--set", "seed=5"], "this run directory holds a different space (changed: seed)",
         space_with(), prior_run=True),
    Case("run-other-backend", ["run", "{space}", "--out", "{out}", "--backend", "ray"],
         "this run directory's study runs on the optuna backend, not ray; resume it with --backend optuna", space_with(),
         prior_run=True),
    Case("run-space-garbage", ["run", "{space}", "--out", "{out}"], "space.yaml: the saved space is not a valid space", space_with(),
         prior_run=True, files={"space.yaml": b"study: [\n"}),
    Case("run-study-db-garbage", ["run", "{space}", "--out", "{out}"],
         "is not an Optuna study database", space_with(), prior_run=True, files={"study.db": b"garbage" * 100}),
    Case("resume-space-garbage", ["resume", "{out}"], "space.yaml: malformed YAML", space_with(), prior_run=True,
         files={"space.yaml": b"study: [\n"}),
    Case("resume-table-folder", ["resume", "{out}"], "{out}/results.csv: is a directory, expected the run's file",
         space_with(), prior_run=True, setup=replace_with_folder("results.csv")),
    Case("run-pareto-folder", ["run", "{space}", "--out", "{out}"], "{out}/pareto.csv: is a directory",
         space_with(), prior_run=True, setup=replace_with_folder("pareto.csv")),
    Case("resume-ledger-edited", ["resume", "{out}"], "{out}/ledger.jsonl: line 1 is not a trial row",
         setup=ray_run(LEDGER_ROW.replace('"val_acc": 0.5', '"val_acc": 0.5x'), LEDGER_ROW.replace('"trial": 0', '"trial": 1'))),
    Case("resume-ledger-status", ["resume", "{out}"], "{out}/ledger.jsonl: line 2 is not a trial row ('excellent'",
         setup=ray_run(LEDGER_ROW, LEDGER_ROW.replace('"complete"', '"excellent"').replace('"trial": 0', '"trial": 1'))),
    # ------------------------------------------------------------------ hand-edited results tables
    Case("report-table-no-header", ["report", "{out}"], "{out}/results.csv: no trial column; expected the header",
         space_with(), prior_run=True, setup=without_header),
    Case("report-table-status", ["report", "{out}"], "{out}/results.csv: row 1, status: 'excellent' is not a status",
         space_with(), prior_run=True, setup=edit_table(lambda t: t.assign(status="excellent"))),
    Case("report-table-accuracy", ["report", "{out}", "--format", "csv"], "{out}/results.csv: row 1, val_acc: 'high' is not a number",
         space_with(), prior_run=True, setup=edit_table(lambda t: t.assign(val_acc="high"))),
    Case("report-table-fraction", ["report", "{out}"], "{out}/results.csv: row 1, val_acc: 7.5 is not a fraction",
         space_with(), prior_run=True, setup=edit_table(lambda t: t.assign(val_acc=7.5))),
    Case("report-table-history", ["report", "{out}"], "{out}/results.csv: row 1, history: not the JSON list",
         space_with(), prior_run=True, setup=edit_table(lambda t: t.assign(history="[{"))),
    Case("report-table-folder", ["report", "{out}"], "{out}/results.csv: cannot read the results table",
         space_with(), prior_run=True, setup=replace_with_folder("results.csv")),
    Case("report-html-folder", ["report", "{out}"], "{out}/report.html: cannot write the report",
         space_with(), prior_run=True, setup=replace_with_folder("report.html")),
    Case("best-table-duplicate", ["best", "{out}"], "{out}/results.csv: row 2, trial: trial 0 is in row 1 too",
         space_with(), prior_run=True, setup=edit_table(lambda t: pd.concat([t, t]))),
    Case("best-table-spec-json", ["best", "{out}"], "{out}/results.csv: row 1, spec: not the JSON dict",
         space_with(), prior_run=True, setup=edit_table(lambda t: t.assign(spec="{stages"))),
    Case("best-table-spec", ["best", "{out}"], "{out}/results.csv: trial 0, spec: stages: required field is missing",
         space_with(), prior_run=True, setup=edit_table(lambda t: t.assign(spec="{}"))),
    Case("best-table-no-trial", ["best", "{out}"], "{out}/results.csv: no trial column",
         space_with(), prior_run=True, setup=edit_table(lambda t: t.drop(columns=["trial"]))),
    Case("best-output-folder", ["best", "{out}", "-o", "{dir}/nowhere/best.yaml"], "-o {dir}/nowhere/best.yaml: cannot write",
         space_with(), prior_run=True),
    # ------------------------------------------------------------------ storage URLs and grids
    Case("storage-memory", ["run", "{space}"], "storage: sqlite:// is an in-memory database", space_with(storage="sqlite://")),
    Case("storage-is-folder", ["run", "{space}"], "storage: {dir}/nets is a directory, expected a SQLite database file",
         space_with(storage="sqlite:///{dir}/nets")),
    Case("storage-not-sqlite", ["run", "{space}"], "storage: {dir}/notes.db is not a SQLite database",
         space_with(storage="sqlite:///{dir}/notes.db"), setup=lambda d: (d / "notes.db").write_text("notes\n")),
    Case("storage-no-driver", ["run", "{space}"], "storage: the driver for sqlite+pysqlcipher is not installed",
         space_with(storage="sqlite+pysqlcipher:///x.db")),
    Case("storage-closed-port", ["run", "{space}"], "at postgresql+psycopg://u@127.0.0.1:1/x: connection failed",
         space_with(storage="postgresql+psycopg://u@127.0.0.1:1/x")),
    Case("grid-trains-nothing", ["run", "{space}"], "params: the grid trains nothing: its one point gives no network to train: ",
         params(layout={"choices": ["vit-rel"]}, **{"stages[3].blocks": {"choices": [1]}})),
    Case("set-empty-part", ["run", "{space}", "--set", ".trials=1"], "--set .trials=1: expected dotted.key=value", space_with()),
    Case("study-without-space", ["study", "{dir}/nets"], "nets: not a study folder (expected space.yaml inside)"),
    # ------------------------------------------------------------------ bounded work before any trial (39)
    Case("grid-huge-range", ["run", "{space}"], "params: the grid has 2,000,000,001 points",
         params(seed={"low": 0, "high": 2_000_000_000})),
    Case("grid-eight-by-ten", ["run", "{space}"], "params: the grid has 100,000,000 points", params(**EIGHT_BY_TEN)),
    Case("concurrency-beyond-cores", ["run", "{space}"], "concurrency: 1000 worker processes, but this machine",
         space_with(concurrency=1000)),
    Case("ray-cpu-beyond-cores", ["run", "{space}", "--backend", "ray"], "resources.cpu: 4096 cores per trial",
         space_with(resources={"cpu": 4096})),
    Case("yaml-alias-bomb", ["run", "{space}"], "space.yaml: the YAML is more than 200,000 values", ALIAS_BOMB),
    Case("yaml-self-alias", ["run", "{space}"], "space.yaml: the YAML has an alias inside the collection it refers to",
         yaml.safe_dump(space_with()) + "description: &d [*d]\n"),
    Case("yaml-deep", ["run", "{space}"], "space.yaml: the YAML is nested more than 64 levels deep",
         "study: " + "[" * 100 + "]" * 100 + "\n"),
    Case("yaml-deeper", ["run", "{space}"], "exceeded maximum nesting depth", "study: " + "[" * 20000 + "]" * 20000 + "\n"),
    Case("space-is-fifo", ["run", "{dir}/pipe.yaml"], "pipe.yaml: cannot read the space file: it is a named pipe",
         setup=fifo("pipe.yaml")),
    Case("space-is-dev-zero", ["run", "/dev/zero"], "/dev/zero: cannot read the space file: it is a character device"),
    Case("space-too-large", ["run", "{space}"], "bytes is more than a space file holds",
         yaml.safe_dump(space_with()) + "#" * (5 * 1024 * 1024) + "\n"),
    Case("base-is-fifo", ["run", "{space}"], "nets/pipe.yaml: cannot read the spec file: it is a named pipe",
         space_with(base="nets/pipe.yaml"), setup=fifo("nets/pipe.yaml")),
    Case("run-results-fifo", ["run", "{space}", "--out", "{out}", "--set", "trials=2", "--set", "params.seed.choices=[0,1]"],
         "{out}/results.csv: is a named pipe, expected the run's own file", space_with(), prior_run=True,
         setup=fifo("run/results.csv")),
    Case("report-results-fifo", ["report", "{out}"], "{out}/results.csv: cannot read the results table: it is a named pipe",
         space_with(), prior_run=True, setup=fifo("run/results.csv")),
    Case("resume-ledger-fifo", ["resume", "{out}"], "{out}/ledger.jsonl: is a named pipe",
         setup=lambda d: (ray_run(LEDGER_ROW)(d), fifo("run/ledger.jsonl")(d))),
    Case("run-study-db-fifo", ["run", "{space}", "--out", "{out}"], "{out}/study.db: is a named pipe",
         space_with(), prior_run=True, setup=fifo("run/study.db")),
    # ------------------------------------------------------------------ nothing outside the run, no user file overwritten (39)
    Case("out-users-folder", ["run", "{space}", "--out", "{out}"], "{out}: the folder holds files and is not a coatsearch run",
         space_with(), setup=users_folder),
    Case("out-is-file", ["run", "{space}", "--out", "{dir}/afile"], "--out {dir}/afile: is a file, expected a run folder",
         space_with(), setup=lambda d: (d / "afile").write_text("mine\n")),
    Case("out-dangling-link", ["run", "{space}", "--out", "{dir}/gone"], "--out {dir}/gone: is a symbolic link to nothing",
         space_with(), setup=lambda d: (d / "gone").symlink_to(d / "nowhere")),
    Case("out-link-to-users-folder", ["run", "{space}", "--out", "{dir}/linked"], "the folder holds files and is not a coatsearch run",
         space_with(), setup=lambda d: (users_folder(d), (d / "linked").symlink_to(d / "run"))),
    Case("run-log-link", ["run", "{space}", "--out", "{out}", "--set", "trials=2", "--set", "params.seed.choices=[0,1]"],
         "{out}/run.log: is a symbolic link, expected the run's own file", space_with(), prior_run=True,
         setup=link("run/run.log", "mine.txt")),
    Case("run-space-link", ["run", "{space}", "--out", "{out}"], "{out}/space.yaml: is a symbolic link",
         space_with(), prior_run=True, setup=link("run/space.yaml", "mine.yaml")),
    Case("run-report-link", ["run", "{space}", "--out", "{out}"], "{out}/report.html: is a symbolic link",
         space_with(), prior_run=True, setup=link("run/report.html", "mine.html")),
    Case("run-marker-link", ["run", "{space}", "--out", "{out}"], "{out}/.coatsearch-run: is a symbolic link",
         space_with(), prior_run=True, setup=link("run/.coatsearch-run", "mine.txt")),
    Case("study-dot-dot", ["run", "{space}"], "study: '..' would name a folder outside runs/", space_with(study="..")),
    Case("study-dot", ["run", "{space}"], "study: '.' would name a folder outside runs/", space_with(study=".")),
    Case("study-slash", ["run", "{space}"], "study: String should match pattern", space_with(study="../../etc")),
    # ------------------------------------------------------------------ accepted where it should be refused (39)
    Case("duplicate-key", ["run", "{space}"], "space.yaml: trials: given twice (lines 1 and ",
         "trials: 5\n" + yaml.safe_dump(space_with())),
    Case("duplicate-nested-key", ["run", "{space}"], "space.yaml: lr: given twice",
         yaml.safe_dump(space_with(train=None)) + "train:\n  lr: 0.01\n  lr: 0.1\n"),
    Case("lr-inf", ["run", "{space}"], "train.lr: Input should be a finite number", space_with(train={"lr": float("inf")})),
    Case("lr-nan", ["run", "{space}"], "train.lr: Input should be a finite number", space_with(train={"lr": float("nan")})),
    Case("lr-choice-inf", ["run", "{space}"], "params.train.lr: inf is not a valid trainer setting",
         params(**{"train.lr": {"choices": [0.01, float("inf")]}})),
    Case("range-high-inf", ["run", "{space}"], "params.train.lr.high: Input should be a finite number",
         space_with(params={"train.lr": {"low": 0.001, "high": float("inf")}}, trials=2)),
    Case("train-size-one", ["run", "{space}"], "data.train_size: Input should be greater than or equal to 2",
         space_with(data={"source": "fashion-mnist", "train_size": 1})),
    Case("seed-choice-huge", ["run", "{space}"], "params.seed: 1208925819614629174706176 does not apply",
         params(seed={"choices": [2**80]})),
    Case("space-seed-huge", ["run", "{space}"], "seed: Input should be less than or equal to 4294967295",
         space_with(seed=2**80)),
    Case("train-seed-huge", ["run", "{space}"], "train.seed: Input should be less than or equal to 4294967295",
         space_with(train={"seed": 2**80})),
    Case("seed-negative", ["run", "{space}"], "params.seed: -1 does not apply", params(seed={"choices": [-1, 0]})),
    Case("trials-huge", ["run", "{space}"], "trials: Input should be less than or equal to 1000000", space_with(trials=10**30)),
    Case("budget-inf", ["run", "{space}"], "budget.flops", space_with(budget={"flops": float("inf")})),
    # ------------------------------------------------------------------ passwords and unreadable inputs (39)
    Case("storage-password-at", ["run", "{space}"], "storage: the password holds '@'",
         space_with(storage="postgresql+psycopg://u:pa@ss-w0rd@127.0.0.1:1/x"), absent="ss-w0rd"),
    Case("storage-password-closed-port", ["run", "{space}"], "at postgresql+psycopg://u:***@127.0.0.1:1/x",
         space_with(storage="postgresql+psycopg://u:s3cr%40t-w0rd@127.0.0.1:1/x"), absent="w0rd"),
    Case("storage-password-set", ["run", "{space}", "--set", "storage=[postgresql://u:s3cr3t-w0rd@h/x"],
         "the value is not valid YAML", space_with(), absent="w0rd"),
    Case("space-latin-1", ["run", "{space}"], "space.yaml: line 1: byte 0xe9 is not UTF-8",
         ("description: caf\u00e9\n" + yaml.safe_dump(space_with())).encode("latin-1").decode("utf-8", "surrogateescape")),
    Case("space-utf-16", ["run", "{space}"], "space.yaml: line 1: byte 0xff is not UTF-8",
         ("\ufeff" + yaml.safe_dump(space_with())).encode("utf-16-le").decode("utf-8", "surrogateescape")),
    Case("space-binary", ["run", "{space}"], "is not UTF-8", bytes(range(256)).decode("utf-8", "surrogateescape")),
    Case("study-name-long", ["run", "{space}"], "study: String should have at most 100 characters", space_with(study="a" * 100_000)),
    Case("param-name-long", ["run", "{space}"], "unknown parameter", params(**{"x" * 100_000: {"choices": [1]}})),
    Case("description-list", ["run", "{space}"], "description: Input should be a valid string", space_with(description=["x"] * 100_000)),
    Case("space-link-to-dev-zero", ["run", "{dir}/zero.yaml"], "zero.yaml: cannot read the space file: it is a character device",
         setup=lambda d: (d / "zero.yaml").symlink_to("/dev/zero")),
    Case("out-dev-null", ["run", "{space}", "--out", "/dev/null"], "--out /dev/null: is a file, expected a run folder", space_with()),
    Case("out-name-too-long", ["run", "{space}", "--out", "{dir}/" + "n" * 5000], "cannot create the run directory (File name too long)",
         space_with()),
    Case("set-trials-inf", ["run", "{space}", "--set", "trials=.inf"], "trials:", space_with()),
    Case("yaml-nul-byte", ["run", "{space}"], "space.yaml: malformed YAML", "study: a\x00b\n"),
    Case("resume-users-folder", ["resume", "{out}"], "{out}: the folder holds files and is not a coatsearch run",
         setup=lambda d: (users_folder(d), (d / "run" / "space.yaml").write_text(yaml.safe_dump(space_with())))),
    Case("gpu-the-machine-lacks", ["run", "{space}"], "resources.gpu: 8 GPUs per trial, but this machine has",
         space_with(resources={"cpu": 1, "gpu": 8})),
    Case("storage-bad-port", ["run", "{space}"], "is not a database URL", space_with(storage="postgresql://u:pw-9x@h:port/db"),
         absent="pw-9x"),
]


def _fill(text: str, tmp: Path) -> str:
    return text.replace("{space}", str(tmp / "space.yaml")).replace("{out}", str(tmp / "run")).replace("{dir}", str(tmp))


def _fill_data(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return _fill(value, tmp)
    if isinstance(value, dict):
        return {k: _fill_data(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_data(v, tmp) for v in value]
    return value


def _everything(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``, links not followed: a regular file by its content, a
    link by its target, anything else by its kind; what a refused command must leave as is."""
    found = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = Path(root) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(mode):
                found[str(path)] = f"link to {os.readlink(path)}"
            else:
                found[str(path)] = f"mode {stat.S_IFMT(mode):o}"
    return found


#: The longest error line the corpus accepts.
MAX_ERROR_LINE = 500


def _snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Callable[[], Path]:
    """The finished run of ``space_with()`` the cases with a prior run start from: trained
    once in each test process (when a case first asks for it), then copied into the case."""
    made: list[Path] = []

    def get() -> Path:
        if not made:
            folder = tmp_path_factory.mktemp("prior")
            (folder / "space.yaml").write_text(yaml.safe_dump(space_with()))
            result = runner.invoke(app, ["run", str(folder / "space.yaml"), "--out", str(folder / "run")])
            assert result.exit_code == 0, result.output
            made.append(folder / "run")
        return made[0]

    return get


def _prepare(case: Case, tmp: Path, finished_run: Callable[[], Path]) -> None:
    (tmp / "nets").mkdir(exist_ok=True)
    if case.prior_run:
        (tmp / "space.yaml").write_text(yaml.safe_dump(space_with()))
        shutil.copytree(finished_run(), tmp / "run", symlinks=True)
        for name, content in case.files.items():
            (tmp / "run" / name).write_bytes(content)
    if case.space is not None:
        text = case.space if isinstance(case.space, str) else yaml.safe_dump(_fill_data(case.space, tmp))
        (tmp / "space.yaml").write_bytes(text.encode("utf-8", "surrogateescape"))  # bytes that are not UTF-8 kept
    if case.setup is not None:
        case.setup(tmp)


def test_the_corpus_is_large():
    assert len(MALFORMED) >= 60 and JOINS_RAY <= {c.name for c in MALFORMED}
    assert len({c.name for c in MALFORMED}) == len(MALFORMED)


#: Cases that look for a running Ray cluster: in the test process that runs Ray's tests (see
#: pyproject's addopts), so they never find another test's cluster.
JOINS_RAY = {"address-no-cluster", "address-no-client"}
#: Cases whose address no Ray client server answers: the refusal comes when Ray's client gives
#: up, after three tries of 5, 10 and 15 s. What is checked is that refusal's line, not Ray's
#: wait, so the test gives each try 1 s (in Ray's own module constants; a rename in Ray fails
#: the test rather than slowing it). With ``CORPUS_TIMES`` set, Ray's wait is left as users
#: meet it, so the longest refusal is measured as it is.
#: They run in a process of their own: Ray's client leaves its gRPC channel open and polling
#: after it gives up, and a loader worker forked later beside that channel can abort (a
#: streamed set's training in the same test process failed so).
SHORT_CLIENT_WAIT = {"address-no-client"}

#: The command line in a fresh process, Ray's client waits shortened first when argv[1] is "1".
_CLI_IN_A_PROCESS = """\
import sys
if sys.argv.pop(1) == "1":
    import ray.util.client.worker as client_worker
    assert hasattr(client_worker, "INITIAL_TIMEOUT_SEC") and hasattr(client_worker, "MAX_TIMEOUT_SEC")
    client_worker.INITIAL_TIMEOUT_SEC = client_worker.MAX_TIMEOUT_SEC = 1
from coatsearch.cli import app
sys.argv[0] = "coatsearch"
app()
"""


def _invoke(case: Case, argv: list[str]) -> Any:
    """The command's exit code, stderr and output: in this process through typer's runner,
    or in its own (`SHORT_CLIENT_WAIT`)."""
    if case.name not in SHORT_CLIENT_WAIT:
        return runner.invoke(app, argv)
    shorten = "0" if os.environ.get("CORPUS_TIMES") else "1"
    done = subprocess.run([sys.executable, "-c", _CLI_IN_A_PROCESS, shorten, *argv],
                          capture_output=True, text=True, timeout=300)
    return SimpleNamespace(exit_code=done.returncode, stderr=done.stderr, output=done.stdout + done.stderr,
                           exception=None)


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.name, marks=[pytest.mark.xdist_group("ray")] if c.name in JOINS_RAY else [])
    for c in MALFORMED
])
def test_malformed_input_is_refused_in_one_line(case, tmp_path, monkeypatch, finished_run):
    monkeypatch.chdir(tmp_path)
    _prepare(case, tmp_path, finished_run)
    had_run = (tmp_path / "run").exists()
    before, everything = _snapshot(tmp_path / "run"), _everything(tmp_path)
    started = time.perf_counter()
    result = _invoke(case, [_fill(a, tmp_path) for a in case.argv])
    REFUSAL_SECONDS[case.name] = time.perf_counter() - started
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output[-3000:], result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.output
    assert _fill(case.expect, tmp_path) in lines[0], lines[0][:3000]
    assert len(lines[0]) <= MAX_ERROR_LINE, len(lines[0])
    if case.absent is not None:
        assert case.absent not in result.output
    assert _snapshot(tmp_path / "run") == before  # nothing already written was changed
    assert _everything(tmp_path) == everything  # nor anything else, in the run or outside it
    if not had_run:
        assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()  # no trial started


#: How long each refusal took (seconds), by case; written as JSON to the file named by
#: ``CORPUS_TIMES`` when the module's tests end (how the longest refusal is measured).
REFUSAL_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _record_refusal_times():
    yield
    if os.environ.get("CORPUS_TIMES") and REFUSAL_SECONDS:
        Path(os.environ["CORPUS_TIMES"]).write_text(json.dumps(REFUSAL_SECONDS, indent=1, sort_keys=True) + "\n")


VALID = [
    ("space", ["run", "{space}", "--out", "{out}"], space_with()),
    ("image-folder", ["run", "{space}", "--out", "{out}"], data_space("good")),
    ("image-folder-damaged-cache", ["run", "{space}", "--out", "{out}"], data_space("good")),
    ("build", ["build", "coatnet-0"], None),
    ("match", ["match", "coatnet-0", "--flops", "2G"], None),
    ("resume-finished", ["resume", "{out}"], space_with()),
]


@pytest.mark.parametrize("name,argv,space", VALID, ids=[v[0] for v in VALID])
def test_valid_controls_run(name, argv, space, tmp_path, monkeypatch, finished_run):
    monkeypatch.chdir(tmp_path)
    if space is not None:
        (tmp_path / "space.yaml").write_text(yaml.safe_dump(_fill_data(space, tmp_path)))
    if name.startswith("image-folder"):
        image_folder(tmp_path / "good")
    if name == "image-folder-damaged-cache":  # a prepared cache whose labels name no class: rebuilt
        from coatsearch.data.prepared import prepare

        path = prepare(tmp_path / "good", TINY_SPACE["base"]["image_size"]).path
        labels = np.load(path / "train_labels.npy")
        labels[0] = 7
        np.save(path / "train_labels.npy", labels)
    if name == "resume-finished":  # the finished run of this space
        shutil.copytree(finished_run(), tmp_path / "run", symlinks=True)
    result = runner.invoke(app, [_fill(a, tmp_path) for a in argv])
    assert result.exit_code == 0, result.output
    if name.startswith("image-folder"):
        assert set(pd.read_csv(tmp_path / "run" / "results.csv")["status"]) == {"complete"}


def test_a_damaged_results_table_is_rebuilt_from_the_study(tmp_path, finished_run):
    out = Path(shutil.copytree(finished_run(), tmp_path / "run", symlinks=True))
    good = (out / "results.csv").read_text()
    (out / "results.csv").write_text(good[: len(good) // 3] + '\n"unterminated')
    result = runner.invoke(app, ["resume", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "results.csv").read_text() == good


def test_fewer_trials_on_a_finished_run_change_nothing(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(space_with(trials=2, params={"seed": {"choices": [0, 1]}})))
    out = tmp_path / "run"
    assert runner.invoke(app, ["run", str(space), "--out", str(out)]).exit_code == 0
    before = _snapshot(out)
    result = runner.invoke(app, ["run", str(space), "--out", str(out), "--set", "trials=1"])
    assert result.exit_code == 0
    assert "trials: 1 changes nothing" in result.stderr.replace("\n", " ")
    assert _snapshot(out)["space.yaml"] == before["space.yaml"]
