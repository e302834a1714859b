"""Mobile weighing units (流动治超): deployments, and where a unit stood when it weighed a truck.

A mobile unit (docs/registry-format.md, section mobile_units) has one device and a list of deployments, each a place
(lat/lon, road, direction) and a half-open time span ``[start, end)``. A reading names the unit in its
``station_id``; its position and validity come from the deployment active at the reading's time. A reading
no deployment covers has no lawful place: ``assess`` sends it to review with ``outside_deployment``
(models/overload.py step 3) and it never becomes a fine (docs/legal-basis.md §9.4).

Because the unit moves, its location is announced to the public per deployment (行政处罚法 Art. 41): the
``announcement`` record sits on the deployment, the device carries the legal and technical reviews and the
signage. A deployment joins the road graph (registry ``stations[].downstream``) at ``station`` when it stands
at a registry station; without one the intercept planner attaches it to the nearest station
(docs/intercept.md, ``intercept.mobile_attach_km``).
"""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from .records import InvalidRecord, iso_to_epoch_ms, parse_ts

if TYPE_CHECKING:                    # registry.py imports this module to check unit entries
    from .registry import Registry

DEPLOYMENT_FIELDS = ("deployment_id", "lat", "lon", "road", "direction", "start", "end", "announcement",
                     "station")
REQUIRED_DEPLOYMENT_FIELDS = ("deployment_id", "lat", "lon", "road", "direction", "start", "end")
OUTSIDE = "outside_deployment"           # the review reason of a reading no deployment covers


def check_deployments(deployments, station_ids) -> str | None:
    """Why a unit's deployment list is malformed or overlaps in time (None when fine). Each deployment is
    checked alone, then all are sorted by start: a unit stands in one place at a time, so a deployment that
    starts before the previous one ends is refused (touching spans are fine: ``[start, end)``)."""
    if not isinstance(deployments, list):
        return "deployments must be a list"
    spans = []
    for j, d in enumerate(deployments):
        where = f"deployments[{j}]"
        if not isinstance(d, dict):
            return f"{where}: expected an object"
        unknown = sorted(set(d) - set(DEPLOYMENT_FIELDS))
        if unknown:
            return f"{where}: unknown field(s) {unknown}"
        missing = [k for k in REQUIRED_DEPLOYMENT_FIELDS if k not in d]
        if missing:
            return f"{where}: missing {missing}"
        for k in ("deployment_id", "road", "direction"):
            if not isinstance(d[k], str) or not d[k].strip():
                return f"{where}: {k} must be non-empty text"
        for k, lo, hi in (("lat", -90, 90), ("lon", -180, 180)):
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                return f"{where}: {k} must lie in [{lo}, {hi}], got {v!r}"
        try:
            start, end = parse_ts(d["start"], "start"), parse_ts(d["end"], "end")
        except InvalidRecord as err:
            return f"{where}: {err.detail}"
        if end <= start:
            return f"{where} ({d['deployment_id']}): end must be after start"
        ann = d.get("announcement")
        if ann is not None:
            from .devices import check_item         # one record format for every approval item
            problem = check_item("announcement", ann)
            if problem:
                return f"{where}: {problem}"
        if "station" in d and d["station"] not in station_ids:
            return f"{where}: station {d['station']!r} is not a registry station"
        spans.append((start, end, d["deployment_id"]))
    spans.sort()
    for (s0, e0, id0), (s1, _e1, id1) in zip(spans, spans[1:]):
        if s1 < e0:
            return f"deployment {id1!r} overlaps {id0!r} (a unit stands in one place at a time)"
    return None


def index_deployments(deployments: list) -> tuple[list[int], list[dict]]:
    """(start epoch-ms list, deployments) sorted by start, for ``active_deployment``'s bisection."""
    rows = sorted(deployments, key=lambda d: iso_to_epoch_ms(d["start"]))
    return [iso_to_epoch_ms(d["start"]) for d in rows], rows


def active_deployment(registry: "Registry", unit_id: str, ts_ms: int) -> dict | None:
    """The deployment of ``unit_id`` whose ``[start, end)`` holds ``ts_ms`` (None when none does)."""
    idx = registry.deployment_index(unit_id)
    if idx is None:
        return None
    starts, rows = idx
    i = bisect.bisect_right(starts, ts_ms) - 1
    if i >= 0 and ts_ms < iso_to_epoch_ms(rows[i]["end"]):
        return rows[i]
    return None


def deployment_status(registry: "Registry", station_id: str, ts_ms: int) -> dict | None:
    """None for a fixed station; for a mobile unit ``status`` deployed (with the deployment's place and
    span) or ``outside_deployment``."""
    unit = registry.mobile_units.get(station_id)
    if unit is None:
        return None
    dep = active_deployment(registry, station_id, ts_ms)
    if dep is None:
        return {"status": OUTSIDE, "unit_id": unit.unit_id,
                "detail": f"no deployment of mobile unit {unit.unit_id} covers the reading's time"}
    return {"status": "deployed", "unit_id": unit.unit_id, "deployment_id": dep["deployment_id"],
            "lat": dep["lat"], "lon": dep["lon"], "road": dep["road"], "direction": dep["direction"],
            "start": dep["start"], "end": dep["end"], "station": dep.get("station")}


def deployed_at(registry: "Registry", ts_ms: int) -> list[dict]:
    """Every mobile unit deployed at ``ts_ms`` with its deployment's place (the console map, field teams)."""
    out = []
    for uid in sorted(registry.mobile_units):
        st = deployment_status(registry, uid, ts_ms)
        if st and st["status"] == "deployed":
            out.append({**st, "name": registry.mobile_units[uid].name, "county": registry.mobile_units[uid].county})
    return out


def enforcement_points(registry: "Registry", ts_ms: int) -> list:
    """The mobile teams deployed at ``ts_ms`` as intercept targets (``models.intercept.EnforcementPoint``,
    kind ``mobile``): the deployment's place, and its road-graph node when it stands at a registry station."""
    from .intercept import EnforcementPoint     # intercept → registry → this module: imported when first used
    return [EnforcementPoint(d["unit_id"], "mobile", d["name"], float(d["lat"]), float(d["lon"]), d.get("station"))
            for d in deployed_at(registry, ts_ms)]
