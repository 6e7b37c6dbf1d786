"""The search's extension points, by name: backends, samplers and early-stopping
schedulers (`coatsearch.registry.Registry`). The built-in entries are references
(``"module:attribute"``) imported on first use, so compiling a space checks a name
without loading the backend it names. A new entry joins from any module:

    BACKENDS.register("mine", factory)      # (plan, run_dir, address) -> Backend
    SAMPLERS.register("mine", factory)      # (seed, trials) -> optuna BaseSampler
    SCHEDULERS.register("mine", factory)    # (early_stopping, max_epochs) -> Scheduler
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coatsearch.registry import Registry

#: ``(plan, run_dir, address) -> Backend`` (`coatsearch.search.backend.Backend`).
BACKENDS: Registry[Callable[..., Any]] = Registry("backend")
BACKENDS.register("optuna", "coatsearch.search.backend:optuna_backend")
BACKENDS.register("ray", "coatsearch.search.backend:ray_backend")
BACKENDS.register("replay", "coatsearch.search.backend:replay_backend")

#: ``(seed, trials) -> optuna.samplers.BaseSampler``. ``grid`` is walked by enqueuing its
#: points (`coatsearch.search.plan`), so its sampler only serves them.
SAMPLERS: Registry[Callable[[int, int], Any]] = Registry("sampler")
SAMPLERS.register("tpe", "coatsearch.search.samplers:tpe")
SAMPLERS.register("nsga2", "coatsearch.search.samplers:nsga2")
SAMPLERS.register("random", "coatsearch.search.samplers:random")
SAMPLERS.register("grid", "coatsearch.search.samplers:random")

#: ``(early_stopping, max_epochs) -> Scheduler`` (`coatsearch.search.rungs.Scheduler`);
#: ``early_stopping.kind: none`` names none. Ray runs its own for ``asha`` and ``hyperband``,
#: and the others through `coatsearch.search.ray_schedulers`.
SCHEDULERS: Registry[Callable[[Any, int], Any]] = Registry("early-stopping scheduler")
SCHEDULERS.register("asha", "coatsearch.search.rungs:asha")
SCHEDULERS.register("hyperband", "coatsearch.search.hyperband:hyperband")
SCHEDULERS.register("moasha", "coatsearch.search.moasha:moasha")
SCHEDULERS.register("curve", "coatsearch.search.curves:curve")
SCHEDULERS.register("target", "coatsearch.search.target:target")
