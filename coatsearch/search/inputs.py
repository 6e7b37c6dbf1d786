"""A trial's data, read once per process and shared by the trials it runs.

An image folder is read through its prepared cache (`coatsearch.data.prepared`): the
first trial on a node decodes it once, under a lock, and every trial process maps the
same file, so a second trial on the same data adds no copy of it.
"""

from __future__ import annotations

import functools
from typing import Any

from coatsearch.space import DataSettings


#: Bounded: a study uses a handful of data settings, and each bundle holds a whole dataset.
@functools.lru_cache(maxsize=4)
def load_trial_data(settings: DataSettings, image_size: int, seed: int) -> Any:
    """The data bundle for a trial, read once per process, image size and data setting
    (``settings`` is frozen, so it keys the cache as it is).

    The validation split depends on the data seed only (the space's ``seed``), never on a
    trial's training seed, so all trials are selected on the same images.
    """
    from coatsearch.data import load_data

    return load_data(
        settings.source, image_size=image_size, val_fraction=settings.val_fraction,
        train_size=settings.train_size, seed=seed, augment=settings.augment,
        mode=settings.mode, on_bad_file=settings.on_bad_file,
    )
