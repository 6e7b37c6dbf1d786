"""``python -m coatsearch``: the command line, as the ``coatsearch`` command."""

from coatsearch.cli import app

app(prog_name="coatsearch")
