"""Retries with exponential backoff and jitter for the calls that fail transiently: Earth Engine quota and
concurrency limits (429 / "Too many concurrent aggregations"), 5xx and network errors. Errors that would
fail again (a bad band name, a request above the size limit, a permission error) are raised at once.

The sleep function and the random source are parameters, so tests check the schedule without waiting.
"""

from __future__ import annotations

import http.client
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from minescan.sources.gee.auth import redact

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
_PERMANENT = re.compile(
    r"memory limit exceeded|request size|must be less than or equal|payload size|did not match any bands|"
    r"not found|does not exist|permission|not authori[sz]ed|unauthenticated|invalid_grant|"
    r"has not been used in project|is not registered|invalid (argument|value|json)|parse error|"
    r"too many pixels|exceeds the maximum", re.IGNORECASE)
_TRANSIENT = re.compile(
    r"too many (concurrent )?(requests|aggregations)|quota|rate ?limit|resource(s)? exhausted|"
    r"service (is )?unavailable|temporarily unavailable|internal (server )?error|backend error|deadline|"
    r"timed? ?out|try again|connection (reset|aborted|refused)|broken pipe|"
    r"\b(408|429|500|502|503|504)\b", re.IGNORECASE)


class TransientHTTPError(Exception):
    """An HTTP response worth retrying (status 408/429/5xx) from our own downloads."""

    def __init__(self, status: int, what: str):
        super().__init__(f"HTTP {status} from {what}")
        self.status = status


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status", "status_code", "code"):
        v = getattr(exc, attr, None)
        if isinstance(v, int):
            return v
    resp = getattr(exc, "resp", None)  # googleapiclient.errors.HttpError
    v = getattr(resp, "status", None)
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, TransientHTTPError):
        return True
    if isinstance(exc, ConnectionError | TimeoutError | http.client.HTTPException):
        return True
    mod = type(exc).__module__ or ""
    if mod.startswith(("requests.", "urllib3.", "httplib2")) and type(exc).__name__ in (
            "ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout", "ChunkedEncodingError",
            "ProtocolError", "ReadTimeoutError", "ServerNotFoundError", "RemoteDisconnected"):
        return True
    status = _status_of(exc)
    if status is not None and status in RETRYABLE_STATUS:
        return True
    text = str(exc)
    if _PERMANENT.search(text):
        return False
    return bool(_TRANSIENT.search(text))


@dataclass
class Retrier:
    retries: int = 6
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 120.0
    sleep: Callable[[float], None] = time.sleep
    rand: Callable[[], float] = field(default=random.random)

    @classmethod
    def from_settings(cls, settings, sleep=time.sleep, rand=random.random) -> Retrier:
        return cls(settings.retries, settings.backoff_seconds, settings.max_backoff_seconds, sleep, rand)

    def delay(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (0-based): exponential, capped, with 50-100 % jitter."""
        base = min(self.max_backoff_seconds, self.backoff_seconds * 2**attempt)
        return base * (0.5 + 0.5 * self.rand())

    def call(self, fn: Callable, *args, what: str = "request", **kwargs):
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if attempt >= self.retries or not is_retryable(exc):
                    raise
                wait = self.delay(attempt)
                attempt += 1
                log.warning("%s failed (%s); retry %d/%d in %.1f s", what, redact(_short(exc)), attempt,
                            self.retries, wait)
                self.sleep(wait)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."
