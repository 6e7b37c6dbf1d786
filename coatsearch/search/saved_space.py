"""A run directory's saved space (``space.yaml``): what a later run of the same directory
may change (``trials``, where trials run) and what it may not (what a trial measures,
the backend whose ledger holds the study).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from coatsearch.files import load_yaml_file
from coatsearch.search.plan import SearchPlan
from coatsearch.space import SearchSpace, SpaceError, space_from_dict
from coatsearch.urls import has_password, without_password


def saved_space(plan: SearchPlan) -> SearchSpace:
    """The space as the run directory keeps it: a storage URL's password left out (it comes
    from the environment, see `coatsearch.urls`)."""
    storage = plan.space.storage
    if storage is None or not has_password(storage):
        return plan.space
    return plan.space.model_copy(update={"storage": without_password(storage)})


def saved_space_note(plan: SearchPlan, run_dir: Path) -> tuple[bool, str]:
    """Whether to write ``space.yaml``, and a note for the user.

    A different space in the same directory is refused: its results would mean something
    else. ``trials`` may change: more trials extend the study; fewer change nothing (the
    saved space is kept, and the note says so). So may where trials run, which does not
    change what they measure (`PLACEMENT`): a study resumed on another machine, with more
    threads per trial or more at once, goes on.
    """
    saved = run_dir / "space.yaml"
    if not saved.exists():
        return True, ""
    try:
        before = space_from_dict(load_yaml_file(saved, SpaceError, "saved space"), source=str(saved)).to_dict()
    except SpaceError:
        raise SpaceError(f"{saved}: the saved space is not a valid space; use another --out") from None
    now = saved_space(plan).to_dict()
    before["base"] = _normalised_base(before.get("base"))  # fields added since take their defaults
    trials_before, trials_now = before.pop("trials", None), now.pop("trials", None)
    placement_changed = _pop_placement(before) != _pop_placement(now)
    if before != now:
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise SpaceError(
            f"{saved}: this run directory holds a different space (changed: {', '.join(changed)}); "
            "use another --out or study name"
        )
    if trials_now is not None and trials_before is not None and trials_now < trials_before:
        return False, f"the run directory's study has trials: {trials_before}; trials: {trials_now} changes nothing there"
    return trials_now != trials_before or placement_changed, ""


#: Space fields that say where and how many trials run (and where they are logged), not what a trial measures.
#: (``resources.workers`` is not among them: it sets the global batch.)
PLACEMENT = ("concurrency", "address", "resources.cpu", "resources.gpu", "resources.accelerator_type",
             "resources.custom", "tracking")


def _pop_placement(space: dict[str, Any]) -> dict[str, Any]:
    """Remove the `PLACEMENT` fields from a space's dict and return them."""
    resources = space.get("resources") or {}
    return {name: resources.pop(name[10:], None) if name.startswith("resources.") else space.pop(name, None)
            for name in PLACEMENT}


def _normalised_base(base: object) -> object:
    """A saved base spec as this version writes it (a field added later gets its default)."""
    from coatsearch.spec import NetSpec, SpecError

    if not isinstance(base, dict):
        return base
    try:
        return NetSpec.from_dict(base).to_dict()
    except SpecError:
        return base


def check_backend(plan: SearchPlan, run_dir: Path) -> None:
    """A run directory's study goes on with the backend it started on, or is refused at once,
    before a backend starts (Ray) or writes its ledger there.

    The backends' ledgers differ (an Optuna study; JSON lines with Tune's experiments), so
    trials recorded by one are not seen by the other: the sampler would restart and the
    table would hold two studies. The trials themselves are the same on either backend;
    resume with the one it started on, or start another run directory."""
    saved = run_dir / "space.yaml"
    if not os.path.isfile(saved):  # False for a path the system cannot look up (too long): claiming it says why
        return
    try:
        before = load_yaml_file(saved, SpaceError, "saved space")
    except SpaceError:
        return  # said in full by saved_space_note
    was = before.get("backend", "optuna") if isinstance(before, dict) else None
    if isinstance(was, str) and was != plan.space.backend:
        raise SpaceError(f"{run_dir}: this run directory's study runs on the {was} backend, not "
                         f"{plan.space.backend}; resume it with --backend {was}, or use another --out")
