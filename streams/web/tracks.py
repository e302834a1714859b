"""Console endpoints over the sampled track points (``track_points``, one point per vehicle every
``track.sample_s``; every monitored vehicle when ``track.sample_all``): track playback for one
vehicle and 区域查车, every vehicle inside a rectangle in a time range.

Times in queries are ISO-8601 with an offset, or a bare ``YYYY-MM-DDTHH:MM[:SS]`` (an ``<input
type=datetime-local>``), which is Beijing time. Rectangles are WGS-84 ``west,south,east,north``: the browser
converts a rectangle drawn on a GCJ-02 base map back before it asks.
"""
from __future__ import annotations

import math
import re
from datetime import datetime

from aiohttp import web

from roadwatch.models.records import BEIJING, epoch_ms_to_iso
from roadwatch.streams.archive.tracks import newest_track_points, plates_in_area, track_span

MAX_TRACK_POINTS = 20_000
MAX_AREA_SPAN_MS = 31 * 86_400_000
_LOCAL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


class BadParam(ValueError):
    pass


def parse_time_ms(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise BadParam(f"{name} must be an ISO-8601 time") from None
    if dt.tzinfo is None:
        if not _LOCAL.fullmatch(raw):
            raise BadParam(f"{name} must be an ISO-8601 time")
        dt = dt.replace(tzinfo=BEIJING)
    return int(dt.timestamp() * 1000)


def parse_bbox(raw: str | None) -> tuple[float, float, float, float]:
    try:
        w, s, e, n = (float(x) for x in (raw or "").split(","))
    except ValueError:
        raise BadParam("bbox must be west,south,east,north in degrees") from None
    if not all(map(math.isfinite, (w, s, e, n))) or not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise BadParam("bbox must be west,south,east,north in degrees, west < east, south < north")
    return w, s, e, n


# --- queries (run on the console's archive thread) -------------------------------------------------------------

def track_points(conn, plate: str, from_ms: int | None, to_ms: int | None, limit: int = MAX_TRACK_POINTS) -> dict:
    """One vehicle's sampled points in [from, to] (the newest ``limit`` if more), oldest first, and the span
    of everything kept for it (so the browser can offer the range that exists)."""
    span = track_span(conn, plate)
    if limit <= 0:                      # only the span kept (the playback's default range)
        return {"plate": plate, "points": [], "truncated": False,
                "kept_from": epoch_ms_to_iso(span[0]) if span[0] is not None else None,
                "kept_to": epoch_ms_to_iso(span[1]) if span[1] is not None else None, "kept_points": span[2]}
    lo = from_ms if from_ms is not None else -(2 ** 62)
    hi = to_ms if to_ms is not None else 2 ** 62
    rows = newest_track_points(conn, plate, lo, hi, limit)
    pts = [{"ts": epoch_ms_to_iso(r[0]), "ts_ms": r[0], "lat": r[1], "lon": r[2], "speed_kmh": r[3]}
           for r in reversed(rows)]
    return {"plate": plate, "points": pts, "truncated": len(rows) == limit,
            "kept_from": epoch_ms_to_iso(span[0]) if span[0] is not None else None,
            "kept_to": epoch_ms_to_iso(span[1]) if span[1] is not None else None, "kept_points": span[2]}


def vehicles_in_area(conn, bbox: tuple, from_ms: int, to_ms: int) -> list[dict]:
    w, s, e, n = bbox
    rows = plates_in_area(conn, s, w, n, e, from_ms, to_ms)
    return [{"plate": r[0], "points": r[1], "first": epoch_ms_to_iso(r[2]), "last": epoch_ms_to_iso(r[3]),
             "max_speed_kmh": r[4]} for r in rows]


# --- handlers ---------------------------------------------------------------------------------------------------

def _bad(detail: str) -> web.Response:
    from .console import _error
    return _error(400, "bad_param", detail)


async def api_track(request: web.Request) -> web.Response:
    from .console import STATE, _json
    st = request.app[STATE]
    try:
        f = parse_time_ms(request.query.get("from"), "from")
        t = parse_time_ms(request.query.get("to"), "to")
    except BadParam as e:
        return _bad(str(e))
    limit = 0 if request.query.get("span") == "1" else MAX_TRACK_POINTS
    res = await st.db.run(track_points, request.match_info["plate"], f, t, limit)
    res["sample_s"] = st.cfg["track.sample_s"]
    return _json(res)


async def api_area_search(request: web.Request) -> web.Response:
    from .console import STATE, _json, _vehicle_row
    st = request.app[STATE]
    try:
        bbox = parse_bbox(request.query.get("bbox"))
        f = parse_time_ms(request.query.get("from"), "from")
        t = parse_time_ms(request.query.get("to"), "to")
    except BadParam as e:
        return _bad(str(e))
    if f is None or t is None or t < f:
        return _bad("from and to are required, from ≤ to")
    if t - f > MAX_AREA_SPAN_MS:
        return _bad("the time range may span at most 31 days")
    rows = await st.db.run(vehicles_in_area, bbox, f, t)
    reg = st.registry
    for r in rows:
        info = _vehicle_row({"plate": r["plate"]}, reg)
        r.update(category=info["category"], enterprise=info["enterprise"], enterprise_id=info["enterprise_id"])
    return _json({"bbox": list(bbox), "from": epoch_ms_to_iso(f), "to": epoch_ms_to_iso(t), "vehicles": rows})
