"""Samplers draw per trial: which worker draws a trial, and whether the run was resumed
first, does not change what it draws."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from coatsearch.results import read_table
from coatsearch.runner import run_study
from coatsearch.search import compile_space
from coatsearch.search.optuna_storage import quiet_optuna
from coatsearch.search.samplers import make_sampler, trial_seed
from coatsearch.space import load_space
from tests.conftest import TINY_SPACE


def _plan(tmp_path: Path, **changes):
    data = yaml.safe_load(yaml.safe_dump(TINY_SPACE))
    data.update(changes)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return compile_space(load_space(path))


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", -3.0, 3.0)
    y = trial.suggest_int("y", 0, 1000)
    return (x - 1) ** 2 + y / 1000, abs(x) + (1000 - y) / 1000


def _draws(plan, sessions: list[int]) -> list[tuple[float, int]]:
    """The points of ``sum(sessions)`` trials on one study, each session with a sampler of
    its own (a resumed run, or another worker), as `make_sampler` builds them."""
    storage = optuna.storages.InMemoryStorage()
    with quiet_optuna():
        optuna.create_study(storage=storage, study_name="s", directions=["minimize", "minimize"])
        for trials in sessions:
            study = optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(plan))
            study.optimize(_objective, n_trials=trials)
    return [(t.params["x"], t.params["y"]) for t in study.get_trials()]


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_a_resumed_or_shared_study_draws_what_one_uninterrupted_sampler_draws(tmp_path, sampler):
    plan = _plan(tmp_path, sampler=sampler, trials=6)
    straight = _draws(plan, [8])
    assert len(set(straight)) == 8
    # resumed after 1 and after 5 trials; a second worker taking every other trial
    assert _draws(plan, [1, 4, 3]) == straight
    assert _draws(plan, [1] * 8) == straight


def test_the_seed_still_decides_the_draws(tmp_path):
    one, other = _plan(tmp_path, sampler="random", seed=0), _plan(tmp_path, sampler="random", seed=1)
    assert _draws(one, [3]) == _draws(one, [3]) != _draws(other, [3])
    assert trial_seed(0, 1) != trial_seed(1, 0)


def test_a_random_search_extended_after_it_ended_runs_the_points_a_longer_one_runs(tmp_path):
    changes = {
        "sampler": "random", "budget": None, "train": {"epochs": 1, "batch_size": 64},
        "params": {"split": {"choices": [1, 2]}, "train.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    }
    longer = read_table(run_study(_plan(tmp_path, trials=3, **changes), tmp_path / "longer").table_path)
    run_study(_plan(tmp_path, trials=2, **changes), tmp_path / "extended")
    extended = read_table(run_study(_plan(tmp_path, trials=3, **changes), tmp_path / "extended").table_path)
    columns = ["trial", "param.split", "param.train.lr"]
    assert extended[columns].to_dict("records") == longer[columns].to_dict("records")
    assert extended["param.train.lr"].nunique() == 3  # before, the extension drew trial 0's point again



def test_the_ray_searcher_of_a_resumed_run_draws_its_next_trials_as_optuna_does(tmp_path):
    # Ray's searcher replays the finished trials into a study of its own, failed ones left
    # out: its trial numbers are mapped to the run's, so the same seed gives the same points
    from coatsearch.search.ray_backend import RayBackend
    from coatsearch.search.rows import TrialRow
    from coatsearch.status import Status

    plan = _plan(tmp_path, sampler="random", budget=None, trials=5, backend="ray",
                 params={"split": {"choices": [1, 2]}, "train.lr": {"low": 1e-4, "high": 1e-2, "log": True}})
    with quiet_optuna():
        study = optuna.create_study(sampler=make_sampler(plan), directions=plan.study_directions)
        draws = []
        for _ in range(4):
            trial = study.ask()
            draws.append(plan.sample(trial))
            study.tell(trial, [0.5, 1.0e6])
        rows = [TrialRow(trial=0, status=Status.COMPLETE, sampled=draws[0], val_acc=0.5, flops=1_000_000),
                TrialRow(trial=1, status=Status.FAILED, sampled=draws[1])]
        searcher = RayBackend(plan, tmp_path / "run")._searcher(rows)
        assert [searcher.suggest("a"), searcher.suggest("b")] == draws[2:]


def test_a_domain_draws_through_its_own_optuna_distribution():
    import optuna

    from coatsearch.domains import Domain

    domains = {"a": Domain(choices=[1, "x", 2.5]), "b": Domain(low=1, high=9, step=2),
               "c": Domain(low=0.1, high=1.0, log=True), "d": Domain(low=0.0, high=0.9, step=0.3),
               "e": Domain(low=2, high=64, log=True)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        drawn = {name: d.suggest(trial, name) for name, d in domains.items()}
        # the trial records each value against the very distribution a replayed trial is given
        assert trial.distributions == {name: d.distribution() for name, d in domains.items()}
        assert all(d.distribution()._contains(d.distribution().to_internal_repr(drawn[n])) for n, d in domains.items())
        study.tell(trial, 0.0)
