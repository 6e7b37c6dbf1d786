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
