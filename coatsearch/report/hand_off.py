"""What a run tells its user to do next with its best network: the command that trains it
on from its training file (the CLI's closing line, the report's best card and `coatsearch
best` print the same one)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from coatsearch.report.data import Run

#: The epochs the hand-off suggests for a network its search trained for fewer.
FULL_EPOCHS = 20


def trains_longer(train: dict[str, Any]) -> bool:
    """Whether the hand-off trains for ``FULL_EPOCHS``: only where the search trained for
    fewer epochs (a quick search) without a step budget. A longer schedule or a step budget
    was chosen on purpose: ``--epochs`` would shorten the one and only re-divide the
    other's steps into rounds."""
    return train.get("steps") is None and _epochs(train.get("epochs")) < FULL_EPOCHS


def train_command(training_file: str, train: dict[str, Any]) -> str:
    """``coatsearch train FILE``, for ``FULL_EPOCHS`` where `trains_longer`, else as the
    search trained it."""
    longer = f" --epochs {FULL_EPOCHS}" if trains_longer(train) else ""
    return f"coatsearch train {training_file}{longer}"


def _epochs(value: Any) -> float:
    """The epochs as written (``30``, ``30.0``, ``"30"``); unset or unreadable reads as
    short, which suggests the longer training."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def best_train_settings(run: Run) -> dict[str, Any]:
    """The trainer settings the run's best trial had: the space's ``train``, with any
    ``train.*`` value the search sampled for it."""
    settings = dict(run.study.settings.get("train") or {})
    best = run.analysis.best
    if best is not None:
        row = best.trial
        settings.update({k.removeprefix("param.train."): row[k] for k in row.index
                         if k.startswith("param.train.") and pd.notna(row[k])})
    return settings
