"""Scan periods: a year (``2025``) or a quarter (``2026Q1``), and the recurring ``schedule`` of a config.

The config loader (:func:`minescan.config.validate`) expands ``periods`` + ``schedule`` once, into the
config's ``periods`` (oldest first); every caller (Snakefile, ``minescan plan``, ``minescan gee plan``,
``minescan periods``) reads that list through :func:`scan_periods`.
"""

from __future__ import annotations

import datetime as dt
import re

from minescan.errors import ConfigError, InputDataError

PERIOD_RE = re.compile(r"^(\d{4})(?:Q([1-4]))?$")


def period_dates(period: str) -> tuple[str, str]:
    """'2026Q1' -> ('2026-01-01', '2026-04-01'); '2025' -> ('2025-01-01', '2026-01-01'). End exclusive."""
    m = PERIOD_RE.match(period)
    if not m:
        raise ConfigError(f"period '{period}' is neither a year (2025) nor a quarter (2026Q1)")
    year, quarter = int(m.group(1)), m.group(2)
    if quarter is None:
        return f"{year}-01-01", f"{year + 1}-01-01"
    q = int(quarter)
    start_month = 3 * (q - 1) + 1
    end_year, end_month = (year + 1, 1) if q == 4 else (year, start_month + 3)
    return f"{year}-{start_month:02d}-01", f"{end_year}-{end_month:02d}-01"


def period_key(period: str) -> tuple[str, str]:
    """Chronological sort key: start date, then end date (2026Q1 before 2026, which ends later)."""
    return period_dates(period)


def sort_periods(periods) -> list[str]:
    return sorted(set(periods), key=period_key)


def quarter_index(period: str) -> int:
    """Running index of the period's last quarter (year * 4 + quarter - 1); a year counts as its 4th quarter."""
    m = PERIOD_RE.match(period)
    if not m:
        raise ConfigError(f"period '{period}' is neither a year (2025) nor a quarter (2026Q1)")
    return int(m.group(1)) * 4 + int(m.group(2) or 4) - 1


def following_periods(period: str, n: int) -> list[str]:
    """``period`` and the n - 1 periods after it, of the same kind: 2026Q4, 3 -> [2026Q4, 2027Q1, 2027Q2];
    2025, 2 -> [2025, 2026]."""
    m = PERIOD_RE.match(period)
    if not m:
        raise ConfigError(f"period '{period}' is neither a year (2025) nor a quarter (2026Q1)")
    year = int(m.group(1))
    if m.group(2) is None:
        return [str(year + i) for i in range(n)]
    q0 = year * 4 + int(m.group(2)) - 1
    return [f"{q // 4}Q{q % 4 + 1}" for q in range(q0, q0 + n)]


def last_complete_period(every: str, today: dt.date) -> str:
    """The latest quarter/year that ended on or before ``today``."""
    if every == "year":
        return str(today.year - 1)
    q = (today.month - 1) // 3  # 0-based quarter of today, which is not complete yet
    year, quarter = (today.year, q) if q > 0 else (today.year - 1, 4)
    return f"{year}Q{quarter}"


def expand_schedule(schedule: dict, today: dt.date | None = None) -> list[str]:
    """``{every: quarter|year, from: P, to: P|None}`` -> the periods from ``from`` to ``to``, inclusive.

    ``to: null`` means the last period complete on ``today`` (UTC date by default): a run the day after a
    quarter ends includes that quarter. Before ``from`` is complete this gives no period at all.
    """
    every, start, end = schedule["every"], str(schedule["from"]), schedule.get("to")
    end = str(end) if end is not None else last_complete_period(every, today or dt.datetime.now(dt.UTC).date())
    kind_re = r"^\d{4}Q[1-4]$" if every == "quarter" else r"^\d{4}$"
    for key, value in (("schedule.from", start), ("schedule.to", end)):
        if not re.match(kind_re, value):
            raise ConfigError(f"key '{key}': '{value}' is not a {every} (e.g. "
                              f"{'2026Q1' if every == 'quarter' else '2026'}), as schedule.every says")
    if every == "year":
        return [str(y) for y in range(int(start), int(end) + 1)]
    return [f"{i // 4}Q{i % 4 + 1}" for i in range(quarter_index(start), quarter_index(end) + 1)]


def expand_periods(cfg: dict, today: dt.date | None = None) -> list[str]:
    """``periods`` plus the ``schedule``'s, once each, oldest first (possibly none)."""
    periods = list(cfg.get("periods") or [])
    if cfg.get("schedule"):
        periods += expand_schedule(cfg["schedule"], today)
    return sort_periods(periods)


def scan_periods(cfg: dict) -> list[str]:
    """The periods a validated config scans (expanded by the loader), oldest first; at least one."""
    if not cfg.get("periods"):
        raise ConfigError("no period to scan: set 'periods' (e.g. [2026Q1]) or 'schedule' "
                          "(e.g. {every: quarter, from: 2026Q1}); a schedule with to: null has none "
                          "before its first period is over")
    return list(cfg["periods"])


def periods_up_to(periods: list[str], period: str) -> list[str]:
    """The scanned periods from the first one to ``period``, oldest first."""
    ordered = sort_periods(periods)
    if period not in ordered:
        raise InputDataError(f"period {period} is not one of the scanned periods ({', '.join(ordered)})")
    return ordered[: ordered.index(period) + 1]


def previous_period(periods: list[str], period: str) -> str:
    """The period scanned just before ``period`` among ``periods``."""
    before = periods_up_to(periods, period)
    if len(before) == 1:
        raise InputDataError(f"period {period} is the first scanned period: there is nothing to compare it with")
    return before[-2]
