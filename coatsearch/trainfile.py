"""Training files: everything a trial of a search used, so that `coatsearch train FILE`
trains that trial again.

A training file is YAML::

    spec: {...}          # the network the trial trained (matched to the budget)
    data: {...}          # the search's data settings: source, train_size, val_fraction, ...
    data_seed: 0         # the seed of the validation split and training subset (the space's seed)
    train: {...}         # every trainer setting of the trial: epochs, batch, lr, seed, threads...
    origin: {...}        # where it came from: run, trial, configuration, the objectives' means

`coatsearch.handoff.best_training_file` writes it for a run's best configuration;
`read_training_file` reads it back, and tells a training file from a plain spec, which
trains on the built-in data as it always did. With the same seed, epochs and thread count
on the same kind of device, the file trains to the accuracy its trial had.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from coatsearch.errors import CoatsearchError
from coatsearch.space import DataSettings
from coatsearch.spec import NetSpec
from coatsearch.train.config import TrainConfig
from coatsearch.validation import validate_mapping

#: The keys that make a YAML file a training file rather than a spec.
MARKERS = ("spec", "train")


class TrainingFileError(CoatsearchError):
    """A training file that cannot be read or written (one line, naming the field)."""


class TrainingFile(BaseModel):
    """A trial's network, data and trainer settings (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: NetSpec
    data: DataSettings = DataSettings()
    data_seed: int = 0
    train: dict[str, Any] = Field(default_factory=dict)
    origin: dict[str, Any] = Field(default_factory=dict)

    def trainer(self, **overrides: Any) -> TrainConfig:
        """The trial's `TrainConfig`, with ``overrides`` (None values ignored) on top."""
        return TrainConfig.from_dict({**self.train, **{k: v for k, v in overrides.items() if v is not None}})

    def settings(self) -> dict[str, Any]:
        """What a checkpoint keeps of it (`coatsearch.checkpoint`): everything but the origin."""
        return self.model_dump(mode="json", exclude={"origin"})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def load_data(self, data: str | None = None) -> Any:
        """The data the trial trained on (read as the search read it), or ``data`` instead."""
        from coatsearch.search.inputs import load_trial_data

        settings = self.data if data is None else self.data.model_copy(update={"source": data})
        return load_trial_data(settings, self.spec.image_size, self.data_seed, self.trainer().seed)


def is_training_file(data: Any) -> bool:
    """Whether a parsed YAML document is a training file (a mapping with spec and train)."""
    return isinstance(data, dict) and all(key in data for key in MARKERS)


def read_training_file(path: str | Path) -> TrainingFile | None:
    """The training file at ``path``, or None when the file is something else (a spec)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # the spec reader says what is wrong with it
    if not is_training_file(data):
        return None
    found = validate_mapping(TrainingFile, data, TrainingFileError, source=str(path), what="training file")
    try:
        found.trainer()
    except CoatsearchError as exc:
        raise TrainingFileError(f"{path}: train: {exc}") from None
    return found
