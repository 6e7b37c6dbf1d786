"""The one base class of every input error coatsearch raises.

A user's mistake (a bad spec, space, budget, data source, trainer setting or run folder)
raises a subclass of `CoatsearchError` whose message is one line naming the field or file
and what was expected. The command line reports any of them as ``error: ...`` with exit
code 2 and no traceback; library users can catch the base class.
"""

from __future__ import annotations


class CoatsearchError(ValueError):
    """An input error; the message is one line: ``where: what was expected``."""
