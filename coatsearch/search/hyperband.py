"""Hyperband by epoch, with the semantics of Optuna's `HyperbandPruner`: several brackets
of asynchronous successive halving, each starting its rungs at a larger first epoch, so
that some trials are judged early and often and others late or never. Every trial joins
one bracket, chosen from its number with each bracket weighted by the trials it needs
(as Optuna does), and meets only the trials of its own bracket at each rung. The sampler
on top (TPE, say) learns from every finished trial, which is BOHB's model-based
sampling on successive-halving brackets.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

from coatsearch.objectives import Direction
from coatsearch.search.rungs import Asha, Course, Verdict, judge
from coatsearch.search.stopping import bracket_count


class Hyperband:
    """Brackets ``b = 0 .. n-1``; bracket ``b`` is `Asha` with first rung ``grace * rf**b``."""

    def __init__(self, grace: int, factor: int, max_epochs: int, brackets: int | None = None,
                 direction: Direction = Direction.MAX) -> None:
        most = bracket_count(grace, factor, max_epochs)
        self.count = min(brackets or most, most)
        self.brackets = [Asha(grace * factor**b, factor, max_epochs, direction) for b in range(self.count)]
        # Optuna's allocation: bracket b gets ceil(n * rf**s / (s + 1)) shares, s = n - 1 - b
        self.shares = [math.ceil(self.count * factor ** (self.count - 1 - b) / (self.count - b))
                       for b in range(self.count)]

    def bracket_of(self, number: int) -> int:
        """The bracket of trial ``number``: a stable hash of it, weighted by the shares."""
        slot = zlib.crc32(f"trial-{number}".encode()) % sum(self.shares)
        for b, share in enumerate(self.shares):
            if slot < share:
                return b
            slot -= share
        return self.count - 1

    def judge(self, trial: Course, finished: Sequence[Course]) -> Verdict:
        bracket = self.bracket_of(trial.number)
        mates = [c for c in finished if self.bracket_of(c.number) == bracket]
        return judge(self.brackets[bracket], trial, mates)


def hyperband(early: Any, max_epochs: int) -> Hyperband:
    """The ``hyperband`` scheduler of an ``early_stopping`` section."""
    return Hyperband(early.grace_period, early.reduction_factor, max_epochs, early.brackets, early.direction)
