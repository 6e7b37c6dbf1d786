"""Reports of a study: one self-contained HTML page, plus its tables as CSV or Markdown.

Everything is computed from the run directory's results table (and the space, for the
study's name and objectives), so a report can be rebuilt at any time, offline:

    build_report("runs/layouts")            # runs/layouts/report.html, pareto.csv, top.csv
"""

from coatsearch.report.data import ReportError, Run, load_run
from coatsearch.report.page import build_report

__all__ = ["ReportError", "Run", "build_report", "load_run"]
