"""The hand-off from a search to training: a run's best configuration as a training file
(`coatsearch.trainfile`), the data and trainer settings of its trial included.

`best_training_file` picks the configuration by the run's own objectives, averaged over
seeds (`coatsearch.analysis.ranking.best_configuration`), and takes its trial nearest that
mean. It reads the results table and the spec first, without torch; only a run whose best
trial has a valid spec loads the search stack to recover the trial's settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coatsearch.analysis.ranking import BestConfiguration, best_configuration
from coatsearch.errors import CoatsearchError
from coatsearch.spec import NetSpec

if TYPE_CHECKING:
    from coatsearch.trainfile import TrainingFile


def best_training_file(run_dir: str | Path) -> tuple[TrainingFile, BestConfiguration]:
    """The training file of the best configuration of the run in ``run_dir``: its trial's
    spec as trained, the search's data settings and split seed, and the trial's trainer
    settings (the space's, the trial's sampled ``train.*``/``data.*`` values, its seed and
    thread count)."""
    from coatsearch.report import ReportError, load_run

    run = load_run(run_dir)
    found = best_configuration(run.ranked, run.study.objectives)
    if found is None:
        raise ReportError(f"{run_dir}: no complete trial at full fidelity yet")
    row = found.trial
    where = f"{Path(run_dir) / 'results.csv'}: trial {int(row['trial'])}"
    try:
        spec = NetSpec.from_dict(json.loads(row["spec"]))
    except (CoatsearchError, ValueError) as exc:
        raise ReportError(f"{where}, spec: {exc}") from None
    space_path = Path(run_dir) / "space.yaml"
    if not space_path.exists():
        raise ReportError(f"{run_dir}: no space.yaml, so the search's data and trainer settings are unknown")
    from coatsearch.search import compile_space  # the search stack (and torch) from here on
    from coatsearch.space import load_space
    from coatsearch.trainfile import TrainingFile

    plan = compile_space(load_space(space_path), source=str(space_path), check_data=False, check_storage=False)
    params = {k.removeprefix("param."): _plain(row[k]) for k in row.index if k.startswith("param.") and row[k] == row[k]}
    candidate = plan.candidate(params)
    trainer = candidate.train.replace(threads=plan.space.trial_threads)  # as `run_trial` trains it
    origin = {
        "run": str(run_dir), "trial": int(row["trial"]), "configuration": found.values,
        "objectives": {m: round(v, 6) for m, v in found.means.items()}, "seeds": found.seeds,
        "trial_val_acc": float(row["val_acc"]),
    }
    made = TrainingFile(spec=spec, data=candidate.data, data_seed=plan.space.seed, train=trainer.to_dict(), origin=origin)
    return made, found


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
