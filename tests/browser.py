"""Open a local page in headless Chromium and say what it did.

A report must open offline and without errors in a real browser, which only a browser can
tell: this drives Chromium over the Chrome DevTools protocol (through ``websocket-client``)
and records console errors, uncaught exceptions, every request the page made, and a
full-page screenshot. The tests and ``scripts/screenshot_report.py`` use it.

Chromium runs with a fresh profile and the flags that keep its own services off the
network, so any request recorded is the page's own.
"""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from coatsearch.report.page import find_chromium

#: Executable names tried in order; ``COATSEARCH_CHROMIUM`` names one explicitly.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
    "--mute-audio", "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-default-apps",
    "--disable-extensions", "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--remote-debugging-port=0",
)
#: Schemes that leave the machine.
NETWORK_SCHEMES = ("http", "https", "ws", "wss", "ftp")
#: True once every Plotly figure on the page has been drawn.
PLOTS_DRAWN = (
    "document.readyState === 'complete' && Array.prototype.every.call("
    "document.querySelectorAll('.plotly-graph-div'), function (d) { return !!d._fullLayout; })"
)


class BrowserError(RuntimeError):
    """Chromium could not be started or stopped answering."""


@dataclass
class Visit:
    """What a page did while it loaded."""

    console_errors: list[str] = field(default_factory=list)
    console_warnings: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    screenshot: bytes | None = None

    @property
    def network_requests(self) -> list[str]:
        """Requests that would leave the machine (not file:, data: or blob:)."""
        return [url for url in self.requests if urlparse(url).scheme in NETWORK_SCHEMES]


class _DevTools:
    """A minimal Chrome DevTools protocol client on one websocket (flattened sessions)."""

    def __init__(self, url: str, timeout: float) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def close(self) -> None:
        self.ws.close()


def _console_text(params: dict[str, Any]) -> str:
    parts = [str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])]
    return " ".join(parts)


def _collect(events: list[dict[str, Any]], visit: Visit) -> None:
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            if params.get("type") in ("error", "assert"):
                visit.console_errors.append(_console_text(params))
            elif params.get("type") == "warning":
                visit.console_warnings.append(_console_text(params))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            visit.console_errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            visit.console_errors.append(f"{entry.get('text', '')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            visit.requests.append(params.get("request", {}).get("url", ""))


def _wait_port(profile: Path, proc: subprocess.Popen, timeout: float) -> str:
    """The browser's websocket address, from the DevToolsActivePort file it writes."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrowserError(f"chromium exited with status {proc.returncode} before it listened")
        if port_file.exists():
            lines = port_file.read_text().split()
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.05)
    raise BrowserError(f"chromium did not open its DevTools port within {timeout:.0f} s")


def visit(
    page: str | Path,
    width: int = 1280,
    screenshot: bool = True,
    scripts: Sequence[str] = (),
    timeout: float = 60.0,
    executable: str | None = None,
) -> Visit:
    """Load ``page`` (a local file), wait for its figures, run ``scripts``, take a screenshot.

    Each script is a JavaScript expression evaluated in the page after it loaded; its value
    goes to ``Visit.results``.
    """
    executable = executable or find_chromium()
    if executable is None:
        raise BrowserError("no Chrome/Chromium found (apt-get install chromium, or set COATSEARCH_CHROMIUM)")
    url = Path(page).resolve().as_uri()
    result = Visit()
    with tempfile.TemporaryDirectory(prefix="coatsearch-chromium-") as profile:
        log = open(Path(profile) / "chromium.log", "wb")
        proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        tools = None
        try:
            tools = _DevTools(_wait_port(Path(profile), proc, timeout), timeout)
            target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                tools.send(f"{domain}.enable", session=session)
            tools.send("Emulation.setDeviceMetricsOverride",
                       {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
            tools.send("Page.navigate", {"url": url}, session=session)
            deadline = time.monotonic() + timeout
            while not _evaluate(tools, session, PLOTS_DRAWN):
                if time.monotonic() > deadline:
                    raise BrowserError(f"{page}: the page's figures were not drawn within {timeout:.0f} s")
                time.sleep(0.1)
            result.results = [_evaluate(tools, session, script) for script in scripts]
            if screenshot:
                size = tools.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
                height = int(size["height"]) + 1
                tools.send("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
                time.sleep(0.5)  # let responsive figures settle at the new size
                shot = tools.send("Page.captureScreenshot", {"format": "png"}, session=session)
                result.screenshot = base64.b64decode(shot["data"])
            time.sleep(0.2)
            _evaluate(tools, session, "1")  # drain events that arrived meanwhile
            _collect(tools.events, result)
            try:
                tools.send("Browser.close")
            except Exception:  # the browser may hang up before it answers
                pass
        finally:
            if tools is not None:
                tools.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    return result


def _evaluate(tools: _DevTools, session: str, expression: str) -> Any:
    reply = tools.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
    if "exceptionDetails" in reply:
        raise BrowserError(f"script failed: {expression[:60]}: {reply['exceptionDetails'].get('text')}")
    return reply.get("result", {}).get("value")
