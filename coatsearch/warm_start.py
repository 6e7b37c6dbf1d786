"""Building on earlier work: an earlier run's finished trials handed to a new run's sampler
before its first trial (``warm_start: RUN_DIR`` in a space, ``--warm-start RUN_DIR``).

A value can be shared only where it means the same thing in both runs. The spaces must
have the same objectives (metrics and directions) and parameters, every value the earlier
run sampled must lie in the new space, and every setting that decides what a trial
measures must be the same (`MUST_MATCH`: the base network, ``split_total``, ``scaling``,
the ``budget``, the trainer and data settings, ``resources.workers``, how latency is had).
What only steers the search may differ (`MAY_DIFFER`: the sampler, its seed, early stopping,
``trials``, the backend, where trials run, a prefilter, a replayed table). Otherwise the run
is refused in one line before anything is written.

The trials handed over are the earlier run's complete and early-stopped ones with their
objectives measured (as that run told them to its own sampler), read from its
``results.csv``. They become the new run's first trial numbers, with ``warm_start`` set to
``RUN_DIR#N`` (N: their number there): a backend adds them to its ledger once
(`coatsearch.search.backend.Backend.warm`), so a resumed or re-run study never adds them
twice, and its sampler sees them as finished trials. They count neither towards ``trials``
nor as the run's compute (`coatsearch.search.rows.TrialRow.finished`), and they are never
trained again; a grid skips the points they hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coatsearch.files import load_yaml_file
from coatsearch.results import TableError, read_table
from coatsearch.search.plan import SearchPlan, base_of, trainer_of
from coatsearch.search.rows import RowError, TrialRow, parse_record
from coatsearch.space import SearchSpace, SpaceError, space_from_dict
from coatsearch.status import Status

#: Space fields that steer the search, not what a trial measures: they may differ.
MAY_DIFFER = ("study", "description", "sampler", "seed", "early_stopping", "backend", "trials", "concurrency",
              "retries", "storage", "address", "table", "prefilter", "warm_start")
#: What must be the same for a value to mean the same (the rest of the space).
MUST_MATCH = ("base", "split_total", "scaling", "budget", "train", "data", "resources.workers", "latency_profile",
              "latency_measure")
#: Trainer settings that decide where and how fast a trial runs, not what it measures
#: (``seed``: the same configuration on another seed is a measurement of it all the same).
TRAIN_MAY_DIFFER = ("seed", "device", "threads", "loader_workers", "compile", "channels_last")


def warm_rows(plan: SearchPlan, run_dir: Path | None = None) -> list[TrialRow]:
    """The rows the plan's ``warm_start`` run hands over, numbered from 0, or none without
    one; `SpaceError` (one line naming ``warm_start``) when the runs cannot share them."""
    source = plan.space.warm_start
    if source is None:
        return []
    folder = Path(source)
    where = f"warm_start {source}"
    saved, results = folder / "space.yaml", folder / "results.csv"
    if not folder.is_dir() or not saved.is_file() or not results.is_file():
        what = "no such folder" if not folder.exists() else "no space.yaml and results.csv there"
        raise SpaceError(f"{where}: not a run directory ({what}); expected a folder `coatsearch run` wrote")
    if run_dir is not None and run_dir.exists() and folder.resolve() == run_dir.resolve():
        raise SpaceError(f"{where}: is this run's own directory; warm-start from an earlier run")
    try:
        before = space_from_dict(load_yaml_file(saved, SpaceError, "saved space"), source=str(saved))
    except SpaceError as exc:
        raise SpaceError(f"{where}: its space is not a valid space ({exc})") from None
    check_shared(plan, before, where)
    try:
        table = read_table(results)
        rows = [parse_record(record) for record in table.to_dict("records")]
    except (TableError, RowError) as exc:
        raise SpaceError(f"{where}: its results table cannot be read ({exc})") from None
    kept = [row for row in rows if _measured(plan, row)]
    for row in kept:
        _check_values(plan, row, where)
    return [row.replace(trial=number, warm_start=row.warm_start or f"{folder}#{row.trial}", clock_start=None,
                        clock_end=None)
            for number, row in enumerate(kept)]


def _measured(plan: SearchPlan, row: TrialRow) -> bool:
    """A trial its run told its sampler: complete or stopped, every objective measured."""
    return row.status in (Status.COMPLETE, Status.STOPPED) and all(row.objective(m) == row.objective(m)
                                                                    for m in plan.metrics)


def check_shared(plan: SearchPlan, before: SearchSpace, where: str) -> None:
    """The earlier space's values mean what the plan's would: the same objectives and
    parameters, and every `MUST_MATCH` setting the same."""
    now = plan.space
    ours = sorted(f"{o.metric} {o.direction}" for o in now.objectives)
    theirs = sorted(f"{o.metric} {o.direction}" for o in before.objectives)
    if ours != theirs:
        raise SpaceError(f"{where}: its objectives ({', '.join(theirs)}) are not this run's ({', '.join(ours)}); "
                         "trials measured for other objectives cannot be shared")
    if set(now.params) != set(before.params):
        missing = sorted(set(now.params) - set(before.params))
        extra = sorted(set(before.params) - set(now.params))
        parts = [f"this run searches {', '.join(missing)}" if missing else "",
                 f"it searched {', '.join(extra)}" if extra else ""]
        raise SpaceError(f"{where}: the runs search different parameters ({'; '.join(p for p in parts if p)}); "
                         "the earlier values would mean another network")
    changed = [changed for name, ours_, theirs_ in _settings(plan, now, before) for changed in _diff(name, ours_, theirs_)]
    if changed:
        raise SpaceError(f"{where}: its settings differ from this run's ({', '.join(changed)}), so its values "
                         f"would mean something else; these must match: {', '.join(MUST_MATCH)}")


def _settings(plan: SearchPlan, now: SearchSpace, before: SearchSpace) -> list[tuple[str, Any, Any]]:
    """(setting, this run's, the earlier run's) for every setting that must match."""
    def rest(space: SearchSpace) -> dict[str, Any]:
        data = space.to_dict()
        for name in (*MAY_DIFFER, "base", "train", "data", "params", "objectives", "resources"):
            data.pop(name, None)
        return data

    def trainer(space: SearchSpace) -> dict[str, Any]:
        settings = trainer_of(space).model_dump()
        return {k: v for k, v in settings.items() if k not in TRAIN_MAY_DIFFER}

    try:
        before_base = base_of(before).to_dict()
        before_train = trainer(before)
    except SpaceError as exc:
        raise SpaceError(f"earlier run's {exc}") from None
    ours, theirs = rest(now), rest(before)
    pairs = [("base", plan.base.to_dict(), before_base), ("train", trainer(now), before_train),
             ("data", now.data.model_dump(), before.data.model_dump()),
             ("resources.workers", now.resources.workers, before.resources.workers)]
    return pairs + [(name, ours.get(name), theirs.get(name)) for name in sorted(set(ours) | set(theirs))]


def _diff(name: str, ours: Any, theirs: Any) -> list[str]:
    """The settings under ``name`` that differ: ``train.lr`` rather than all of ``train``."""
    if isinstance(ours, dict) and isinstance(theirs, dict) and name != "base":
        return [f"{name}.{key}" for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]
    return [name] if ours != theirs else []


def _check_values(plan: SearchPlan, row: TrialRow, where: str) -> None:
    """Every value the earlier trial sampled lies in the plan's space."""
    for name, domain in plan.space.params.items():
        value = row.sampled.get(name)
        dist = domain.distribution()
        try:
            inside = value is not None and dist._contains(dist.to_internal_repr(value))
        except (ValueError, TypeError):
            inside = False
        if not inside:
            shown = domain.choices if domain.choices is not None else f"{domain.low}..{domain.high}"
            raise SpaceError(f"{where}: its trial {row.trial} has {name}={value!r}, outside this space's "
                             f"{name} ({shown}); widen params.{name} to share its trials")
