"""Many workers, one study: `coatsearch run` processes sharing a real PostgreSQL server.

The test starts its own throwaway server (PostgreSQL's ``initdb`` and ``pg_ctl``, run as
the ``postgres`` user when we are root) and skips, with the reason, only where no server
can be started. Three workers share one grid study; one is killed with -9 mid-trial; every
point still runs exactly once and no trial is lost; the password in their URL is kept
nowhere.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_SPACE


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _unavailable(reason: str) -> None:
    """Skip with the reason; in CI (``COATSEARCH_REQUIRE_POSTGRES=1``) fail instead."""
    if os.environ.get("COATSEARCH_REQUIRE_POSTGRES"):
        pytest.fail(f"PostgreSQL test required but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        _unavailable("no PostgreSQL server binaries (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'psycopg[binary]')")
    # not under pytest's temporary folder: the postgres user must be able to reach it
    root = Path(tempfile.mkdtemp(prefix="coatsearch-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            _unavailable("running as root without runuser: cannot start PostgreSQL as its own user")
        as_user = [runuser, "-u", "postgres", "--"]
        os.chmod(root, 0o777)
        shutil.chown(sockets, "postgres")
        os.chmod(sockets, 0o777)
    made = subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
                          capture_output=True, text=True)
    if made.returncode != 0:
        _unavailable(f"initdb failed: {made.stderr.strip().splitlines()[-1] if made.stderr.strip() else made.returncode}")
    port = _free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=100"
    started = subprocess.run([*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                             capture_output=True, text=True)
    if started.returncode != 0:
        _unavailable(f"PostgreSQL did not start: {started.stderr.strip()[-300:]}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _space(tmp_path: Path, url: str) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TINY_SPACE))
    data.update(
        study="shared", params={"split": {"choices": [1, 2]}, "seed": {"choices": [0, 1, 2]}}, trials=6,
        sampler="grid", train={"epochs": 3, "batch_size": 32}, storage=url,
    )
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_three_workers_share_one_study_and_survive_a_kill(postgres_url, tmp_path):
    """Three workers on one study, one killed with -9 mid-trial: every point runs once, none
    lost, the work shared. Their URL carries a password (the server trusts every
    connection, so it works): it must appear in no file of the runs and no output, and the
    saved space keeps the URL without it (a resume reads the password from PGPASSWORD;
    here the server needs none)."""
    import optuna

    secret = "Zq7-s3cret-pw"
    space = _space(tmp_path, postgres_url.replace("postgres@", f"postgres:{secret}@", 1))
    outs = [tmp_path / f"w{i}" for i in range(3)]
    workers = [subprocess.Popen([sys.executable, "-m", "coatsearch.cli", "run", str(space), "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for out in outs]
    storage = optuna.storages.RDBStorage(postgres_url)
    deadline = time.time() + 120
    victim = workers[0]
    # kill worker 0 while it trains: a RUNNING trial whose worker is this process
    while time.time() < deadline:
        try:
            study = optuna.load_study(study_name="shared", storage=storage)
            running = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
        except KeyError:
            running = []
        if len(running) >= 2:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the workers did not start trials in time")
    time.sleep(0.3)
    victim.send_signal(signal.SIGKILL)
    said = [victim.communicate(timeout=60)]
    for proc in workers[1:]:
        said.append(proc.communicate(timeout=600))
        assert proc.returncode == 0, said[-1][1][-2000:]
    # a later worker (any machine's) joins the finished study, and one resumes from a run's
    # saved space (the URL without its password): nothing is left to do
    for argv in (["run", str(space), "--out", str(tmp_path / "w9")], ["resume", str(outs[1])]):
        again = subprocess.run([sys.executable, "-m", "coatsearch.cli", *argv], capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0, (argv, again.stderr[-2000:])
        said.append((again.stdout, again.stderr))

    study = optuna.load_study(study_name="shared", storage=storage)
    rows = [t.user_attrs["row"] for t in study.get_trials(deepcopy=False) if "row" in t.user_attrs]
    points = [(r["param.split"], r["param.seed"]) for r in rows]
    assert sorted(points) == sorted({(s, seed) for s in (1, 2) for seed in (0, 1, 2)})  # each once, none lost
    assert all(r["status"] == "complete" for r in rows)
    workers_seen = {r["worker"] for r in rows}
    assert len(workers_seen) >= 2  # the work was shared

    for out, err in said:
        assert secret not in out + err
    for out in outs[1:]:  # (the killed worker may have died before it saved its space)
        assert yaml.safe_load((out / "space.yaml").read_text())["storage"] == postgres_url
    for out in [*outs, tmp_path / "w9"]:
        for path in out.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
