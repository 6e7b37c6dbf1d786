"""End-to-end searches on tiny spaces, on both backends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from coatsearch import perimage
from coatsearch.results import FINISHED, read_table, table_rows
from coatsearch.runner import run_study as run_plan
from coatsearch.search import compile_space
from coatsearch.space import load_space
from coatsearch.status import Status
from tests.conftest import TINY_SPACE as TINY

#: Ray runs in one test process at a time (see pyproject's addopts): the tests that start it
#: (and those that count its processes) share the "ray" group.
RAY = pytest.mark.xdist_group("ray")


def _space_file(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data.update(changes)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_study(space, out, **kwargs):
    return run_plan(compile_space(space), out, **kwargs)


def _finished(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"].isin(FINISHED)]


def _assert_events(run: Path, finished: pd.DataFrame) -> None:
    """Every finished trial has its TensorBoard events: each epoch's val_acc and its split."""
    import json

    from coatsearch.search.tracking import trial_folder
    from tests.test_tracking import read_events

    for _, row in finished.iterrows():
        scalars, hparams = read_events(trial_folder(run, int(row["trial"])))
        history = [epoch["val_acc"] for epoch in json.loads(row["history"])]
        assert [v for _, v in scalars["val_acc"]] == pytest.approx(history)
        assert hparams["param.split"] == row["param.split"] and hparams["layout"] == row["layout"]


def test_optuna_backend_runs_every_trial_within_the_budget(tmp_path):
    space = load_space(_space_file(tmp_path))
    outcome = run_study(space, tmp_path / "run")
    table = read_table(outcome.table_path)
    finished = _finished(table)
    assert len(finished) == 2
    assert sorted(finished["param.split"]) == [1, 2]
    target = space.budget.flops
    assert ((finished["flops"] - target).abs() / target <= space.budget.tolerance).all()
    assert (finished["fidelity"] == 2).all()
    assert finished["val_acc"].between(0, 1).all()
    # each trial keeps which validation images it got right (no test set evaluated here)
    for _, row in finished.iterrows():
        val = perimage.decode(row["val_correct"])
        assert val is not None and len(val.bits) == row["val_images"] and val.accuracy == pytest.approx(row["val_acc"])
        assert perimage.decode(row["test_correct"]) is None
    assert perimage.matrix(finished["val_correct"]).shape == (2, finished["val_images"].iloc[0])
    assert (tmp_path / "run" / "space.yaml").exists() and outcome.pareto_path.exists()
    # run.log: the data once (the trials' device note too), and every trial's result
    log = (tmp_path / "run" / "run.log").read_text()
    assert log.count("data: fashion-mnist: 256 train") == 1 and log.count("augment none; device cpu") == 1
    for _, row in finished.iterrows():
        assert f"trial {row['trial']} [split={row['param.split']}] C-C-T-T" in log
        assert f"-> val acc {row['val_acc']:.2%}" in log
    _assert_events(tmp_path / "run", finished)
    # the FLOPs were matched to a budget: pareto.csv ranks by accuracy alone
    assert pd.read_csv(outcome.pareto_path)["trial"].tolist() == [finished.sort_values("val_acc")["trial"].iloc[-1]]
    # a finished study is not run again
    again = run_study(space, tmp_path / "run")
    assert again.already_done and len(_finished(read_table(again.table_path))) == 2


@pytest.fixture(scope="module")
def one_trial_run(tmp_path_factory) -> Path:
    """A finished one-trial study (one objective): read by the dashboard test, copied by the
    tests that run again in its folder."""
    folder = tmp_path_factory.mktemp("one-trial")
    run_study(load_space(_space_file(folder, trials=1, objectives=["val_acc"])), folder / "run")
    return folder / "run"


def _copy_of(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def test_optuna_dashboard_sees_metric_names_learning_curves_and_filterable_fields(one_trial_run):
    import json

    import optuna

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{one_trial_run / 'study.db'}")
    assert study.metric_names == ["val_acc"]
    (trial,) = study.trials
    history = json.loads(read_table(one_trial_run / "results.csv")["history"].iloc[0])
    assert trial.intermediate_values == {i + 1: pytest.approx(h["val_acc"]) for i, h in enumerate(history)}
    row = trial.user_attrs["row"]
    for name in ("status", "layout", "blocks", "channels", "flops", "params", "val_acc", "fidelity"):
        assert trial.user_attrs[name] == row[name], name


def test_a_different_space_in_the_same_run_dir_is_refused(one_trial_run, tmp_path):
    from coatsearch.space import SpaceError

    run = _copy_of(one_trial_run, tmp_path)
    changed = load_space(_space_file(tmp_path, trials=1, objectives=["val_acc"], seed=5))
    with pytest.raises(SpaceError, match="holds a different space"):
        run_study(changed, run)


def test_a_study_resumes_where_only_its_placement_changed(one_trial_run, tmp_path):
    """Threads per trial and trials at once say where a study runs, not what it measures:
    resuming on another machine goes on; a change of replicas (the global batch) is refused."""
    from coatsearch.runner import saved_space_note
    from coatsearch.space import SpaceError

    run = _copy_of(one_trial_run, tmp_path)  # a one-trial study, run with the defaults' placement
    moved = load_space(_space_file(tmp_path, trials=2, objectives=["val_acc"], resources={"cpu": 2}, concurrency=2))
    outcome = run_study(moved, run)
    assert len(_finished(read_table(outcome.table_path))) == 2
    assert yaml.safe_load((run / "space.yaml").read_text())["resources"]["cpu"] == 2
    replicas = load_space(_space_file(tmp_path, trials=2, objectives=["val_acc"], resources={"cpu": 2, "workers": 2},
                                      backend="ray"))
    with pytest.raises(SpaceError, match=r"different space \(changed: backend, resources\)"):
        saved_space_note(compile_space(replicas), run)


def _ray_processes() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "raylet|gcs_server|ray::"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.fixture
def no_leaked_ray():
    before = _ray_processes()
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
    deadline = time.time() + 20
    while time.time() < deadline and _ray_processes() - before:
        time.sleep(0.5)
    leaked = _ray_processes() - before
    for pid in leaked:
        os.kill(pid, signal.SIGKILL)
    assert not leaked, f"Ray processes outlived the test: {sorted(leaked)}"


@RAY
@pytest.mark.slow
def test_both_backends_run_the_same_trials(tmp_path, no_leaked_ray, capfd, monkeypatch):
    import io
    import os

    from rich.console import Console

    shown = io.StringIO()
    optuna_run = run_study(load_space(_space_file(tmp_path)), tmp_path / "optuna", console=Console(file=shown))
    # without an address a run starts its own Ray, whatever cluster RAY_ADDRESS names
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    ray_run = run_study(load_space(_space_file(tmp_path), ["backend=ray"]), tmp_path / "ray", console=Console(file=shown))
    # the run's own lines, and none of the libraries' chatter
    printed = shown.getvalue() + "".join(capfd.readouterr())
    assert printed.count("-> val acc") == 4 and printed.count("estimated: 2 trial(s)") == 2
    for chatter in ("Configuration for experiment", "tensorboard --logdir", "Using an existing study",
                    "View detailed results"):
        assert chatter not in printed
    assert "-> val acc" in (tmp_path / "ray" / "run.log").read_text()
    _assert_events(tmp_path / "ray", _finished(read_table(ray_run.table_path)))
    key = ["param.split", "status", "layout", "blocks", "channels", "flops", "params", "fidelity", "seed", "val_correct"]
    by_point = {}
    for name, outcome in (("optuna", optuna_run), ("ray", ray_run)):
        table = read_table(outcome.table_path).sort_values("param.split")
        assert table["param.split"].tolist() == [1, 2]
        by_point[name] = table
    assert by_point["optuna"][key].to_dict("records") == by_point["ray"][key].to_dict("records")
    # same seeds, same data, one thread: the same training to the last digit
    assert by_point["optuna"]["val_acc"].tolist() == pytest.approx(by_point["ray"]["val_acc"].tolist(), abs=1e-6)
    assert "RAY_AUTH_MODE" not in os.environ  # set for the run only


#: How many times the two-node cluster is started before the test gives up (as a local run
#: does, `coatsearch.search.ray_session.RAY_STARTS`).
CLUSTER_STARTS = 3


def _two_node_cluster():
    """A head and one more node, each of one CPU, started again if one does not come up.

    Ray waits a fixed 30 s for its GCS server and for each node to register; with the other
    test process training on the same two cores, a start now and then misses that (it
    hangs) and the next one comes up in seconds."""
    from ray.cluster_utils import Cluster

    before = _ray_processes()
    for attempt in range(1, CLUSTER_STARTS + 1):
        cluster = Cluster()
        try:
            cluster.add_node(num_cpus=1)
            cluster.add_node(num_cpus=1)
            return cluster
        except Exception:  # Ray raises RuntimeError or a plain Exception for a node that did not start
            with contextlib.suppress(Exception):
                cluster.shutdown()
            for pid in _ray_processes() - before:  # what the failed start left running
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if attempt == CLUSTER_STARTS:
                raise
    raise AssertionError("unreachable")


@RAY
@pytest.mark.slow
def test_ray_trials_land_on_both_nodes_of_a_cluster(tmp_path, no_leaked_ray):
    cluster = _two_node_cluster()
    try:
        space = load_space(
            _space_file(tmp_path, trials=4, concurrency=2, sampler="random",
                        params={"split": {"choices": [1, 2]}, "seed": {"choices": [0, 1, 2, 3]}}),
            ["backend=ray"],
        )
        outcome = run_study(space, tmp_path / "run", address=cluster.address)
        table = read_table(outcome.table_path)
        assert len(_finished(table)) == 4
        assert table["node"].nunique() == 2
    finally:
        cluster.shutdown()


def test_a_grid_walks_past_infeasible_points_until_trials_points_trained(tmp_path):
    # split 1 of 3 blocks cannot meet a budget that only split 2 reaches: the grid's first
    # point, (split 1, seed 0), is infeasible; one trial walks past it to the next
    def space(trials: int):
        return load_space(_space_file(tmp_path, trials=trials, train={"epochs": 1, "batch_size": 64},
                                      params={"split": {"choices": [1, 2]}, "seed": {"choices": [0, 1]}},
                                      budget={"flops_range": [0, 422000]}))

    plan = compile_space(space(1))
    assert (len(plan.grid_points), plan.target_trials) == (2, 1)
    table = read_table(run_study(space(1), tmp_path / "run").table_path)
    points = list(zip(table["param.split"], table["param.seed"]))
    assert dict(zip(points, table["status"])) == {(1, 0): "infeasible", (2, 0): "complete"}
    # raising the trial count walks the rest of the grid, nothing twice; asking for more
    # trials than the grid has feasible points runs them all and ends
    table = read_table(run_study(space(5), tmp_path / "run").table_path)
    points = list(zip(table["param.split"], table["param.seed"]))
    assert len(points) == len(set(points)) == 4
    assert sorted(table[table["status"] == "complete"]["param.seed"]) == [0, 1]


def test_a_one_point_grid_runs(tmp_path):
    space = load_space(_space_file(tmp_path, trials=5, params={"split": {"choices": [2]}},
                                   train={"epochs": 1, "batch_size": 64}))
    table = read_table(run_study(space, tmp_path / "run").table_path)
    assert list(table["status"]) == ["complete"]


def test_a_grid_point_enqueued_twice_by_racing_workers_runs_once(tmp_path):
    # workers that start together may each enqueue the grid; duplicates step aside
    from coatsearch.search.optuna_backend import run_worker
    from coatsearch.search.optuna_storage import open_study
    from coatsearch.search.optuna_trials import ledger

    space = load_space(_space_file(tmp_path, trials=3, train={"epochs": 1, "batch_size": 64},
                                   params={"split": {"choices": [1, 2]}, "seed": {"choices": [0, 1, 2]}}))
    plan = compile_space(space)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    study = open_study(plan, run_dir)
    for params in plan.grid_points:
        study.enqueue_trial(params)
        study.enqueue_trial(params)  # the second worker's copy, interleaved
    run_worker(plan, run_dir, lambda rows: None, threads=1)
    rows = [row for row in ledger(study, space.retries) if row.finished]
    points = [(row.sampled["split"], row.sampled["seed"]) for row in rows]
    assert sorted(points) == sorted((p["split"], p["seed"]) for p in plan.grid_points)


def _pop_waiting(plan, run_dir, popped) -> None:
    from coatsearch.search.optuna_storage import open_study

    study = open_study(plan, run_dir)
    while (trial_id := study._pop_waiting_trial_id()) is not None:  # what `study.ask` does first
        popped.append(trial_id)


def test_workers_popping_one_sqlite_study_at_once_never_take_the_same_trial(tmp_path):
    # Optuna takes a waiting trial by reading it WAITING, then writing it RUNNING; SQLite
    # ignores the row lock, so without a lock taken at BEGIN about 1 pop in 10 went to two
    # workers at once (both trained it; the second failed with "Cannot tell a COMPLETE trial")
    import multiprocessing

    from coatsearch.search.optuna_storage import open_study

    plan = compile_space(load_space(_space_file(tmp_path, trials=2)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    study = open_study(plan, run_dir)
    for number in range(90):
        study.enqueue_trial({"split": 1 + number % 2})
    ctx = multiprocessing.get_context("fork")
    # the list's server is a fresh interpreter: a fork of a test process that has run Ray
    # in-process carries gRPC's threads' state (the fork of such a server was seen to die)
    with multiprocessing.get_context("spawn").Manager() as manager:
        popped = manager.list()
        workers = [ctx.Process(target=_pop_waiting, args=(plan, run_dir, popped)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        taken = list(popped)
    assert all(worker.exitcode == 0 for worker in workers)
    assert len(taken) == 90 and len(set(taken)) == 90


def test_a_dead_workers_trial_is_retried_without_its_claim(tmp_path):
    import optuna

    from coatsearch.search.optuna_storage import open_study
    from coatsearch.search.optuna_trials import fail_dead_trials

    space = load_space(_space_file(tmp_path, trials=2))
    plan = compile_space(space)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    study = open_study(plan, run_dir)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = __import__("socket").gethostname()
    finished_row = {"trial": 1, "status": "complete"}
    for number, attrs in enumerate(({}, {"row": finished_row})):
        study.enqueue_trial({"split": number + 1})
        trial = study.ask()
        trial.suggest_categorical("split", [1, 2])
        trial.set_user_attr("worker_pid", [host, int(dead.stdout)])
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    assert fail_dead_trials(study, space.retries) == 2
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    # the trial without a row runs again, unclaimed; the one that stored its row does not
    assert [(t.params, t.user_attrs) for t in waiting] == [({"split": 1}, {})]


@pytest.mark.parametrize("retries", [0, 1])
def test_a_trial_stopped_before_its_worker_claimed_it_runs_again_whatever_the_retries(tmp_path, monkeypatch, retries):
    """A stop inside Optuna's ``ask`` leaves a grid point taken (RUNNING) but never claimed;
    failed as unclaimed, it is interrupted without using a retry, and its point is enqueued
    again: not a dead worker's failure, which with no retries left would count its point as
    done and never run it. A retry of a dead worker's trial carries its params before it is
    claimed, so params are no sign that a trial began."""
    import optuna

    from coatsearch.search import optuna_trials
    from coatsearch.search.optuna_storage import open_study
    from coatsearch.search.optuna_trials import enqueue_grid, fail_dead_trials, ledger

    waiting = (optuna.trial.TrialState.WAITING,)
    space = load_space(_space_file(tmp_path, trials=2, retries=retries, params={"split": {"choices": [1, 2]}}))
    plan = compile_space(space)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    study = open_study(plan, run_dir)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    study.enqueue_trial({"split": 1})
    died = study.ask()
    died.suggest_categorical("split", [1, 2])
    died.set_user_attr("worker_pid", [__import__("socket").gethostname(), int(dead.stdout)])
    assert fail_dead_trials(study, space.retries) == 1
    assert len(study.get_trials(states=waiting)) == retries  # the dead worker's point retried while it may be
    if not retries:
        study.enqueue_trial({"split": 2})
    never_began = study.ask()  # what the stopped ask had done: the point taken, nothing drawn, no claim
    monkeypatch.setattr(optuna_trials, "GRACE_S", -1e9)  # unclaimed for longer than the grace period
    assert fail_dead_trials(study, space.retries) == 1
    assert not study.get_trials(states=waiting)  # no retry used up
    point = {"split": 2 if not retries else 1}
    rows = {row.trial: row for row in ledger(study, space.retries)}
    row = rows[never_began.number]
    assert (row.status, row.sampled, row.finished) == (Status.INTERRUPTED, point, False)
    if not retries:
        assert rows[died.number].status == Status.FAILED  # a trial that trained and died, with no retry left
    enqueue_grid(study, plan)
    assert point in [t.system_attrs.get("fixed_params") or t.params for t in study.get_trials(states=waiting)]


def test_a_dead_workers_trial_is_failed_without_waiting_for_its_heartbeat(tmp_path, monkeypatch):
    """A resumed run fails the trial of a gone process of this machine at once; a trial whose
    worker lives is given the heartbeats' grace period and left running, and that wait ends
    when the trial ends."""
    import os

    import optuna

    from coatsearch.search import optuna_trials
    from coatsearch.search.optuna_storage import GRACE_S, HEARTBEAT_S, open_study

    space = load_space(_space_file(tmp_path, trials=2))
    plan = compile_space(space)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    study = open_study(plan, run_dir)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    host = __import__("socket").gethostname()
    waits: list[float] = []
    monkeypatch.setattr(optuna_trials.time, "sleep", waits.append)

    def running(split: int, pid: int) -> None:
        study.enqueue_trial({"split": split})
        trial = study.ask()
        trial.suggest_categorical("split", [1, 2])
        trial.set_user_attr("worker_pid", [host, pid])

    running(1, dead)
    assert optuna_trials.fail_stale(study, space.retries) and waits == []
    running(2, os.getpid())
    assert not optuna_trials.fail_stale(study, space.retries)
    assert sum(waits) >= GRACE_S + HEARTBEAT_S  # the whole grace period (the fake sleep takes no time)
    waits.clear()

    def the_trial_ends(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            live = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))[0]
            study.tell(live.number, state=optuna.trial.TrialState.COMPLETE, values=[0.5, 1.0])

    monkeypatch.setattr(optuna_trials.time, "sleep", the_trial_ends)
    assert not optuna_trials.fail_stale(study, space.retries) and len(waits) == 2


def test_tables_and_records_from_before_train_eval_acc_keep_their_running_figures(tmp_path):
    from coatsearch.search.rows import TrialRow

    old = {"trial": 0, "status": "complete", "val_acc": 0.8, "train_acc": 0.9, "train_loss": 0.3, "gap": 0.1}
    row = TrialRow.from_record(old)
    # the running figures under their names; the running-accuracy gap is not the gap
    assert (row.train_acc_running, row.train_loss_running, row.gap, row.train_eval_acc) == (0.9, 0.3, None, None)
    path = tmp_path / "results.csv"
    pd.DataFrame([old]).to_csv(path, index=False)
    table = read_table(path)
    assert table.loc[0, "train_acc_running"] == 0.9 and table.loc[0, "gap_running"] == 0.1
    assert pd.isna(table.loc[0, "gap"]) and pd.isna(table.loc[0, "train_eval_acc"])
    new = TrialRow.from_record({**old, "train_eval_acc": 0.95, "gap": 0.15})
    assert new.gap == 0.15 and new.train_eval_acc == 0.95


def test_the_dry_run_estimate_follows_steps_and_each_candidates_data_size(tmp_path, monkeypatch):
    import coatsearch.search.estimate as est

    monkeypatch.setattr(est, "time_steps", lambda *a, **k: est.StepTime(train_s=1.0, forward_s=0.0))
    space = load_space(_space_file(tmp_path, train={"epochs": 2, "batch_size": 64}))
    plan = compile_space(space)
    spec = plan.candidate({"split": 1}).spec
    by_size = est.estimate(plan, [spec, spec], [640, 1280], 100, 1, 10)
    assert by_size.per_trial_s == (20.0, 40.0)  # ceil(size / 64) steps x 2 epochs, 1 s each
    stepped = compile_space(load_space(_space_file(tmp_path, train={"epochs": 2, "steps": 7, "batch_size": 64})))
    assert est.estimate(stepped, [spec, spec], [640, 1280], 100, 1, 10).per_trial_s == (7.0, 7.0)


def test_a_ray_ledger_row_after_a_line_a_crash_cut_short_is_kept(tmp_path):
    """A write cut short leaves a last line without its newline; the next row must not be
    glued to it (read back as one bad line, the finished trial would be lost)."""
    from coatsearch.search.jsonl_ledger import LEDGER, LedgerError, append_ledger, read_ledger
    from coatsearch.search.rows import TrialRow

    rows = [TrialRow(trial=n, status="complete", sampled={"seed": n}, val_acc=0.5) for n in range(3)]
    append_ledger(tmp_path, rows[0])
    with open(tmp_path / LEDGER, "a") as handle:
        handle.write(rows[1].to_json()[:40])  # killed mid-write
    assert [r.trial for r in read_ledger(tmp_path)] == [0]
    append_ledger(tmp_path, rows[2])
    assert [r.trial for r in read_ledger(tmp_path)] == [0, 2]
    assert (tmp_path / LEDGER).read_text() == rows[0].to_json() + "\n" + rows[2].to_json() + "\n"
    # a line in the middle that is not a row is refused, never passed over
    (tmp_path / LEDGER).write_text(rows[0].to_json() + "\n{oops\n" + rows[2].to_json() + "\n")
    with pytest.raises(LedgerError, match=r"ledger.jsonl: line 2 is not a trial row"):
        read_ledger(tmp_path)


@contextlib.contextmanager
def _listening() -> Iterator[tuple[int, int]]:
    """A port where a server listens (on every address, as a Ray head's does) and one
    where nothing does."""
    import socket

    with socket.socket() as server, socket.socket() as closed:
        server.bind(("0.0.0.0", 0))
        server.listen()
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
        closed.close()
        yield server.getsockname()[1], dead


def test_a_cluster_address_where_nothing_answers_is_refused_and_one_that_answers_is_joined(monkeypatch):
    """Ray waits without end on a host:port where nothing listens; the run says so in one
    line instead. A loopback address is dialled as Ray dials it (this node's address), so
    ``[::1]:PORT`` joins a head listening on IPv4 only; ``auto`` is read as Ray reads it."""
    from coatsearch.errors import CoatsearchError
    from coatsearch.search.ray_session import check_reachable

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with _listening() as (live, dead):
        for address in (f"127.0.0.1:{live}", f"localhost:{live}", f"[::1]:{live}"):
            check_reachable(address)
        with pytest.raises(CoatsearchError) as refused:
            check_reachable(f"127.0.0.1:{dead}")
        message = str(refused.value)
        assert message.startswith(f"--address 127.0.0.1:{dead}: cannot join the Ray cluster (nothing answers at ")
        assert message.endswith(f":{dead}: Connection refused)") and "\n" not in message
        with pytest.raises(CoatsearchError, match=rf"^address 127.0.0.1:{dead}: cannot join"):
            check_reachable(f"127.0.0.1:{dead}", field="address")  # the space's field, named as such
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{dead}")
        with pytest.raises(CoatsearchError, match=r"^--address auto \(from RAY_ADDRESS\): cannot join"):
            check_reachable("auto")
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{live}")
        check_reachable("auto")
    with pytest.raises(CoatsearchError, match=r"^--address 127.0.0.1:99999: port 99999 is out of range"):
        check_reachable("127.0.0.1:99999")
    for left_to_ray in ("::1", "127.0.0.1:\u00b2", "no-port", "ray://127.0.0.1:1"):
        check_reachable(left_to_ray)  # Ray refuses these itself, in its own one line


def test_a_local_ray_that_misses_its_start_deadline_is_started_again_then_refused_in_one_line(tmp_path, monkeypatch):
    import ray

    from coatsearch.errors import CoatsearchError
    from coatsearch.search import ray_session

    timed_out = Exception("The current node timed out during startup. This could happen because ...\nmore")
    outcomes: list[Exception | None] = [timed_out, None]
    starts, reaped = [], []

    def init(**kwargs):
        starts.append(kwargs["_temp_dir"])
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray_session, "reap", reaped.append)
    ray_session.start_local_ray(tmp_path)  # the second start succeeds
    assert starts == [str(tmp_path)] * 2 and reaped == [tmp_path]

    outcomes[:] = [timed_out] * ray_session.RAY_STARTS
    with pytest.raises(CoatsearchError) as refused:
        ray_session.start_local_ray(tmp_path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("backend ray: a local Ray did not start (The current node timed out")
    assert len(reaped) == 1 + ray_session.RAY_STARTS  # nothing a failed start left keeps running


def test_the_run_log_is_written_even_after_a_library_disabled_existing_loggers(tmp_path):
    """Ray and others configure logging with ``disable_existing_loggers``, which silences
    every logger that exists by then, the run's own included; the run re-enables it."""
    import logging
    import logging.config

    from coatsearch import runner as run_module

    logging.getLogger("coatsearch.train.loop")
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": True})
    handler = run_module._setup_log(tmp_path)
    try:
        logging.getLogger("coatsearch.train.loop").info("data: 1,000 images")
        handler.flush()
    finally:
        logging.getLogger("coatsearch").removeHandler(handler)
        handler.close()
    assert "data: 1,000 images" in (tmp_path / "run.log").read_text()


@pytest.mark.parametrize("when", ["before its claim", "while it trains"])
def test_a_worker_whose_trial_another_ended_steps_aside_and_the_run_still_trains_every_point(
        tmp_path, monkeypatch, when):
    """A live worker slow to claim its trial (a busy database, clocks that disagree) may
    find it failed as unclaimed by another worker, or failed as stale while it trains: it
    steps aside instead of ending on Optuna's "Cannot tell a FAIL trial", and the point
    runs in the same run."""
    import optuna

    from coatsearch.search import optuna_backend, optuna_trials
    from coatsearch.search.optuna_storage import open_study

    space = load_space(_space_file(tmp_path, trials=2, params={"split": {"choices": [1, 2]}}))
    plan = compile_space(space)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ended: list[int] = []

    def another_worker_ends(number: int) -> None:
        if not ended:  # the first trial only
            open_study(plan, run_dir).tell(number, state=optuna.trial.TrialState.FAIL)
            ended.append(number)

    if when == "before its claim":
        def claim(trial: optuna.Trial) -> None:
            another_worker_ends(trial.number)
            optuna_trials.claim(trial)

        monkeypatch.setattr(optuna_backend, "claim", claim)
    else:
        real_run_trial = optuna_backend.run_trial

        def run_trial(plan, number, *args, **kwargs):
            another_worker_ends(number)
            return real_run_trial(plan, number, *args, **kwargs)

        monkeypatch.setattr(optuna_backend, "run_trial", run_trial)
    optuna_backend.run_worker(plan, run_dir, lambda rows: None, threads=1)
    study = open_study(plan, run_dir)
    rows = optuna_trials.ledger(study, space.retries)
    assert sorted(row.sampled["split"] for row in rows if row.finished) == [1, 2]
    assert ended[0] not in [row.trial for row in table_rows(rows)]  # its point's later run replaced it


def test_a_killed_workers_claimed_trial_is_interrupted_not_failed(tmp_path):
    """The driver kills a worker that did not stop in time (its write of ``interrupted`` may
    be waiting on a busy database) and ends that worker's trials as interrupted: with no
    retries left the point runs again on resume rather than counting as failed. Another
    worker's trial is left running."""
    import socket

    from coatsearch.search.optuna_storage import open_study
    from coatsearch.search.optuna_trials import interrupt_trials_of, ledger

    space = load_space(_space_file(tmp_path, trials=2, retries=0, params={"split": {"choices": [1, 2]}}))
    plan = compile_space(space)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    study = open_study(plan, run_dir)
    host = socket.gethostname()
    killed, alive = study.ask(), study.ask()
    for trial, pid in ((killed, 4_000_001), (alive, 4_000_002)):
        trial.suggest_categorical("split", [1, 2])
        trial.set_user_attr("worker_pid", [host, pid])
    assert interrupt_trials_of(study, 4_000_001) == 1
    states = {t.number: t.state for t in study.get_trials()}
    assert states[alive.number].name == "RUNNING"
    row = {r.trial: r for r in ledger(study, space.retries)}[killed.number]
    assert (row.status, row.finished) == (Status.INTERRUPTED, False)
