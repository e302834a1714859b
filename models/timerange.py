"""Plausible times: the one range check every parser applies (config keys ``time.min_year`` /
``time.max_year``, default 2000–2100; docs/legal-basis.md §10).

A time outside it is ``bad_timestamp`` wherever it comes from — a WIM reading, a ping, a columnar batch, a
driver event, ``assess gps`` — and years such as 1 or 9999 never reach datetime arithmetic, where they
overflow. The years are *local* years, as the time is written with its own UTC offset. Pure functions with
no imports from the rest of ``models`` so that every parser module can call them.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

PLAUSIBLE_YEARS = (2000, 2100)        # the defaults of time.min_year / time.max_year
SAFE_YEARS = (2, 9998)                # what datetime arithmetic survives with any UTC offset


def plausible_years(cfg) -> tuple[int, int]:
    """The configured range of plausible years (inclusive) — pass it as ``years=`` to the parsers."""
    return int(cfg["time.min_year"]), int(cfg["time.max_year"])


def plausible_ms_range(years: tuple[int, int] | None = None) -> tuple[int, int]:
    """[first, last] epoch ms of the plausible years, widened by the extreme UTC offsets (+14 h / −12 h) so
    that 2000-01-01T00:30+08:00 (1999 in UTC) passes like its ISO form."""
    lo, hi = years or PLAUSIBLE_YEARS
    first = datetime(lo, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    last = datetime(hi, 12, 31, 23, 59, 59, 999000, tzinfo=timezone(timedelta(hours=-12)))
    return int(first.timestamp() * 1000), int(last.timestamp() * 1000)


def implausible(dt: datetime, field: str = "ts", years: tuple[int, int] | None = None) -> str | None:
    """Why ``dt`` is not a plausible time (a detail for ``bad_timestamp``), or None when it is."""
    lo, hi = years or PLAUSIBLE_YEARS
    if lo <= dt.year <= hi:
        return None
    return f"{field} {dt.isoformat()} is outside the plausible years {lo}–{hi}"
