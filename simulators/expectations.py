"""Expected outcomes derived from what a scenario injected, and the reference rules that derive them.

The reference rules here are deliberately small, literal readings of the regulation text
(docs/legal-basis.md §1–§3, §6–§8, §9.4, §11) written independently of models/overload.py, the GPS engine and
models/intercept.py: they turn "this bus drove 4 h 30 min by day without a 20-min stop" into "1 fatigue
alert", "2-axle truck weighed 19 900 kg" into "fine 500 yuan", and "fined at W003, a 超限检测站 68 km of road
downstream" into "a task naming it, ETA 68 min at 60 km/h". ``simulators/check_cmd.py`` compares them with
the archive (``simulators/intercept_check.py`` for the intercept kinds).

An expectation is a plain dict with ``kind`` (alert | verdicts | source_site | escalation | cases_total |
vehicle_day | rate | intercept_task | interception | enforcement_rate), a ``why`` line, and kind-specific
fields (docs/scenarios.md).
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from datetime import datetime, time

from roadwatch.models.config import Config
from roadwatch.models.records import BEIJING, Station, Vehicle, format_ts

from .gps_terminal import bearing_deg, haversine_km
from .roadgraph import road_km
from .wim_station import art3_limit


# --- overload (62号令 Art. 3 / Art. 43, docs/legal-basis.md §1–§3) -----------------------------------

def reference_limit(kind: str, axles: int, single_drive_axle: bool, vehicle: Vehicle | None, cfg: Config) -> int:
    lim = art3_limit(kind, axles, single_drive_axle)
    if vehicle is not None:
        lim -= int(cfg["overlimit.single_tyre_reduction_kg"]) * int(vehicle.single_tyre_axles)
        if vehicle.air_suspension and kind == "truck" and axles in cfg["overlimit.air_suspension_axles"]:
            lim += int(cfg["overlimit.air_suspension_bonus_kg"])
        if axles == 2 and vehicle.registered_total_kg > 0:
            lim = min(lim, int(vehicle.registered_total_kg))
    return lim


def reference_verdict(reading: dict, vehicle: Vehicle | None, station: Station | None, cfg: Config,
                      calibration_ok: bool, deployed: bool = True) -> dict:
    """action (none | warning | fine | review), fine_yuan, excess_kg for one (non-duplicate) reading.
    ``deployed``: False for a mobile unit's reading outside its deployments (review, whatever the config)."""
    lim = reference_limit(reading["vehicle_kind"], reading["axle_count"], reading.get("single_drive_axle", False),
                          vehicle, cfg)
    tol = station.tolerance if station is not None and station.tolerance is not None else cfg["overlimit.filing_tolerance"]
    gross = float(reading["gross_kg"])
    if cfg["overlimit.tolerance_mode"] == "deduct":
        assessed = gross * (1.0 - tol)
        over = assessed > lim
        excess = assessed - lim
    else:
        over = gross > lim * (1.0 + tol)
        excess = gross - lim
    if not over:
        return {"action": "none", "fine_yuan": 0, "excess_kg": round(excess, 1), "limit_kg": lim}
    reasons = [] if deployed else ["outside_deployment"]
    if not calibration_ok and cfg["overlimit.requires_valid_calibration"]:
        reasons.append("calibration")
    if reading["plate_confidence"] < cfg["overlimit.min_plate_confidence"]:
        reasons.append("low_confidence")
    if vehicle is None:
        reasons.append("unknown_plate")
    if reasons:
        return {"action": "review", "fine_yuan": 0, "excess_kg": round(excess, 1), "limit_kg": lim,
                "reasons": reasons}
    if excess <= cfg["overlimit.warning_max_kg"]:
        return {"action": "warning", "fine_yuan": 0, "excess_kg": round(excess, 1), "limit_kg": lim}
    ratio = excess / 1000.0
    tonnes = math.floor(ratio) if cfg["overlimit.tonne_rounding"] == "floor" else math.ceil(ratio)
    fine = min(int(cfg["overlimit.fine_per_tonne_yuan"]) * tonnes, int(cfg["overlimit.fine_cap_yuan"]))
    return {"action": "fine", "fine_yuan": fine, "excess_kg": round(excess, 1), "limit_kg": lim}


def distinct_passages(passages: list[dict], window_s: float) -> list[dict]:
    """Scripted passages in time order without the readings the dedup window folds into an earlier one
    (same station and plate within ``overlimit.dedup_window_s`` of the passage's first reading)."""
    first_seen: dict[tuple, int] = {}
    out = []
    for p in sorted(passages, key=lambda p: (p["t"], p["reading"]["reading_id"])):
        key = (p["station"], p["plate"])
        t0 = first_seen.get(key)
        if t0 is not None and p["t"] - t0 <= window_s:
            continue
        first_seen[key] = p["t"]
        out.append(p)
    return out


# --- 布控: intercept tasks, targets, ETAs and rates (docs/intercept.md, docs/legal-basis.md §11) ---------------
# A reference planner of its own, from the documented contract (not models/intercept.py).


class AmbiguousGeometry(ValueError):
    """A scenario whose expected targets would depend on noise (a point on the heading cone's edge)."""


def deployment_at(unit, t: int) -> dict | None:
    """The simulator's own reading of a unit's deployments: the one whose [start, end) holds ``t``."""
    for d in unit.deployments:
        if datetime.fromisoformat(d["start"]).timestamp() <= t < datetime.fromisoformat(d["end"]).timestamp():
            return d
    return None


def enforcement_points(registry, t: int) -> list[dict]:
    """Enforcement points at ``t``: the 超限检测站 and the mobile units deployed then."""
    pts = [{"id": s.station_id, "kind": "fixed", "lon": s.lon, "lat": s.lat, "node": s.station_id}
           for s in registry.stations.values() if s.kind == "checkpoint"]
    for u in registry.mobile_units.values():
        d = deployment_at(u, t)
        if d is not None:
            pts.append({"id": u.unit_id, "kind": "mobile", "lon": d["lon"], "lat": d["lat"],
                        "node": d.get("station")})
    return pts


def _attach(registry, p: dict, cfg: Config) -> tuple[str | None, float]:
    """The road-graph node of a point: its station, else the nearest within ``intercept.mobile_attach_km``."""
    if p["node"]:
        return p["node"], 0.0
    best, best_km = None, float(cfg["intercept.mobile_attach_km"])
    for s in registry.stations.values():
        km = float(haversine_km(p["lon"], p["lat"], s.lon, s.lat))
        if km <= best_km:
            best, best_km = s.station_id, km
    return best, (best_km if best else 0.0)


def _speed(cfg, *speeds) -> float:
    for s in speeds:
        if s is not None and s >= cfg["intercept.min_speed_kmh"]:
            return float(s)
    return float(cfg["intercept.default_speed_kmh"])


def _pick(cfg, targets: list[tuple[float, str, float]]) -> list[tuple[float, str, float]]:
    ok = sorted(t for t in targets if t[0] <= cfg["intercept.max_eta_min"])
    return ok[:int(cfg["intercept.max_targets"])]


def road_targets(registry, station_id: str, t: int, speed: float, cfg: Config) -> list[tuple[float, str, float]]:
    """(eta min, point id, km) downstream of ``station_id`` over the road graph, nearest first. A mobile unit
    starts where its deployment joins the graph (docs/intercept.md)."""
    points = enforcement_points(registry, t)
    if station_id in registry.stations:
        start, start_off = station_id, 0.0
    else:
        here = next((p for p in points if p["id"] == station_id), None)
        start, start_off = _attach(registry, here, cfg) if here is not None else (None, 0.0)
    if start is None:
        return []
    dist = road_km(registry.stations, start)
    v = _speed(cfg, speed)
    out = []
    for p in points:
        node, off = _attach(registry, p, cfg)
        if node is None or node == start or node not in dist or p["id"] == station_id:
            continue
        km = dist[node] + (start_off + off) * cfg["intercept.road_factor"]
        out.append((km / v * 60.0, p["id"], km))
    return _pick(cfg, out)


def heading_targets(registry, station_id: str, lon: float, lat: float, headings: list[float], t: int,
                    speed: float, cfg: Config) -> list[tuple[float, str, float]]:
    """Points ahead of a truck at (lon, lat) heading ``headings`` (the links it leaves and enters there: both
    must give the same points, else ``AmbiguousGeometry``)."""
    cone = float(cfg["intercept.heading_cone_deg"])
    results = []
    for head in headings:
        out = []
        for p in enforcement_points(registry, t):
            if station_id in (p["id"], p["node"]):
                continue
            km = float(haversine_km(lon, lat, p["lon"], p["lat"]))
            ang = abs((float(bearing_deg(lon, lat, p["lon"], p["lat"])) - head + 180.0) % 360.0 - 180.0)
            if abs(ang - cone) < 5.0:
                raise AmbiguousGeometry(f"intercept: {p['id']} lies {ang:.1f}° off the heading at {station_id}, "
                                    f"too near the {cone:g}° cone to expect either way")
            if ang <= cone and km > 1e-3:
                km *= cfg["intercept.road_factor"]
                out.append((km / _speed(cfg, speed) * 60.0, p["id"], km))
        results.append(_pick(cfg, out))
    if any([x[1] for x in r] != [x[1] for x in results[0]] for r in results):
        raise AmbiguousGeometry(f"intercept: the targets at {station_id} depend on which link the last fix lies "
                            "on; move the passage or the points")
    return results[0]


def intercept_threshold(p: dict, cfg: Config) -> bool:
    """A scripted passage over the intercept threshold (``intercept.*``: fine-level, class, excess)."""
    v, r = p["verdict"], p["reading"]
    if not cfg["intercept.enabled"]:
        return False
    actions = {"fine": {"fine"}, "fine_or_warning": {"fine", "warning"}}[cfg["intercept.actions"]]
    kinds = {k.strip() for k in str(cfg["intercept.vehicle_kinds"]).split(",") if k.strip()}
    pct = v["excess_kg"] * 100.0 / v["limit_kg"]
    return (v["action"] in actions and r["vehicle_kind"] in kinds and r["axle_count"] >= cfg["intercept.min_axles"]
            and pct >= cfg["intercept.min_excess_pct"])


def intercept_tasks(distinct: list[dict], cfg: Config) -> list[dict]:
    """One task per truck while open: a passage over the threshold opens one, a later one within
    ``intercept.expiry_min`` of the task's last passage updates it (docs/intercept.md)."""
    expiry = int(cfg["intercept.expiry_min"]) * 60
    tasks: list[dict] = []
    open_of: dict[str, dict] = {}
    for p in distinct:
        if not intercept_threshold(p, cfg):
            continue
        task = open_of.get(p["plate"])
        if task is None or p["t"] >= task["last"] + expiry:
            task = {"plate": p["plate"], "station": p["station"], "detected": p["t"], "passages": []}
            tasks.append(task)
            open_of[p["plate"]] = task
        task["passages"].append(p)
        task["last"] = p["t"]
    return tasks


def intercept_expectations(tasks: list[dict], distinct: list[dict], month: str) -> list[dict]:
    """Per task (station, passages, basis, targets and ETAs, outcome), the month's 拦截率 with its parts, and
    the 查处率 = cases the teams decided / all cases detected."""
    out = []
    counts = defaultdict(int)
    per_station: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    unloaded, waits = 0.0, []
    for task in tasks:
        rec = task.get("record")
        status = task["outcome"] or "expired"
        counts[status] += 1
        per_station[task["station"]][1] += 1
        if status == "intercepted":
            per_station[task["station"]][0] += 1
            unloaded += rec["unloaded_kg"]
            waits.append((rec["at_s"] - task["detected"]) / 60.0)
        out.append({
            "kind": "intercept_task", "plate": task["plate"], "station_id": task["station"],
            "detected_at": format_ts(datetime.fromtimestamp(task["detected"], tz=BEIJING)),
            "passages": len(task["passages"]), "basis": task["basis"],
            "targets": [t[1] for t in task["targets"]], "eta_min": [round(t[0], 1) for t in task["targets"]],
            "eta_tolerance_min": task["tol"], "outcome": task["outcome"],
            "why": f"{len(task['passages'])} fine-level passage(s) from {task['station']}; "
                   + (", ".join(f"{t[1]} {t[2]:.1f} km ≈ {t[0]:.0f} min" for t in task["targets"]) or "no point ahead")
                   + f" ({task['basis']}); team: {task['outcome'] or 'no outcome (expires)'}"})
    n = len(tasks)
    decided = sum(1 for t in tasks if (t.get("record") or {}).get("decide"))
    cases = sum(1 for p in distinct if p["verdict"]["action"] != "none")
    out.append({
        "kind": "interception", "month": month, "tasks": n,
        **{s: counts.get(s, 0) for s in ("intercepted", "not_found", "released", "expired", "open")},
        "numerator": counts.get("intercepted", 0), "denominator": n, "unloaded_kg": round(unloaded, 1),
        "median_min": round(statistics.median(waits), 1) if waits else None,
        "stations": {sid: v for sid, v in sorted(per_station.items())},
        "why": f"拦截率 {counts.get('intercepted', 0)}/{n}: tasks from the fine-level passages, outcomes drawn by "
               "[field_team]"})
    out.append({"kind": "enforcement_rate", "month": month, "numerator": decided, "denominator": cases,
                       "why": f"查处率 {decided}/{cases}: cases decided by the teams on the spot / detected cases"})
    return out


# --- GPS monitoring (docs/legal-basis.md §7) ------------------------------------------------------------

def _hm(text: str) -> time:
    h, m = text.split(":")
    return time(int(h), int(m))


def in_window(dt: datetime, start: str, end: str) -> bool:
    """``start ≤ t < end`` on the clock, windows may wrap midnight (22:00–06:00)."""
    a, b, t = _hm(start), _hm(end), dt.timetz().replace(tzinfo=None)
    return (a <= t < b) if a < b else (t >= a or t < b)


def all_in_window(t0: datetime, t1: datetime, start: str, end: str) -> bool:
    """Whole interval [t0, t1] inside the clock window (checked every minute — drives are minutes long)."""
    from datetime import timedelta
    t = t0
    while t <= t1:
        if not in_window(t, start, end):
            return False
        t += timedelta(minutes=1)
    return in_window(t1, start, end)


def none_in_window(t0: datetime, t1: datetime, start: str, end: str) -> bool:
    from datetime import timedelta
    t = t0
    while t <= t1:
        if in_window(t, start, end):
            return False
        t += timedelta(minutes=1)
    return not in_window(t1, start, end)


def speed_limit(category: str, road: str, night: bool, cfg: Config) -> float:
    key = {"危险货物运输车辆": "dg", "客运班车": "bus", "旅游包车": "bus"}.get(category, "truck")
    lim = float(cfg[f"speeding.{key}_{'expressway' if road == 'expressway' else 'other'}_kmh"])
    if key == "bus" and night:
        lim *= float(cfg["speeding.bus_night_factor"])
    return lim


def overspeed_alerts(episodes: list[tuple[int, int]], cfg: Config) -> int:
    """Episodes (first, last over-limit fix, epoch s) → alerts: merge episodes whose gap is below
    ``speeding.merge_s``, then count merged episodes lasting more than ``speeding.min_duration_s``."""
    if not episodes:
        return 0
    merged = [list(episodes[0])]
    for a, b in episodes[1:]:
        if a - merged[-1][1] < cfg["speeding.merge_s"]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return sum(1 for a, b in merged if b - a > cfg["speeding.min_duration_s"])


def alert(type_: str, plate: str, count: int, why: str, **kw) -> dict:
    return {"kind": "alert", "type": type_, "plate": plate, "count": int(count), "why": why, **kw}


# --- Art. 66 escalations (条例 Art. 66, docs/legal-basis.md §4) ----------------------------------------------

def reference_escalations(cases: list[dict], cfg: Config, at) -> dict[tuple[str, str], int]:
    """(target, subject) → members, for every subject over its Art. 66 threshold on day ``at``.

    ``cases``: the decided cases, each ``{plate, driver (identified, or None), enterprise, goods_vehicles,
    decided (date), counts_from (date it reached the counting status)}``. Literal reading: a case counts on
    ``at`` once it has reached the counting status and its decision day lies in the ``art66.window_days``
    days ending at ``at``; a vehicle or an identified driver with more than ``art66.vehicle_driver_threshold``
    such cases, an enterprise whose distinct vehicles with such a case are strictly more than
    ``art66.enterprise_share`` of its registered goods vehicles."""
    from datetime import timedelta
    first = at - timedelta(days=int(cfg["art66.window_days"]) - 1)
    live = [c for c in cases if c["counts_from"] <= at and first <= c["decided"] <= at]
    thr = int(cfg["art66.vehicle_driver_threshold"])
    out: dict[tuple[str, str], int] = {}
    for target, key in (("vehicle", "plate"), ("driver", "driver")):
        n: dict[str, int] = {}
        for c in live:
            if c[key]:
                n[c[key]] = n.get(c[key], 0) + 1
        out.update({(target, s): k for s, k in n.items() if k > thr})
    plates: dict[str, set] = {}
    fleet: dict[str, int] = {}
    for c in live:
        if c["enterprise"]:
            plates.setdefault(c["enterprise"], set()).add(c["plate"])
            fleet[c["enterprise"]] = int(c["goods_vehicles"] or 0)
    for ent, ps in plates.items():
        if fleet[ent] > 0 and len(ps) > float(cfg["art66.enterprise_share"]) * fleet[ent]:
            out[("enterprise", ent)] = len(ps)
    return out
