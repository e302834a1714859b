"""Scenario parts of 布控 and 流动治超: mobile units and their deployments, trucks driving routes over the
road graph, field teams, and the intercept expectations derived from the script (docs/scenarios.md).

- ``[[mobile_unit]]`` tables add mobile weighing units (models/mobile.py) whose deployments stand on a
  road-graph link (``between = [A, B]``, ``km`` from A); a unit is named after, and based in, the county of A.
- The ``route`` behaviour drives a truck over consecutive graph links (``via``) at ``speed``: each link takes
  its road km / speed, and every 非现场执法点 on the way weighs it. A truck with a terminal reports the drive
  (the track starts ``lead_km`` before the first station); one without (``gps = false``) is only weighed.
- ``[field_team]`` says how the teams act on a task: intercepted with ``intercept_probability`` (else the
  ``miss`` outcome), stopped ``delay_min`` (range) after the truck's ETA at the first target, the case
  handled on the spot with ``on_the_spot_probability`` — then the team also decides it (confirm, file,
  notify, decide after ``case.statement_days``), so it counts in the 查处率. A route may force ``outcome``.

``derive`` turns the scripted passages into the tasks the system must create — which points, in which
order, at which ETA — with the reference planner of ``simulators/expectations.py`` (written from
docs/intercept.md, not models/intercept.py), draws the field outcomes, and derives the month's 拦截率 and
查处率. ``simulators/intercept_check.py`` compares them with the
archive; ``simulators/simulate_cmd.py`` has the teams record the outcomes through ``InterceptStore``.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from roadwatch.models.records import BEIJING, MobileUnit, format_ts

from . import expectations as ex
from .behaviours import ScenarioError
from .fleet import full_approval
from .gps_terminal import bearing_deg, destination, haversine_km
from .roadgraph import behind, link_km

MINUTE = 60
OUTCOMES = ("intercepted", "not_found", "released", "none")


# --- mobile units ----------------------------------------------------------------------------------------------

def add_mobile_units(ctx, specs: list) -> None:
    reg = ctx.reg
    for i, u in enumerate(specs):
        uid = u.get("id") or f"M{i + 1:02d}"
        deps = u.get("deployment", [])
        if not deps:
            raise ScenarioError(f"mobile_unit {uid}: needs at least one [[mobile_unit.deployment]]")
        first = deps[0].get("between") or []
        if len(first) != 2 or any(s not in reg.stations for s in first):
            raise ScenarioError(f"mobile_unit {uid}: deployment between must name two registry stations")
        county = reg.stations[first[0]].county
        start0 = datetime.fromtimestamp(min(_dep_span(ctx, uid, d)[0] for d in deps), tz=BEIJING)
        approval = full_approval(format_ts(start0 - timedelta(days=120)), ref=f"{uid}")
        del approval["announcement"]            # announced per deployment (models/mobile.py)
        device = {"device_id": f"{uid}-D1", "device_type": "mobile", "cert_no": f"湘计检字M{i + 1:08d}",
                  "valid_from": format_ts(start0 - timedelta(days=100)),
                  "valid_to": format_ts(start0 + timedelta(days=265)), "approval": approval}
        out = []
        for j, d in enumerate(deps):
            t0, t1 = _dep_span(ctx, uid, d)
            a_id, b_id = d.get("between", [None, None])
            if a_id not in reg.stations or b_id not in reg.stations or link_km(reg.stations, a_id, b_id) is None:
                raise ScenarioError(f"mobile_unit {uid}: deployment {j} between {d.get('between')} is not a road link")
            a, b = reg.stations[a_id], reg.stations[b_id]
            km = float(d.get("km", 2.0))
            straight = float(haversine_km(a.lon, a.lat, b.lon, b.lat))
            if not 0 < km < straight:
                raise ScenarioError(f"mobile_unit {uid}: km must lie inside the link ({straight:.1f} km)")
            lon, lat = destination(a.lon, a.lat, float(bearing_deg(a.lon, a.lat, b.lon, b.lat)), km)
            road = (d.get("road") or next((dev.get("road") for dev in a.devices if dev.get("road")), "")
                    or f"{a.name}—{b.name}")
            dep = {"deployment_id": d.get("id", f"{uid}-{j + 1}"), "lat": round(float(lat), 6),
                   "lon": round(float(lon), 6), "road": road.split(" K")[0] + f" {a.county}段",
                   "direction": f"往{b.county}方向",
                   "start": format_ts(datetime.fromtimestamp(t0, tz=BEIJING)),
                   "end": format_ts(datetime.fromtimestamp(t1, tz=BEIJING))}
            if d.get("announced", True):
                dep["announcement"] = {"date": format_ts(datetime.fromtimestamp(t0, tz=BEIJING) - timedelta(days=3)),
                                       "reference": f"流动治超点位通告〔{dep['deployment_id']}〕",
                                       "reviewer": "市交通运输局"}
            out.append(dep)
        reg.mobile_units[uid] = MobileUnit(unit_id=uid, name=f"{county}流动治超{i + 1}组", county=county,
                                           lanes=1, accuracy_class="5", device=device, deployments=out)


def _dep_span(ctx, uid: str, d: dict) -> tuple[int, int]:
    if "from" not in d or ("to" in d) == ("hours" in d):
        raise ScenarioError(f"mobile_unit {uid}: a deployment needs from, and to or hours")
    t0 = ctx.when({"kind": "deployment", "at": d["from"], "day": d.get("day", 0)})
    t1 = t0 + int(round(float(d.get("hours", 0)) * 3600)) if "hours" in d else \
        ctx.when({"kind": "deployment", "at": d["to"], "day": d.get("day", 0)})
    if t1 <= t0:
        raise ScenarioError(f"mobile_unit {uid}: a deployment must end after it starts")
    return t0, t1


# --- the route behaviour -------------------------------------------------------------------------------------

def route_plan(ctx, spec: dict) -> list[tuple[str, int]]:
    """(station id, arrival epoch s) along ``via``: the truck sets off at ``at``, ``lead_km`` before the first
    station, and takes road km / speed for each link."""
    via = spec.get("via") or []
    st = ctx.reg.stations
    if len(via) < 2 or any(s not in st for s in via):
        raise ScenarioError(f"route: via must list at least two registry stations, got {via!r}")
    speed = float(spec.get("speed", 60.0))
    if not 5 <= speed <= 120:
        raise ScenarioError("route: speed must lie in [5, 120] km/h")
    t = ctx.when(spec) + int(round(float(spec.get("lead_km", 8.0)) / speed * 3600))
    out = [(via[0], t)]
    for a, b in zip(via, via[1:]):
        km = link_km(st, a, b)
        if km is None:
            raise ScenarioError(f"route: {a} → {b} is not a road link (their downstream lists)")
        t += int(round(km / speed * 3600))
        out.append((b, t))
    if out[-1][1] >= ctx.t_end:
        raise ScenarioError(f"route: arrives at {via[-1]} after the scenario ends")
    return out


def route_home(ctx, spec: dict) -> tuple[float, float]:
    st = ctx.reg.stations
    a, b = st[spec["via"][0]], st[spec["via"][1]]
    return behind(a, b, float(spec.get("lead_km", 8.0)))


def route(ctx, spec, tr, veh):
    """Drive ``via`` (a track when the truck has a terminal, ``tr``), weighed at each 非现场执法点."""
    plan = route_plan(ctx, spec)
    st = ctx.reg.stations
    speed = float(spec.get("speed", 60.0))
    if tr is not None:
        a = st[plan[0][0]]
        tr.legs.add(tr.vid, tr.t, plan[0][1] - tr.t, tr.interval, tr.lon, tr.lat, a.lon, a.lat, speed, True, 0.0, 0)
        tr.t, tr.lon, tr.lat = plan[0][1], float(a.lon), float(a.lat)
        for (a, _ta), (b, tb) in zip(plan, plan[1:]):
            # road km / speed: the time on a winding road, reported speed the truck's own
            tr.legs.add(tr.vid, tr.t, tb - tr.t, tr.interval, tr.lon, tr.lat, st[b].lon, st[b].lat, speed, True,
                        0.0, 0)
            tr.t, tr.lon, tr.lat = tb, float(st[b].lon), float(st[b].lat)
        tr.stop(int(float(spec.get("rest_min", 60)) * 60))
        ctx.gps_plates.add(veh.plate)
    for sid, t in plan:
        if st[sid].kind == "checkpoint":
            continue                                     # a 超限检测站 stops trucks; its weighing is not a WIM reading
        ctx.wim_passage({**spec, "station": sid, "speed": speed}, veh, t, station_id=sid)
        ctx.route_legs.setdefault(veh.plate, []).append((t, plan))
    if spec.get("outcome") is not None:
        if spec["outcome"] not in OUTCOMES:
            raise ScenarioError(f"route: outcome must be one of {OUTCOMES}")
        ctx.forced_outcomes[(veh.plate, plan[0][1])] = spec["outcome"]


def _headings(ctx, plate: str, t: int, station_id: str) -> list[float]:
    st = ctx.reg.stations
    for tp, plan in ctx.route_legs.get(plate, []):
        if tp != t:
            continue
        ids = [s for s, _ in plan]
        i = ids.index(station_id)
        out = []
        if i > 0:
            a = st[ids[i - 1]]
            out.append(float(bearing_deg(a.lon, a.lat, st[station_id].lon, st[station_id].lat)))
        if i + 1 < len(ids):
            b = st[ids[i + 1]]
            out.append(float(bearing_deg(st[station_id].lon, st[station_id].lat, b.lon, b.lat)))
        return out
    return []


def derive(ctx) -> None:
    """Tasks, targets and ETAs, field outcomes, 拦截率 and 查处率 from the scripted passages."""
    if not ctx.reg.mobile_units and not ctx.raw_field and not ctx.route_legs:
        return
    cfg = ctx.cfg
    distinct = ex.distinct_passages(ctx.passages, cfg["overlimit.dedup_window_s"])
    months = {datetime.fromtimestamp(p["t"], tz=BEIJING).strftime("%Y-%m") for p in distinct}
    if len(months) > 1:
        raise ScenarioError("intercept scenarios keep their passages in one month (the rates are monthly)")
    month = months.pop() if months else ctx.scn.start.strftime("%Y-%m")
    tasks = ex.intercept_tasks(distinct, cfg)
    # targets from each task's newest passage
    for task in tasks:
        p = task["passages"][-1]
        speed = float(p["reading"]["speed_kmh"])
        headings = _headings(ctx, p["plate"], p["t"], p["station"]) if p["plate"] in ctx.gps_plates else []
        try:
            if headings:
                s = ctx.reg.stations[p["station"]]
                task["basis"], task["tol"] = "gps", 3.0
                task["targets"] = ex.heading_targets(ctx.reg, p["station"], s.lon, s.lat, headings, p["t"], speed,
                                                     cfg)
            else:
                task["basis"], task["tol"] = "road_graph", 0.2
                task["targets"] = ex.road_targets(ctx.reg, p["station"], p["t"], speed, cfg)
        except ex.AmbiguousGeometry as e:
            raise ScenarioError(str(e)) from None
    _field_outcomes(ctx, tasks)
    ctx.expect.extend(ex.intercept_expectations(tasks, distinct, month))


def _field_outcomes(ctx, tasks: list[dict]) -> None:
    """Each task's outcome, drawn by the team's probabilities (own generator: the feed stays the same)."""
    ft = ctx.raw_field
    rng = np.random.default_rng([ctx.scn.seed, 4242])
    p_hit = float(ft.get("intercept_probability", 0.7))
    miss = str(ft.get("miss", "not_found"))
    lo, hi = (float(x) for x in ft.get("delay_min", [5, 20]))
    p_spot = float(ft.get("on_the_spot_probability", 0.5))
    if not (0 <= p_hit <= 1 and 0 <= p_spot <= 1 and 0 <= lo <= hi and miss in ("not_found", "released", "none")):
        raise ScenarioError("field_team: probabilities in [0, 1], 0 ≤ delay_min[0] ≤ delay_min[1], "
                            "miss in not_found | released | none")
    for task in tasks:
        u, d, s = rng.random(), rng.uniform(lo, hi), rng.random()     # drawn for every task: stable streams
        forced = next((o for (plate, t0), o in ctx.forced_outcomes.items()
                       if plate == task["plate"] and any(p["t"] >= t0 for p in task["passages"])), None)
        outcome = forced or (("intercepted" if u < p_hit else miss) if task["targets"] else "none")
        task["outcome"] = None if outcome == "none" else outcome
        if task["outcome"] is None:
            continue
        eta = task["targets"][0][0] if task["targets"] else 0.0
        at = task["last"] + int(round((eta + d) * 60 / MINUTE)) * MINUTE
        p = task["passages"][-1]
        rec = {"plate": task["plate"], "detected_ms": task["detected"] * 1000, "outcome": task["outcome"],
               "at": format_ts(datetime.fromtimestamp(at, tz=BEIJING)), "at_s": at,
               "point_id": task["targets"][0][1] if task["targets"] else None,
               "unloaded_kg": None, "on_the_spot": None, "reason": None, "decide": False,
               "case_passage": p["reading"]["reading_id"]}
        if task["outcome"] == "intercepted":
            excess = float(p["reading"]["gross_kg"]) - float(p["verdict"]["limit_kg"])
            rec.update(unloaded_kg=float(max(0.0, round(excess, -1))), on_the_spot=bool(s < p_spot))
            rec["decide"] = rec["on_the_spot"]
        elif task["outcome"] == "released":
            rec["reason"] = "持有效通行证明，核实后放行"
        task["record"] = rec
        ctx.field_outcomes.append(rec)
