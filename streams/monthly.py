"""The worker closes each month on its own: a timer (not a window-close callback) checks whether the
previous month has ended — by the data's clock during replays, by the wall clock on a live feed — and, if
no report exists yet, builds it from the archive, writes it to ``<data_dir>/reports/YYYY-MM/`` and
publishes it on the ``reports`` topic. Re-running is harmless: the report is a pure function of the
archive, and a complete report set (its completion marker, streams/reports/write.py) is left alone; an
incomplete one (a crash mid-write) is rebuilt and published again under the same key."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

import orjson

from roadwatch.models.records import BEIJING, format_ts

from . import topics as T
from . import archive
from .reports.write import report_complete, write_report_set

log = logging.getLogger("roadwatch.monthly")


def month_clock_ms(ctx) -> int:
    wall = int(time.time() * 1000)
    states = ctx.gps_state
    marks = [e.proc.watermark_ms for e in states.entries.values()] if states else []
    wm = max([m for m in marks if m] or [0])
    return wall if not wm or wm > wall - 86_400_000 else wm


def previous_month(clock_ms: int, grace_h: float) -> str | None:
    """The month to close at ``clock_ms``: the previous one, once ``grace_h`` (``report.close_grace_h``: late
    pings of the last hours of a month still count in it) has passed since it ended; the GPS engine moves
    later data of that month to the day it is received (``late_from_closed``) by the same rule."""
    now = datetime.fromtimestamp(clock_ms / 1000, tz=timezone.utc).astimezone(BEIJING)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if (now - start).total_seconds() < grace_h * 3600:
        return None
    prev = start - timedelta(days=1)
    return f"{prev.year:04d}-{prev.month:02d}"


async def close_months(ctx, clock_ms: int | None = None) -> str | None:
    """Close the previous month once it is over (plus the grace period); ``clock_ms`` overrides the clock."""
    month = previous_month(month_clock_ms(ctx) if clock_ms is None else clock_ms,
                           float(ctx.cfg["report.close_grace_h"]))
    if month is None:
        return None
    out_dir = ctx.data_dir / "reports" / month
    if report_complete(out_dir):
        return None
    conn = archive.open_archive(ctx.cfg)
    if not archive.month_has_rows(conn, month):
        return None
    from .reports.build import build_monthly_report
    report = build_monthly_report(conn, ctx.registry, month, ctx.cfg,
                                  snapshot_ts=format_ts(datetime.now(timezone.utc)))
    # published before the set is renamed into place: a crash in between rebuilds and re-publishes (same key)
    await ctx.topics[T.REPORTS].send(key=month.encode(), value=orjson.dumps(report))
    write_report_set(report, out_dir)
    log.warning("monthly report %s written to %s", month, out_dir)
    return month
