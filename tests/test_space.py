from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coatsearch.knobs import apply_params
from coatsearch.search import compile_space
from coatsearch.space import SpaceError, load_space, parse_count
from tests.conftest import TINY_SPACE

SPACES = sorted(Path(__file__).resolve().parent.parent.joinpath("spaces").glob("*.yaml"))

VALID = TINY_SPACE


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", SPACES, ids=[p.name for p in SPACES])
def test_shipped_spaces_load(path):
    space = load_space(path)
    assert space.trials >= 1 and space.params


def test_overrides_reach_any_field(tmp_path):
    path = _write(tmp_path, VALID)
    space = load_space(path, ["train.epochs=3", "backend=ray", "params.split.choices=[2]", "budget.flops=5M"])
    assert space.epochs == 3 and space.backend == "ray"
    assert space.params["split"].choices == [2]
    assert space.budget.flops == 5e6


def test_split_moves_blocks_between_s2_and_s3(tmp_path):
    plan = compile_space(load_space(_write(tmp_path, VALID)))
    spec = apply_params(plan.base, {"split": 2}, plan.space.knob_context).spec
    assert [s.blocks for s in spec.stages] == [1, 2, 1, 1]


def test_layout_and_knobs_apply(tmp_path):
    data = dict(VALID, sampler="tpe", params={"layout": {"choices": ["C-T-T-T", "vit-rel"]}, "head_dim": {"choices": [32]},
                               "train.lr": {"low": 1e-4, "high": 1e-2, "log": True}})
    plan = compile_space(load_space(_write(tmp_path, data)))
    draft = apply_params(plan.base, {"layout": "C-T-T-T", "head_dim": 32, "train.lr": 0.003})
    spec = draft.spec
    assert spec.layout == "C-T-T-T" and {s.head_dim for s in spec.stages if s.kind == "T"} == {32}
    assert draft.train["lr"] == 0.003
    vit = apply_params(plan.base, {"layout": "vit-rel"}).spec
    assert vit.stem.kind == "patch" and vit.layout == "T"


def test_a_range_written_with_floats_stays_a_float_range(tmp_path):
    data = dict(VALID, sampler="tpe", params={"width_multiplier": {"low": 1.0, "high": 2.0}, "split": {"low": 1, "high": 2}})
    space = load_space(_write(tmp_path, data))
    assert not space.params["width_multiplier"].is_int
    assert space.params["split"].is_int


@pytest.mark.slow
def test_the_run_directory_keeps_the_resolved_base(tmp_path):
    from coatsearch import preset

    space = load_space(_write(tmp_path, dict(VALID, base="coatnet-0", budget=None, params={"head_dim": {"choices": [32]}})))
    plan = compile_space(space)
    assert plan.space.base == preset("coatnet-0").to_dict()
    assert compile_space(plan.space).base == plan.base == preset("coatnet-0")


def test_parse_count():
    assert parse_count("4.2G") == pytest.approx(4.2e9)
    assert parse_count("25M") == 25e6
    assert parse_count(1000) == 1000
    with pytest.raises(ValueError):
        parse_count("lots")


def _mutated(change):
    data = yaml.safe_load(yaml.safe_dump(VALID))
    change(data)
    return data


BAD_SPACES = [
    (_mutated(lambda d: d["params"].update(colour={"choices": [1]})), "params.colour: unknown parameter"),
    (_mutated(lambda d: d["params"].update(split={"choices": []})), "params.split.choices: the choice list is empty"),
    (_mutated(lambda d: d.update(budget={"flops": -5})), "budget.flops: the target must be positive"),
    (_mutated(lambda d: d.update(budget={"flops": 0})), "budget.flops: the target must be positive"),
    (_mutated(lambda d: d.update(budget={"flops": 10})), "budget.flops:"),
    (_mutated(lambda d: d.update(budget={"params": "1e15"})), "budget.params:"),
    (_mutated(lambda d: d.update(backend="slurm")), "backend:"),
    (_mutated(lambda d: d.update(sampler="cmaes2")), "sampler:"),
    (_mutated(lambda d: d.update(early_stopping={"kind": "asha", "metric": "layout"})), "early_stopping.metric: asha needs a per-epoch numeric metric"),
    (_mutated(lambda d: d.update(early_stopping={"kind": "curve", "metric": "flops"})), "early_stopping.metric: curve needs a per-epoch numeric metric"),
    (_mutated(lambda d: d.pop("trials")), "trials: required field is missing"),
    (_mutated(lambda d: d.update(trials=0)), "trials:"),
    (_mutated(lambda d: d.update(colour=1)), "colour: unknown field"),
    (_mutated(lambda d: d["params"].update(split={"low": 3, "high": 1})), "params.split.low: 3 is above high 1"),
    (_mutated(lambda d: d.update(sampler="grid", params={"train.lr": {"low": 0.001, "high": 0.01}})), "params.train.lr: a range needs integer"),
    (_mutated(lambda d: d.update(base="coatnet-9")), "base.preset: unknown preset"),
    (_mutated(lambda d: d.update(objectives=["accuracy"])), "objectives[0].metric:"),
    (_mutated(lambda d: d.update(storage="sqlite:///x.db", backend="ray")), "storage: a storage URL is for the optuna backend"),
    (_mutated(lambda d: d["params"].update(split={"choices": [3]})), "params.split: 3 does not apply to the base: split: S2 blocks must be a whole number from 1 to 2"),
    (_mutated(lambda d: d["params"].update({"train.bogus": {"choices": [1]}})), "params.train.bogus: the trainer has no setting"),
    (_mutated(lambda d: d["params"].update({"stages[9].blocks": {"choices": [1]}})), "params.stages[9].blocks: 1 does not apply"),
    (_mutated(lambda d: d["params"].update(layout={"choices": ["C-C"]})), "params.layout: 'C-C' does not apply"),
    (_mutated(lambda d: d["params"].update({"train.lr": {"low": 0.001, "high": 0.1, "log": True, "step": 0.01}})), "step: a log range cannot have a step"),
    (_mutated(lambda d: d.update(base=3)), "base: expected a preset name"),
    (_mutated(lambda d: d.update(train={"lr": -1})), "train.lr: Input should be greater than 0"),
    ("study: [\n", "malformed YAML"),
]


@pytest.mark.parametrize("data,message", BAD_SPACES)
def test_bad_spaces_name_the_field_in_one_line(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(SpaceError) as info:
        compile_space(load_space(path), source=str(path), check_data=False)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ") and message in text, text


def test_bad_override_syntax(tmp_path):
    with pytest.raises(SpaceError, match="expected dotted.key=value"):
        load_space(_write(tmp_path, VALID), ["trials"])


def test_missing_space_file():
    with pytest.raises(SpaceError, match="no such space file"):
        load_space("nowhere/space.yaml")


def test_cli_rejects_a_bad_space_before_any_trial(tmp_path):
    path = _write(tmp_path, _mutated(lambda d: d.update(backend="slurm")))
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "coatsearch.cli", "run", str(path), "--out", str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "backend:" in result.stderr
    assert not out.exists()


def test_a_budget_of_flops_and_params_matches_both(tmp_path):
    from coatsearch.search import compile_space

    data = dict(VALID, budget={"flops": "1.2M", "params": "85k", "tolerance": 0.1})
    space = load_space(_write(tmp_path, data))
    assert space.budget.targets == {"flops": 1.2e6, "params": 8.5e4}
    plan = compile_space(space)
    for point in plan.grid_points or [{"split": 1}, {"split": 2}]:
        candidate = plan.candidate(point)
        assert abs(candidate.net.flops / 1.2e6 - 1) <= 0.1 and abs(candidate.net.params / 8.5e4 - 1) <= 0.1


def test_a_candidate_carries_its_trainer_and_data_settings_validated_together(tmp_path):
    """Settings are validated once, when the space compiles: each value alone, then each
    candidate's values together; a trial trains the candidate's `TrainConfig` as it is."""
    from coatsearch.search.plan import InfeasibleCandidate
    from coatsearch.space import DataSettings
    from coatsearch.train import TrainConfig

    data = dict(VALID, sampler="tpe", seed=7, train={"epochs": 1, "batch_size": 64},
                params={"train.epochs": {"choices": [1, 3]}, "train.steps": {"choices": [2]},
                        "data.augment": {"choices": ["none", "light"]}})
    plan = compile_space(load_space(_write(tmp_path, data)), check_data=False)
    assert isinstance(plan.train, TrainConfig) and plan.train.seed == 7 and plan.epochs == 1
    candidate = plan.candidate({"train.epochs": 1, "train.steps": 2, "data.augment": "light"})
    assert isinstance(candidate.train, TrainConfig) and isinstance(candidate.data, DataSettings)
    assert (candidate.train.steps, candidate.train.seed, candidate.data.augment) == (2, 7, "light")
    with pytest.raises(InfeasibleCandidate, match="steps: at least one step per epoch is needed: 2 steps for 3 epochs"):
        plan.candidate({"train.epochs": 3, "train.steps": 2, "data.augment": "none"})


def test_a_domain_is_optunas_distribution_of_its_values():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from coatsearch.space import Domain

    assert Domain(choices=[1, 2]).distribution() == CategoricalDistribution([1, 2])
    assert Domain(low=1, high=5, step=2).distribution() == IntDistribution(1, 5, step=2)
    assert Domain(low=1e-4, high=1e-2, log=True).distribution() == FloatDistribution(1e-4, 1e-2, log=True)


@pytest.mark.parametrize("written, meant", [
    ("photos", "{here}/photos"),                       # a folder beside the space file
    ("../data/photos", "{here}/../data/photos"),
    ("imagefolder:photos", "imagefolder:{here}/photos"),
    ("idx:sets/fm", "idx:{here}/sets/fm"),
    ("fashion-mnist-full:sets/fm", "fashion-mnist-full:{here}/sets/fm"),
    ("torchvision:CIFAR10:cache", "torchvision:CIFAR10:{here}/cache"),
    ("torchvision:CIFAR10", "torchvision:CIFAR10"),
    ("fashion-mnist", "fashion-mnist"),
    ("/abs/photos", "/abs/photos"),
    ("~/photos", "~/photos"),
])
def test_a_relative_data_path_in_a_space_file_is_taken_from_its_folder(tmp_path, monkeypatch, written, meant):
    here = tmp_path / "spaces"
    (here / "photos").mkdir(parents=True)
    (here / "space.yaml").write_text(yaml.safe_dump({**TINY_SPACE, "data": {"source": written}}))
    monkeypatch.chdir(tmp_path)  # elsewhere: the file's folder decides, not the working directory
    assert load_space(here / "space.yaml").data.source == meant.format(here=here)
    # a --set value is the user's, typed where they are: kept as written
    assert load_space(here / "space.yaml", [f"data.source={written}"]).data.source == written
    # a run folder's saved space keeps what it holds
    assert load_space(here / "space.yaml", relative_data=False).data.source == written
