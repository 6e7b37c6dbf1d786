"""Per-trial overhead of the search backends: seconds spent outside training.

Runs the same tiny space (a few hundred images, one epoch) on the optuna backend and on the
ray backend (embedded, ``reuse_actors=True``), and prints for each:

    wall time of the whole run, the trials' own wall time (build, data, training, as
    recorded in the results table), and their difference per trial: the overhead.

The reference is the trials' own time, measured in the same run. Target: under 2 s per
trial on the ray backend. Run it alone (other busy processes distort the numbers):

    python benchmarks/search_overhead.py [--trials 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from coatsearch.results import read_table
from coatsearch.runner import run_study
from coatsearch.search import compile_space
from coatsearch.space import load_space

SPACE = {
    "study": "overhead",
    "base": {
        "image_size": 16, "num_classes": 10, "stem": {"channels": 8, "stride": 1},
        "stages": [
            {"kind": "C", "blocks": 1, "channels": 8},
            {"kind": "C", "blocks": 1, "channels": 16},
            {"kind": "T", "blocks": 1, "channels": 32, "head_dim": 16},
            {"kind": "T", "blocks": 1, "channels": 32, "head_dim": 16},
        ],
    },
    "params": {"seed": {"low": 0, "high": 10_000}},
    "objectives": ["val_acc", "flops"],
    "train": {"epochs": 1, "batch_size": 64},
    "data": {"source": "fashion-mnist", "train_size": 300, "val_fraction": 0.2},
    "sampler": "random",
    "resources": {"cpu": 2},
}


def measure(backend: str, trials: int, workdir: Path) -> tuple[float, float]:
    path = workdir / f"{backend}.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "trials": trials, "backend": backend}))
    space = load_space(path)
    start = time.perf_counter()
    outcome = run_study(compile_space(space), workdir / backend)
    wall = time.perf_counter() - start
    table = read_table(outcome.table_path)
    return wall, float(table["wall_time"].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(backend, *measure(backend, args.trials, Path(tmp))) for backend in ("optuna", "ray")]
    print(f"{args.trials} trials per backend (1 epoch on 240 images each)")
    print(f"{'backend':<8}{'run wall s':>12}{'trials s':>10}{'overhead s/trial':>18}")
    for backend, wall, inside in rows:
        print(f"{backend:<8}{wall:12.1f}{inside:10.1f}{(wall - inside) / args.trials:18.2f}")
    print("overhead = (run wall time - the trials' own wall time) / trials; the ray figure")
    print("includes starting and stopping the embedded Ray instance once.")


if __name__ == "__main__":
    main()
