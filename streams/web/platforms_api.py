"""Console API of the JT/T 809 link: lower platforms' link state and inspections (查岗), and the operator's
action that sends one to one or all platforms. The link server (``roadwatch platform-link``) picks the
queued inspections up from the archive; their SQL lives in ``streams/archive/platforms.py``."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from aiohttp import web

from roadwatch.models.config import ConfigError
from roadwatch.models.platform_rates import connectivity_rate
from roadwatch.streams.archive import platforms as store
from roadwatch.streams.jt809.inspect_cmd import queue
from roadwatch.streams.jt809.platforms import load_platforms

from .console import SESSION, STATE, _body, _error, _json, requires


BEIJING = timezone(timedelta(hours=8))


def _month_start(now: float) -> float:
    """Start of the running month in Beijing time (the regulator's month), epoch seconds."""
    d = datetime.fromtimestamp(now, BEIJING)
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def _overview(conn, names: dict[int, str], now: float) -> dict:
    state = store.link_state(conn)
    slave = store.slave_state(conn)
    recent = store.inspections_between(conn, now - 31 * 86400, now + 1, now)
    vehicles = store.vehicle_platforms(conn)
    start = _month_start(now)
    sessions = store.sessions_between(conn, start, now, now)
    centers = sorted(set(names) | set(state) | {i["center_id"] for i in recent})
    return {"month_start": start, "now": now,
            "platforms": [{"center_id": c, "name": names.get(c, str(c)), "link": state.get(c),
                           "slave": slave.get(c) if (state.get(c) or {}).get("online") else None,
                           "connectivity": connectivity_rate(sessions.get(c, []), start, now, 2, ""),
                           "vehicles": sum(1 for v in vehicles.values() if v == c),
                           "inspections": [i for i in recent if i["center_id"] == c][:50]} for c in centers]}


def _names(cfg) -> dict[int, str]:
    try:
        return {c: p.name for c, p in load_platforms(cfg).items()}
    except ConfigError:
        return {}


@requires("viewer")
async def api_platforms(request: web.Request) -> web.Response:
    """Each platform: main-link state (online, since, last frame), slave-link state (while the main link is
    up), 平台连通率 of the running month so far (numerator/denominator in minutes), vehicles it forwards,
    查岗 of the last 31 days with status queued | pending | answered | late | missed | undeliverable."""
    st = request.app[STATE]
    return _json(await st.db.run(_overview, _names(st.cfg), time.time()))


@requires("operator")
async def api_inspect(request: web.Request) -> web.Response:
    """POST {"platform": centre id | "all", "question": text, "minutes": optional deadline}."""
    st = request.app[STATE]
    body = await _body(request)
    target, question, minutes = body.get("platform"), body.get("question"), body.get("minutes")
    if not isinstance(question, str) or (minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int))):
        return _error(400, "bad_input", "platform (centre id or 'all'), question (text), optional minutes (integer)")
    try:
        done = await st.db.run(lambda conn: queue(st.cfg, str(target), question, minutes,
                                                  request[SESSION].username, conn))
    except (ValueError, ConfigError) as e:
        return _error(400, "bad_input", str(e))
    return _json({"queued": [{"center_id": c, "inspection_id": i} for c, i in done]}, 201)


def vehicle_platforms(conn) -> dict[str, int]:
    return store.vehicle_platforms(conn)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/api/platforms", api_platforms)
    r.add_post("/api/platforms/inspections", api_inspect)
