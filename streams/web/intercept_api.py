"""Console API and page of intercept tasks (布控): the dispatch list, one task, the field outcome.

The page (``intercept``, static/intercept.html) is laid out for a phone: operators dispatch from it and field
officers record outcomes; new and updated tasks arrive by server push (the console's live stream, event
``intercept``). Outcomes go through ``InterceptStore.record`` (streams/intercept.py) — the same workflow as
``roadwatch intercept record``; the officer is the signed-in user (operator role: unsafe methods need it).
"""
from __future__ import annotations

import math
from datetime import datetime, timezone

from aiohttp import web

from roadwatch.models import intercept as I
from roadwatch.streams.intercept import InterceptStore, beijing_month, month_summary

from .console import SESSION, STATE, STATIC_DIR, _body, _error, _json

_OUTCOME_FIELDS = {"outcome": str, "reason": str, "at": str, "point_id": str, "on_the_spot": bool}


async def intercept_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "intercept.html", headers={"Cache-Control": "no-cache"})


def _list(conn, cfg, registry, status, plate, station, limit):
    return InterceptStore(conn, cfg, registry).list(status, plate=plate, station_id=station, limit=limit)


def _show(conn, cfg, registry, task_id):
    return InterceptStore(conn, cfg, registry).show(task_id)


def _record(conn, cfg, registry, task_id, fields: dict, by: str):
    return InterceptStore(conn, cfg, registry).record(task_id, fields.pop("outcome"), by=by, **fields)


def _summary(conn, cfg, registry, now):
    return month_summary(conn, cfg, registry, beijing_month(now), now)


async def api_tasks(request: web.Request) -> web.Response:
    st = request.app[STATE]
    q = request.query
    status = q.get("status") or None
    if status is not None and status not in I.STATUSES:
        return _error(400, "bad_param", f"status must be one of {', '.join(I.STATUSES)}")
    try:
        limit = int(q.get("limit", "200"))
    except ValueError:
        limit = -1
    if not 1 <= limit <= 1000:
        return _error(400, "bad_param", "limit must lie in [1, 1000]")
    tasks = await st.db.run(_list, st.cfg, st.registry, status, q.get("plate") or None, q.get("station") or None,
                            limit)
    return _json({"tasks": tasks, "labels": I.LABELS, "event_id": st.live.event_id})


async def api_task(request: web.Request) -> web.Response:
    st = request.app[STATE]
    task = await st.db.run(_show, st.cfg, st.registry, request.match_info["task_id"])
    if task is None:
        return _error(404, "not_found", "no such intercept task")
    return _json(task)


async def api_outcome(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = await _body(request)
    fields: dict = {}
    for name, typ in _OUTCOME_FIELDS.items():
        v = body.get(name)
        if v is not None and not isinstance(v, typ):
            return _error(400, "bad_input", f"{name} must be {'true/false' if typ is bool else 'text'}")
        if v is not None:
            fields[name] = v
    kg = body.get("unloaded_kg")
    if kg is not None and (isinstance(kg, bool) or not isinstance(kg, (int, float)) or not math.isfinite(kg)):
        return _error(400, "bad_input", "unloaded_kg must be a number")
    if kg is not None:
        fields["unloaded_kg"] = float(kg)
    if "outcome" not in fields:
        return _error(400, "bad_input", f"outcome ({', '.join(I.OUTCOMES)}) is required")
    try:
        task = await st.db.run(_record, st.cfg, st.registry, request.match_info["task_id"], fields,
                               request[SESSION].username)
    except I.InterceptError as e:
        status = {"not_found": 404, "already_recorded": 409}.get(e.code, 400)
        return _error(status, e.code, e.detail)
    if not task["replayed"]:
        st.live.publish("intercept", {k: v for k, v in task.items() if k not in ("history", "replayed")})
    return _json(task)


async def api_summary(request: web.Request) -> web.Response:
    """This Beijing month's 拦截率 and 查处率 per detecting station and in total (the fleet/status page)."""
    st = request.app[STATE]
    return _json(await st.db.run(_summary, st.cfg, st.registry, datetime.now(timezone.utc)))


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/intercept", intercept_page)
    r.add_get("/api/intercept/tasks", api_tasks)
    r.add_get("/api/intercept/summary", api_summary)
    r.add_get("/api/intercept/tasks/{task_id}", api_task)
    r.add_post("/api/intercept/tasks/{task_id}/outcome", api_outcome)
