"""Soak: many tiny trials on each backend, the run killed with -9 at random points and resumed.

    python benchmarks/soak.py [--trials 200] [--kills 8] [--backends optuna ray] [--seed 0]

Each backend runs a grid of ``--trials`` points (``seed`` 0..N-1 on a 16x16 network that
trains in well under a second) with ``concurrency: 2``. The driver is killed with SIGKILL
``--kills`` times, each after a random number of newly finished trials, and the same
command is run again until the study is complete. It prints, per backend:

- trials run: trial executions the ledger saw start (finished, interrupted, retried)
- kills: SIGKILLs sent
- duplicates: grid points with more than one finished row
- lost: grid points with no finished row at the end
- re-run finished: rows finished before a kill that changed afterwards (ran again)
- processes left: processes started by the soak still alive 10 s after the last run

The last four should all be 0. Run it alone: it uses both cores.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coatsearch.results import read_table  # noqa: E402

BASE = {
    "image_size": 16, "num_classes": 10, "stem": {"channels": 8, "stride": 1},
    "stages": [
        {"kind": "C", "blocks": 1, "channels": 8},
        {"kind": "C", "blocks": 1, "channels": 16},
        {"kind": "T", "blocks": 1, "channels": 32, "head_dim": 16},
    ],
}


def write_space(folder: Path, trials: int) -> Path:
    space = {
        "study": "soak", "base": BASE, "params": {"seed": {"low": 0, "high": trials - 1}},
        "objectives": ["val_acc"], "train": {"epochs": 1, "batch_size": 64, "eval_test": False},
        "data": {"source": "fashion-mnist", "train_size": 128, "val_fraction": 0.25},
        "sampler": "grid", "trials": trials, "concurrency": 2, "resources": {"cpu": 1},
    }
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def finished_rows(out: Path) -> dict[int, tuple]:
    """Finished rows by trial number: (point, worker, wall_time, val_acc)."""
    path = out / "results.csv"
    if not path.exists():
        return {}
    try:
        table = read_table(path)
    except Exception:
        return {}
    done = table[table["status"] == "complete"]
    return {int(r.trial): (r.point, r.worker, r.wall_time, r.val_acc) for r in done.itertuples()}


def ours(tag: str) -> list[int]:
    """PIDs of live processes whose environment carries the soak's tag."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if tag.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().split(")")[-1].split()[0]
                if state != "Z":
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def started_trials(out: Path, backend: str) -> int:
    if backend == "optuna":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name="soak", storage=f"sqlite:///{out / 'study.db'}")
        states = (optuna.trial.TrialState.WAITING,)
        return sum(1 for t in study.get_trials(deepcopy=False) if t.state not in states)
    lines = (out / "ledger.jsonl").read_text().splitlines() if (out / "ledger.jsonl").exists() else []
    return len(lines)


def soak(backend: str, trials: int, kills: int, rng: random.Random) -> dict[str, int]:
    folder = Path(tempfile.mkdtemp(prefix=f"soak-{backend}-"))
    space, out = write_space(folder, trials), folder / "run"
    tag = f"COATSEARCH_SOAK={uuid.uuid4().hex}"
    env = {**os.environ, "COATSEARCH_SOAK": tag.split("=", 1)[1]}
    command = [sys.executable, "-m", "coatsearch.cli", "run", str(space), "--out", str(out), "--backend", backend]
    seen: dict[int, tuple] = {}
    rerun = sent = 0
    while True:
        before = finished_rows(out)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        if sent < kills:
            wait_for = len(before) + rng.randint(1, max(2, trials // (kills + 1)))
            while proc.poll() is None and len(finished_rows(out)) < wait_for:
                time.sleep(0.05)
            time.sleep(rng.uniform(0, 1.0))  # somewhere inside the next trial, or between two
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                sent += 1
        proc.wait()
        now = finished_rows(out)
        for number, row in seen.items():
            if now.get(number) != row:
                rerun += 1
        seen.update(now)
        seen = {k: v for k, v in seen.items() if k in now}
        if proc.returncode == 0 and (sent >= kills or len(now) >= trials):
            break
    final = read_table(out / "results.csv")
    done = final[final["status"] == "complete"]
    counts = done["point"].value_counts()
    time.sleep(10)
    return {
        "trials run": started_trials(out, backend),
        "kills": sent,
        "duplicates": int((counts > 1).sum()),
        "lost": trials - int(counts.size),
        "re-run finished": rerun,
        "processes left": len(ours(tag.split("=", 1)[1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--backends", nargs="+", default=["optuna", "ray"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"soak: {args.trials} grid points per backend, concurrency 2, {args.kills} kill -9s; {os.cpu_count()} CPUs")
    columns = ["trials run", "kills", "duplicates", "lost", "re-run finished", "processes left"]
    print(f"{'backend':<8}" + "".join(f"{c:>17}" for c in columns))
    for backend in args.backends:
        start = time.perf_counter()
        result = soak(backend, args.trials, args.kills, rng)
        print(f"{backend:<8}" + "".join(f"{result[c]:>17}" for c in columns) + f"   ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
