"""Intercept tasks (布控) for overloaded trucks, their field outcomes, and the 拦截率 — pure, no I/O.

A passage over the intercept threshold (``over_threshold``) opens ONE task per truck, or updates the truck's
open task when it passes again before the task expires. The task names the enforcement points the truck is
likely to reach next, each with an estimated time of arrival (``plan``):

1. **GPS** — where the truck has a terminal and a fix within ``intercept.gps_max_age_s`` of the passage, its
   position and heading (from the latest fix and the newest earlier fix ``intercept.gps_min_move_m`` away):
   every enforcement point whose bearing lies within ``intercept.heading_cone_deg`` of the heading, at the
   straight-line distance × ``intercept.road_factor``, at the fix's speed;
2. **road graph** — otherwise the registry's station graph (``stations[].downstream``): the shortest road
   distance from the passage station to each reachable enforcement point, at the passage speed.

Enforcement points are the registry's 超限检测站 (stations of ``kind: checkpoint``) and the mobile teams
active at the passage's time (``EnforcementPoint(kind="mobile")``, supplied by the caller). Points farther
than ``intercept.max_eta_min`` are left out; the nearest ``intercept.max_targets`` are named. A task may name
no point (nothing ahead within reach): it is still a task — the truck is still to be stopped.

A task expires ``intercept.expiry_min`` after the latest passage that opened or updated it. Its outcome is
recorded once by an officer (``check_outcome``): intercepted (with the unloaded mass and whether the case was
handled on the spot), not_found, or released (with a reason). Values are project decisions
(docs/legal-basis.md §11).
"""
from __future__ import annotations

import hashlib
import heapq
import math
from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import Iterable, Mapping, Sequence

from roadwatch.geo.distance import haversine_km_scalar
from roadwatch.models.config import Config
from roadwatch.models.rates import percent
from roadwatch.models.records import BEIJING, epoch_ms_to_iso, parse_ts
from roadwatch.models.registry import Registry

TASK_SCHEMA = "roadwatch.intercept-task/1"
OUTCOMES = ("intercepted", "not_found", "released")
STATUSES = ("open", "expired", *OUTCOMES)
LABELS = {"open": "布控中", "expired": "已过期", "intercepted": "已拦截", "not_found": "未发现", "released": "已放行"}
MAX_REASON = 500
MAX_UNLOADED_KG = 200_000.0
MINUTE_MS = 60_000


class InterceptError(ValueError):
    """A refused outcome. ``code``: not_found | bad_input | reason_required | already_recorded | too_early."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class EnforcementPoint:
    """A place where officers can stop a truck: a fixed 超限检测站 or a deployed mobile team (流动治超).

    ``station_id``: the road-graph node the point sits at (a fixed point: its own station; a mobile team:
    the station it is deployed at, or None — then it is attached to the nearest station within
    ``intercept.mobile_attach_km`` in road-graph mode)."""
    point_id: str
    kind: str            # fixed | mobile
    name: str
    lat: float
    lon: float
    station_id: str | None = None


def fixed_points(registry: Registry) -> list[EnforcementPoint]:
    """The registry's 超限检测站 (``kind: checkpoint``)."""
    return [EnforcementPoint(s.station_id, "fixed", s.name, float(s.lat), float(s.lon), s.station_id)
            for s in registry.stations.values() if s.kind == "checkpoint"]


def station_kinds(registry: Registry) -> dict[str, str]:
    """Detecting station → fixed | mobile, for the rates (a mobile unit reports under its own id)."""
    return {**{uid: "mobile" for uid in registry.mobile_units}, **{sid: "fixed" for sid in registry.stations}}


# --- the threshold ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Threshold:
    """The intercept threshold's keys, read together (``over_threshold``)."""
    enabled: bool
    actions: tuple[str, ...]
    min_excess_pct: float
    vehicle_kinds: frozenset[str]
    min_axles: int

    @classmethod
    def of(cls, cfg: Config) -> "Threshold":
        return cls(bool(cfg["intercept.enabled"]),
                   ("fine",) if cfg["intercept.actions"] == "fine" else ("fine", "warning"),
                   float(cfg["intercept.min_excess_pct"]),
                   frozenset(k.strip() for k in str(cfg["intercept.vehicle_kinds"]).split(",") if k.strip()),
                   int(cfg["intercept.min_axles"]))


def over_threshold(verdict: Mapping, cfg: Config) -> bool:
    """Whether this verdict calls for an intercept task: a case of the configured actions (default: every
    fine-level case), excess ≥ ``intercept.min_excess_pct``, of an intercepted vehicle class."""
    t = Threshold.of(cfg)
    if not t.enabled or not verdict.get("case_id") or verdict.get("duplicate_of") or verdict.get("conflict"):
        return False
    if verdict.get("action") not in t.actions:
        return False
    if float(verdict.get("excess_pct") or 0.0) < t.min_excess_pct:
        return False
    if verdict.get("vehicle_kind") not in t.vehicle_kinds:
        return False
    return int(verdict.get("axle_count") or 0) >= t.min_axles


def task_id_for(plate: str, first_case_id: str) -> str:
    """Deterministic: the truck and the case that opened the task (a replay opens no second task)."""
    return "I" + hashlib.sha256(f"{plate}|{first_case_id}".encode()).hexdigest()[:22].upper()


# --- where the truck goes next ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Params:
    """The planner's keys, read together from the Config it is given (``plan``)."""
    expiry_min: int
    max_eta_min: float
    max_targets: int
    gps_max_age_s: int
    gps_min_move_m: float
    heading_cone_deg: float
    road_factor: float
    min_speed_kmh: float
    default_speed_kmh: float
    mobile_attach_km: float

    @classmethod
    def of(cls, cfg: Config) -> "Params":
        return cls(**{f: cfg[f"intercept.{f}"] for f in cls.__dataclass_fields__})   # typed by models/config.py


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(x, y)) % 360.0


def _angle_between(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


@dataclass(frozen=True)
class Fix:
    """The truck's live position: the latest GPS fix near the passage and its heading."""
    ts_ms: int
    lat: float
    lon: float
    speed_kmh: float
    heading_deg: float


def live_fix(ts_ms: Sequence[int], lat: Sequence[float], lon: Sequence[float], speed_kmh: Sequence[float],
             passage_ms: int, p: Params) -> tuple[Fix | None, str]:
    """The latest fix within ``intercept.gps_max_age_s`` of the passage, with its heading; or None and why
    (no_fix | no_heading: the truck has not moved ``intercept.gps_min_move_m`` within the window)."""
    age_ms = p.gps_max_age_s * 1000
    idx = [i for i in range(len(ts_ms)) if abs(int(ts_ms[i]) - passage_ms) <= age_ms]
    if not idx:
        return None, "no_fix"
    idx.sort(key=lambda i: int(ts_ms[i]))
    last = idx[-1]
    la, lo = float(lat[last]), float(lon[last])
    min_km = p.gps_min_move_m / 1000.0
    for i in reversed(idx[:-1]):
        if haversine_km_scalar(float(lat[i]), float(lon[i]), la, lo) >= min_km:
            head = bearing_deg(float(lat[i]), float(lon[i]), la, lo)
            return Fix(int(ts_ms[last]), la, lo, float(speed_kmh[last]), round(head, 1)), "gps"
    return None, "no_heading"


def usable_speed(p: Params, *speeds: float | None) -> float:
    """The first speed ≥ ``intercept.min_speed_kmh``; else ``intercept.default_speed_kmh``."""
    lo = p.min_speed_kmh
    for s in speeds:
        if s is not None and math.isfinite(float(s)) and float(s) >= lo:
            return float(s)
    return p.default_speed_kmh


def _target(p: EnforcementPoint, km: float, from_ms: int, speed: float) -> dict:
    eta_ms = from_ms + int(round(km / speed * 3_600_000))
    return {"point_id": p.point_id, "kind": p.kind, "name": p.name, "lat": p.lat, "lon": p.lon,
            "km": round(km, 2), "eta": epoch_ms_to_iso(eta_ms), "eta_ms": eta_ms,
            "eta_min": round((eta_ms - from_ms) / MINUTE_MS, 1)}


def _pick(targets: list[dict], p: Params, from_ms: int) -> list[dict]:
    max_ms = p.max_eta_min * MINUTE_MS
    ok = [t for t in targets if t["eta_ms"] - from_ms <= max_ms]
    ok.sort(key=lambda t: (t["eta_ms"], t["point_id"]))
    return ok[:p.max_targets]


def gps_targets(fix: Fix, points: Iterable[EnforcementPoint], prm: Params, *, passage_speed_kmh: float | None,
                exclude: str | None = None) -> list[dict]:
    """Points ahead of the truck (bearing within the heading cone), ETA from the fix's time."""
    speed = usable_speed(prm, fix.speed_kmh, passage_speed_kmh)
    cone, factor = prm.heading_cone_deg, prm.road_factor
    out = []
    for p in points:
        if exclude is not None and exclude in (p.point_id, p.station_id):
            continue
        km = haversine_km_scalar(fix.lat, fix.lon, p.lat, p.lon)
        if km < 1e-3 or _angle_between(bearing_deg(fix.lat, fix.lon, p.lat, p.lon), fix.heading_deg) > cone:
            continue
        out.append(_target(p, km * factor, fix.ts_ms, speed))
    return _pick(out, prm, fix.ts_ms)


def road_distances(registry: Registry, start: str) -> dict[str, float]:
    """Shortest road distance (km) from ``start`` to every station reachable downstream (Dijkstra)."""
    if start not in registry.stations:
        return {}
    dist = {start: 0.0}
    heap = [(0.0, start)]
    while heap:
        d, node = heapq.heappop(heap)
        if d > dist.get(node, math.inf):
            continue
        for edge in registry.stations[node].downstream:
            nd = d + float(edge["km"])
            if nd < dist.get(edge["station"], math.inf):
                dist[edge["station"]] = nd
                heapq.heappush(heap, (nd, edge["station"]))
    return dist


def _attach(registry: Registry, p: EnforcementPoint, attach_km: float) -> tuple[str | None, float]:
    """The graph node a point sits at and its straight-line offset (km) from it."""
    if p.station_id and p.station_id in registry.stations:
        return p.station_id, 0.0
    best, best_km = None, attach_km
    for s in registry.stations.values():
        km = haversine_km_scalar(p.lat, p.lon, float(s.lat), float(s.lon))
        if km <= best_km:
            best, best_km = s.station_id, km
    return best, (best_km if best else 0.0)


def graph_start(registry: Registry, station_id: str, points: Iterable[EnforcementPoint],
                prm: Params) -> tuple[str | None, float]:
    """The road-graph node a passage starts from and its offset (km): a fixed station is its own node; a
    mobile unit (not a node) starts where its deployment joins the graph, as a mobile target would."""
    if station_id in registry.stations:
        return station_id, 0.0
    here = next((p for p in points if p.point_id == station_id), None)
    return _attach(registry, here, prm.mobile_attach_km) if here is not None else (None, 0.0)


def graph_targets(registry: Registry, station_id: str, points: Iterable[EnforcementPoint], prm: Params, *,
                  from_ms: int, speed_kmh: float) -> list[dict]:
    """Points downstream of the passage station on the road graph, ETA at ``speed_kmh``."""
    points = list(points)
    start, start_off = graph_start(registry, station_id, points, prm)
    if start is None:
        return []
    dist = road_distances(registry, start)
    factor = prm.road_factor
    out = []
    for p in points:
        node, off = _attach(registry, p, prm.mobile_attach_km)
        if node is None or node == start or node not in dist or p.point_id == station_id:
            continue              # off the graph, at the passage's own node, or not downstream
        out.append(_target(p, dist[node] + (start_off + off) * factor, from_ms, speed_kmh))
    return _pick(out, prm, from_ms)


# --- the task ------------------------------------------------------------------------------------------------

def is_open(task: Mapping | None, ts_ms: int) -> bool:
    """Still open to a passage at ``ts_ms``: no outcome recorded and not expired."""
    return bool(task) and not task.get("outcome") and int(task["expires_ms"]) > int(ts_ms)


def _passage(verdict: Mapping, speed: float | None) -> dict:
    return {"case_id": verdict["case_id"], "station_id": verdict["station_id"], "ts": verdict["ts"],
            "ts_ms": int(verdict["ts_ms"]), "action": verdict["action"], "gross_kg": verdict.get("gross_kg"),
            "excess_kg": verdict.get("excess_kg"), "excess_pct": verdict.get("excess_pct"),
            "fine_yuan": verdict.get("fine_yuan"), "speed_kmh": speed}


def plan(verdict: Mapping, registry: Registry, cfg: Config, *, open_task: Mapping | None = None,
         track: tuple | None = None, mobile: Iterable[EnforcementPoint] = (),
         passage_speed_kmh: float | None = None) -> dict:
    """The task after this passage: a new task, or ``open_task`` updated (same id, the passage appended, the
    targets and the expiry recomputed from the newer passage). ``track``: the truck's fixes near the passage
    as ``(ts_ms, lat, lon, speed_kmh)`` sequences (empty or None: no terminal data)."""
    ts_ms = int(verdict["ts_ms"])
    points = [*fixed_points(registry), *mobile]
    prm = Params.of(cfg)
    fix, why = live_fix(*track, ts_ms, prm) if track is not None and len(track[0]) else (None, "no_fix")
    if fix is not None:
        basis = "gps"
        targets = gps_targets(fix, points, prm, passage_speed_kmh=passage_speed_kmh, exclude=verdict["station_id"])
        position = {"ts": epoch_ms_to_iso(fix.ts_ms), "ts_ms": fix.ts_ms, "lat": fix.lat, "lon": fix.lon,
                    "speed_kmh": fix.speed_kmh, "heading_deg": fix.heading_deg}
    else:
        basis = "road_graph"
        targets = graph_targets(registry, verdict["station_id"], points, prm, from_ms=ts_ms,
                                speed_kmh=usable_speed(prm, passage_speed_kmh))
        position = None
    passage = _passage(verdict, passage_speed_kmh)
    expires_ms = ts_ms + prm.expiry_min * MINUTE_MS
    if is_open(open_task, ts_ms) and open_task["plate"] == verdict["plate"]:
        task = dict(open_task)
        if any(p["case_id"] == passage["case_id"] for p in task["passages"]):
            return task                                    # this passage is already in the task
        task["passages"] = sorted([*task["passages"], passage], key=lambda p: (p["ts_ms"], p["case_id"]))
        task["case_ids"] = [p["case_id"] for p in task["passages"]]
        task["revision"] = int(task["revision"]) + 1
        if ts_ms < int(task["last_ms"]):                   # an older passage arriving late: history only
            return task
    else:
        task = {"schema": TASK_SCHEMA, "task_id": task_id_for(verdict["plate"], verdict["case_id"]),
                "plate": verdict["plate"], "plate_color": verdict.get("plate_color"),
                "station_id": verdict["station_id"], "station_name": registry.point_name(verdict["station_id"]), "detected_at": verdict["ts"], "detected_ms": ts_ms,
                "passages": [passage], "case_ids": [verdict["case_id"]], "revision": 1, "outcome": None}
    task.update(last_ms=ts_ms, last_station_id=verdict["station_id"], case_id=verdict["case_id"],
                expires_ms=expires_ms, expires_at=epoch_ms_to_iso(expires_ms), basis=basis,
                basis_note=None if fix is not None else why, position=position, targets=targets,
                speed_kmh=usable_speed(prm, fix.speed_kmh if fix else None, passage_speed_kmh))
    return task


def status(task: Mapping, now_ms: int) -> str:
    out = task.get("outcome")
    if out:
        return out["outcome"]
    return "open" if int(task["expires_ms"]) > int(now_ms) else "expired"


# --- the field outcome ---------------------------------------------------------------------------------------

def _text(v, name: str, limit: int = MAX_REASON) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise InterceptError("bad_input", f"{name} must be text")
    v = v.strip()
    if len(v) > limit:
        raise InterceptError("bad_input", f"{name} longer than {limit} characters")
    return v or None


def check_outcome(task: Mapping, outcome: str, *, by: str, at: str | None, now: datetime,
                  unloaded_kg: float | None = None, on_the_spot: bool | None = None, reason: str | None = None,
                  point_id: str | None = None) -> dict:
    """The outcome record an officer makes, validated: intercepted needs ``unloaded_kg`` (卸载, ≥ 0) and
    ``on_the_spot`` (the case handled on the spot, yes/no); released needs a reason. ``at`` (when the truck
    was stopped or the search ended; default now) lies between the detection and now. One outcome per task:
    the same outcome again is a replay, another is refused (already_recorded)."""
    by = _text(by, "officer", 64)
    if not by:
        raise InterceptError("bad_input", "the recording officer is required")
    if outcome not in OUTCOMES:
        raise InterceptError("bad_input", f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    reason = _text(reason, "reason")
    point_id = _text(point_id, "point_id", 64)
    if at is None:
        at_dt = now
    else:
        try:
            at_dt = parse_ts(at, "at")
        except ValueError as e:
            raise InterceptError("bad_input", f"at {at!r}: {getattr(e, 'detail', e)}") from None
    at_ms = int(at_dt.timestamp() * 1000)
    if at_ms < int(task["detected_ms"]):
        raise InterceptError("too_early", f"at {at_dt.isoformat()} lies before the detection ({task['detected_at']})")
    if at_ms > int(now.timestamp() * 1000) + MINUTE_MS:
        raise InterceptError("bad_input", "at lies in the future")
    rec: dict = {"outcome": outcome, "by": by, "at": epoch_ms_to_iso(at_ms), "at_ms": at_ms, "reason": reason,
                 "point_id": point_id, "unloaded_kg": None, "on_the_spot": None, "case_id": None}
    if outcome == "intercepted":
        if isinstance(unloaded_kg, bool) or not isinstance(unloaded_kg, (int, float)) \
                or not math.isfinite(unloaded_kg) or not 0 <= unloaded_kg <= MAX_UNLOADED_KG:
            raise InterceptError("bad_input", f"unloaded_kg (卸载) must be a mass in [0, {MAX_UNLOADED_KG:g}] kg")
        if not isinstance(on_the_spot, bool):
            raise InterceptError("bad_input", "on_the_spot (handled on the spot) must be true or false")
        rec.update(unloaded_kg=float(unloaded_kg), on_the_spot=on_the_spot,
                   case_id=task.get("case_id") or task["case_ids"][-1])      # the truck's case: never a new one
    elif unloaded_kg is not None or on_the_spot is not None:
        raise InterceptError("bad_input", "unloaded_kg and on_the_spot belong to an intercepted outcome")
    if outcome == "released" and not reason:
        raise InterceptError("reason_required", "a released truck needs the reason")
    prior = task.get("outcome")
    if prior:
        same = all(prior.get(k) == rec[k] for k in ("outcome", "unloaded_kg", "on_the_spot", "reason"))
        if not same:
            raise InterceptError("already_recorded", f"task {task['task_id']} already has the outcome "
                                                     f"{prior['outcome']} (by {prior['by']} at {prior['at']})")
        return {**prior, "replayed": True}
    return rec


# --- rates ---------------------------------------------------------------------------------------------------

def _beijing_month(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=BEIJING).strftime("%Y-%m")


def interception_rates(tasks: Iterable[Mapping], month: str, now_ms: int, decimals: int,
                       station_kinds: Mapping[str, str] | None = None, stations: Iterable[str] = ()) -> dict:
    """Per detecting station and in total, over the tasks created in ``month`` (Beijing): tasks, outcomes,
    拦截率 = intercepted / tasks created (numerator and denominator), unloaded mass, and the median time from
    detection to interception (minutes). ``stations``: also list these (with zero tasks)."""
    zero = {s: 0 for s in ("tasks", *STATUSES)} | {"unloaded_kg": 0.0}
    per: dict[str, dict] = {str(s): dict(zero) for s in stations}
    waits: dict[str, list[float]] = {}
    for t in tasks:
        if _beijing_month(int(t["detected_ms"])) != month:
            continue
        sid = str(t["station_id"])
        c = per.setdefault(sid, dict(zero))
        c["tasks"] += 1
        st = status(t, now_ms)
        c[st] += 1
        if st == "intercepted":
            o = t["outcome"]
            c["unloaded_kg"] += float(o.get("unloaded_kg") or 0.0)
            waits.setdefault(sid, []).append((int(o["at_ms"]) - int(t["detected_ms"])) / MINUTE_MS)

    def row(sid: str | None, c: dict, w: list[float]) -> dict:
        p = percent(c["intercepted"], c["tasks"], decimals)
        kinds = station_kinds or {}
        return {"station_id": sid, "kind": (kinds.get(sid, "fixed") if sid else None),
                **{k: c[k] for k in ("tasks", *STATUSES)},
                "interception_rate": {"name": "拦截率", "numerator": c["intercepted"], "denominator": c["tasks"],
                                      "percent": None if p is None else float(p),
                                      "definition": "拦截车辆数 / 布控任务数"},
                "unloaded_kg": round(c["unloaded_kg"], 1), "unloaded_t": round(c["unloaded_kg"] / 1000.0, 3),
                "median_detect_to_intercept_min": round(median(w), 1) if w else None}

    total = dict(zero)
    for c in per.values():
        for k in total:
            total[k] += c[k]
    all_waits = [x for w in waits.values() for x in w]
    return {"month": month, "stations": [row(s, per[s], waits.get(s, [])) for s in sorted(per)],
            "total": row(None, total, all_waits)}

