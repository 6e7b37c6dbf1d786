"""`coatsearch train`: JSON on stdout only, progress and errors on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import tiny_spec
from tests.test_data import make_idx_folder

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "coatsearch.cli", "train", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )


def test_train_json_prints_one_object_on_stdout(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(tiny_spec(image_size=16).to_yaml())
    data = make_idx_folder(tmp_path / "idx", n_train=120, n_test=30)
    result = _run(str(spec), "--data", f"idx:{data}", "--epochs", "2", "--json",
                  "--threads", "1", "--batch-size", "16", "--seed", "3")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert out["status"] == "complete" and out["epochs_run"] == 2
    assert 0 <= out["test_acc"] <= 1 and out["final"]["epoch"] == 2
    assert out["spec"]["in_channels"] == 1 and out["spec"]["num_classes"] == 3
    assert "epoch 2:" in result.stderr and "in_channels 3 -> 1" in result.stderr


def test_train_bad_data_is_one_line_exit_2(tmp_path: Path) -> None:
    result = _run("coatnet-0", "--data", f"imagefolder:{tmp_path}/missing", "--epochs", "1")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"error: {tmp_path}/missing: no such directory"
