"""A trial's data, read once per process and shared by the trials it runs.

An image folder is read through its prepared cache (`coatsearch.data.prepared`): the
first trial on a node decodes it once, under a lock, and every trial process maps the
same file, so a second trial on the same data adds no copy of it.
"""

from __future__ import annotations

from typing import Any

from coatsearch.space import DataSettings

#: Data bundles read by this process, by (settings, image size, seed). Bounded: a study
#: uses a handful of data settings, and each bundle holds a whole dataset.
_DATA_CACHE: dict[tuple[Any, ...], Any] = {}
_DATA_CACHE_SIZE = 4


def load_trial_data(settings: DataSettings, image_size: int, seed: int) -> Any:
    """The data bundle for a trial, read once per process, image size and data setting.

    The validation split depends on the data seed only (the space's ``seed``), never on a
    trial's training seed, so all trials are selected on the same images.
    """
    from coatsearch.data import load_data

    key = (settings.model_dump_json(), image_size, seed)
    if key not in _DATA_CACHE:
        while len(_DATA_CACHE) >= _DATA_CACHE_SIZE:
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE[key] = load_data(
            settings.source, image_size=image_size, val_fraction=settings.val_fraction,
            train_size=settings.train_size, seed=seed, augment=settings.augment,
            mode=settings.mode, on_bad_file=settings.on_bad_file,
        )
    return _DATA_CACHE[key]
