"""Expected outcomes derived from what a scenario injected, and the reference rules that derive them.

The reference rules here are deliberately small, literal readings of the regulation text
(docs/legal-basis.md §1–§3, §6–§8) written independently of models/overload.py and the GPS engine: they turn
"this bus drove 4 h 30 min by day without a 20-min stop" into "1 fatigue alert", and "2-axle truck weighed
19 900 kg" into "fine 500 yuan". ``simulators/check_cmd.py`` compares them with the archive.

An expectation is a plain dict with ``kind`` (alert | verdicts | source_site | escalation | cases_total |
vehicle_day | rate), a ``why`` line, and kind-specific fields (docs/scenarios.md).
"""
from __future__ import annotations

import math
from datetime import datetime, time

from roadwatch.models.config import Config
from roadwatch.models.records import Station, Vehicle

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
