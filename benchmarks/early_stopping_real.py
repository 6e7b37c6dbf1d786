"""Early stopping run for real, set against what the replay predicted: the strategy that
did best on the replay of tables/fmnist32 (TPE with learning-curve stopping,
`search_efficiency.py`) and the same search without early stopping, both trained on a
small space whose networks are not in the table (`early_stopping_real.yaml`: FLOP budgets
the table does not hold).

The two arms run at the same time, each in a process of its own, so both meet the same
machine load. For each arm it records the compute spent (CPU seconds of every epoch
trained, the replay's unit, and wall seconds), the front of validation accuracy against
FLOPs found at full fidelity and its hypervolume (both arms against one reference: chance
accuracy and 1.05x the largest FLOPs either trained), as a share of both arms' together. The replay's prediction is the
same two strategies with the same number of trials replayed over the table's networks,
``--seeds`` seeds each: the median compute of the curve arm over the median without early
stopping, and the median share of the table's hypervolume each found.

    nice -n 10 python benchmarks/early_stopping_real.py [--out runs/early-stopping-real] [--seeds 30] [--write]

A killed run resumes where it stopped when run again with the same ``--out``.
``--write`` puts the figures into benchmarks/RESULTS.md between its markers.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from coatsearch.analysis.fronts import hypervolume_2d, non_dominated
from coatsearch.generated import with_section
from coatsearch.runner import run_study
from coatsearch.search import compile_space
from coatsearch.search.backend import make_backend
from coatsearch.search.plan import SearchPlan
from coatsearch.search.rows import TrialRow
from coatsearch.search.table import load_table
from coatsearch.space import load_space
from coatsearch.status import Status

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_efficiency as efficiency  # noqa: E402  (benchmarks/ holds it)

HERE = Path(__file__).resolve().parent
SPACE = HERE / "early_stopping_real.yaml"
ARMS = ("curve", "none")
#: The hypervolume's floor of accuracy: chance on ten classes.
CHANCE = 0.1
START, END = "<!-- early_stopping_real:start -->", "<!-- early_stopping_real:end -->"


@dataclasses.dataclass
class Arm:
    """One arm's trials and what it spent."""

    kind: str
    rows: list[TrialRow] = dataclasses.field(default_factory=list)
    wall: float = 0.0  # seconds the runs took, start-up included

    @property
    def cpu(self) -> float:
        """CPU seconds of every epoch trained (the replay's unit of compute)."""
        return sum(float(e.get("epoch_cpu_s") or 0) for r in self.rows for e in (r.history or ()))

    @property
    def epochs(self) -> int:
        return sum(len(r.history or ()) for r in self.rows)

    def full(self) -> list[TrialRow]:
        """The trials that completed at full fidelity: what a front is made of."""
        return [r for r in self.rows if r.status == Status.COMPLETE and r.fidelity == r.max_fidelity]


def _plan(space_file: Path, kind: str) -> SearchPlan:
    space = load_space(space_file)
    space = space.model_copy(update={
        "study": f"{space.study}-{kind}",
        "early_stopping": space.early_stopping.model_validate(efficiency.SCHEDULING[kind])})
    return compile_space(space, source=str(space_file))


def run_arm(space_file: Path, kind: str, out: Path) -> None:
    """Run one arm's study to its trials (resuming what is there), adding the seconds it
    took to ``wall.txt`` in its folder."""
    plan = _plan(space_file, kind)
    start = time.perf_counter()
    if run_study(plan, out, console=Console(file=io.StringIO())).already_done:
        return
    wall = out / "wall.txt"
    before = float(wall.read_text()) if wall.exists() else 0.0
    wall.write_text(f"{before + time.perf_counter() - start:.1f}\n")


def read_arm(space_file: Path, kind: str, out: Path) -> Arm:
    plan = _plan(space_file, kind)
    backend = make_backend(plan, out)
    with backend.session():
        rows = backend.ledger()
    return Arm(kind, rows, float((out / "wall.txt").read_text()))


def fronts(arms: dict[str, Arm]) -> tuple[dict[str, float], dict[str, list[TrialRow]]]:
    """Each arm's hypervolume (one reference for both) as a share of both arms' trials'
    together, and its front's trials."""
    every = [r for arm in arms.values() for r in arm.full()]
    reference = (CHANCE, 1.05 * max(float(r.flops or 0) for r in every))
    volumes, members = {}, {}
    for kind, arm in arms.items():
        points = np.array([[float(r.val_acc or 0), float(r.flops or 0)] for r in arm.full()]).reshape(-1, 2)
        volumes[kind] = hypervolume_2d(points, efficiency.MAXIMIZE, reference) if len(points) else 0.0
        on: list[bool] = list(non_dominated(points, efficiency.MAXIMIZE)) if len(points) else []
        members[kind] = sorted((r for r, keep in zip(arm.full(), on) if keep), key=lambda r: float(r.flops or 0))
    both = np.array([[float(r.val_acc or 0), float(r.flops or 0)] for r in every])
    whole = hypervolume_2d(both, efficiency.MAXIMIZE, reference)
    return {k: v / whole if whole else float("nan") for k, v in volumes.items()}, members


def predicted(trials: int, seeds: int) -> dict[str, tuple[float, float]]:
    """The replay's prediction for ``trials``-trial TPE searches with and without curve
    stopping over the table: median compute spent (in units of training every table
    network once) and median share of the table's hypervolume."""
    table = load_table("fmnist32")
    params = efficiency.whole_subspace(table)
    ref = efficiency.reference(table, params, "scale" if "scale" in params else next(iter(params)))
    at = np.array([10.0])  # far past any search's end: the final hypervolume
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ARMS:
            plan = efficiency.plan_for(table, params, "tpe", kind, trials)
            spent, volumes = [], []
            for seed in range(seeds):
                rows = efficiency.replay(plan, seed, Path(tmp) / f"{kind}-{seed}")
                spent.append(sum(r.wall_time or 0 for r in rows) / ref.compute)
                volumes.append(float(efficiency.anytime(rows, ref, at)[0][-1]))
            out[kind] = (statistics.median(spent), statistics.median(volumes))
    return out


def network(row: TrialRow) -> str:
    return f"{row.layout} {row.blocks} {float(row.flops or 0) / 1e6:.2f}M"


def markdown(arms: dict[str, Arm], prediction: dict[str, tuple[float, float]], trials: int, seeds: int,
             loads: list[float], space_file: Path) -> str:
    volumes, members = fronts(arms)
    curve, none = arms["curve"], arms["none"]
    ratio = curve.cpu / none.cpu if none.cpu else float("nan")
    replayed = prediction["curve"][0] / prediction["none"][0]
    space = load_space(space_file)
    lines = [
        f"`{space_file.name}`: {', '.join(f'{n} in {d.grid_values()}' for n, d in space.params.items())} "
        f"(FLOP budgets tables/fmnist32 does not hold), {space.epochs} epochs on "
        f"{space.data.train_size} training images, TPE (seed {space.seed}), {trials} trials per arm, trained for "
        "real on the optuna backend, one trial at a time, the two arms at the same time; curve stopping "
        "as on the replay (from epoch 2, below 5% probability of beating the best finished network no larger in "
        f"FLOPs). 2 CPU cores, load average {min(loads):.1f}–{max(loads):.1f} "
        "during the run.",
        "",
        "| arm | trials (stopped) | epochs trained | compute (CPU s) | wall (s) | networks on the front | "
        "hypervolume (both arms' trials together = 1) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, arm in arms.items():
        stopped = sum(r.status == Status.STOPPED for r in arm.rows)
        front = "; ".join(f"{network(r)} {100 * float(r.val_acc or 0):.1f}%" for r in members[kind])
        lines.append(f"| TPE{' + curve' if kind == 'curve' else ''} | {len(arm.rows)} ({stopped}) | {arm.epochs} | "
                     f"{arm.cpu:.0f} | {arm.wall:.0f} | {front} | {volumes[kind]:.4f} |")
    same = {network(r) for r in members["curve"]} == {network(r) for r in members["none"]}
    reached = {network(r): float(r.val_acc or 0) for r in none.full()}
    for row in curve.rows:
        if row.status == Status.STOPPED:
            after = reached.get(network(row))
            lines.append(f"\nStopped: trial {row.trial}, {network(row)}, after epoch {row.fidelity} of {row.max_fidelity}, "
                         f"predicted {100 * float(row.curve_prediction or 0):.1f}% ± {100 * float(row.curve_sd or 0):.1f}; "
                         + (f"trained to the end in the other arm (same seed), it reached {100 * after:.1f}%."
                            if after is not None else "the other arm did not train it."))
    lines += [
        "",
        f"Compute of the curve arm over the arm without early stopping: **{ratio:.2f}** (CPU seconds of the epochs "
        f"trained); hypervolume {volumes['curve'] / volumes['none'] if volumes['none'] else float('nan'):.3f} of "
        f"the other's; the two fronts {'hold the same networks' if same else 'differ'}. "
        f"The replay predicted, for {trials}-trial TPE searches over the table ({seeds} seeds, medians): compute "
        f"{prediction['curve'][0]:.3f} against {prediction['none'][0]:.3f} of training every table network once, "
        f"a ratio of **{replayed:.2f}**, and {prediction['curve'][1]:.3f} against {prediction['none'][1]:.3f} of "
        "the table's hypervolume.",
    ]
    return "\n".join(lines)


def write(text: str) -> None:
    results = HERE / "RESULTS.md"
    results.write_text(with_section(
        results.read_text(), START, END, text,
        "## Early stopping for real (early_stopping_real.py)\n\n"
        f"`nice -n 10 python benchmarks/early_stopping_real.py --write` ({time.strftime('%Y-%m-%d')})."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=SPACE)
    parser.add_argument("--out", type=Path, default=Path("runs/early-stopping-real"))
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--arm", choices=ARMS, help="run this arm only (what the command runs in each process)")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md's section")
    args = parser.parse_args()
    if args.arm:
        run_arm(args.space, args.arm, args.out / args.arm)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "loads.txt"  # the load average while the arms ran, every 10 s (kept across resumes)
    arms = [subprocess.Popen([sys.executable, __file__, "--space", str(args.space), "--out", str(args.out),
                              "--arm", kind]) for kind in ARMS]
    while any(arm.poll() is None for arm in arms):
        with log.open("a") as f:
            f.write(f"{os.getloadavg()[0]:.2f}\n")
        time.sleep(10)
    loads = [float(x) for x in log.read_text().split()] or [os.getloadavg()[0]]
    if any(arm.returncode for arm in arms):
        raise SystemExit(f"an arm failed (exit {[arm.returncode for arm in arms]}); run again to resume it")
    read = {kind: read_arm(args.space, kind, args.out / kind) for kind in ARMS}
    trials = load_space(args.space).trials
    text = markdown(read, predicted(trials, args.seeds), trials, args.seeds, loads, args.space)
    print(text)
    if args.write:
        write(text)


if __name__ == "__main__":
    main()
