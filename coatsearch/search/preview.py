"""A dry run: every candidate a plan would train, without training any.

For a grid, every point the study runs; otherwise the first ``trials`` samples the space's
sampler draws (from a fresh study, as a new run's first draws are). Users check a space's
networks, costs and budget errors here before spending a cluster on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from coatsearch.search.plan import InfeasibleCandidate, SearchPlan
from coatsearch.search.rows import NetSummary
from coatsearch.spec import NetSpec

NET_COLUMNS = tuple(f.name for f in fields(NetSummary))


@dataclass(frozen=True)
class Preview:
    """One candidate as a run would build it; ``status`` is ``ok`` or ``infeasible``."""

    #: the values sampled for the space's parameters
    sampled: dict[str, Any]
    status: str
    net: NetSummary | None = None
    budget_error: float | None = None
    reason: str | None = None
    spec: NetSpec | None = field(default=None, repr=False)  # the network, for timing it

    def to_dict(self) -> dict[str, Any]:
        """The candidate as a dry run's JSON shows it: ``params`` the sampled values,
        ``n_params`` the parameter count, the network's other columns under their names."""
        net = self.net.columns() if self.net is not None else dict.fromkeys(NET_COLUMNS)
        count = net.pop("params")
        return {"params": self.sampled, "status": self.status, **net, "n_params": count,
                "budget_error": self.budget_error, "reason": self.reason}


def _points(plan: SearchPlan) -> list[dict[str, Any]]:
    if plan.grid is not None:
        return [dict(p) for p in plan.grid_points]
    import optuna

    from coatsearch.search.optuna_storage import quiet_optuna
    from coatsearch.search.samplers import make_sampler

    with quiet_optuna():
        study = optuna.create_study(sampler=make_sampler(plan), directions=plan.study_directions)
        points = []
        for _ in range(plan.space.trials):
            trial = study.ask()
            points.append(plan.sample(trial))
    return points


def preview(plan: SearchPlan) -> list[Preview]:
    """The candidates of a plan, in the order a run would meet them."""
    budget = plan.space.budget
    out = []
    for params in _points(plan):
        try:
            candidate = plan.candidate(params)
        except InfeasibleCandidate as exc:
            out.append(Preview(sampled=params, status="infeasible", reason=str(exc)))
            continue
        error = None
        if budget is not None and budget.target is not None:
            metric, target = budget.target
            error = getattr(candidate.net, metric) / target - 1
        out.append(Preview(sampled=params, status="ok", net=candidate.net, budget_error=error, spec=candidate.spec))
    return out
