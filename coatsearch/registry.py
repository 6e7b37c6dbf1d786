"""One way to add each kind of part: a `Registry` of named entries.

Presets, scaling rules, backends, samplers, early-stopping schedulers, data sources and
block kinds each keep one registry, and a new one joins by name, from any module:

    @SCALING_RULES.register("toy")
    def toy(spec, metric, target, ratio, tolerance): ...

An entry may be given as ``"module:attribute"``; it is imported on first use, so a
registry in a low layer can name a part that lives in a higher one (a block kind's
module, a backend) without importing it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from coatsearch.errors import CoatsearchError

T = TypeVar("T")


class UnknownName(CoatsearchError, KeyError):
    """A name no entry of a registry has; the message lists the names it has."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one kind (``kind`` names it in messages), in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T | str) -> T | str: ...

    def register(self, name: str, entry: Any = None) -> Any:
        """Add ``entry`` under ``name`` (a later registration replaces an earlier one);
        without ``entry``, a decorator that registers what it decorates."""
        if entry is None:
            def decorate(item: T) -> T:
                self._entries[name] = item
                return item

            return decorate
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's toy part, when the test ends)."""
        self._entries.pop(name, None)

    def __getitem__(self, name: str) -> T:
        try:
            entry = self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(f"unknown {self.kind} {name!r}; expected {self.expected()}") from None
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = getattr(importlib.import_module(module), attribute)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def expected(self) -> str:
        """The names, as a message lists them: ``a, b or c``."""
        names = list(self._entries)
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"

    def check(self, name: str) -> str:
        """``name`` when registered, else `ValueError` listing the names (for validators)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; expected {self.expected()}")
        return name
