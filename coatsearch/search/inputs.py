"""A trial's data, read once per process and shared by the trials it runs.

An image folder is read through its prepared cache (`coatsearch.data.prepared`): the
first trial on a node decodes it once, under a lock, and every trial process maps the
same file, so a second trial on the same data adds no copy of it.
"""

from __future__ import annotations

import functools
from typing import Any

from coatsearch.space import DataSettings


def load_trial_data(settings: DataSettings, image_size: int, seed: int, train_seed: int | None = None) -> Any:
    """The data bundle for a trial, read once per process, image size and data setting.

    The validation split depends on the data seed only (the space's ``seed``), never on a
    trial's training seed, so all trials are selected on the same images. So does the
    ``train_size`` subset, unless ``settings.subset`` is ``per_seed`` and ``train_seed``
    (the trial's training seed) is given: then it is drawn from both seeds. Callers that
    need only the sizes or the validation images leave ``train_seed`` out.
    """
    subset_seed = train_seed if settings.subset == "per_seed" else None
    return trial_bundle(settings, image_size, seed, subset_seed)


#: Bounded: a study uses a handful of data settings, and each bundle holds a whole dataset.
@functools.lru_cache(maxsize=4)
def trial_bundle(settings: DataSettings, image_size: int, seed: int, subset_seed: int | None) -> Any:
    """`load_trial_data`'s cached read (``settings`` is frozen, so it keys the cache as it
    is; a fixed subset is one entry whatever the training seed)."""
    from coatsearch.data import load_data

    return load_data(
        settings.source, image_size=image_size, val_fraction=settings.val_fraction,
        train_size=settings.train_size, seed=seed, augment=settings.augment,
        mode=settings.mode, on_bad_file=settings.on_bad_file, subset_seed=subset_seed,
    )
