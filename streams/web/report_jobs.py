"""The reports page: which months have data, and generating the one asked for.

"Over" is by the feed's clock, like the worker's month close during a replay. A month that is over gets its
official report in ``<reports_dir>/YYYY-MM/`` (what the worker's month-close
timer would write; an existing one is left alone). The running month can only be previewed: its report goes
to ``<reports_dir>/preview/YYYY-MM/`` and is replaced by each new preview, so the official report is never
built from half a month.
"""
from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web

from roadwatch.models.records import format_ts
from roadwatch.streams.archive.reports import months_with_data


def current_month(vehicles: list[dict]) -> str:
    """The running month by the feed's clock (the newest position; the wall clock before any)."""
    from .console import _feed_day
    return _feed_day(vehicles)[:7]


def generate(conn, registry, cfg, month: str, out_dir) -> list[str]:
    from roadwatch.streams.reports import build_monthly_report, write_report
    report = build_monthly_report(conn, registry, month, cfg, snapshot_ts=format_ts(datetime.now(timezone.utc)))
    return [p.name for p in write_report(report, out_dir)]


async def api_report_months(request: web.Request) -> web.Response:
    from .console import STATE, _json, _list_reports
    st = request.app[STATE]
    months = await st.db.run(months_with_data)
    done = {m["month"]: m["files"] for m in _list_reports(st.reports_dir)}
    previews = {m["month"]: m["files"] for m in _list_reports(st.reports_dir / "preview")}
    cur = current_month(st.fleet.vehicles())
    rows = [{"month": m, "over": m < cur, "files": done.get(m, []), "preview": previews.get(m, [])}
            for m in sorted(set(months) | set(done), reverse=True)]
    return _json({"current_month": cur, "months": rows})


async def api_report_generate(request: web.Request) -> web.Response:
    from .console import _MONTH, STATE, _error, _json
    st = request.app[STATE]
    month = request.match_info["month"]
    if not _MONTH.fullmatch(month):
        return _error(400, "bad_param", "month must be YYYY-MM")
    cur = current_month(st.fleet.vehicles())
    if month > cur:
        return _error(400, "bad_param", "this month has not started")
    over = month < cur
    out = st.reports_dir / month if over else st.reports_dir / "preview" / month
    if over and (out / "report.json").exists():
        return _error(409, "exists", "该月报告已生成 the report of this month already exists")
    if month not in await st.db.run(months_with_data):
        return _error(404, "no_data", "该月无数据 no data archived for this month")
    files = await st.db.run(generate, st.registry, st.cfg, month, out)
    return _json({"month": month, "official": over, "files": files})
