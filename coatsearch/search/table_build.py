"""Building a table of trained networks: its ledger committed as text, its build resumable
from that text alone.

A table (`coatsearch.search.table`) is trained by ordinary studies on the optuna backend,
whose ledger is a SQLite file: binary, rewritten as it grows, tied to the machine that
runs it. What a table folder keeps instead is each study's rows as JSON lines
(``<name>.jsonl`` beside the space ``<name>.yaml``), the form of a Ray run's ledger:
`export_rows` writes it from a run directory, `seed_study` turns it back into an Optuna
study in a fresh run directory, so a build started on one machine goes on on another
from the committed files alone, training only the points the rows do not hold.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from coatsearch import rundir
from coatsearch.errors import CoatsearchError, os_reason
from coatsearch.search.jsonl_ledger import read_rows
from coatsearch.search.optuna_storage import open_study, quiet_optuna
from coatsearch.search.optuna_trials import ledger
from coatsearch.search.plan import SearchPlan
from coatsearch.search.rows import TrialRow
from coatsearch.space import Domain
from coatsearch.status import Status


def distribution(domain: Domain) -> BaseDistribution:
    """The Optuna distribution `Domain.suggest` draws from."""
    if domain.choices is not None:
        return CategoricalDistribution(domain.choices)
    assert domain.low is not None and domain.high is not None
    if domain.is_int:
        return IntDistribution(int(domain.low), int(domain.high), step=int(domain.step or 1), log=domain.log)
    return FloatDistribution(float(domain.low), float(domain.high), step=domain.step, log=domain.log)


def kept_rows(rows: list[TrialRow]) -> list[TrialRow]:
    """The rows a table keeps: every trial that ended, or was infeasible, in trial order
    (interrupted ones run again and are left out)."""
    return sorted((r for r in rows if r.status != Status.INTERRUPTED), key=lambda r: r.trial)


def export_rows(plan: SearchPlan, run_dir: Path, path: Path) -> int:
    """Write the run's kept rows to ``path`` as JSON lines, atomically; how many."""
    with quiet_optuna():
        rows = kept_rows(ledger(open_study(plan, run_dir), plan.space.retries))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text("".join(json.dumps(r.to_record(), separators=(",", ":"), default=str) + "\n" for r in rows))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CoatsearchError(f"{path}: cannot write the table's rows ({os_reason(exc)})") from None
    return len(rows)


def trial_of(plan: SearchPlan, row: TrialRow, number: int) -> optuna.trial.FrozenTrial:
    """A finished Optuna trial holding ``row`` (renumbered ``number``), as the optuna
    backend would have stored it: values for a trained trial, pruned for an infeasible one,
    failed for one that diverged or failed."""
    row = row.replace(trial=number)
    params = {name: row.sampled[name] for name in plan.space.params if name in row.sampled}
    dists = {name: distribution(plan.space.params[name]) for name in params}
    attrs: dict[str, Any] = {"row": row.to_record()}
    if row.status in (Status.COMPLETE, Status.STOPPED):
        values = [row.objective(m) for m in plan.metrics]
        return create_trial(params=params, distributions=dists, values=values, user_attrs=attrs)
    state = TrialState.PRUNED if row.status == Status.INFEASIBLE else TrialState.FAIL
    return create_trial(params=params, distributions=dists, user_attrs=attrs, state=state)


def seed_study(plan: SearchPlan, run_dir: Path, path: Path) -> int:
    """Give a run directory without a study the rows committed at ``path``; how many.
    Rows are renumbered in order (a new study numbers its trials from 0)."""
    rows = kept_rows(read_rows(path))
    rundir.claim(run_dir, "run directory")  # the run that goes on there finds its own folder
    with quiet_optuna():
        study = open_study(plan, run_dir)
        if study.get_trials(deepcopy=False):
            raise CoatsearchError(f"{run_dir}: already holds a study; seed only a fresh run directory")
        study.add_trials([trial_of(plan, row, number) for number, row in enumerate(rows)])
    return len(rows)


# --------------------------------------------------------------------------- stages
#: A table folder's spaces, in build order: its networks, then their second seed.
SPACES = ("space", "seeds")


def first_block(plan: SearchPlan) -> int:
    """Trainable grid points at the first value of the grid's outermost parameter: the
    block a build trains first, so a partial table holds every other factor's values."""
    from coatsearch.search.plan import InfeasibleCandidate

    if not plan.grid or not plan.space.params:
        return plan.target_trials
    outer = next(iter(plan.space.params))
    first = plan.grid[0][outer]
    count = 0
    for params in plan.grid:
        if params[outer] != first:
            continue
        try:
            plan.candidate(params)
            count += 1
        except InfeasibleCandidate:
            pass
    return count


def stages(folder: Path) -> list[tuple[Path, int | None]]:
    """The build's studies in order, as (space file, trials or None for the space's own):
    the main space's first block (`first_block`), the seeds space whole, the main space
    whole. Spaces the folder lacks are left out."""
    main, seeds = folder / f"{SPACES[0]}.yaml", folder / f"{SPACES[1]}.yaml"
    if not main.exists():
        raise CoatsearchError(f"{folder}: not a table folder (no {main.name})")
    order: list[tuple[Path, int | None]] = [(main, -1)]
    if seeds.exists():
        order.append((seeds, None))
    order.append((main, None))
    return order


def rows_file(space_file: Path) -> Path:
    """Where a table folder keeps a space's rows: ``<name>.jsonl`` beside ``<name>.yaml``."""
    return space_file.with_suffix(".jsonl")
