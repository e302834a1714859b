"""The operator console: an aiohttp application (pages, JSON API, live Server-Sent Events).

``create_console_app`` builds a self-contained ``web.Application`` that the lead mounts into Faust's
aiohttp server (``web_app.add_subapp("/console/", app)``) or runs on its own (``run_console``). All
browser URLs are relative, so the console works under any prefix.

Archive reads run on one dedicated thread with its own SQLite connection, so a slow query never stalls
the worker's event loop; argon2 verification runs on the default executor.

Security model (see auth.py): every route except the login page, ``api/login`` and static files needs a
session; unsafe methods also need the CSRF header and at least the operator role; admin routes are marked.
"""
from __future__ import annotations

import asyncio
import inspect
import mimetypes
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlsplit

import orjson
from aiohttp import web

from roadwatch.models.config import Config
from roadwatch.models.documents import DocumentError
from roadwatch.models.records import BEIJING, CATEGORIES, epoch_ms_to_iso, format_ts
from roadwatch.models.registry import Registry
from roadwatch.streams import documents
from roadwatch.streams.archive import alerts as alerts_db
from roadwatch.streams.archive import cases as case_db
from roadwatch.streams.archive import close_all, open_archive
from roadwatch.streams.archive.snapshots import vehicle_days_of
from roadwatch.streams.cases import EVIDENCE_COPIES, CaseActionError, CaseStore
from roadwatch.streams.device_list import device_list, to_csv, to_html, to_json
from roadwatch.streams.web import auth, handling, report_jobs, search, tracks
from roadwatch.streams.web.fleet_status import today_status
from roadwatch.streams.web.live import FleetView, LiveHub, sse_frame
from roadwatch.streams.web.places import Places

STATIC_DIR = Path(__file__).parent / "static"
ALERT_TYPES = ("overspeed", "fatigue", "curfew", "offline", "geofence_enter", "geofence_exit",
               "terminal_alarm", "overload")
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
               ".gif": "image/gif"}
DOCUMENT_TYPES = {".html": "text/html; charset=utf-8", ".pdf": "application/pdf"}
DOCUMENT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SEGMENT = re.compile(r"^[\w][\w.\-]{0,127}$")      # one path segment: no "..", no separators
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")

CaseActions = Callable[[str, str, str, "str | None"], Any]


class ArchiveDB:
    """Runs archive functions ``fn(conn, *args)`` on one dedicated thread (its own connection)."""

    def __init__(self, path: str | Path):
        self.path = path          # a SQLite path or a postgresql:// URL (Path() would break the URL)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-db")

    def call(self, fn: Callable, *args):
        return fn(open_archive(self.path), *args)

    async def run(self, fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.call, fn, *args)

    def close(self) -> None:
        self._pool.submit(close_all).result()
        self._pool.shutdown(wait=True)


@dataclass
class ConsoleState:
    cfg: Config
    db: ArchiveDB
    registry: Registry
    places: Places
    live: LiveHub
    fleet: FleetView
    case_actions: CaseActions | None       # None → CaseStore.act on the console's own connection
    limiter: auth.LoginLimiter
    data_dir: Path
    evidence_root: Path
    reports_dir: Path
    own_handlers: frozenset = frozenset()   # routes the console registered (the only ones it guards)
    csp: str = CSP                          # with the base-map tile origin in img-src when one is set


STATE = web.AppKey("roadwatch_console", ConsoleState)
SESSION = web.RequestKey("roadwatch_session", object)     # auth.Session | None


# --- helpers ------------------------------------------------------------------------------------------------

def public(handler):
    handler._rw_public = True
    return handler


def requires(role: str):
    def deco(handler):
        handler._rw_role = role
        return handler
    return deco


def any_session(handler):
    """A state-changing route every signed-in role may use (logout)."""
    handler._rw_any_role = True
    return handler


def _json(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data, default=str), status=status, content_type="application/json",
                        headers=headers)


def _error(status: int, code: str, detail: str = "", headers: dict | None = None) -> web.Response:
    return _json({"error": code, "detail": detail}, status, headers)


async def _body(request: web.Request) -> dict:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text='{"error":"json_required"}', content_type="application/json")
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(text='{"error":"bad_json"}', content_type="application/json") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text='{"error":"bad_json"}', content_type="application/json")
    return data


def _today() -> str:
    return datetime.now(BEIJING).strftime("%Y-%m-%d")


def _feed_day(vehicles: list[dict]) -> str:
    """"Today" by the feed's clock (the newest position), so a replay ahead of or behind the wall clock
    shows its own day; the wall clock when no vehicle has reported."""
    newest = max((str(v.get("ts") or v.get("last_ts") or "") for v in vehicles), default="")
    return newest[:10] if _DAY.fullmatch(newest[:10]) else _today()


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f'{{"error":"bad_param","detail":"{name}"}}',
                                 content_type="application/json") from None
    return min(max(v, lo), hi)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


# --- alert enrichment (cached per registry object) ------------------------------------------------------------

def make_enricher(registry: Registry, places: Places) -> Callable[[dict], dict]:
    def enrich(alert: dict) -> dict:
        a = dict(alert)
        details = a.get("details")
        if isinstance(details, str):
            try:
                details = orjson.loads(details)
            except orjson.JSONDecodeError:
                details = {"text": details}
        a["details"] = details if isinstance(details, dict) else {}
        a["late"] = bool(a.get("late"))
        v = registry.vehicles.get(a.get("plate", ""))
        ent = registry.enterprises.get(v.enterprise_id) if v else None
        a["category"] = v.category if v else ""
        a["enterprise_id"] = v.enterprise_id if v else ""
        a["enterprise"] = ent.name if ent else ""
        a["county"] = (v.county if v and v.county else (ent.county if ent else ""))
        a["location"] = places.describe(a.get("lat"), a.get("lon"), a["details"].get("station_id"))
        return a
    return enrich


# --- pages and auth ---------------------------------------------------------------------------------------------

@public
async def login_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "login.html", headers={"Cache-Control": "no-cache"})


async def index_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@public
async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    parts = name.split("/")
    path = STATIC_DIR.joinpath(*parts)
    if len(parts) > 4 or not all(_SEGMENT.fullmatch(p) for p in parts) or not path.is_file():
        raise web.HTTPNotFound()
    # the vendored libraries and boundaries never change within a release
    cache = "public, max-age=86400" if parts[0] == "vendor" else "no-cache"
    return web.FileResponse(path, headers={"Cache-Control": cache})


async def case_print_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "case-print.html", headers={"Cache-Control": "no-cache"})


case_print_page._rw_depth = 2          # served at case/<id>/print: the login page is ../../login


@public
async def api_login(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = await _body(request)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        return _error(400, "bad_input", "username and password are required")
    keys = [f"user:{username.lower()}", f"addr:{request.remote}"]
    wait, stamp = st.limiter.reserve(keys)     # atomic check-and-count, before the argon2 check
    if wait > 0:
        auth.LOGINS.labels(result="limited").inc()
        return _error(429, "too_many_attempts", f"try again in {int(wait) + 1} s",
                      {"Retry-After": str(int(wait) + 1)})
    user = await st.db.run(auth.get_user, username) if auth.USERNAME_RE.fullmatch(username) else None
    ok = await asyncio.get_running_loop().run_in_executor(
        None, auth.verify_password, user["pw_hash"] if user else None, password, st.cfg)
    if not ok:                                 # the reservation stays: it is the recorded failure
        auth.LOGINS.labels(result="failure").inc()
        return _error(401, "bad_credentials", "wrong user name or password")
    st.limiter.succeed(keys, stamp)
    ttl = st.cfg["web.session_ttl_s"]
    token, sess = await st.db.run(auth.create_session, username, ttl)
    auth.LOGINS.labels(result="success").inc()
    resp = _json({"username": sess.username, "role": sess.role, "csrf": sess.csrf,
                  "expires_at": sess.expires_at})
    resp.set_cookie(auth.COOKIE, token, max_age=ttl, httponly=True, samesite="Strict", path="/",
                    secure=st.cfg["web.cookie_secure"] or request.secure)
    return resp


@any_session
async def api_logout(request: web.Request) -> web.Response:
    st = request.app[STATE]
    token = request.cookies.get(auth.COOKIE)
    await st.db.run(auth.delete_session, token)
    st.live.end_sessions(session_id=auth.token_hash(token or ""))
    resp = _json({"ok": True})
    resp.del_cookie(auth.COOKIE, path="/")
    return resp


async def api_me(request: web.Request) -> web.Response:
    st = request.app[STATE]
    s: auth.Session = request[SESSION]
    reg = st.registry
    counties = sorted({e.county for e in reg.enterprises.values() if e.county}
                      | {v.county for v in reg.vehicles.values() if v.county})
    return _json({
        "username": s.username, "role": s.role, "csrf": s.csrf, "expires_at": s.expires_at,
        "fleet_refresh_s": st.cfg["web.fleet_refresh_s"],
        "map": {"tile_url": st.cfg["web.tile_url"], "tile_crs": st.cfg["web.tile_crs"],
                "attribution": st.cfg["web.tile_attribution"], "boundaries": st.cfg["web.boundaries"],
                "track_sample_s": st.cfg["track.sample_s"]},
        "alert_types": ALERT_TYPES, "categories": CATEGORIES, "counties": counties,
        "enterprises": [{"id": e.enterprise_id, "name": e.name, "county": e.county}
                        for e in reg.enterprises.values()],
    })


# --- alerts and live feed -----------------------------------------------------------------------------------

async def api_alerts(request: web.Request) -> web.Response:
    st = request.app[STATE]
    event_id = st.live.event_id            # before reading: the stream resumes from here, so nothing is lost
    type_ = request.query.get("type") or None
    plate = request.query.get("plate") or None
    day = request.query.get("day") or None
    if day and not _DAY.fullmatch(day):
        return _error(400, "bad_param", "day must be YYYY-MM-DD")
    limit = _int_param(request, "limit", 300, 1, 2000)
    rows = await st.db.run(alerts_db.alerts_for_console, type_, plate, day, limit)
    enrich = make_enricher(st.registry, st.places)
    merged: dict[str, dict] = {r["alert_id"]: enrich(r) for r in rows}
    live = [a for a in st.live.recent_alerts()
            if (not type_ or a.get("type") == type_) and (not plate or a.get("plate") == plate)
            and (not day or str(a.get("start_ts", ""))[:10] == day)]
    if live:
        acks = await st.db.run(alerts_db.acks_for, [a["alert_id"] for a in live])
        for a in live:
            a = dict(a, **acks.get(a["alert_id"], {}))
            merged[a["alert_id"]] = a if "category" in a else enrich(a)
    alerts = sorted(merged.values(), key=lambda a: str(a.get("start_ts", "")), reverse=True)[:limit]
    return _json({"event_id": event_id, "alerts": alerts})


def _ack(conn, alert_id: str, operator: str, note: str | None) -> dict | None:
    if not alerts_db.alert_exists(conn, alert_id):
        return None
    ts = format_ts(datetime.now(timezone.utc))
    alerts_db.ack_alert(conn, alert_id, operator, note, ts)
    return {"alert_id": alert_id, "ack_by": operator, "ack_ts": ts, "note": note}


@requires("operator")
async def api_alert_ack(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = await _body(request)
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 500):
        return _error(400, "bad_input", "note must be text of at most 500 characters")
    alert_id = request.match_info["alert_id"]
    live_ids = {a["alert_id"] for a in st.live.recent_alerts()}
    res = await st.db.run(_ack, alert_id, request[SESSION].username, note)
    if res is None and alert_id in live_ids:
        # published live but not archived yet: remember the ack anyway (the alert row follows)
        res = await st.db.run(_force_ack, alert_id, request[SESSION].username, note)
    if res is None:
        return _error(404, "not_found", f"no alert {alert_id!r}")
    st.live.publish("ack", res)
    return _json(res)


def _force_ack(conn, alert_id: str, operator: str, note: str | None) -> dict:
    ts = format_ts(datetime.now(timezone.utc))
    alerts_db.ack_alert(conn, alert_id, operator, note, ts)
    return {"alert_id": alert_id, "ack_by": operator, "ack_ts": ts, "note": note}


async def api_stream(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    hub = st.live
    since = hub.parse_event_id(request.headers.get("Last-Event-ID") or request.query.get("since"))
    token = request.cookies.get(auth.COOKIE)
    sub = hub.subscribe(since, username=request[SESSION].username, session_id=auth.token_hash(token or ""))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    heartbeat = st.cfg["web.sse_heartbeat_s"]
    try:
        await resp.prepare(request)
        transport = request.transport
        # a client too slow to drain its queue is cut off; EventSource reconnects with Last-Event-ID
        sub.on_drop = (lambda: transport.abort()) if transport is not None else None
        await resp.write(b"retry: 3000\n\n")
        if sub.reset:
            await resp.write(sse_frame(None, "reset", {"event_id": hub.event_id}))
        while True:
            try:
                ev = await sub.get(timeout=heartbeat)
            except TimeoutError:
                if await st.db.run(auth.lookup_session, token) is None:
                    await resp.write(sse_frame(None, "logout", {}))
                    break
                await resp.write(b": keep-alive\n\n")
                continue
            # the session is re-checked before every event (a user removed by `roadwatch users` in
            # another process has no hook here); logout and user changes in this console end it at once
            if ev is None or await st.db.run(auth.lookup_session, token) is None:
                if ev is not None or sub.ended:
                    await resp.write(sse_frame(None, "logout", {}))
                break
            await resp.write(ev.wire)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(sub)
    return resp


# --- map and vehicles ---------------------------------------------------------------------------------------

async def api_map(request: web.Request) -> web.Response:
    return _json(request.app[STATE].places.map_data())


def _vehicle_row(v: dict, reg: Registry) -> dict:
    rv = reg.vehicles.get(v.get("plate", ""))
    ent_id = v.get("enterprise_id") or (rv.enterprise_id if rv else "")
    ent = reg.enterprises.get(ent_id)
    return {"plate": v.get("plate"), "lat": v.get("lat"), "lon": v.get("lon"), "state": v.get("state"),
            "ts": v.get("ts") or v.get("last_ts"), "speed_kmh": v.get("speed_kmh"), "category": v.get("category") or (rv.category if rv else ""),
            "enterprise_id": ent_id, "enterprise": ent.name if ent else "",
            "county": v.get("county") or (rv.county if rv else "") or (ent.county if ent else "")}


def _track_point(p: dict) -> dict:
    p = dict(p)
    if "ts" not in p and isinstance(p.get("ts_ms"), (int, float)):
        p["ts"] = epoch_ms_to_iso(int(p["ts_ms"]))
    return p


async def api_vehicles(request: web.Request) -> web.Response:
    st = request.app[STATE]
    vs = st.fleet.vehicles()
    rows = [_vehicle_row(v, st.registry) for v in vs]
    platforms = await st.db.run(_vehicle_platforms)
    for row in rows:
        row["platform"] = platforms.get(row["plate"])      # JT/T 809 centre id that forwards it (None: direct)
    return _json({"ts": format_ts(datetime.now(timezone.utc)), "vehicles": rows})


def _vehicle_notices(conn, plate: str) -> list[dict]:
    """抄告 received from other agencies about this vehicle (they count for Art. 66)."""
    from roadwatch.streams.archive.notices import inbound
    return inbound(conn, plate=plate)


def _notices(conn) -> list[dict]:
    from roadwatch.streams.notices import listing, today_beijing
    return listing(conn, today_beijing())


async def api_notices(request: web.Request) -> web.Response:
    """Our 抄告 to home agencies: due day, sent, overdue (62号令 Art. 44)."""
    st = request.app[STATE]
    rows = await st.db.run(_notices)
    return _json({"notices": rows, "overdue": sum(1 for r in rows if r["overdue"])})


def _vehicle_platforms(conn) -> dict[str, int]:
    from .platforms_api import vehicle_platforms
    return vehicle_platforms(conn)


async def api_vehicle(request: web.Request) -> web.Response:
    st = request.app[STATE]
    plate = request.match_info["plate"]
    rv = st.registry.vehicles.get(plate)
    now = next((v for v in st.fleet.vehicles() if v.get("plate") == plate), None)
    if rv is None and now is None:
        return _error(404, "not_found", f"unknown vehicle {plate!r}")
    enrich = make_enricher(st.registry, st.places)
    rows = await st.db.run(alerts_db.alerts_for_console, None, plate, None, 20)
    alerts = {r["alert_id"]: enrich(r) for r in rows}
    for a in st.live.recent_alerts():
        if a.get("plate") == plate:
            alerts[a["alert_id"]] = a
    info = rv.asdict() if rv is not None else {"plate": plate}
    ent = st.registry.enterprises.get(info.get("enterprise_id", ""))
    info["enterprise"] = ent.name if ent else ""
    info["platform"] = (await st.db.run(_vehicle_platforms)).get(plate)
    cases = (await st.db.run(case_db.cases_for_console, None, plate, None, 20, 0))["cases"]
    notices_in = await st.db.run(_vehicle_notices, plate)
    return _json({"vehicle": info, "now": _vehicle_row(now, st.registry) if now else None, "cases": cases,
                  "notices_in": notices_in,
                  "track": [_track_point(p) for p in st.fleet.track(plate)],
                  "alerts": sorted(alerts.values(), key=lambda a: str(a.get("start_ts")), reverse=True)[:20]})


# --- cases --------------------------------------------------------------------------------------------------

async def api_cases(request: web.Request) -> web.Response:
    st = request.app[STATE]
    day = request.query.get("day") or None
    if day and not _DAY.fullmatch(day):
        return _error(400, "bad_param", "day must be YYYY-MM-DD")
    res = await st.db.run(case_db.cases_for_console, request.query.get("status") or None, request.query.get("plate") or None,
                          day, _int_param(request, "limit", 100, 1, 1000),
                          _int_param(request, "offset", 0, 0, 10_000_000))
    for c in res["cases"]:
        ent = st.registry.enterprises.get(c.get("enterprise_id") or "")
        c["enterprise"] = ent.name if ent else ""
        c["station"] = st.registry.point_name(c["station_id"])      # a fixed station or a mobile unit
    return _json(res)


def _case_row(conn, cfg: Config, case_id: str) -> dict | None:
    """The case as the one workflow shows it (``CaseStore.show``): row, manifest, ``history`` (acts: act, by,
    at = legal date, entered_at, reason), derived ``status``, ``allowed_actions``, ``liable``, ``proposals``."""
    return CaseStore(conn, cfg, data_dir=cfg.data_dir).show(case_id)


def _apply_act(conn, cfg: Config, case_id: str, action: str, operator: str, reason: str | None,
               at: str | None, driver_id: str | None) -> dict:
    return CaseStore(conn, cfg, data_dir=cfg.data_dir).act(case_id, action, operator, reason, at=at,
                                                           driver_id=driver_id)


def _evidence_dir(st: ConsoleState, evidence_path: str | None, case_id: str | None = None) -> Path | None:
    """The case's evidence directory, resolved, and only if it lies inside the evidence root; when this host
    does not hold it, the copy materialised from the archive (``CaseStore.evidence_package``)."""
    if not evidence_path:
        return None
    p = Path(evidence_path)
    local = _inside_dir(p if p.is_absolute() else st.data_dir / p, st.evidence_root)
    if local is None and case_id and _SEGMENT.fullmatch(case_id):
        return _inside_dir(st.data_dir / EVIDENCE_COPIES / case_id, st.data_dir / EVIDENCE_COPIES)
    return local


def _inside_dir(p: Path, root: Path) -> Path | None:
    """``p`` (a file: its directory) resolved, if it is a directory inside ``root``."""
    try:
        p = p.resolve()
    except (OSError, RuntimeError):
        return None
    if p.is_file():
        p = p.parent
    if not p.is_dir() or not _inside(p, root.resolve()):
        return None
    return p


def _evidence_files(d: Path | None) -> list[str]:
    if d is None:
        return []
    out = []
    for f in sorted(d.rglob("*")):
        if len(out) >= 64:
            break
        rel = f.relative_to(d)
        if (f.suffix.lower() in IMAGE_TYPES and f.is_file() and len(rel.parts) <= 3
                and all(_SEGMENT.fullmatch(part) for part in rel.parts)
                and _inside(f.resolve(), d)):          # a symlink out of the case directory is not evidence
            out.append(rel.as_posix())
    return out


async def api_case(request: web.Request) -> web.Response:
    st = request.app[STATE]
    case = await st.db.run(_case_row, st.cfg, request.match_info["case_id"])
    if case is None:
        return _error(404, "not_found", "no such case")
    view = _case_view(st, case)
    view["intercept"] = await st.db.run(_case_intercept, case["case_id"])
    return _json(view)


def _case_intercept(conn, case_id: str) -> dict | None:
    """The intercept task (布控) this case's passage opened or updated, with its outcome: an intercepted
    truck links to this case — never to a second one (docs/intercept.md)."""
    from roadwatch.streams.archive.intercept import task_for_case
    t = task_for_case(conn, case_id)
    return None if t is None else {k: t.get(k) for k in ("task_id", "case_ids", "targets", "expires_at", "outcome")}


def _case_view(st: ConsoleState, case: dict) -> dict:
    reg = st.registry
    ent = reg.enterprises.get(case.get("enterprise_id") or "")
    stn = reg.stations.get(case.get("station_id") or "")
    site = reg.source_sites.get(case.get("source_site_id") or "")
    drv = reg.drivers.get(case.get("driver_id") or "")
    case["enterprise"] = ent.name if ent else ""
    case["station"] = {"id": stn.station_id, "name": stn.name, "lat": stn.lat, "lon": stn.lon} if stn else None
    unit = reg.mobile_units.get(case.get("station_id") or "")
    if unit is not None:          # 流动治超: where it stood is the deployment's place, kept in the manifest
        placed = ((case.get("manifest") or {}).get("site") or {})
        case["station"] = {"id": unit.unit_id, "name": unit.name, "lat": placed.get("lat"), "lon": placed.get("lon"),
                           "mobile": True, "deployment": placed.get("deployment")}
    case["source_site"] = {"id": site.site_id, "name": site.name, "kind": site.kind,
                           "polygon": site.polygon} if site else None
    case["driver"] = drv.name if drv else ""
    case["evidence_files"] = _evidence_files(_evidence_dir(st, case.get("evidence_path"), case.get("case_id")))
    case["actions"] = [{"action": h["act"], "operator": h["by"], "reason": h["reason"], "ts": h["entered_at"],
                        "at": h["at"]} for h in case.get("history", []) if h["act"] != "detect"]
    return case


def _action_error(e: Exception) -> web.Response:
    code = getattr(e, "code", None)
    detail = getattr(e, "detail", None) or str(e)
    if code == "not_found" or isinstance(e, LookupError):
        return _error(404, code or "not_found", detail)
    if isinstance(e, PermissionError):
        return _error(403, code or "forbidden", detail)
    if code in ("bad_action", "bad_input", "reason_required", "too_early"):
        return _error(400, code, detail)
    return _error(409, code or "rejected", detail)


@requires("operator")
def _issue_document(conn, cfg: Config, case_id: str, kind: str, operator: str, pdf: bool) -> dict:
    return documents.issue(CaseStore(conn, cfg, data_dir=cfg.data_dir), case_id, kind, by=operator, pdf=pdf)


async def api_case_document(request: web.Request) -> web.Response:
    """Issue a notice / 告知书 / 决定书 on demand (operators); the case JSON lists it afterwards."""
    st = request.app[STATE]
    case_id = request.match_info["case_id"]
    body = await _body(request)
    kind, pdf = body.get("kind"), body.get("pdf", False)
    if not isinstance(kind, str) or not isinstance(pdf, bool):
        return _error(400, "bad_input", "kind (notice, inform, decision) and optional pdf (true/false) expected")
    try:
        doc = await st.db.run(_issue_document, st.cfg, case_id, kind, request[SESSION].username, pdf)
    except DocumentError as e:
        return _error(404 if e.code == "not_found" else 409, e.code, e.detail)
    return _json(doc)


async def api_case_action(request: web.Request) -> web.Response:
    st = request.app[STATE]
    case_id = request.match_info["case_id"]
    body = await _body(request)
    action, reason = body.get("action"), body.get("reason")
    at, driver_id = body.get("at"), body.get("driver_id")
    if (not isinstance(action, str) or any(v is not None and not isinstance(v, str) for v in (reason, at, driver_id))):
        return _error(400, "bad_input", "action (text) and optional reason, at, driver_id (text) expected")
    operator = request[SESSION].username
    try:
        if st.case_actions is None:
            await st.db.run(_apply_act, st.cfg, case_id, action, operator, reason, at, driver_id)
        else:
            extra = {k: v for k, v in (("at", at), ("driver_id", driver_id)) if v}
            res = st.case_actions(case_id, action, operator, reason, **extra)
            if inspect.isawaitable(res):
                await res
    except (CaseActionError, ValueError, LookupError, PermissionError) as e:
        return _action_error(e)
    case = await st.db.run(_case_row, st.cfg, case_id)
    if case is None:
        return _error(404, "not_found", "no such case")
    view = _case_view(st, case)
    st.live.publish_case({k: view.get(k) for k in ("case_id", "plate", "station_id", "ts", "status", "action",
                                                     "fine_yuan", "excess_kg", "enterprise_id")})
    return _json(view)


@requires("viewer")
async def api_evidence(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    name = request.match_info["name"]
    parts = name.split("/")
    doc_type = DOCUMENT_TYPES.get(Path(name).suffix.lower()) if parts[0] == "documents" else None
    if (len(parts) > 3 or not all(_SEGMENT.fullmatch(p) for p in parts)
            or (Path(name).suffix.lower() not in IMAGE_TYPES and doc_type is None)):
        return _error(404, "not_found", "no such evidence file")
    case = await st.db.run(_case_row, st.cfg, request.match_info["case_id"])
    d = _evidence_dir(st, case.get("evidence_path"), case.get("case_id")) if case else None
    if d is None:
        return _error(404, "not_found", "no evidence for this case")
    f = (d / name).resolve()
    if not _inside(f, d) or not f.is_file():
        return _error(404, "not_found", "no such evidence file")
    if doc_type is not None:           # an issued document: printable, its own inline styles, no script
        return web.FileResponse(f, headers={"Content-Type": doc_type, "Cache-Control": "private, no-cache",
                                            "Content-Security-Policy": DOCUMENT_CSP,
                                            "Content-Disposition": "inline"})
    return web.FileResponse(f, headers={"Content-Type": IMAGE_TYPES[f.suffix.lower()],
                                        "Cache-Control": "private, max-age=3600",
                                        "Content-Disposition": "inline"})


# --- fleet status -------------------------------------------------------------------------------------------

def _fleet_rows(conn, day: str) -> tuple[list[dict], dict[str, int], dict[str, int]]:
    return (vehicle_days_of(conn, day), alerts_db.alerts_per_plate(conn, day),
            case_db.open_cases_by_enterprise(conn))


async def api_fleet_status(request: web.Request) -> web.Response:
    st = request.app[STATE]
    day = request.query.get("day") or _feed_day(st.fleet.vehicles())
    if not _DAY.fullmatch(day):
        return _error(400, "bad_param", "day must be YYYY-MM-DD")
    rows, alerts, cases = await st.db.run(_fleet_rows, day)
    out = today_status(st.cfg, st.registry, day, rows, st.fleet.vehicles(), alerts, cases)
    out["interception"] = await st.db.run(_month_interception, st.cfg, st.registry)
    return _json(out)


def _month_interception(conn, cfg: Config, registry: Registry) -> dict:
    """This Beijing month's 拦截率 and 查处率 (streams/intercept.py), beside the fleet's day."""
    from roadwatch.streams.intercept import beijing_month, month_summary
    now = datetime.now(timezone.utc)
    return month_summary(conn, cfg, registry, beijing_month(now), now)


# --- reports ------------------------------------------------------------------------------------------------

def _list_reports(root: Path) -> list[dict]:
    if not root.is_dir():
        return []
    months = []
    for d in sorted(root.iterdir(), reverse=True):
        if not (d.is_dir() and _MONTH.fullmatch(d.name)):
            continue
        files = [{"name": f.name, "bytes": f.stat().st_size,
                  "modified": format_ts(datetime.fromtimestamp(f.stat().st_mtime, timezone.utc))}
                 for f in sorted(d.iterdir()) if f.is_file() and _SEGMENT.fullmatch(f.name)]
        months.append({"month": d.name, "files": files})
    return months


async def api_reports(request: web.Request) -> web.Response:
    st = request.app[STATE]
    months = await asyncio.get_running_loop().run_in_executor(None, _list_reports, st.reports_dir)
    return _json({"months": months})


async def api_devices(request: web.Request) -> web.Response:
    """The public device list (streams/device_list.py) as of now: JSON here, CSV/HTML as downloads."""
    st = request.app[STATE]
    doc = device_list(st.registry, st.cfg)
    name = request.match_info.get("name")
    if name is None:
        return _json(doc)
    render = {"devices.csv": (to_csv, "text/csv; charset=utf-8"), "devices.html": (to_html, "text/html; charset=utf-8"),
              "devices.json": (to_json, "application/json")}.get(name)
    if render is None:
        return _error(404, "not_found", "devices.csv, devices.html or devices.json")
    return web.Response(body=render[0](doc), headers={
        "Content-Type": render[1], "Content-Disposition": f"attachment; filename={name}"})


async def api_report_file(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    month, name = request.match_info["month"], request.match_info["name"]
    if not _MONTH.fullmatch(month) or not _SEGMENT.fullmatch(name):
        return _error(404, "not_found", "no such report")
    root = (st.reports_dir / "preview" if "/report-previews/" in request.path else st.reports_dir).resolve()
    f = (root / month / name).resolve()
    if not _inside(f, root / month) or not f.is_file():
        return _error(404, "not_found", "no such report")
    ctype = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
    return web.FileResponse(f, headers={
        "Content-Type": ctype, "Cache-Control": "private, no-cache",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(f.name)}"})


# --- users (admin) ------------------------------------------------------------------------------------------

@requires("admin")
async def api_users(request: web.Request) -> web.Response:
    return _json({"users": await request.app[STATE].db.run(auth.list_users), "roles": auth.ROLES})


def _save_user(conn, username: str, role: str, password: str | None, cfg: Config) -> str:
    existing = auth.get_user(conn, username)
    if existing and existing["role"] == "admin" and role != "admin" and auth.count_admins(conn) <= 1:
        raise auth.AuthError("last_admin", "the last admin cannot be demoted")
    return auth.upsert_user(conn, username, role, password, cfg)


def _remove_user(conn, username: str) -> bool:
    existing = auth.get_user(conn, username)
    if existing and existing["role"] == "admin" and auth.count_admins(conn) <= 1:
        raise auth.AuthError("last_admin", "the last admin cannot be removed")
    return auth.delete_user(conn, username)


@requires("admin")
async def api_user_save(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = await _body(request)
    username, role, password = body.get("username"), body.get("role"), body.get("password") or None
    try:
        result = await st.db.run(_save_user, username, role, password, st.cfg)
    except auth.AuthError as e:
        return _error(409 if e.code == "last_admin" else 400, e.code, e.detail)
    if result == "updated":                    # role or password changed: its sessions were ended
        st.live.end_sessions(username=username)
    return _json({"result": result, "username": username, "role": role})


@requires("admin")
async def api_user_delete(request: web.Request) -> web.Response:
    st = request.app[STATE]
    try:
        ok = await st.db.run(_remove_user, request.match_info["username"])
    except auth.AuthError as e:
        return _error(409, e.code, e.detail)
    st.live.end_sessions(username=request.match_info["username"])
    return _json({"deleted": ok}) if ok else _error(404, "not_found", "no such user")


# --- middleware, headers, factory -------------------------------------------------------------------------

def _is_api(request: web.Request) -> bool:
    return "/api/" in request.path


@web.middleware
async def security_middleware(request: web.Request, handler):
    st = request.app[STATE]
    h = request.match_info.handler
    if h not in st.own_handlers or getattr(h, "_rw_public", False):
        # routes the host adds to this app (/metrics, /healthz) and the public ones need no session
        return await handler(request)
    token = request.cookies.get(auth.COOKIE)
    sess = await st.db.run(auth.lookup_session, token) if token else None
    request[SESSION] = sess
    if sess is None:
        if _is_api(request):
            return _error(401, "not_signed_in", "sign in first")
        # relative, so any mount prefix works: one "../" per directory level of the page (case/<id>/print)
        raise web.HTTPFound("../" * getattr(h, "_rw_depth", 0) + "login")
    need = getattr(h, "_rw_role", "viewer")
    if request.method not in SAFE_METHODS:
        origin = request.headers.get("Origin")
        if origin and origin.split("://", 1)[-1] != request.host:
            return _error(403, "bad_origin", "cross-origin request refused")
        if not auth.csrf_ok(sess, request.headers.get(auth.CSRF_HEADER)):
            return _error(403, "csrf", "missing or wrong CSRF token")
        if not getattr(h, "_rw_any_role", False) and not auth.role_allows(need, "operator"):
            need = "operator"
    if not sess.allows(need):
        return _error(403, "forbidden", f"needs the {need} role")
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("Content-Security-Policy", request.app[STATE].csp if STATE in request.app else CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "same-origin")
    if _is_api(request):
        h.setdefault("Cache-Control", "no-store")


def csp_for(tile_url: str) -> str:
    """The CSP, letting images load from the tile server's origin (only) when a base map is configured."""
    if not tile_url:
        return CSP
    u = urlsplit(tile_url.replace("{s}", "*"))
    if u.scheme not in ("http", "https") or not u.netloc:
        return CSP
    return CSP.replace("img-src 'self' data:", f"img-src 'self' data: {u.scheme}://{u.netloc}")


def create_console_app(cfg: Config, *, archive_path: str | Path, registry: Registry | None, live: LiveHub,
                       fleet: FleetView, case_actions: CaseActions | None = None,
                       evidence_dir: str | Path | None = None, reports_dir: str | Path | None = None,
                       env: dict[str, str] | None = None) -> web.Application:
    """The console as an aiohttp application.

    ``case_actions(case_id, action, operator, reason)`` applies a case transition (``CaseStore.act``);
    it may be sync or async and should raise ValueError/LookupError (with an optional ``code``) to refuse.
    ``None`` applies ``CaseStore.act`` (streams/cases.py) on the console's own archive connection — the same
    workflow as the CLI. ``evidence_dir`` (default
    ``<data_dir>/evidence``) bounds which files may be served as evidence; ``reports_dir`` defaults to
    ``<data_dir>/reports``. The first admin is created from ``ROADWATCH_ADMIN_USER/PASSWORD`` in ``env``.
    """
    registry = registry or Registry()
    places = Places(registry)
    db = ArchiveDB(archive_path)
    db.call(auth.ensure_admin_from_env, cfg, env)     # also applies every registered schema
    live.configure(cfg)
    live.enrich = make_enricher(registry, places)
    data_dir = cfg.data_dir
    state = ConsoleState(
        cfg=cfg, db=db, registry=registry, places=places, live=live, fleet=fleet, case_actions=case_actions,
        limiter=auth.LoginLimiter(cfg["web.login_max_failures"], cfg["web.login_window_s"]),
        data_dir=data_dir, evidence_root=Path(evidence_dir) if evidence_dir else data_dir / "evidence",
        reports_dir=Path(reports_dir) if reports_dir else data_dir / "reports")
    state.csp = csp_for(cfg["web.tile_url"])
    app = web.Application(middlewares=[security_middleware], client_max_size=64 * 1024)
    app[STATE] = state
    app.on_response_prepare.append(_security_headers)

    async def _shutdown(_app: web.Application) -> None:
        live.disconnect_all()

    async def _cleanup(_app: web.Application) -> None:
        db.close()

    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    r = app.router
    r.add_get("/", index_page)
    r.add_get("/login", login_page)
    r.add_get("/static/{name:.+}", static_file)
    r.add_get("/case/{case_id}/print", case_print_page)
    r.add_post("/api/login", api_login)
    r.add_post("/api/logout", api_logout)
    r.add_get("/api/me", api_me)
    r.add_get("/api/alerts", api_alerts)
    r.add_post("/api/alerts/{alert_id}/ack", api_alert_ack)
    r.add_get("/api/stream", api_stream)
    r.add_get("/api/map", api_map)
    r.add_get("/api/vehicles", api_vehicles)
    r.add_get("/api/vehicles/{plate}", api_vehicle)
    r.add_get("/api/cases", api_cases)
    r.add_get("/api/cases/{case_id}", api_case)
    r.add_post("/api/cases/{case_id}/actions", api_case_action)
    r.add_post("/api/cases/{case_id}/documents", api_case_document)
    r.add_get("/api/cases/{case_id}/evidence/{name:.+}", api_evidence)
    r.add_get("/api/fleet/status", api_fleet_status)
    r.add_get("/api/notices", api_notices)
    r.add_get("/api/devices", api_devices)
    r.add_get("/api/devices/{name}", api_devices)
    r.add_get("/api/reports", api_reports)
    r.add_get("/api/reports/months", report_jobs.api_report_months)
    r.add_post("/api/reports/{month}/generate", report_jobs.api_report_generate)
    r.add_get("/api/reports/{month}/{name}", api_report_file)
    r.add_get("/api/report-previews/{month}/{name}", api_report_file)
    r.add_get("/api/tracks/{plate}", tracks.api_track)
    r.add_get("/api/area", tracks.api_area_search)
    r.add_get("/api/search", search.api_search)
    r.add_get("/api/tree", search.api_tree)
    r.add_get("/api/alerts/{alert_id}/notes", handling.api_notes)
    r.add_post("/api/alerts/{alert_id}/notes", handling.api_add_note)
    r.add_get("/api/users", api_users)
    r.add_post("/api/users", api_user_save)
    r.add_delete("/api/users/{username}", api_user_delete)
    from .platforms_api import add_routes as add_platform_routes   # JT/T 809 platforms (streams/jt809)
    add_platform_routes(r)
    from .intercept_api import add_routes as add_intercept_routes  # 布控 tasks and outcomes (streams/intercept.py)
    add_intercept_routes(r)
    state.own_handlers = frozenset(route.handler for route in r.routes())
    return app


async def run_console(app: web.Application, host: str = "127.0.0.1", port: int = 6066) -> web.AppRunner:
    """Serve the console on its own (tests, demo without Faust's web server). Caller cleans up the runner."""
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
