"""Does a prefilter pay? Compute to reach 95% of a table's hypervolume with and without
``prefilter: {proxy, keep}``, measured on the replay over many sampler seeds.

    python benchmarks/prefilter_replay.py [--table fmnist32] [--seeds 30] [--keep 0.5] [--proxies synflow,params] [--write]

For each sampler (random, TPE) and each prefilter (none, then each proxy at ``--keep``),
replays the same search (`benchmarks/search_efficiency.py`'s plan: twice as many trials as
the part of the table held whole has networks, one simulated worker, no early stopping) for
``--seeds`` seeds and prints, as Markdown: the compute (in units of training every network
once; the proxies' own scoring time is left out: about a second per network, see the
table's calibration) at which 95% of the table's hypervolume (validation accuracy against
FLOPs) was reached, median and interquartile range, how many seeds reached it, and how
often each FLOP budget's best network was trained. A prefiltered candidate outside the kept
share is infeasible and costs nothing, so a prefilter pays when the kept share still holds
the front. ``--write`` also puts the table into benchmarks/RESULTS.md (between its markers).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_efficiency import anytime, plan_for, quartiles, reference, replay, table_size, whole_subspace  # noqa: I001

from coatsearch.generated import markers, with_section
from coatsearch.search.plan import SearchPlan
from coatsearch.search.prefilter import kept_points
from coatsearch.search.plan import InfeasibleCandidate
from coatsearch.search.table import load_table
from coatsearch.space import Prefilter


def prefiltered(plan: SearchPlan, proxy: str, keep: float) -> SearchPlan:
    space = plan.space.model_copy(update={"prefilter": Prefilter(proxy=proxy, keep=keep)})
    plan = dataclasses.replace(plan, space=space)
    return dataclasses.replace(plan, kept=kept_points(space, plan.candidate, InfeasibleCandidate))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="fmnist32")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--keep", type=float, default=0.5)
    parser.add_argument("--proxies", default="synflow,params")
    parser.add_argument("--samplers", default="random,tpe")
    parser.add_argument("--write", action="store_true", help="also write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    table = load_table(args.table)
    params = whole_subspace(table)
    ref = reference(table, params, "scale")
    at = np.linspace(0, 1.5, 121)
    say(f"table {table.name}: {table_size(table)}; {len(ref.points)} networks replayed, {args.seeds} seeds, "
        f"keep {args.keep:g}, {time.strftime('%Y-%m-%d', time.gmtime())}\n")
    say("| sampler | prefilter | compute to 95% HV: median [IQR] | seeds reaching it | budgets' best trained |")
    say("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in args.samplers.split(","):
            base = plan_for(table, params, sampler, "none", 2 * len(ref.points))
            for proxy in ["none", *args.proxies.split(",")]:
                plan = base if proxy == "none" else prefiltered(base, proxy, args.keep)
                reach, found = [], []
                for seed in range(args.seeds):
                    rows = replay(plan, seed, Path(tmp) / f"{sampler}-{proxy}-{seed}")
                    _, _, reached, points = anytime(rows, ref, at)
                    reach.append(reached)
                    found.append(np.mean([p in points for p, _ in ref.best.values()]))
                q1, med, q3 = quartiles(reach)
                shown = "not reached" if not np.isfinite(med) else f"{med:.2f} [{q1:.2f}, {q3:.2f}]"
                label = "none" if proxy == "none" else f"{proxy}, keep {args.keep:g}"
                say(f"| {sampler} | {label} | {shown} | {sum(np.isfinite(reach))}/{args.seeds} | "
                    f"{100 * np.mean(found):.0f}% |")
    if args.write:
        write_results("\n".join(lines))


def write_results(text: str, path: Path = Path(__file__).resolve().parent / "RESULTS.md") -> None:
    """Replace the section between the prefilter markers of RESULTS.md (added at the end
    the first time)."""
    start, end = markers("prefilter")
    path.write_text(with_section(path.read_text(), start, end, text,
                                 "## Prefilter on the replay (prefilter_replay.py)"))


if __name__ == "__main__":
    main()
