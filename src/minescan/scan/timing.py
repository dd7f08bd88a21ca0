"""Where a detect job's wall time goes: start-up, imports, model load, first call, read, FCN, impact, write.

A :class:`JobClock` is started first thing in ``minescan detect``; the job logs its breakdown at the end as
one readable line and one ``job timing {json}`` line (``benchmarks/bench_floor.py`` parses the latter).
``startup_s`` is the time from the process's start (Linux: ``/proc/self/stat``) to the clock's start: the
interpreter, ``minescan`` and its command-line imports. Needs nothing beyond the standard library.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager

log = logging.getLogger(__name__)

# the phases of a detect job, in the order they are logged
PHASES = ("startup", "imports", "tensorflow_import", "device", "models", "stream_build", "first_call", "network",
          "fcn_other", "impact", "checks", "candidates", "write")


def process_age_s() -> float | None:
    """Seconds since this process started, from ``/proc`` (None where there is no ``/proc``)."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22 = starttime
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (MB) since it started its program (``VmHWM``; Linux only)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


class JobClock:
    """Accumulates named phases (seconds); ``total_s`` is the process's age when :meth:`summary` is called."""

    def __init__(self):
        self.t0 = time.perf_counter()
        age = process_age_s()
        self.phases: dict[str, float] = {"startup": age} if age is not None else {}
        self.read_s = 0.0  # reading + decoding + centring the tile, in the read-ahead thread (overlaps)
        self.quadrants = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + max(0.0, seconds)

    @contextmanager
    def phase(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)

    def add_fcn(self, stats, impact_s: float = 0.0) -> None:
        """Split one quadrant's FCN wall time (``stats``: InferenceStats) into stream build, first call,
        network and the rest (waiting for reads, assembling rows); ``impact_s`` of it was impact rating."""
        self.quadrants += 1
        first = min(stats.first_call_s, stats.compute_s)
        self.add("stream_build", stats.build_s)
        self.add("first_call", first)
        self.add("network", stats.compute_s - first)
        self.add("fcn_other", stats.wall_s - stats.build_s - stats.compute_s - impact_s)
        self.read_s += stats.read_s

    def summary(self) -> dict:
        known = self.phases.get("startup", 0.0)
        total = known + time.perf_counter() - self.t0
        out = {k: round(self.phases[k], 3) for k in PHASES if k in self.phases}
        out["other"] = round(max(0.0, total - sum(self.phases.values())), 3)
        out.update(total=round(total, 3), read_in_thread=round(self.read_s, 3), quadrants=self.quadrants)
        rss = peak_rss_mb()
        if rss is not None:
            out["peak_rss_mb"] = round(rss, 1)
        return out

    def log(self) -> dict:
        s = self.summary()
        parts = ", ".join(f"{k.replace('_', ' ')} {s[k]:.2f}" for k in (*PHASES, "other") if k in s)
        log.info("job time %.2f s for %d quadrant(s): %s (read + decode %.2f s in the read-ahead thread, "
                 "overlapping the network; peak RSS %s MB)", s["total"], s["quadrants"], parts, s["read_in_thread"],
                 s.get("peak_rss_mb", "?"))
        log.info("job timing %s", json.dumps(s, sort_keys=True))
        return s
