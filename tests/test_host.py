"""coatsearch.host: the OpenMP wait policy of coatsearch's processes."""

from __future__ import annotations

import os
import subprocess
import sys

from coatsearch.host import sleep_while_waiting


def test_the_passive_policy_is_set_unless_the_user_chose_one(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert sleep_while_waiting() == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert sleep_while_waiting() == {"OMP_WAIT_POLICY": "ACTIVE"}


def _policy_torch_loads_with(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True)
    return result.stdout.strip()


def test_the_command_line_sets_the_policy_before_torch_loads():
    # OpenMP reads the variable once, when torch loads it: the command line must set it
    # first, and its own trial workers (spawned) inherit it
    code = ("import sys, os; import coatsearch.cli; loaded = 'torch' in sys.modules; import torch; "
            "print(loaded, os.environ.get('OMP_WAIT_POLICY'))")
    assert _policy_torch_loads_with(code) == "False PASSIVE"
    assert _policy_torch_loads_with(code, OMP_WAIT_POLICY="ACTIVE") == "False ACTIVE"
