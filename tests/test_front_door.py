"""The first screen's promise: the default run answers its question, and the package keeps
an environment's own torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_shortened_default_run_answers_with_intervals(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "coatsearch.cli", "run", str(ROOT / "spaces/layout_split.yaml"), "--out", str(out),
           "--set", "train.epochs=1", "--set", "data.train_size=400", "--set", "params.split.choices=[1,3,5]",
           "--set", "trials=3", "--set", "data.val_fraction=0.05"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    effects = pd.read_csv(out / "effects.csv")
    assert effects["value"].tolist() == [1, 3, 5] and set(effects["parameter"]) == {"split"}
    assert (effects["val_acc_ci95_low"] < effects["val_acc_mean"]).all()
    assert (effects["val_acc_mean"] < effects["val_acc_ci95_high"]).all()
    page = (out / "report.html").read_text()
    start = page.index('Plotly.newPlot(                        "fig-effect-split"')
    payload = page[start:page.index("</script>", start)].replace(" ", "")
    assert '"xaxis":{' in payload and '"title":{"text":"split"}' in payload
    # the run ends by saying where things are and what to type next
    assert f"report: {out / 'report.html'}" in result.stdout.replace("\n", "")
    assert re.search(r"coatsearch best .* -o best\.yaml && coatsearch train best\.yaml", result.stdout.replace("\n", " "))
    assert "95% interval" in result.stdout


def test_installing_the_package_keeps_the_environments_torch(tmp_path):
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "-e", str(ROOT), "--report", str(report), "-q"],
                   check=True, capture_output=True, timeout=300)
    would_install = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "torch" not in would_install and would_install == {"coatsearch"}
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"torch>=\d', pyproject) and not re.search(r'"torch==', pyproject)
