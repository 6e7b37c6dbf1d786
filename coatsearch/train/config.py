"""`TrainConfig`: the hyper-parameters of one trial's training, validated.

Data is not part of it (it is passed to `coatsearch.fit` separately), so one config
serves any dataset. The defaults are the recipe that takes a 1.2M-parameter C-C-T-T to
85% on the built-in Fashion-MNIST subset in a few CPU minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from coatsearch.errors import CoatsearchError
from coatsearch.files import load_yaml_file
from coatsearch.validation import one_line, validate_mapping

DeviceName = Literal["auto", "cpu", "cuda", "mps", "xla"]


class TrainConfigError(CoatsearchError):
    """An invalid trainer setting. The message is one line: ``field: what was expected``."""


class TrainConfig(BaseModel):
    """How to train one trial: optimiser, schedule, regularisation, device, precision.

    AdamW (decoupled ``weight_decay``; biases, norms and relative-bias tables are not
    decayed) with ``warmup_epochs`` of linear warm-up, then cosine decay to zero, stepped
    every batch. ``mixup`` is the Beta(alpha, alpha) parameter (0 = off); ``grad_clip``
    the maximum global gradient norm (None = off). ``threads`` sets
    `torch.set_num_threads` for the trial and restores it after (None = leave it).
    ``amp`` means mixed precision on CUDA (bfloat16 where supported, else float16 with
    loss scaling) and nothing elsewhere. ``compile`` runs the training steps through
    `torch.compile` (compile time is paid on the first steps; see benchmarks/compile_cost.py
    for when it pays back); evaluation runs the plain model. Stochastic depth comes from the spec's
    ``drop_path``.

    ``steps``: train for this many optimiser steps in all, whatever the data size, in
    ``epochs`` rounds of equal length (each round ends with an evaluation, as an epoch
    does; batches run on through reshuffled passes over the data). Data-size comparisons
    use it, so that a larger training set does not also mean more updates. Without it a
    round is one pass over the data. With it, ``warmup_epochs`` counts rounds.
    """

    # an infinite or NaN setting is refused, never trained with
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    epochs: int = Field(5, gt=0)
    steps: int | None = Field(None, gt=0)
    batch_size: int = Field(64, gt=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(0.5, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    mixup: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    #: 32-bit unsigned, as NumPy's and torch's generators take it
    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: DeviceName = "auto"
    amp: bool = True
    channels_last: bool = True
    threads: int | None = Field(None, gt=0)
    eval_test: bool = False
    compile: bool = False
    #: DataLoader worker processes building batches ahead (None: only where the loop's
    #: thread would starve the model: streamed files, RandAugment on the host for an
    #: accelerator; 0: batches built in the loop's thread).
    loader_workers: int | None = Field(None, ge=0)

    @field_validator("steps")
    @classmethod
    def _a_step_per_round(cls, steps: int | None, info: ValidationInfo) -> int | None:
        epochs = info.data.get("epochs")
        if steps is not None and epochs is not None and steps < epochs:
            raise ValueError(f"at least one step per epoch is needed: {steps} steps for {epochs} epochs")
        return steps

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise TrainConfigError(one_line(exc, root="trainer")) from None

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> TrainConfig:
        """Validate a mapping (as read from YAML); ``source`` names the file in errors."""
        return validate_mapping(cls, data, TrainConfigError, source=source, what="trainer")

    @classmethod
    def from_yaml_file(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        data = load_yaml_file(path, TrainConfigError, "trainer file")
        if isinstance(data, dict) and set(data) == {"trainer"}:
            data = data["trainer"]
        if isinstance(data, dict) and "study" in data and "train" in data:
            raise TrainConfigError(f"{path}: a search space, not trainer settings; `coatsearch best RUN_DIR -o FILE` "
                                   "writes a run's best configuration as a training file for `coatsearch train FILE`")
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some fields changed."""
        return TrainConfig(**{**self.model_dump(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
