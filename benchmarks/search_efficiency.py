"""Search efficiency, measured on the replay: how much compute each search strategy spends
to find the table's front of validation accuracy against FLOPs.

Replays each strategy (random, grid, TPE, NSGA-II; each without early stopping and with
ASHA, Hyperband, MO-ASHA and learning-curve stopping) over a table of trained networks
(`coatsearch.search.table`), for ``--seeds`` sampler seeds each, one simulated worker, and
measures against the table itself:

- the anytime curve of normalized hypervolume (the hypervolume of the full-fidelity trials
  found so far over the table's, both bounded by the table's worst accuracy and 1.05x its
  largest FLOPs) and of the mean shortfall of the best accuracy found at each FLOP budget
  against the table's best there, against the compute spent (the recorded CPU seconds of
  every epoch replayed, in units of the compute of training every network once);
- the compute needed to reach 95% of the table's hypervolume (median and interquartile
  range over seeds, and how many seeds reached it);
- how often each budget's best network in the table was among the trials found at full
  fidelity, and how often every network on the table's front was;
- for learning-curve stopping, the error of the final validation accuracy predicted from
  the first 25% of the epochs (`curve_mae`: each network predicted from the others).

Non-grid strategies run twice as many trials as the table has networks (their samplers may
draw a network again; a real search would train it again, and so does the replay); a grid
runs each network once. A partial table is replayed over the part of the space it holds
whole (values of the outermost parameter whose every point is in the table).

    python benchmarks/search_efficiency.py [--table fmnist32] [--seeds 30] [--only tpe+curve,...] [--jobs 2] [--write]

Every number says which table it came from (its rows and their digest): the table grows
while it is built, and the command reruns as it is.

``--write`` puts the tables into benchmarks/RESULTS.md (between its markers) and the
figure into benchmarks/search_efficiency.svg. It also times a 100-trial replay.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import itertools
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from coatsearch.analysis.fronts import hypervolume_2d, non_dominated
from coatsearch.generated import with_section
from coatsearch.runner import run_study
from coatsearch.search import compile_space
from coatsearch.search.curves import GROUPS, Curve, predict
from coatsearch.search.jsonl_ledger import read_ledger
from coatsearch.search.plan import SearchPlan
from coatsearch.search.rows import TrialRow
from coatsearch.search.stopping import SIGNALS
from coatsearch.search.table import Table, load_table
from coatsearch.status import Status

sys.path.insert(0, str(Path(__file__).resolve().parent))
from efficiency_figure import GRID_POINTS, MAX_FRACTION, svg  # noqa: E402  (benchmarks/ holds it)

HERE = Path(__file__).resolve().parent
KINDS = ("none", "asha", "hyperband", "moasha", "curve")
STRATEGIES = [(s, kind) for s in ("random", "grid", "tpe", "nsga2") for kind in KINDS]
#: Each scheduler's settings (8-epoch table: Hyperband gets 4 brackets; curve predicts from 25%).
SCHEDULING = {
    "none": {"kind": "none"},
    "asha": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
    "hyperband": {"kind": "hyperband", "grace_period": 1, "reduction_factor": 2},
    "moasha": {"kind": "moasha", "grace_period": 1, "reduction_factor": 2},
    "curve": {"kind": "curve", "grace_period": 2, "threshold": 0.05, "top": 1},
}
NAMES = {"none": "", "asha": " + ASHA", "hyperband": " + Hyperband", "moasha": " + MO-ASHA", "curve": " + curve"}
MAXIMIZE = (True, False)  # val_acc up, flops down
START, END = "<!-- search_efficiency:start -->", "<!-- search_efficiency:end -->"


@dataclasses.dataclass(frozen=True)
class Reference:
    """What the table holds over the replayed subspace: its networks, hypervolume, the
    bounds hypervolumes are taken against, and each budget's best network."""

    points: dict[str, TrialRow]
    reference: tuple[float, float]
    hypervolume: float
    compute: float  # seconds to train every network once
    best: dict[str, tuple[str, float]]  # budget -> (point, val_acc)
    budget_param: str
    front: frozenset[str]  # the points on the table's front of val_acc against FLOPs
    curves: dict[str, list[float]]  # point -> val_acc after each epoch


def whole_subspace(table: Table) -> dict[str, list]:
    """The part of the table's grid held whole with the most trained networks, as a
    space's parameter choices: a subset of values for each parameter whose every
    combination is in the table (ties go to more FLOP budgets, then more points). The whole
    table when it is complete."""
    params = {name: d.grid_values() for name, d in table.space.params.items()}
    names = list(params)
    status = {}
    for combo in itertools.product(*params.values()):
        entry = table.entries.get(table.key(dict(zip(names, combo))))
        if entry is not None:
            status[combo] = entry.row.status
    best: tuple[tuple[int, int, int], dict[str, list]] | None = None
    subsets = [[list(c) for k in range(1, len(v) + 1) for c in itertools.combinations(v, k)] for v in params.values()]
    budget = names.index("scale") if "scale" in names else 0
    for choice in itertools.product(*subsets):
        points = list(itertools.product(*choice))
        if any(p not in status for p in points):
            continue
        score = (sum(status[p] == Status.COMPLETE for p in points), len(choice[budget]), len(points))
        if best is None or score > best[0]:
            best = (score, dict(zip(names, choice)))
    if best is None or best[0][0] == 0:
        raise SystemExit(f"table {table.name}: no part of its grid is trained whole yet")
    return best[1]


def reference(table: Table, params: dict[str, list], budget_param: str) -> Reference:
    entries = [table.lookup(dict(zip(params, combo))) for combo in itertools.product(*params.values())]
    entries = [e for e in entries if e.row.status == Status.COMPLETE]
    points = {e.row.point: e.row for e in entries}
    acc = np.array([r.val_acc for r in points.values()], dtype=float)
    flops = np.array([r.flops for r in points.values()], dtype=float)
    ref = (float(acc.min()), float(flops.max() * 1.05))
    hv = hypervolume_2d(np.column_stack([acc, flops]), MAXIMIZE, ref)
    compute = float(sum(sum(e.seconds) for e in entries))
    best: dict[str, tuple[str, float]] = {}
    for row in points.values():
        budget = str(row.sampled[budget_param])
        if budget not in best or (row.val_acc or 0) > best[budget][1]:
            best[budget] = (row.point, float(row.val_acc or 0))
    front = frozenset(p for p, on in zip(points, non_dominated(np.column_stack([acc, flops]), MAXIMIZE)) if on)
    curves = {e.row.point: [float(h.get("val_acc")) for h in e.epochs] for e in entries}
    return Reference(points, ref, hv, compute, best, budget_param, front, curves)


def plan_for(table: Table, params: dict[str, list], sampler: str, kind: str, trials: int) -> SearchPlan:
    space = table.space.to_dict()
    space.update(study="efficiency", backend="replay", table=str(table.folder), sampler=sampler, trials=trials,
                 concurrency=1, params={name: {"choices": values} for name, values in params.items()},
                 early_stopping=SCHEDULING[kind])
    from coatsearch.space import space_from_dict

    return compile_space(space_from_dict(space), check_data=False)


def replay(plan: SearchPlan, seed: int, out: Path) -> list[TrialRow]:
    seeded = dataclasses.replace(plan, space=plan.space.model_copy(update={"seed": seed}))
    run_study(seeded, out, console=Console(file=io.StringIO()))
    return read_ledger(out)


def anytime(rows: list[TrialRow], ref: Reference, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, set[str]]:
    """Normalized hypervolume and mean best-accuracy shortfall (pp) at each compute
    fraction of ``at``; the fraction where 95% of the hypervolume was reached (inf if
    never); the points found at full fidelity."""
    ended = sorted((r for r in rows if r.clock_end is not None), key=lambda r: (r.clock_end, r.trial))
    found: list[tuple[float, float]] = []
    best: dict[str, float] = {}
    steps: list[tuple[float, float, float]] = [(0.0, 0.0, _shortfall(best, ref))]
    reached, points = float("inf"), set()
    for row in ended:
        if row.status == Status.COMPLETE and row.fidelity == row.max_fidelity:
            found.append((float(row.val_acc or 0), float(row.flops or 0)))
            points.add(row.point)
            budget = str(row.sampled[ref.budget_param])
            best[budget] = max(best.get(budget, 0.0), float(row.val_acc or 0))
        hv = hypervolume_2d(np.array(found).reshape(-1, 2), MAXIMIZE, ref.reference) / ref.hypervolume if found else 0.0
        fraction = float(row.clock_end or 0) / ref.compute
        steps.append((fraction, hv, _shortfall(best, ref)))
        if hv >= 0.95 and reached == float("inf"):
            reached = fraction
    xs = np.array([s[0] for s in steps])
    index = np.searchsorted(xs, at, side="right") - 1
    return np.array([steps[i][1] for i in index]), np.array([steps[i][2] for i in index]), reached, points


def _shortfall(best: dict[str, float], ref: Reference) -> float:
    """Mean over budgets of the table's best accuracy minus the best found (pp; a budget
    with nothing found counts its whole best)."""
    return float(np.mean([100 * (acc - best.get(b, 0.0)) for b, (_, acc) in ref.best.items()]))


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile, each one of the values (so a seed that
    never got there, inf, stays inf rather than averaging into a number)."""
    q1, med, q3 = np.percentile(np.array(values, dtype=float), [25, 50, 75], method="nearest")
    return float(q1), float(med), float(q3)


def _fraction(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "not reached"


def label(sampler: str, kind: str) -> str:
    return f"{sampler}{NAMES[kind]}"


#: The predictors `curve_mae` compares: (name, groups of `coatsearch.search.curves.GROUPS`).
PREDICTORS = (("ensemble (families, finished curves, learned prior)", GROUPS),
              ("families and finished curves (without the learned prior)", ("families", "references")),
              ("learned prior only", ("regression",)),
              ("finished curves only", ("references",)),
              ("parametric families only", ("families",)))


def _curve(row: TrialRow) -> Curve:
    """A table row's curve as the scheduler sees it with validation accuracy and FLOPs the
    objectives."""
    history = row.history or ()
    return Curve(tuple(float(e.get("val_acc")) for e in history),
                 tuple(tuple(e.get(s) for s in SIGNALS) for e in history), (-float(row.flops or 0),))


def _errors(targets: list[TrialRow], references_of: Any, seen: int, epochs: int, groups: Sequence[str]
            ) -> tuple[list[float], list[bool]]:
    errors, covered = [], []
    for row in targets:
        curve = _curve(row)
        predicted = predict(curve.values[:seen], epochs, [_curve(r) for r in references_of(row)], ceiling=1.0,
                            signals=curve.signals[:seen], statics=curve.statics, groups=groups)
        if predicted is not None:
            errors.append(abs(predicted[0] - curve.values[-1]))
            covered.append(abs(predicted[0] - curve.values[-1]) <= 1.96 * predicted[1])
    return errors, covered


def _network(row: TrialRow) -> str:
    return repr(sorted((k, str(v)) for k, v in row.sampled.items() if k != "seed"))


def curve_mae(table: Table, ref: Reference, fraction: float = 0.25) -> dict[str, tuple]:
    """Absolute error (pp: mean, median, 90th percentile) and 95%-interval coverage of the
    final validation accuracy predicted from the first ``fraction`` of the epochs, by each
    of `PREDICTORS` and the last value seen. Every network is predicted from the others
    (leave one network out: the learned prior is fitted afresh on the others each time).
    Two checks on runs outside the replayed networks: the table's other networks (not in
    the replayed part) predicted from all the replayed ones, and the second-seed runs
    predicted from the replayed networks other than their own. Beside them, the noise
    floor: how far a network's second-seed final is from its first."""
    rows = [r for r in ref.points.values() if len(r.history or ()) == table.space.epochs]
    epochs = table.space.epochs
    seen = max(1, round(fraction * epochs))
    out: dict[str, tuple] = {"_seen": (seen, epochs, len(rows))}
    others = [e.row for e in table.entries.values() if e.row.status == Status.COMPLETE
              and e.row.point not in ref.points and len(e.row.history or ()) == epochs]
    networks = {_network(r): r for r in rows}
    second = [r for r in others if (r.seed or 0) != (rows[0].seed or 0) and _network(r) in networks]
    outside = [r for r in others if r not in second and _network(r) not in networks]
    for name, groups in PREDICTORS:
        errors, covered = _errors(rows, lambda row: [r for r in rows if r is not row], seen, epochs, groups)
        held = {"other networks": _errors(outside, lambda row: rows, seen, epochs, groups)[0],
                "second seeds": _errors(second, lambda row: [r for r in rows if _network(r) != _network(row)],
                                        seen, epochs, groups)[0]}
        out[name] = (errors, covered, held)
    last = [abs(r.history[seen - 1].get("val_acc") - r.history[-1].get("val_acc")) for r in rows]  # type: ignore[index]
    out["last value seen"] = (last, [], {})
    out["_floor"] = ([abs(float(r.val_acc or 0) - float(networks[_network(r)].val_acc or 0)) for r in second],
                     len(outside), len(second))
    return out


def table_size(table: Table) -> str:
    """The table's rows, counted and digested, so that each number names the table it came from."""
    files = sorted(table.folder.glob("*.jsonl"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:10]
    rows = sum(len(f.read_text().splitlines()) for f in files)
    return f"{rows} rows ({', '.join(f.name for f in files)}; sha256 {digest})"


#: What each replaying process reads (set before the processes fork, so nothing is pickled).
_SHARED: dict[str, Any] = {}


def _one_seed(job: tuple[str, str, int]) -> dict[str, Any]:
    """One strategy's replay for one seed, measured against the table."""
    sampler, kind, seed = job
    ref: Reference = _SHARED["ref"]
    start = time.perf_counter()
    rows = replay(_SHARED["plans"][sampler, kind], seed, Path(_SHARED["tmp"]) / f"{sampler}-{kind}-{seed}")
    took = time.perf_counter() - start
    hv, short, reached, points = anytime(rows, ref, _SHARED["at"])
    return dict(hv=hv, short=short, reach=reached, took=took,
                found={b: p in points for b, (p, _) in ref.best.items()},
                front=len(ref.front & points) / len(ref.front),
                spent=sum(r.wall_time or 0 for r in rows) / ref.compute,
                errors=[abs(r.curve_prediction - ref.points[r.point].val_acc) for r in rows  # type: ignore[operator]
                        if r.curve_prediction is not None and r.point in ref.points])


def measure(table: Table, seeds: int, only: list[str] | None = None,
            jobs: int = 1) -> tuple[Reference, dict, dict[str, list], int]:
    """Every strategy's replays over ``seeds`` seeds, in ``jobs`` processes (each replay is
    deterministic for its seed, so the results do not depend on how many)."""
    params = whole_subspace(table)
    budget_param = "scale" if "scale" in params else next(iter(params))
    ref = reference(table, params, budget_param)
    networks = len(ref.points)
    chosen = [(s, k) for s, k in STRATEGIES if not only or f"{s}+{k}" in only]
    plans = {(s, k): plan_for(table, params, s, k, networks if s == "grid" else 2 * networks) for s, k in chosen}
    work = [(s, k, seed) for s, k in chosen for seed in range(seeds)]
    with tempfile.TemporaryDirectory() as tmp:
        _SHARED.update(ref=ref, plans=plans, tmp=tmp, at=np.linspace(0, MAX_FRACTION, GRID_POINTS))
        if jobs > 1:
            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                done = pool.map(_one_seed, work, chunksize=1)
        else:
            done = [_one_seed(job) for job in work]
    results = {}
    for sampler, kind in chosen:
        mine = [d for (s, k, _), d in zip(work, done) if (s, k) == (sampler, kind)]
        took = [d["took"] for d in mine]
        results[label(sampler, kind)] = dict(
            hv=np.array([d["hv"] for d in mine]), short=np.array([d["short"] for d in mine]),
            reach=[d["reach"] for d in mine], found=[d["found"] for d in mine], spent=[d["spent"] for d in mine],
            seconds=statistics.median(took), trials=plans[sampler, kind].space.trials,
            front=[d["front"] for d in mine], errors=[e for d in mine for e in d["errors"]])
        print(f"{label(sampler, kind):<22} median {statistics.median(took):.2f} s per replay", flush=True)
    return ref, results, params, networks


def speed(table: Table, params: dict[str, list], rounds: int = 5) -> dict[str, tuple[float, float, float]]:
    """Seconds for a 100-trial replay (compiling the space, replaying, writing the run's
    files), in interleaved rounds: min, median, max per sampler."""
    times: dict[str, list[float]] = {"random": [], "tpe": [], "nsga2": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            for sampler in times:
                start = time.perf_counter()
                plan = plan_for(table, params, sampler, "none", 100)
                replay(plan, k, Path(tmp) / f"{sampler}-{k}")
                times[sampler].append(time.perf_counter() - start)
    return {s: (min(t), statistics.median(t), max(t)) for s, t in times.items()}


# --------------------------------------------------------------------------- output
def markdown(table: Table, ref: Reference, results: dict, params: dict[str, list], networks: int, seeds: int,
             speeds: dict[str, tuple[float, float, float]], mae: dict[str, tuple], size: str) -> str:
    cut = {n: v for n, v in params.items() if len(v) < len(table.space.params[n].grid_values())}
    scope = ("the whole table" if not cut else "the part of the table trained so far, "
             + ", ".join(f"{n} in {v}" for n, v in cut.items()) + " (the build is not finished)")
    lines = [
        f"Table `{table.name}` at {size}, replayed over {scope}: {networks} trained networks, "
        f"{len(ref.front)} on its front, "
        f"{ref.compute / 3600:.2f} CPU-hours to train each once (the unit of compute below), {seeds} seeds per "
        "strategy, one simulated worker. Hypervolume of validation accuracy against FLOPs, bounded by the table's "
        f"worst accuracy ({ref.reference[0]:.3f}) and 1.05x its largest FLOPs, as a fraction of the table's own. "
        "Grid walks the same order for every seed. Non-grid strategies run "
        f"{2 * networks} trials, grid {networks}. Early stopping on validation accuracy: ASHA, Hyperband "
        "(4 brackets) and MO-ASHA (validation accuracy and FLOPs) with grace 1 epoch and reduction factor 2; "
        "curve from epoch 2 (25%), stopping below 5% probability of beating the best finished network no larger "
        "in FLOPs.",
        "",
        "| strategy | compute to 95% HV (median) | IQR | seeds reaching 95% | final HV (median) | compute spent (median) "
        "| front found at full fidelity (mean) | seeds finding the whole front | seeds keeping every budget's best | "
        + " | ".join(f"best at {ref.budget_param} {b} found" for b in ref.best) + " |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(ref.best),
    ]
    for name, r in results.items():
        reached = [x for x in r["reach"] if np.isfinite(x)]
        q1, med, q3 = quartiles(r["reach"])
        medtext, iqr = _fraction(med), f"{_fraction(q1)}–{_fraction(q3)}"
        found = [f"{100 * np.mean([f[b] for f in r['found']]):.0f}%" for b in ref.best]
        every = sum(all(f.values()) for f in r["found"])
        whole = sum(x == 1.0 for x in r["front"])
        lines.append(f"| {name} | {medtext} | {iqr} | {len(reached)}/{len(r['reach'])} | "
                     f"{np.median(r['hv'][:, -1]):.3f} | {statistics.median(r['spent']):.2f} | "
                     f"{100 * np.mean(r['front']):.0f}% | {whole}/{len(r['front'])} | {every}/{len(r['found'])} | "
                     + " | ".join(found) + " |")
    seen, epochs, count = mae.pop("_seen")
    floor, outside, second = mae.pop("_floor")
    lines += ["", f"Learning-curve prediction of the final validation accuracy from the first {seen} of "
              f"{epochs} epochs, each of the {count} replayed networks predicted with the other networks' curves as "
              "the finished ones (leave one network out: the learned prior is fitted afresh from the others for each "
              "network; absolute error in pp; share of finals inside the predicted 95% interval). Beside them, the "
              f"mean absolute error on runs outside the replayed ones: the table's {outside} other networks predicted "
              f"from the {count}, and the {second} second-seed runs, each predicted from the replayed networks other "
              "than its own:", "",
              "| predictor | MAE (pp) | median | 90th percentile | inside 95% interval | networks predicted "
              "| MAE, other networks | MAE, second seeds |", "|---|---|---|---|---|---|---|---|"]

    def pp(values: list[float], how: Any = np.mean) -> str:
        return f"{100 * float(how(values)):.2f}" if values else "—"

    for name, (errors, covered, held) in mae.items():
        cover = f"{100 * np.mean(covered):.0f}%" if covered else "—"
        lines.append(f"| {name} | {pp(errors)} | {pp(errors, np.median)} | "
                     f"{pp(errors, lambda e: np.percentile(e, 90))} | {cover} | {len(errors)} | "
                     f"{pp(held.get('other networks', []))} | {pp(held.get('second seeds', []))} |")
    lines += ["", f"Noise floor: a network's second-seed final validation accuracy is {pp(floor)} pp from its first "
              f"on average (median {pp(floor, np.median)}, 90th percentile {pp(floor, lambda e: np.percentile(e, 90))}; "
              f"{len(floor)} networks): what even an exact prediction of a network's final, but not of its run's "
              "noise, would miss by."]
    for name, r in results.items():
        if r["errors"]:
            lines.append(f"\nIn the `{name}` replays, the predictions the scheduler last made (at the epoch it "
                         f"stopped a trial, or its last before the end) were off by {100 * np.mean(r['errors']):.2f} pp "
                         f"on average ({len(r['errors'])} predictions over {seeds} seeds).")
    lines += ["", "Compute in units of training every network of the table once (recorded CPU seconds of every "
              "epoch replayed). ![anytime curves](search_efficiency.svg)", "",
              "Replay speed, a 100-trial search over the same space (compiling the space, replaying, writing the "
              "run's files), 5 interleaved rounds, min / median / max seconds, on 2 CPU cores shared with other "
              f"work (load average {os.getloadavg()[0]:.1f} at the end):", ""]
    lines += [f"- {s}: {lo:.2f} / {med:.2f} / {hi:.2f} s" for s, (lo, med, hi) in speeds.items()]
    return "\n".join(lines)


def write(text: str, figure: str) -> None:
    results = HERE / "RESULTS.md"
    results.write_text(with_section(
        results.read_text(), START, END, text,
        "## Search efficiency on the replay (search_efficiency.py)\n\n"
        f"`python benchmarks/search_efficiency.py --write` ({time.strftime('%Y-%m-%d')})."))
    (HERE / "search_efficiency.svg").write_text(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="fmnist32")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--only", default="", help="comma-separated SAMPLER+KIND (e.g. tpe+curve,random+none)")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md's section and the figure")
    parser.add_argument("--jobs", type=int, default=1, help="replaying processes (the results do not depend on it)")
    args = parser.parse_args()
    table = load_table(args.table)
    size = table_size(table)  # as read now: the table may grow while the replays run
    ref, results, params, networks = measure(table, args.seeds, [o for o in args.only.split(",") if o] or None,
                                             args.jobs)
    speeds = speed(table, params)
    text = markdown(table, ref, results, params, networks, args.seeds, speeds, curve_mae(table, ref), size)
    print(text)
    if args.write:
        write(text, svg(results))


if __name__ == "__main__":
    main()
