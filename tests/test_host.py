"""coatsearch.host: the OpenMP wait policy of coatsearch's processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


def test_import_coatsearch_sets_the_policy_before_torch_loads():
    code = ("import sys, os; import coatsearch; loaded = 'torch' in sys.modules; "
            "print(loaded, os.environ.get('OMP_WAIT_POLICY'))")
    assert _policy_torch_loads_with(code) == "False PASSIVE"
    assert _policy_torch_loads_with(code, OMP_WAIT_POLICY="ACTIVE") == "False ACTIVE"


def _stderr(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True).stderr


def test_torch_loaded_first_is_warned_once(monkeypatch):
    import coatsearch.host as host

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(host, "_warned", False)
    with pytest.warns(RuntimeWarning, match="torch was imported before coatsearch"):
        assert host.warn_torch_loaded_first()
    assert not host.warn_torch_loaded_first()  # once a process
    monkeypatch.setattr(host, "_warned", False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # set before torch loaded: nothing to say
    assert not host.warn_torch_loaded_first()


@pytest.mark.slow
def test_importing_coatsearch_after_torch_warns_once():
    code = "import torch, importlib, coatsearch; importlib.reload(coatsearch); import coatsearch.spec"
    assert _stderr(code).count("torch was imported before coatsearch") == 1
    assert "torch was imported" not in _stderr(code, OMP_WAIT_POLICY="PASSIVE")


def test_os_reason_names_why_an_os_call_failed_else_the_message():
    from coatsearch.errors import os_reason

    missing = FileNotFoundError(2, "No such file or directory", "/nowhere")
    assert os_reason(missing) == "No such file or directory"
    assert os_reason(OSError("disk said no")) == "disk said no"  # no strerror: the message
    assert os_reason(ValueError("plain")) == "plain"
