"""Open a page in headless Chromium over the DevTools protocol (--remote-debugging-pipe) and report what a
person would see: console errors, uncaught exceptions, every network request, DOM counts, a screenshot.

No extra Python package: the pipe protocol is NUL-separated JSON on file descriptors 3 (to the browser) and
4 (from it). Debian's ``chromium`` package provides the browser (``apt-get install -y chromium``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--remote-debugging-pipe"]


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
        if path:
            return path
    return None


class PageReport(dict):
    """console (list of (level, text)), exceptions, requests (URLs), values (expression -> result)."""

    @property
    def errors(self) -> list[str]:
        return [t for lvl, t in self["console"] if lvl in ("error", "assert")] + self["exceptions"]

    @property
    def external_requests(self) -> list[str]:
        return [u for u in self["requests"] if not u.startswith(("file:", "data:", "about:", "blob:"))]


class _Pipe:
    def __init__(self, proc, write_fd, read_fd):
        self.proc, self.w, self.r = proc, write_fd, read_fd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method, params=None, session=None, timeout=30.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for m in self._read(deadline):
                if m.get("id") == self.next_id:
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m.get("result", {})
                self.events.append(m)

    def wait_event(self, method, timeout=30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            self.events.extend(self._read(deadline))

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.events.extend(self._read(deadline))
            except TimeoutError:
                return

    def _read(self, deadline) -> list[dict]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            ready, _, _ = select.select([self.r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (status {self.proc.poll()})")
            self.buf += chunk
        *msgs, self.buf = self.buf.split(b"\0")
        return [json.loads(m) for m in msgs if m]


def inspect_page(url: str, expressions: dict[str, str] | None = None, screenshot: Path | None = None,
                 width: int = 1280, height: int = 900, settle_s: float = 1.5, chromium: str | None = None,
                 timeout: float = 60.0) -> PageReport:
    """Load ``url`` and return a PageReport; ``expressions`` are evaluated in the page after load."""
    exe = chromium or find_chromium()
    if not exe:
        raise FileNotFoundError("chromium not found")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # move the child's ends above fd 4, so dup2 onto 3 and 4 always makes a fresh inheritable copy
    child_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
    child_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(to_browser_r)
    os.close(from_browser_w)

    def wire():  # the browser reads commands on fd 3 and writes answers on fd 4
        os.dup2(child_r, 3)
        os.dup2(child_w, 4)

    profile = tempfile.mkdtemp(prefix="minescan-chromium-")
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                             "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=wire)
    os.close(child_r)
    os.close(child_w)
    pipe = _Pipe(proc, to_browser_w, from_browser_r)
    report = PageReport(console=[], exceptions=[], requests=[], values={})
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                          "deviceScaleFactor": 1, "mobile": False}, session=session)
        pipe.send("Page.navigate", {"url": url}, session=session, timeout=timeout)
        pipe.wait_event("Page.loadEventFired", timeout=timeout)
        pipe.drain(settle_s)
        for name, expr in (expressions or {}).items():
            r = pipe.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                          session=session, timeout=timeout)
            report["values"][name] = r.get("result", {}).get("value")
        if screenshot:
            shot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session, timeout=timeout)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        pipe.drain(0.2)
        for e in pipe.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                report["console"].append((p.get("type"), text))
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                report["exceptions"].append(d.get("exception", {}).get("description") or d.get("text", ""))
            elif method == "Log.entryAdded":
                entry = p.get("entry", {})
                report["console"].append((entry.get("level"), f"{entry.get('text')} {entry.get('url', '')}"))
            elif method == "Network.requestWillBeSent":
                report["requests"].append(p.get("request", {}).get("url", ""))
            elif method == "Network.loadingFailed":
                report["console"].append(("error", f"request failed: {p.get('errorText')}"))
        try:
            pipe.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError):
            pass
    finally:
        os.close(to_browser_w)
        os.close(from_browser_r)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return report
