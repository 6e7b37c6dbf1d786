"""Screenshot a run's report in headless Chromium: ``python scripts/screenshot_report.py RUN_DIR OUT.png``.

Builds the report into a temporary folder (the run directory is left as it is), opens it
offline in headless Chromium, saves a full-page PNG and prints what the page did. Exits 1
when the page logged an error or asked the network for anything, 2 on bad input. This is
how README's docs/report.png is made.

Needs Chrome/Chromium (``apt-get install chromium``) and websocket-client
(``pip install -e '.[static]'``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from coatsearch.report import ReportError, build_report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.browser

from tests.browser import BrowserError, visit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory (runs/<study>/)")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--color-by", default=None, help="colour by this column (default: the first searched one)")
    parser.add_argument("--width", type=int, default=1280, help="page width in CSS pixels")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coatsearch-report-") as folder:
        try:
            page = build_report(args.run_dir, Path(folder) / "report.html", color_by=args.color_by)
            seen = visit(page, width=args.width)
        except (ReportError, BrowserError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(seen.screenshot or b"")
    print(f"screenshot: {out} ({len(seen.screenshot or b'') / 1e3:.0f} kB)")
    for message in seen.console_errors:
        print(f"console error: {message}", file=sys.stderr)
    for url in seen.network_requests:
        print(f"network request: {url}", file=sys.stderr)
    return 1 if seen.console_errors or seen.network_requests else 0


if __name__ == "__main__":
    sys.exit(main())
