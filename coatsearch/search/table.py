"""A table of trained networks: every epoch of every trial a set of studies ran, read back
so a search can be replayed over it (`coatsearch.search.replay`) instead of trained.

A table is a folder (``tables/NAME/``) holding the spaces that trained it
(``space.yaml``, and ``seeds.yaml`` for the same networks at another training seed), each
study's rows as JSON lines (``<name>.jsonl``, written by scripts/sync_table.py) and
optionally ``latency.csv`` (``point``, ``latency_ms``). Every row is keyed by its
parameters plus the training seed it ran with, so a point of the main space and the same
point trained again at seed 1 are two entries.

A replayed space must be a subspace of the table: the same network, budget, trainer and
data settings as ``space.yaml`` (what a trial trains), parameters the table varies with
values it holds, and every point it can draw trained (or found infeasible) there. The
space's own ``seed`` seeds the sampler only: the training seed is the table's (or a
``seed`` parameter's, to draw among the table's seeds).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coatsearch.errors import CoatsearchError, first_line
from coatsearch.search.jsonl_ledger import LedgerError, read_rows
from coatsearch.search.rows import Epoch, TrialRow, point_key
from coatsearch.space import SearchSpace, SpaceError, load_space
from coatsearch.status import Status

#: The table folder's spaces: the networks, then their second seed.
SPACES = ("space", "seeds")
#: Space fields that say what a trial trains: a replayed space must have the table's.
TRAINED = ("base", "split_total", "scaling", "budget", "train", "data")
#: Metrics every row has; ``latency_ms`` too when the table has ``latency.csv``.
ROW_METRICS = ("val_acc", "flops", "params")


class TableError(CoatsearchError):
    """A table that cannot be read or replayed: one line naming the file, row or field."""


@dataclass(frozen=True)
class Entry:
    """One trained (or infeasible) network of the table: its row and what each epoch cost
    (``seconds``: the epoch's CPU time where recorded, else its wall time)."""

    row: TrialRow
    epochs: tuple[Epoch, ...]
    seconds: tuple[float, ...]


@dataclass(frozen=True)
class Table:
    name: str
    folder: Path
    space: SearchSpace
    #: every value each parameter takes in any of the table's spaces (``seed`` included)
    choices: dict[str, list[Any]]
    entries: dict[str, Entry]
    latency: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ lookups
    def key(self, params: dict[str, Any]) -> str:
        """The entry key of a replayed point: its parameters, the table's one-value
        parameters it leaves out, and the training seed."""
        full = {name: values[0] for name, values in self.choices.items() if len(values) == 1 and name != "seed"}
        full.update({k: v for k, v in params.items() if k != "seed"})
        full["seed"] = params.get("seed", self.space.seed)
        return point_key(full)

    def lookup(self, params: dict[str, Any]) -> Entry:
        entry = self.entries.get(self.key(params))
        if entry is None:
            raise TableError(f"table {self.name} lacks the candidate {point_key(params)} "
                             f"({self.trained} of its networks are trained)")
        return entry

    @property
    def trained(self) -> int:
        return sum(e.row.status != Status.INFEASIBLE for e in self.entries.values())

    def latency_of(self, row: TrialRow) -> float | None:
        """The network's measured latency (``latency.csv`` is keyed by the point without
        its seed: one network, whatever seed trained it)."""
        return self.latency.get(point_key({k: v for k, v in row.sampled.items() if k != "seed"}))

    # ------------------------------------------------------------------ subspaces
    def check_space(self, space: SearchSpace) -> None:
        """`TableError` (one line) unless every candidate ``space`` can draw is in the table."""
        mine, theirs = _trained_fields(space), _trained_fields(self.space)
        for name in TRAINED:
            if mine.get(name) != theirs.get(name):
                raise TableError(f"{name}: the space's {name} differs from table {self.name}'s "
                                 f"({self.folder / 'space.yaml'}); a replay runs only what the table trained")
        metrics = set(ROW_METRICS) | ({"latency_ms"} if self.latency else set())
        for objective in space.objectives:
            if objective.metric not in metrics:
                raise TableError(f"objectives: table {self.name} has no {objective.metric} "
                                 f"(it has {', '.join(sorted(metrics))})")
        values: dict[str, list[Any]] = {}
        for name, domain in space.params.items():
            if name not in self.choices:
                raise TableError(f"params.{name}: table {self.name} does not vary {name} "
                                 f"(it varies {', '.join(self.choices)})")
            try:
                values[name] = domain.grid_values()
            except ValueError:
                raise TableError(f"params.{name}: a continuous range cannot be replayed; table {self.name} "
                                 f"holds {name} at {self.choices[name]}") from None
            held = {json.dumps(v) for v in map(_plain, self.choices[name])}
            for value in values[name]:
                if json.dumps(_plain(value)) not in held:
                    raise TableError(f"params.{name}: {value!r} is not in table {self.name} "
                                     f"(it holds {self.choices[name]})")
        for combo in itertools.product(*values.values()):
            self.lookup(dict(zip(values, combo)))


def _plain(value: Any) -> Any:
    """A value as the point keys write it (``2.0`` and ``2`` are one value)."""
    return json.loads(point_key({"v": value}))["v"]


def _trained_fields(space: SearchSpace) -> dict[str, Any]:
    """The fields that say what a trial trains, with the base network written out."""
    from coatsearch.presets import load_spec
    from coatsearch.spec import NetSpec, SpecError
    from coatsearch.train.config import TrainConfig

    data = space.to_dict()
    data["train"] = TrainConfig.from_dict(space.train).to_dict()  # a default written out is the same training
    base = data.get("base")
    try:
        data["base"] = load_spec(base).to_dict() if isinstance(base, str) else NetSpec.from_dict(base).to_dict()
    except SpecError:
        pass
    return {name: data.get(name) for name in TRAINED}


# --------------------------------------------------------------------------- reading
def find_table(ref: str) -> Path:
    """A table folder from a path or a name (``tables/NAME`` here or beside the package)."""
    path = Path(ref)
    if path.is_dir():
        return path
    here = [Path("tables") / ref, Path(__file__).resolve().parents[2] / "tables" / ref]
    for folder in here:
        if folder.is_dir():
            return folder
    raise TableError(f"table {ref}: no such table folder (looked for {ref} and in {', '.join(map(str, here))})")


def load_table(ref: str) -> Table:
    """Read and check a table folder; `TableError` names the first thing wrong."""
    folder = find_table(ref)
    name = folder.name
    spaces: dict[str, SearchSpace] = {}
    for stem in SPACES:
        path = folder / f"{stem}.yaml"
        if stem == SPACES[0] and not path.exists():
            raise TableError(f"{folder}: not a table (no {path.name})")
        if path.exists():
            try:
                spaces[stem] = load_space(path)
            except SpaceError as exc:
                raise TableError(f"table {name}: {exc}") from None
    main = spaces[SPACES[0]]
    choices: dict[str, list[Any]] = {"seed": [main.seed]}
    entries: dict[str, Entry] = {}
    for stem, space in spaces.items():
        if stem != SPACES[0] and _trained_fields(space) != _trained_fields(main):
            raise TableError(f"{folder / f'{stem}.yaml'}: trains other networks than space.yaml "
                             f"(only the parameters' values and the seed may differ)")
        for pname, domain in space.params.items():
            known = choices.setdefault(pname, [])
            known.extend(v for v in domain.grid_values() if v not in known)
        rows_path = folder / f"{stem}.jsonl"
        if stem == SPACES[0] and not rows_path.exists():
            raise TableError(f"{rows_path}: missing; a table holds its main space's rows")
        try:
            rows = read_rows(rows_path, strict=True)
        except LedgerError as exc:
            raise TableError(str(exc)) from None
        for row in rows:
            if row.status == Status.INTERRUPTED:
                continue
            entry = _entry(row, space, rows_path)
            # an infeasible row never trained, so has no seed: its space's says which it would have had
            seed = row.seed if row.seed is not None else row.sampled.get("seed", space.seed)
            key = point_key({**{k: v for k, v in row.sampled.items() if k != "seed"}, "seed": seed})
            if key in entries:
                raise TableError(f"{rows_path}: trial {row.trial} repeats the network of trial "
                                 f"{entries[key].row.trial} ({row.point}); one row per network and seed")
            entries[key] = entry
            if row.seed is not None and row.seed not in choices["seed"]:
                choices["seed"].append(row.seed)
    return Table(name, folder, main, choices, entries, _latency(folder))


def _entry(row: TrialRow, space: SearchSpace, path: Path) -> Entry:
    """A row checked as a table entry: a point of its space, a history of ``fidelity``
    epochs each with validation accuracy and a time."""
    where = f"{path}: trial {row.trial}"
    for pname, value in row.sampled.items():
        domain = space.params.get(pname)
        if domain is None or _plain(value) not in [_plain(v) for v in domain.grid_values()]:
            raise TableError(f"{where}: {pname}={value!r} is not a point of the table's space")
    if row.status != Status.INFEASIBLE and row.seed is None:
        raise TableError(f"{where}: no seed; a table keys its networks by training seed")
    epochs = row.history or ()
    if len(epochs) != row.fidelity:
        raise TableError(f"{where}: history holds {len(epochs)} epochs, fidelity says {row.fidelity}")
    if row.status == Status.COMPLETE and row.fidelity != space.epochs:
        raise TableError(f"{where}: complete after {row.fidelity} of {space.epochs} epochs")
    seconds, before = [], 0.0
    for number, epoch in enumerate(epochs, 1):
        if epoch.val_acc is None:
            raise TableError(f"{where}: epoch {number} has no val_acc")
        took = epoch.epoch_cpu_s or epoch.epoch_s
        if took is None and epoch.wall_time is not None:
            took, before = epoch.wall_time - before, epoch.wall_time
        if not isinstance(took, int | float) or took < 0:
            raise TableError(f"{where}: epoch {number} has no time (epoch_cpu_s, epoch_s or wall_time)")
        seconds.append(float(took))
    return Entry(row, epochs, tuple(seconds))


def _latency(folder: Path) -> dict[str, float]:
    """``latency.csv``: median batch-1 latency per point, when the table has it."""
    import csv

    path = folder / "latency.csv"
    if not path.exists():
        return {}
    try:
        with open(path, newline="") as handle:
            return {rec["point"]: float(rec["latency_ms"]) for rec in csv.DictReader(handle)}
    except (OSError, KeyError, ValueError) as exc:
        raise TableError(f"{path}: not a latency table with point and latency_ms columns ({first_line(exc)})") from None
