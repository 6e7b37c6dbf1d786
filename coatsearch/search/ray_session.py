"""Ray for one run: started locally in the run's own folder, or joined on a cluster, and
shut down after.

A local run keeps Ray's files in a folder of its own (one per run directory), and no
process of it outlives the command (`coatsearch.search.reaper`): the driver ends them
after `ray.shutdown()`, and a watchdog ends them when the driver is killed outright.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

from coatsearch.errors import CoatsearchError, first_line, os_reason
from coatsearch.host import available_cpus, sleep_while_waiting
from coatsearch.search.plan import SearchPlan
from coatsearch.search.reaper import guard, ray_folder, reap


@contextlib.contextmanager
def ray_session(plan: SearchPlan, run_dir: Path, address: str | None, field: str = "--address") -> Iterator[None]:
    """Ray started (locally, in the run's own folder) or joined (a cluster, at ``address``
    given by ``field``), and shut down after; environment variables it needs are set only
    meanwhile."""
    import ray

    # RAY_AIR_NEW_OUTPUT=0: Tune's own console output (its "Configuration for experiment"
    # box, a TensorBoard hint) is left out; the run shows its own progress.
    # TUNE_DISABLE_AUTO_CALLBACK_LOGGERS: no CSV, JSON and event files of Tune's per trial;
    # the ledger and RUN_DIR/tensorboard (`coatsearch.search.tracking`) hold the trials
    env = {"RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0", "RAY_AIR_NEW_OUTPUT": "0",
           "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: v for k, v in env.items() if saved[k] is None})
    folder = ray_folder(run_dir)
    stack = contextlib.ExitStack()
    try:
        if address:
            check_reachable(address, field)
            try:
                with warnings.catch_warnings():  # a client that gives up also warns, in lines of its own
                    warnings.filterwarnings("ignore", "Ray Client connection timed out", UserWarning)
                    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                             runtime_env={"env_vars": sleep_while_waiting()})
            except (ConnectionError, RuntimeError, ValueError, ImportError) as exc:
                raise CoatsearchError(f"{field} {address}: cannot join the Ray cluster ({first_line(exc)})") from None
        else:
            reap(folder)
            stack.enter_context(guard(folder))
            sleep_while_waiting()  # the local Ray's workers inherit it
            start_local_ray(folder)
        yield
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if not address:
            reap(folder)
        stack.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


#: Seconds a cluster's address (host:port) has to accept a connection before it is refused.
REACH_S = 10


def check_reachable(address: str, field: str = "--address", timeout_s: float = REACH_S) -> None:
    """Refuse a cluster address where nothing accepts a connection: Ray itself waits on
    such an address without end, printing its client's warnings. The address probed is the
    one Ray would dial (``auto`` read from ``RAY_ADDRESS`` or this machine's running
    cluster, a loopback host replaced by this node's address); one Ray cannot read, and a
    ``ray://`` address (Ray's client gives up by itself), are left to Ray's own refusal."""
    if "://" in address:
        return
    try:
        from ray._private.services import canonicalize_bootstrap_address

        dialled = canonicalize_bootstrap_address(address)
    except Exception:  # noqa: BLE001 - malformed, no cluster found, or Ray's internals moved
        return
    host, _, port = (dialled or "").rpartition(":")
    if not host or not (port.isascii() and port.isdigit()):
        return
    named = f"{field} {address}" + (" (from RAY_ADDRESS)" if address == "auto" and os.environ.get("RAY_ADDRESS") else "")
    if not 0 < int(port) < 65536:
        raise CoatsearchError(f"{named}: port {port} is out of range (1-65535)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = f"no answer in {timeout_s:g} s" if isinstance(exc, TimeoutError) else os_reason(exc)
        raise CoatsearchError(f"{named}: cannot join the Ray cluster (nothing answers at {dialled}: {reason})") from None


#: How many times a local Ray is started before the run gives up.
RAY_STARTS = 3


def start_local_ray(folder: Path) -> None:
    """A local Ray whose files live in ``folder``, started again if it does not come up.

    Ray gives its GCS server and its node 30 s each to come up, then raises (a bare
    ``Exception`` for the node). On a busy machine (two cores, other processes training) a
    start now and then misses that and the next one comes up in seconds: such a start
    hangs rather than runs slow (given 120 s, it used them all), so Ray's deadlines are
    kept and the start is made again. A start that fails `RAY_STARTS` times is one line
    for the user."""
    import ray

    for attempt in range(1, RAY_STARTS + 1):
        try:
            # "local": a new Ray, whatever RAY_ADDRESS or a cluster running here would join
            ray.init(address="local", num_cpus=available_cpus(), include_dashboard=False, log_to_driver=False,
                     configure_logging=False, _temp_dir=str(folder))
            return
        except Exception as exc:  # Ray raises plain Exception for a node that did not start
            ray.shutdown()
            reap(folder)  # what the failed start left running
            if attempt == RAY_STARTS:
                raise CoatsearchError(
                    f"backend ray: a local Ray did not start ({first_line(exc)}); tried {RAY_STARTS} times; "
                    "if the machine is busy, run again later or use backend=optuna") from None
