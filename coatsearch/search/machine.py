"""What this machine can hold, checked before a run starts anything: worker processes
against cores, a trial's cores and GPUs against the machine's (see docs/inputs.md)."""

from __future__ import annotations

from coatsearch.host import available_cpus
from coatsearch.search.plan import SearchPlan
from coatsearch.space import SpaceError


def check_machine(plan: SearchPlan, address: str | None = None) -> list[str]:
    """Refuse, before anything starts, a run this machine cannot hold: more worker
    processes than cores (optuna backend: each needs a core, more only slow each other
    down), a trial asking for more cores (ray backend) or GPUs than the machine has (a
    local Ray would keep it pending for ever). Returns warnings for what runs but slowly. A Ray cluster
    (``address``) brings its own resources and is not checked here."""
    space = plan.space
    if address or space.address or space.backend not in ("optuna", "ray"):  # a cluster, or a replay's simulation
        return []
    cores, warnings = available_cpus(), []
    if space.backend == "optuna" and space.concurrency > cores:
        raise SpaceError(f"concurrency: {space.concurrency} worker processes, but this machine gives this "
                         f"process {cores} cores; at most {cores} (more only slow each other down)")
    per_trial = space.resources.cpu * space.resources.workers
    if space.backend == "ray" and per_trial > cores:
        raise SpaceError(f"resources.cpu: {per_trial:g} cores per trial, but this machine gives this process "
                         f"{cores}; a local Ray would never start the trial")
    if space.resources.gpu > 0:
        gpus = gpu_count()
        if space.resources.gpu * space.resources.workers > gpus:
            raise SpaceError(f"resources.gpu: {space.resources.gpu:g} GPUs per trial, but this machine has {gpus}")
    threads = space.concurrency * space.trial_threads
    if threads > cores:
        warnings.append(f"concurrency x resources.cpu: {threads} threads on {cores} cores; "
                        + ("trials will queue" if space.backend == "ray" else "each trial gets a share"))
    return warnings


def gpu_count() -> int:
    """CUDA devices this process sees (torch, imported only when a space asks for GPUs)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
