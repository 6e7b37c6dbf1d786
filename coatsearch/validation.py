"""One-line error messages from pydantic validation, shared by specs, spaces and trainer configs.

pydantic reports every problem over several lines; users of a CLI need the first one,
in one line, naming the field path the way they wrote it (``stages[2].channels``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from coatsearch.errors import cut, short_repr

M = TypeVar("M", bound=BaseModel)


class FieldError(ValueError):
    """Raised inside validators to point at a field path other than the validator's own."""

    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def format_loc(loc: Sequence[Any]) -> str:
    """``("stages", 2, "channels")`` -> ``stages[2].channels``."""
    out = ""
    for part in loc:
        part = cut(part, 60) if isinstance(part, str) else part  # a key as long as a book stays readable
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


#: The names pydantic puts in an error's path for the member of a union that failed
#: (``high.int`` for ``high: int | float``); no field is named so.
UNION_TAGS = frozenset({"int", "float", "str", "bool"})


def one_line(exc: ValidationError, source: str | None = None, root: str = "spec") -> str:
    """The first problem of a validation error as ``[source: ]path: message``, in at most
    `coatsearch.errors.MAX_LINE` characters however long the input was."""
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p in UNION_TAGS)))
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, FieldError):
        loc, message = loc + ctx_error.loc, ctx_error.message
    else:
        message = err["msg"].removeprefix("Value error, ")
        # Validators phrase their own message as "field: what"; lift the field into the path.
        head, sep, rest = message.partition(": ")
        if sep and head.isidentifier() and err["type"] == "value_error":
            loc, message = loc + (head,), rest
        elif err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif "input" in err and err["type"] not in ("model_type", "value_error"):
            message = f"{message} (got {short_repr(err['input'])})"
    path = format_loc(loc) or root
    prefix = f"{source}: " if source else ""
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return cut(f"{prefix}{path}: {message}{tail}")


def validate_mapping(
    model: type[M], data: Any, error: type[ValueError], *, source: str | None = None, what: str = "spec"
) -> M:
    """``model`` validated from a mapping (as read from YAML); any problem raises ``error``
    with a one-line message (``source`` names the file, ``what`` the kind of object)."""
    if not isinstance(data, dict):
        where = f"{source}: " if source else ""
        raise error(f"{where}expected a mapping of {what} fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(one_line(exc, source, root=what)) from None
