"""Measure the batch-1 CPU latency of every network of a table, into its ``latency.csv``.

    python scripts/table_latency.py tables/fmnist32 [--rounds 9] [--threads 1]

Latency measured inside trials running beside other work is mostly the other work, so a
table measures it in a pass of its own, best on a quiet machine, after (or apart from) its
build: every feasible network of the table's space is built once (the architecture decides
the latency, not the trained weights), then timed in ``--rounds`` interleaved rounds (each
round visits every network in a new random order: one warm-up call, then the fastest of
three timed calls, so a pre-empted call does not count), and its median over rounds is
written with the quartiles. The load average before and after is printed and written
beside the file (``latency.txt``), so a reader can tell how quiet the pass was.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from coatsearch.nn import build
from coatsearch.search import compile_space
from coatsearch.search.plan import InfeasibleCandidate
from coatsearch.search.rows import point_key
from coatsearch.space import load_space


def measure(folder: Path, rounds: int, threads: int) -> None:
    torch.set_num_threads(threads)
    plan = compile_space(load_space(folder / "space.yaml"), check_data=False)
    nets = {}
    for params in plan.grid or ():
        try:
            candidate = plan.candidate(params)
        except InfeasibleCandidate:
            continue
        model = build(candidate.spec).eval()
        x = torch.randn(1, candidate.spec.in_channels, candidate.spec.image_size, candidate.spec.image_size)
        nets[point_key(params)] = (candidate, model, x)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {key: [] for key in nets}
    rng = random.Random(0)
    with torch.inference_mode():
        for _ in range(rounds):
            order = list(nets)
            rng.shuffle(order)
            for key in order:
                _, model, x = nets[key]
                model(x)
                calls = []
                for _ in range(3):
                    start = time.perf_counter()
                    model(x)
                    calls.append(time.perf_counter() - start)
                times[key].append(1000 * min(calls))
    load_after = os.getloadavg()
    with open(folder / "latency.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["point", "layout", "flops", "latency_ms", "latency_q1_ms", "latency_q3_ms"])
        for key, (candidate, _, _) in nets.items():
            q1, _, q3 = statistics.quantiles(times[key], n=4)
            writer.writerow([key, candidate.spec.layout, candidate.net.flops, round(statistics.median(times[key]), 4),
                             round(q1, 4), round(q3, 4)])
    note = (f"{len(nets)} networks, batch 1, {threads} thread(s), {rounds} interleaved rounds, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average before "
            f"{load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    (folder / "latency.txt").write_text(note + "\n")
    print(note)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path, help="the table folder (tables/NAME)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    measure(args.table, args.rounds, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
