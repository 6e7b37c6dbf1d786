"""The one base class of every input error coatsearch raises.

A user's mistake (a bad spec, space, budget, data source, trainer setting or run folder)
raises a subclass of `CoatsearchError` whose message is one line naming the field or file
and what was expected. The command line reports any of them as ``error: ...`` with exit
code 2 and no traceback; library users can catch the base class.
"""

from __future__ import annotations


class CoatsearchError(ValueError):
    """An input error; the message is one line: ``where: what was expected``."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line, for a one-line error; its type's name
    when it has no message. A database error's own message (SQLAlchemy's ``orig``) is
    preferred to its wrapper's, which appends the statement."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def os_reason(exc: BaseException) -> str:
    """Why an operating-system call failed, in words (``strerror``: "No such file or
    directory"), or the exception's message when it has none."""
    return getattr(exc, "strerror", None) or str(exc)


#: The longest error line printed; longer ones are cut in the middle.
MAX_LINE = 400


def cut(text: str, limit: int = MAX_LINE) -> str:
    """``text`` in at most ``limit`` characters: a long one keeps its start and end (the
    field is named first, the expected value last) around a marker of what was left out."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = max(limit // 6, limit - head - 40)
    return f"{text[:head]} [... {len(text) - head - tail:,} characters ...] {text[-tail:]}"


def short_repr(value: object, limit: int = 80) -> str:
    """A repr of ``value`` for an error message, built without expanding a huge value
    (a long string, a list of millions) and cut to about ``limit`` characters."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = shortener.maxlong = limit
    shortener.maxlist = shortener.maxdict = shortener.maxtuple = shortener.maxset = 8
    shortener.maxlevel = 3
    return cut(shortener.repr(value), limit + 20)
