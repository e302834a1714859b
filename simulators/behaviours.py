"""Scripted behaviours: each drives one scenario vehicle's ``Track`` (or makes WIM passages) and returns
the outcomes it implies, derived from what it injected with the reference rules of ``expectations.py``.

A behaviour is a function ``(ctx, spec, track, vehicle) -> None``; it appends expectations to
``ctx.expect`` and may register ``ctx.post`` hooks that edit the expanded ping columns (faults) and derive
expectations that need the final pings (e.g. how many pings a vehicle sent that day).
"""
from __future__ import annotations

from datetime import datetime

import numpy as np

from roadwatch.models.records import BEIJING, format_ts

from . import expectations as ex
from .gps_terminal import STATUS_POSITIONED, destination, drift, reupload, window


class ScenarioError(ValueError):
    """The scenario file is inconsistent (bad usage: exit code 2)."""


def _dt(t: int) -> datetime:
    return datetime.fromtimestamp(t, tz=BEIJING)


def _day(t: int) -> str:
    return _dt(t).strftime("%Y-%m-%d")


def _num(spec: dict, name: str, default=None, lo=None, hi=None):
    v = spec.get(name, default)
    if v is None:
        raise ScenarioError(f"behaviour {spec.get('kind')!r}: {name} is required")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ScenarioError(f"behaviour {spec.get('kind')!r}: {name} must be a number")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ScenarioError(f"behaviour {spec.get('kind')!r}: {name}={v} outside [{lo}, {hi}]")
    return v


# --- GPS behaviours ----------------------------------------------------------------------------------

def drive(ctx, spec, tr, veh):
    """Plain clean driving (no rule broken)."""
    tr.drive_for(int(_num(spec, "hours", 1.0, 0.01, 24) * 3600), _num(spec, "speed", 50.0, 1, 150),
                 spec.get("bearing", 90.0))
    tr.stop(int(_num(spec, "rest_min", 30, 0) * 60))


def fatigue(ctx, spec, tr, veh):
    """Drive ``drive_h`` hours without any stop, then rest. Day/night limit from the drive's clock time."""
    hours = _num(spec, "drive_h", lo=0.1, hi=7.9)
    t0 = tr.t
    tr.drive_for(int(hours * 3600), _num(spec, "speed", 60.0, 5, 120), spec.get("bearing", 90.0))
    t1 = tr.t
    tr.stop(int(_num(spec, "rest_min", 30, 0) * 60))
    cfg = ctx.cfg
    if ex.all_in_window(_dt(t0), _dt(t1), cfg["night.start"], cfg["night.end"]):
        limit, when = cfg["fatigue.night_continuous_h"], "night"
    elif ex.none_in_window(_dt(t0), _dt(t1), cfg["night.start"], cfg["night.end"]):
        limit, when = cfg["fatigue.day_continuous_h"], "day"
    else:
        raise ScenarioError("fatigue drive spans day and night: choose 'at' so it lies in one of them")
    n = 1 if hours > limit else 0
    ctx.expect.append(ex.alert("fatigue", veh.plate, n, f"{hours} h continuous by {when} (limit {limit} h)"))


def fatigue_cumulative(ctx, spec, tr, veh):
    """Several drives, each within the continuous limit, separated by rests: only the 24 h total breaks."""
    legs = spec.get("legs_h")
    if not isinstance(legs, list) or not legs:
        raise ScenarioError("fatigue_cumulative: legs_h must list drive hours")
    rest = int(_num(spec, "rest_min", 30, 0) * 60)
    for i, h in enumerate(legs):
        tr.drive_for(int(h * 3600), _num(spec, "speed", 60.0, 5, 120), 90.0 if i % 2 == 0 else 270.0)
        tr.stop(rest)
    cfg = ctx.cfg
    if max(legs) > cfg["fatigue.day_continuous_h"] or rest < cfg["fatigue.min_rest_min"] * 60:
        raise ScenarioError("fatigue_cumulative: each leg must stay within the continuous limit with full rests")
    total = sum(legs)
    n = 1 if total > cfg["fatigue.day_cum_h"] else 0
    ctx.expect.append(ex.alert("fatigue", veh.plate, n, f"{total} h in 24 h (limit {cfg['fatigue.day_cum_h']} h)"))


def speeding(ctx, spec, tr, veh):
    """Episodes above the category's limit on ``road`` (other | expressway), reported every ``interval_s``."""
    cfg = ctx.cfg
    road = spec.get("road", "other")
    if road not in ("other", "expressway"):
        raise ScenarioError("speeding: road must be other or expressway")
    night = ex.in_window(_dt(tr.t), cfg["night.start"], cfg["night.end"])
    limit = ex.speed_limit(veh.category, road, night, cfg)
    over = _num(spec, "speed", limit + 15, 1, 159)
    base = _num(spec, "base_speed", round(limit * 0.8), 1, 159)
    itv = int(_num(spec, "interval_s", 10, 1, 60))
    dur = int(_num(spec, "duration_s", 120, 1))
    gap = int(_num(spec, "gap_s", 600, 1))
    n_ep = int(_num(spec, "episodes", 1, 1, 20))
    tr.drive_for(300, base, 90.0, interval=itv)
    episodes = []
    for i in range(n_ep):
        t_a = tr.t
        tr.drive_for(dur, over, 90.0, interval=itv)
        episodes.append((t_a + min(itv, dur), t_a + dur))     # first and last over-limit fix
        tr.drive_for(gap if i < n_ep - 1 else 300, base, 90.0, interval=itv)
    tr.stop(1800)
    n = ex.overspeed_alerts(episodes, cfg) if over > limit else 0
    ctx.expect.append(ex.alert("overspeed", veh.plate, n,
                               f"{n_ep} episode(s) of {dur} s at {over} km/h, gaps {gap} s, limit {limit:g} "
                               f"({road}{', night' if night else ''}), fixes every {itv} s"))


def curfew(ctx, spec, tr, veh):
    """Drive across the 02:00–05:00 window (long-distance 客运班车 must be stopped then)."""
    cfg = ctx.cfg
    hours = _num(spec, "drive_h", 1.5, 0.1, 1.9)
    t0 = tr.t
    tr.drive_for(int(hours * 3600), _num(spec, "speed", 55.0, 5, 60), 90.0)
    t1 = tr.t
    tr.stop(3600)
    crosses = not ex.none_in_window(_dt(t0), _dt(t1), cfg["curfew.start"], cfg["curfew.end"])
    applies = (veh.category in cfg["curfew.categories"] and veh.long_distance
               and veh.route_km > cfg["curfew.exempt_route_km"])
    ctx.expect.append(ex.alert("curfew", veh.plate, 1 if crosses and applies else 0,
                               f"moving {format_ts(_dt(t0))[11:16]}–{format_ts(_dt(t1))[11:16]}, {veh.category}, "
                               f"long_distance={veh.long_distance}, route {veh.route_km:g} km"))


def _silence(ctx, spec, tr, veh, default_s: int):
    """Drive 20 min, ``silent_s`` without reports (still moving), drive 20 min. Returns (last fix before,
    seconds from that fix to the next one, speed)."""
    speed = _num(spec, "speed", 60.0, 5, 120)
    silent = int(_num(spec, "silent_s", default_s, 1))
    tr.drive_for(1200, speed, 90.0)
    t_last = tr.t                                   # legs end with a fix
    tr.silent(silent, speed, 90.0)
    quiet = tr.t + tr.interval - t_last             # the next leg's first fix
    tr.drive_for(1200, speed, 90.0)
    tr.stop(1800)
    return t_last, quiet, speed


def offline(ctx, spec, tr, veh):
    """The terminal stops reporting while the vehicle is moving (ACC on), then comes back."""
    t_last, quiet, speed = _silence(ctx, spec, tr, veh, 1800)
    n = 1 if quiet > ctx.cfg["offline.timeout_s"] else 0
    ctx.expect.append(ex.alert("offline", veh.plate, n, f"no fix for {quiet} s while moving at {speed:g} km/h "
                               f"(timeout {ctx.cfg['offline.timeout_s']} s)"))
    _expect_incomplete(ctx, veh, tr, t_last, quiet, speed)


def gap(ctx, spec, tr, veh):
    """A dead zone (tunnel): a short silence while moving — incomplete track, no offline alert."""
    t_last, quiet, speed = _silence(ctx, spec, tr, veh, 420)
    n = 1 if quiet > ctx.cfg["offline.timeout_s"] else 0
    ctx.expect.append(ex.alert("offline", veh.plate, n, f"dead zone of {quiet} s (timeout {ctx.cfg['offline.timeout_s']} s)"))
    _expect_incomplete(ctx, veh, tr, t_last, quiet, speed)


def _expect_incomplete(ctx, veh, tr, t_last, quiet, speed):
    km = speed * quiet / 3600.0
    incomplete = quiet > ctx.cfg["track.gap_s"] and km > ctx.cfg["track.gap_km"]
    ctx.expect.append({"kind": "vehicle_day", "plate": veh.plate, "day": _day(t_last), "field": "km_incomplete",
                       "op": ">" if incomplete else "=", "value": 0.0, "tolerance": 0.05,
                       "why": f"{quiet} s without fixes over ~{km:.1f} km (gap {ctx.cfg['track.gap_s']} s / "
                              f"{ctx.cfg['track.gap_km']} km)"})


def reupload_gap(ctx, spec, tr, veh):
    """Blind area: fixes are stored and re-uploaded (0x0704 type 1) when coverage returns — no gap."""
    speed = _num(spec, "speed", 60.0, 5, 120)
    blind = int(_num(spec, "blind_s", 600, 60))
    tr.drive_for(1200, speed, 90.0)
    t_a = tr.t
    tr.drive_for(blind, speed, 90.0)
    t_b = tr.t
    tr.drive_for(1200, speed, 90.0)
    tr.stop(1800)
    vid = ctx.vid_of[veh.plate]
    delay = int(_num(spec, "delay_s", 20, 0))

    def hook(cols):
        idx = window(cols, vid, t_a + 1, t_b + 1)   # the blind leg's fixes: (t_a, t_b]
        reupload(cols, idx, t_b + delay)
        return cols
    ctx.post.append(hook)
    # live, the platform sees no fix from the last one before the blind area until coverage returns
    quiet = blind + tr.interval
    n = 1 if quiet > ctx.cfg["offline.timeout_s"] else 0
    ctx.expect.append(ex.alert("offline", veh.plate, n, f"{blind} s blind area (live silence {quiet} s, timeout "
                               f"{ctx.cfg['offline.timeout_s']} s), re-uploaded {delay} s after coverage returned"))
    ctx.expect.append({"kind": "vehicle_day", "plate": veh.plate, "day": _day(t_a), "field": "km_incomplete",
                       "op": "=", "value": 0.0, "tolerance": 0.05,
                       "why": "re-uploaded fixes fill the blind area (no gap left)"})


def drift_points(ctx, spec, tr, veh):
    """Isolated fixes displaced by ``km`` while the vehicle drives normally."""
    n = int(_num(spec, "points", 1, 1, 50))
    km = _num(spec, "km", 30.0, 1)
    t0 = tr.t
    tr.drive_for(max(1800, n * 600 + 600), _num(spec, "speed", 50.0, 5, 100), 90.0)
    tr.stop(1800)
    vid = ctx.vid_of[veh.plate]

    def hook(cols):
        idx = window(cols, vid, t0 + 300, tr.t)
        step = max(1, 600 // tr.interval)
        drift(cols, idx[: n * step: step][:n], km=km)
        return cols
    ctx.post.append(hook)
    ctx.expect.append({"kind": "vehicle_day", "plate": veh.plate, "day": _day(t0), "field": "drift_points",
                       "op": ">=", "value": n, "why": f"{n} fix(es) displaced {km:g} km (implied speed far above "
                                                       f"{ctx.cfg['drift.v_max_kmh']:g} km/h)"})
    ctx.expect.append(ex.alert("overspeed", veh.plate, 0, "drift jumps are not speeding (reported speed normal)"))


BAD_FIELDS = ("speed", "lat", "lon", "altitude", "heading", "future", "unpositioned")


def bad_values(ctx, spec, tr, veh):
    """``count`` fixes with one unqualified value each (quality rules, docs/legal-basis.md §6)."""
    field = spec.get("field", "speed")
    if field not in BAD_FIELDS:
        raise ScenarioError(f"bad_values: field must be one of {BAD_FIELDS}")
    n = int(_num(spec, "count", 3, 1, 100))
    t0 = tr.t
    tr.drive_for(max(1800, n * 300 + 600), _num(spec, "speed", 50.0, 5, 100), 90.0)
    tr.stop(1800)
    vid = ctx.vid_of[veh.plate]
    day = _day(t0)
    cfg = ctx.cfg

    def hook(cols):
        idx = window(cols, vid, t0 + 120, tr.t - 1800)
        step = max(1, 300 // tr.interval)
        sel = idx[::step][:n]
        if field == "speed":
            cols["speed_kmh"][sel] = cfg["quality.speed_range_kmh"][1] + 40.0
        elif field == "lat":
            cols["lat"][sel] = cfg["quality.lat_range"][1] + 2.0
        elif field == "lon":
            cols["lon"][sel] = cfg["quality.lon_range"][1] + 2.0
        elif field == "altitude":
            cols["altitude_m"][sel] = cfg["quality.alt_range_m"][1] + 500.0
        elif field == "heading":
            cols["heading"][sel] = 400
        elif field == "future":
            cols["ts"][sel] = cols["recv_ts"][sel] + cfg["quality.future_tolerance_s"] + 3600
        elif field == "unpositioned":
            cols["status_flags"][sel] &= ~STATUS_POSITIONED
        mine = cols["vid"] == vid
        days = np.array([_day(int(t)) for t in cols["ts"][mine]])
        total = int((days == day).sum())
        ctx.expect.append({"kind": "vehicle_day", "plate": veh.plate, "day": day, "field": "pings", "op": "=",
                           "value": total, "why": f"{total} fixes sent that day"})
        ctx.expect.append({"kind": "vehicle_day", "plate": veh.plate, "day": day, "field": "qualified", "op": "=",
                           "value": total - len(sel), "why": f"{len(sel)} fix(es) with bad {field}"})
        ctx.expect.append({"kind": "vehicle_day", "plate": veh.plate, "day": day, "field": "drift_points", "op": "=",
                           "value": 0, "why": "unqualified fixes take no part in drift (only qualified fixes, "
                                              "docs/legal-basis.md §6; JT/T 808-2019 0x0200)"})
        return cols
    ctx.post.append(hook)
    ctx.expect.append(ex.alert("overspeed", veh.plate, 0, "unqualified fixes never raise alerts"))


def duplicates(ctx, spec, tr, veh):
    """The terminal sends ``count`` fixes twice (same content)."""
    from .gps_terminal import duplicate
    n = int(_num(spec, "count", 5, 1, 500))
    t0 = tr.t
    tr.drive_for(1800, _num(spec, "speed", 50.0, 5, 100), 90.0)
    tr.stop(1800)
    vid = ctx.vid_of[veh.plate]

    def hook(cols):
        idx = window(cols, vid, t0, t0 + 1800)[:n]
        return duplicate(cols, idx)
    ctx.post.append(hook)
    ctx.expect.append(ex.alert("overspeed", veh.plate, 0, "duplicates raise nothing"))
    ctx.expect.append({"kind": "vehicle_day", "plate": veh.plate, "day": _day(t0), "field": "drift_points",
                       "op": "=", "value": 0, "why": "a repeated fix is not drift"})


def zone(ctx, spec, tr, veh):
    """Drive into a zone polygon, dwell, drive out."""
    zid = spec.get("zone", "Z001")
    z = ctx.reg.zones.get(zid)
    if z is None:
        raise ScenarioError(f"zone: unknown zone {zid!r}")
    lon = sum(p[0] for p in z.polygon[:-1]) / (len(z.polygon) - 1)
    lat = sum(p[1] for p in z.polygon[:-1]) / (len(z.polygon) - 1)
    speed = _num(spec, "speed", 30.0, 5, 60)
    tr.drive_to(lon, lat, speed)
    tr.stop(int(_num(spec, "dwell_min", 10, 0) * 60), acc_on=True)
    out_lon, out_lat = destination(lon, lat, 90.0, 6.0)
    tr.drive_to(float(out_lon), float(out_lat), speed)
    tr.stop(1800)
    applies = not z.categories or veh.category in z.categories
    why = f"enters {zid} ({'applies to ' + veh.category if applies else 'zone not for ' + veh.category})"
    ctx.expect.append(ex.alert("geofence_enter", veh.plate, int(applies), why))
    ctx.expect.append(ex.alert("geofence_exit", veh.plate, int(applies), why))


def terminal_alarm(ctx, spec, tr, veh):
    """One fix with an alarm bit set (default bit 0, 紧急报警)."""
    bit = int(_num(spec, "bit", 0, 0, 31))
    tr.drive_for(600, 40.0, 90.0)
    tr.drive_for(tr.interval, 40.0, 90.0, alarm=1 << bit)
    tr.drive_for(600, 40.0, 90.0)
    tr.stop(1800)
    ctx.expect.append(ex.alert("terminal_alarm", veh.plate, 1, f"alarm bit {bit} on one fix"))


def home_hint(ctx, spec) -> tuple | None:
    """Where a vehicle should start so that its first behaviour happens nearby."""
    k = spec["kind"]
    if k == "zone":
        z = ctx.reg.zones.get(spec.get("zone", "Z001"))
        if z is not None:
            lon = sum(p[0] for p in z.polygon[:-1]) / (len(z.polygon) - 1)
            lat = sum(p[1] for p in z.polygon[:-1]) / (len(z.polygon) - 1)
            return tuple(float(x) for x in destination(lon, lat, 270.0, 6.0))
    if k == "speeding" and spec.get("road") == "expressway":
        x = ctx.reg.zones["X001"].polygon
        return ((x[0][0] + x[3][0]) / 2 + 0.01, (x[0][1] + x[3][1]) / 2)
    if k == "load_at_site":
        return ctx.site_home(spec)
    return None


# --- WIM behaviours ----------------------------------------------------------------------------------

def passage(ctx, spec, tr, veh):
    """``repeat`` passages over ``station`` every ``every_h`` hours with the given measured gross."""
    n = int(_num(spec, "repeat", 1, 1, 100))
    every = _num(spec, "every_h", 24.0, 0.001)
    t = ctx.when(spec)
    for i in range(n):
        ctx.wim_passage(spec, veh, t + int(i * every * 3600))


def load_at_site(ctx, spec, tr, veh):
    """Load at a cargo-source site (a stop of ``stop_min`` inside its polygon), drive to the station, weigh."""
    ctx.site_home(spec)
    site, station = ctx.site_for(spec)
    lon = sum(p[0] for p in site.polygon[:-1]) / 4
    lat = sum(p[1] for p in site.polygon[:-1]) / 4
    tr.drive_to(lon, lat, 30.0)
    tr.stop(int(_num(spec, "stop_min", 20, 0) * 60), acc_on=True, interval=tr.interval)
    tr.mark("site_left")
    tr.drive_to(station.lon, station.lat, 50.0)
    t_pass = tr.t
    tr.drive_for(600, 50.0, 90.0)
    tr.stop(1800)
    verdict = ctx.wim_passage(spec, veh, t_pass, station_id=station.station_id)
    stop_min = _num(spec, "stop_min", 20, 0)
    found = stop_min >= ctx.cfg["source.min_stop_min"]
    if verdict["action"] != "none":
        ctx.expect.append({"kind": "source_site", "plate": veh.plate,
                           "site_id": site.site_id if found else None,
                           "why": f"stopped {stop_min:g} min inside {site.site_id} "
                                  f"(minimum {ctx.cfg['source.min_stop_min']:g} min), weighed "
                                  f"{(t_pass - tr.marks.get('site_left', t_pass)) // 60} min later"})


def route(ctx, spec, tr, veh):
    """Drive consecutive road-graph links, weighed at each 非现场执法点 (simulators/interception.py)."""
    from .interception import route as drive_route     # interception.py imports this module's ScenarioError
    drive_route(ctx, spec, tr, veh)


BEHAVIOURS = {
    "drive": drive, "fatigue": fatigue, "fatigue_cumulative": fatigue_cumulative, "speeding": speeding,
    "curfew": curfew, "offline": offline, "gap": gap, "reupload": reupload_gap, "drift": drift_points,
    "bad_values": bad_values, "duplicates": duplicates, "zone": zone, "terminal_alarm": terminal_alarm,
    "passage": passage, "load_at_site": load_at_site, "route": route,
}
GPS_BEHAVIOURS = set(BEHAVIOURS) - {"passage"}
