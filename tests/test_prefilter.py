"""A space's ``prefilter``: the space's candidates ranked by a proxy when it compiles, and
only the best ``keep`` share searched; the rest are infeasible."""

from __future__ import annotations

import pytest
from conftest import TINY_SPACE

from coatsearch.search import compile_space
from coatsearch.search.plan import InfeasibleCandidate
from coatsearch.search.rows import point_key
from coatsearch.space import SearchSpace, SpaceError

PARAMS = {"split": {"choices": [1, 2]}, "layout": {"choices": ["C-C-T-T", "C-C-C-C"]}}


def _space(**changes) -> SearchSpace:
    return SearchSpace.model_validate({**TINY_SPACE, "params": PARAMS, "trials": 4, **changes})


def test_only_the_best_share_by_the_proxy_is_searched():
    plain = compile_space(_space(), check_data=False)
    points = [{"split": s, "layout": lay} for s in (1, 2) for lay in ("C-C-T-T", "C-C-C-C")]
    by_params = sorted(points, key=lambda p: -plain.candidate(p).net.params)
    plan = compile_space(_space(prefilter={"proxy": "params", "keep": 0.5}), check_data=False)
    assert plan.kept == {point_key(p) for p in by_params[:2]}
    assert plan.candidate(by_params[0]).spec == plain.candidate(by_params[0]).spec
    with pytest.raises(InfeasibleCandidate, match="prefiltered: not in the best 50% of the candidates by params"):
        plan.candidate(by_params[-1])


def test_a_prefilter_needs_a_known_proxy_and_discrete_parameters():
    with pytest.raises(SpaceError, match="prefilter.proxy: unknown proxy 'nope'"):
        compile_space(_space(prefilter={"proxy": "nope", "keep": 0.5}), check_data=False)
    continuous = {**PARAMS, "drop_path": {"low": 0.0, "high": 0.2}}
    with pytest.raises(SpaceError, match="prefilter: params.drop_path is continuous"):
        compile_space(_space(params=continuous, sampler="tpe", prefilter={"proxy": "params", "keep": 0.5}),
                      check_data=False)
    with pytest.raises(ValueError, match="keep"):
        _space(prefilter={"proxy": "params", "keep": 0})


@pytest.mark.slow
def test_a_replayed_search_trains_only_what_the_prefilter_keeps(tmp_path):
    import io

    from rich.console import Console

    from coatsearch.runner import run_study
    from coatsearch.search.jsonl_ledger import read_ledger
    from coatsearch.space import load_space

    space = load_space("tables/fmnist32/space.yaml", [
        "params.depth_multiplier.choices=[1]", "params.scale.choices=[1]", "params.split.choices=[1,2,3,4]",
        "params.layout.choices=[C-C-C-C,C-C-T-T]", "sampler=random", "trials=6", "backend=replay",
        "table=tables/fmnist32", "prefilter={proxy: params, keep: 0.5}"])
    plan = compile_space(space, check_data=False)
    assert len(plan.kept) == 4
    run_study(plan, tmp_path / "run", console=Console(file=io.StringIO()))
    rows = read_ledger(tmp_path / "run")
    trained = {r.point for r in rows if r.status == "complete"}
    assert trained and trained <= plan.kept
    assert all(r.reason.startswith("prefiltered") for r in rows if r.status == "infeasible")
