"""The WIM verdict: one reading → limit, tolerance, validity checks, penalties, 一超四罚 counters, source.

``assess`` is the one code path for the stream worker and the batch CLI. Everything stateful comes in
through small protocols (``CounterSource``, ``TrackSource``, ``DriverSource``, ``PassageSource``): the
worker passes archive-backed ones (streams/cases.py), batch mode the in-memory ones below.

Order of the rules (documented so the verdict is explainable):
 1. passage de-duplication (same plate, same station, within ``overlimit.dedup_window_s`` of the passage's
    first reading → ``duplicate_of``, no second case);
 2. Art. 3 limit (models/limits.py) and tolerance (threshold | deduct) → ``over_limit``;
 3. if over the limit: validity (a mobile unit's reading inside one of its deployments — models/mobile.py,
    else ``outside_deployment``, with no config key to waive it; calibration certificate; the device's
    legal/technical review, signage and public announcement — models/devices.py, ``devices.require_*``;
    plate confidence, plate in registry) → ``review``;
    a valid 大件运输许可 covering the passage (limits and route) → ``none``, ``permitted``; a permit valid in
    time that does not cover it → ``review`` (``permit_terms_not_met``, the permit's reasons); else Art. 43 →
    ``warning`` | ``fine``;
 4. police 超载 assessment (informational), axle-load findings (informational);
 5. driver (IC card → registry, shown as presumed → unknown), cargo source (geo/sites.py), informational
    detection counts. Art. 66 escalations are not decided here: they are derived from the case histories
    (models/art66.py) once cases are decided.

Ids are deterministic: ``passage_id`` = sha256(station|plate|first reading epoch-ms) so a replayed feed maps
to the same passage and case; ``case_id`` derives from it.
"""
from __future__ import annotations

import bisect
import hashlib
from collections import defaultdict
from typing import Protocol

import numpy as np

from roadwatch.geo.sites import SiteIndex, excerpt, find_loading_site
from .config import Config
from .devices import approval_status, reason_for
from .limits import axle_findings, axle_groups, gross_limit
from .mobile import OUTSIDE, deployment_status
from .penalties import police_assessment, road_penalty
from .permits import PermitIndex
from .records import GpsPing, WimReading, epoch_ms, epoch_ms_to_iso, format_ts, iso_to_epoch_ms, parse_ts
from .registry import Registry

VERDICT_SCHEMA = "roadwatch.wim-verdict/1"
DAY_MS = 86_400_000

# --- protocols ------------------------------------------------------------------------------------------

class CounterSource(Protocol):
    """Violations (cases that count for 一超四罚) with ``since_ms < ts ≤ until_ms``."""

    def vehicle_violations(self, plate: str, since_ms: int, until_ms: int, exclude_case_id: str | None) -> int: ...

    def driver_violations(self, driver_id: str, since_ms: int, until_ms: int,
                          exclude_case_id: str | None) -> int: ...

    def enterprise_violating_vehicles(self, enterprise_id: str, since_ms: int, until_ms: int,
                                      exclude_plate: str | None) -> int:
        """Distinct violating plates of the enterprise, not counting ``exclude_plate``."""

    def source_site_violations(self, site_id: str, since_ms: int, until_ms: int,
                               exclude_case_id: str | None) -> int: ...


class TrackSource(Protocol):
    def stops(self, plate: str, since_ms: int, until_ms: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(start_ms int64, end_ms int64, lat, lon) of the plate's stop events overlapping [since, until]."""

    def points(self, plate: str, since_ms: int, until_ms: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ts_ms int64, lat, lon, speed_kmh) of the plate's sampled points with since ≤ ts ≤ until (the
        evidence excerpt, the intercept's fix)."""


class DriverSource(Protocol):
    def active_driver(self, plate: str, ts_ms: int) -> str | None:
        """Driver id of an IC-card login active on ``plate`` at ``ts_ms`` (None when none)."""


class PassageSource(Protocol):
    def find_passage(self, station_id: str, plate: str, ts_ms: int, window_ms: int) -> tuple[str, int] | None:
        """(passage_id, first_ts_ms) of the passage nearest ``ts_ms`` within ±window, or None."""

    def note_passage(self, station_id: str, plate: str, first_ts_ms: int, passage_id: str) -> None: ...


# --- in-memory implementations (batch mode, tests) --------------------------------------------------------

class MemoryCounters:
    """Counts violations from verdicts fed to ``record``: per plate / driver / enterprise / site, a list of
    (ts_ms, case_id) kept sorted, so window counts are two bisections. Idempotent per case id."""

    _KINDS = ("plate", "driver", "ent", "site")

    def __init__(self) -> None:
        self._cases: dict[str, tuple] = {}      # case_id → (ts_ms, {kind: key})
        self._by: dict[str, dict[str, list]] = {k: defaultdict(list) for k in self._KINDS}
        self._ent_plates: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))

    def record(self, verdict: dict) -> None:
        cid = verdict.get("case_id")
        if not (verdict.get("violation") and cid) or cid in self._cases:
            return
        ts = verdict["ts_ms"]
        drv = verdict.get("driver") or {}
        keys = {"plate": verdict["plate"], "driver": drv.get("id") if drv.get("source") == "ic_card" else None,
                "ent": verdict.get("enterprise_id"), "site": (verdict.get("source_site") or {}).get("site_id")}
        self._cases[cid] = (ts, keys)
        for kind, key in keys.items():
            if key:
                bisect.insort(self._by[kind][key], (ts, cid))
        if keys["ent"]:
            bisect.insort(self._ent_plates[keys["ent"]][verdict["plate"]], ts)

    @staticmethod
    def _in_window(lst: list, since_ms: int, until_ms: int) -> int:
        return bisect.bisect_right(lst, (until_ms, "\uffff")) - bisect.bisect_right(lst, (since_ms, "\uffff"))

    def _count(self, kind, key, since_ms, until_ms, exclude):
        n = self._in_window(self._by[kind].get(key, []), since_ms, until_ms)
        ex = self._cases.get(exclude) if exclude else None
        if ex is not None and ex[1].get(kind) == key and since_ms < ex[0] <= until_ms:
            n -= 1
        return n

    def vehicle_violations(self, plate, since_ms, until_ms, exclude_case_id):
        return self._count("plate", plate, since_ms, until_ms, exclude_case_id)

    def driver_violations(self, driver_id, since_ms, until_ms, exclude_case_id):
        return self._count("driver", driver_id, since_ms, until_ms, exclude_case_id)

    def source_site_violations(self, site_id, since_ms, until_ms, exclude_case_id):
        return self._count("site", site_id, since_ms, until_ms, exclude_case_id)

    def enterprise_violating_vehicles(self, enterprise_id, since_ms, until_ms, exclude_plate):
        n = 0
        for plate, ts in self._ent_plates.get(enterprise_id, {}).items():
            if plate != exclude_plate and bisect.bisect_right(ts, until_ms) > bisect.bisect_right(ts, since_ms):
                n += 1
        return n


class MemoryTracks:
    """Per-plate sorted arrays: sampled points (``add``) and stop events (``add_stop``)."""

    def __init__(self) -> None:
        self._raw: dict[str, list] = defaultdict(list)
        self._arr: dict[str, tuple] = {}
        self._stops: dict[str, list] = defaultdict(list)

    def add_stop(self, plate: str, start_ms: int, end_ms: int, lat: float, lon: float) -> None:
        self._stops[plate].append((start_ms, end_ms, lat, lon))

    def stops(self, plate, since_ms, until_ms):
        rows = sorted(r for r in self._stops.get(plate, []) if r[1] >= since_ms and r[0] <= until_ms)
        return (np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64),
                np.array([r[2] for r in rows], dtype=float), np.array([r[3] for r in rows], dtype=float))

    def add(self, plate: str, ts_ms: int, lat: float, lon: float, speed_kmh: float) -> None:
        self._raw[plate].append((ts_ms, lat, lon, speed_kmh))
        self._arr.pop(plate, None)

    def points(self, plate, since_ms, until_ms):
        arr = self._arr.get(plate)
        if arr is None:
            rows = sorted(self._raw.get(plate, []))
            arr = (np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=float),
                   np.array([r[2] for r in rows], dtype=float), np.array([r[3] for r in rows], dtype=float))
            self._arr[plate] = arr
        ts = arr[0]
        i0, i1 = np.searchsorted(ts, since_ms, "left"), np.searchsorted(ts, until_ms, "right")
        return ts[i0:i1], arr[1][i0:i1], arr[2][i0:i1], arr[3][i0:i1]


class MemoryDrivers:
    """Driver logins per plate: (ts_ms, driver_id | None for logout), latest event at or before ts wins."""

    def __init__(self) -> None:
        self._events: dict[str, list] = defaultdict(list)
        self._sorted: set[str] = set()

    def add(self, plate: str, ts_ms: int, driver_id: str | None) -> None:
        self._events[plate].append((ts_ms, driver_id or ""))
        self._sorted.discard(plate)

    def active_driver(self, plate, ts_ms):
        ev = self._events.get(plate)
        if not ev:
            return None
        if plate not in self._sorted:
            ev.sort()
            self._sorted.add(plate)
        i = bisect.bisect_right(ev, (ts_ms, "\uffff")) - 1
        return (ev[i][1] or None) if i >= 0 else None


class MemoryPassages:
    def __init__(self) -> None:
        self._p: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)

    def find_passage(self, station_id, plate, ts_ms, window_ms):
        lst = self._p.get((station_id, plate))
        if not lst:
            return None
        i = bisect.bisect_left(lst, (ts_ms, ""))
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(lst) and abs(lst[j][0] - ts_ms) <= window_ms:
                if best is None or abs(lst[j][0] - ts_ms) < abs(best[0] - ts_ms):
                    best = lst[j]
        return (best[1], best[0]) if best else None

    def note_passage(self, station_id, plate, first_ts_ms, passage_id):
        lst = self._p[(station_id, plate)]
        item = (first_ts_ms, passage_id)
        i = bisect.bisect_left(lst, item)
        if i == len(lst) or lst[i] != item:
            lst.insert(i, item)


def sources_from_pings(pings: list[GpsPing]) -> tuple[MemoryTracks, MemoryDrivers]:
    """Batch mode: interchange pings as the track and (their ``driver_id``) as the driver source."""
    tracks, drivers = MemoryTracks(), MemoryDrivers()
    for p in pings:
        t = iso_to_epoch_ms(p.ts)
        tracks.add(p.plate, t, p.lat, p.lon, p.speed_kmh)
        if p.driver_id:
            drivers.add(p.plate, t, p.driver_id)
    return tracks, drivers


# --- helpers --------------------------------------------------------------------------------------------

def passage_id_for(station_id: str, plate: str, first_ts_ms: int) -> str:
    return hashlib.sha256(f"{station_id}|{plate}|{first_ts_ms}".encode()).hexdigest()[:32]


def case_id_for(passage_id: str) -> str:
    return "C" + passage_id[:23].upper()


def opens_case(verdict: dict) -> bool:
    """A verdict that goes out as a case (and may open an intercept task): it needs action, and it is neither
    a duplicate passage nor a re-sent reading in conflict with the first (that one is kept for review)."""
    return verdict["action"] != "none" and not verdict.get("duplicate_of") and not verdict.get("conflict")


# the operators' alert for a case: how urgent by what the verdict asks for (a fine, a review, a warning)
ALERT_SEVERITY = {"fine": "high", "review": "medium", "warning": "low"}


def overload_alert(verdict: dict) -> dict:
    """The operator-facing alert of a verdict that opens a case (one per case: its id is the case's)."""
    return {
        "alert_id": f"overload-{verdict['case_id']}", "type": "overload", "plate": verdict["plate"],
        "start_ts": verdict["ts"], "end_ts": verdict["ts"], "severity": ALERT_SEVERITY.get(verdict["action"], "low"),
        "lat": verdict.get("station_lat"), "lon": verdict.get("station_lon"), "late": False,
        "details": {k: verdict.get(k) for k in ("station_id", "action", "gross_kg", "limit_kg", "excess_kg",
                                                 "excess_pct", "fine_yuan", "review_reason", "case_id")},
    }


def calibration_status(registry: Registry, station_id: str, device_id: str, ts_ms: int) -> dict:
    """``status``: ok | missing (no device/certificate on file) | invalid (reading outside validity)."""
    dev = registry.station_device(station_id, device_id)
    if dev is None:
        known = station_id in registry.stations or station_id in registry.mobile_units
        where = "device" if known else "station"
        return {"status": "missing", "detail": f"{where} not in the registry", "device_id": device_id}
    info = {"device_id": device_id, "cert_no": dev.get("cert_no") or None,
            "valid_from": dev.get("valid_from"), "valid_to": dev.get("valid_to")}
    if not info["cert_no"] or not info["valid_to"]:
        return {**info, "status": "missing", "detail": "no calibration certificate (number and valid_to) on file"}
    if info["valid_from"] and ts_ms < iso_to_epoch_ms(info["valid_from"]):
        return {**info, "status": "invalid", "detail": "reading before the certificate's validity"}
    if ts_ms > iso_to_epoch_ms(info["valid_to"]):
        return {**info, "status": "invalid", "detail": "certificate expired at the reading's time"}
    return {**info, "status": "ok"}


def _site_index(registry: Registry) -> SiteIndex:
    key = tuple(registry.source_sites)
    cached = registry.__dict__.get("_roadwatch_site_index")
    if cached is None or cached[0] != key:
        cached = (key, SiteIndex(registry.source_sites.values()))
        registry.__dict__["_roadwatch_site_index"] = cached
    return cached[1]


def trace_source_site(registry: Registry, cfg: Config, track: TrackSource | None, plate: str, ts_ms: int) -> dict:
    """The loading stop (货运源头单位) among the truck's stop events before ``ts_ms`` (geo/sites.py), with the
    evidence excerpt ``track``: where it stopped, then its sampled points up to the weighing. Also used to
    amend a case when its track arrives late (streams/cases.py ``resolve_pending``)."""
    if track is None:
        return {"site_id": None, "reason": "no_track_source"}
    since = ts_ms - int(round(cfg["source.lookback_h"] * 3_600_000))
    st, en, la, lo = track.stops(plate, since, ts_ms)
    site = find_loading_site(_site_index(registry), st, en, la, lo, ts_ms, cfg)
    j = site.pop("_i", None)
    if j is not None:
        t0 = max(int(st[j]), since)
        t, pla, plo, _ = track.points(plate, t0 + 1, ts_ms)
        site["track"] = excerpt(np.r_[t0, t], np.r_[la[j], pla], np.r_[lo[j], plo])
    return site


# --- the verdict ----------------------------------------------------------------------------------------

def assess(reading: WimReading, registry: Registry, cfg: Config, *, counters: CounterSource,
           track: TrackSource | None = None, driver: DriverSource | None = None,
           passages: PassageSource | None = None, permits: PermitIndex | None = None) -> dict:
    when = parse_ts(reading.ts)               # parsed once: its epoch ms, and the verdict's Beijing time
    ts_ms = epoch_ms(when)
    # the weighing point: a fixed station, or a mobile unit placed by its deployment at the reading's time
    station = registry.stations.get(reading.station_id) or registry.mobile_units.get(reading.station_id)
    deployment = deployment_status(registry, reading.station_id, ts_ms)
    if deployment is None:
        lat, lon = (station.lat, station.lon) if station is not None else (None, None)
    else:
        lat, lon = deployment.get("lat"), deployment.get("lon")
    vehicle = registry.vehicle(reading.plate)

    # 1. passage
    window_ms = int(cfg["overlimit.dedup_window_s"]) * 1000
    found = passages.find_passage(reading.station_id, reading.plate, ts_ms, window_ms) if passages else None
    duplicate_of = None
    if found is not None and found[1] != ts_ms:
        passage_id, duplicate_of = found[0], found[0]
    elif found is not None:
        passage_id = found[0]                      # the passage's own first reading, replayed
    else:
        passage_id = passage_id_for(reading.station_id, reading.plate, ts_ms)
        if passages is not None:
            passages.note_passage(reading.station_id, reading.plate, ts_ms, passage_id)

    # 2. limit and tolerance
    lim = gross_limit(
        reading.axle_count, reading.vehicle_kind, cfg,
        single_drive_axle=vehicle.single_drive_axle if vehicle else reading.single_drive_axle,
        single_tyre_axles=vehicle.single_tyre_axles if vehicle else 0,
        air_suspension=vehicle.air_suspension if vehicle else False,
        registered_total_kg=vehicle.registered_total_kg if vehicle else 0.0)
    if station is not None and station.tolerance is not None:
        tol = float(station.tolerance)
        tol_source = station.tolerance_source or f"station {reading.station_id} (registry)"
    else:
        tol = float(cfg["overlimit.filing_tolerance"])
        tol_source = f"config overlimit.filing_tolerance ({cfg.origin('overlimit.filing_tolerance')})"
    mode = cfg["overlimit.tolerance_mode"]
    gross = float(reading.gross_kg)
    if mode == "deduct":
        assessed = round(gross * (1.0 - tol), 3)
        excess = round(assessed - lim.limit_kg, 3)
        over = excess > 0
        threshold_kg = None
    else:
        assessed = gross
        threshold_kg = round(lim.limit_kg * (1.0 + tol), 3)
        excess = round(gross - lim.limit_kg, 3)
        over = gross > threshold_kg
    road = road_penalty(excess if over else 0.0, cfg)

    # 3. validity
    reasons: list[str] = []
    # 3a. a mobile unit's reading outside every deployment has no lawful place: review, never a fine
    if deployment is not None and deployment["status"] == OUTSIDE:
        reasons.append(OUTSIDE)
    calib = calibration_status(registry, reading.station_id, reading.device_id, ts_ms)
    if calib["status"] != "ok" and cfg["overlimit.requires_valid_calibration"]:
        reasons.append(f"calibration_{calib['status']}")
    # 3b. 行政处罚法 Art. 41: a device lacking a required review, signage or announcement at the reading's time
    approval = approval_status(registry, reading.station_id, reading.device_id, ts_ms, cfg)
    reasons.extend(reason_for(item) for item in approval["missing"])
    if reading.plate_confidence < cfg["overlimit.min_plate_confidence"]:
        reasons.append("low_plate_confidence")
    if vehicle is None:
        reasons.append("unknown_plate")
    # 3c. 大件运输许可 (models/permits.py): inside a valid permit's limits and route → permitted, no case;
    #     a permit valid in time but not covering the passage → review with the reasons
    permit = permits.judge(reading, lat, lon) if permits is not None else None
    permitted = bool(permit and permit["status"] == "permitted")
    if over and permit and not permitted:
        reasons.append("permit_terms_not_met")

    if duplicate_of is not None or not over or permitted:
        action = "none"
    elif reasons:
        action = "review"
    else:
        action = road["action"]
    violation = action in ("warning", "fine")
    case_id = case_id_for(passage_id) if action != "none" else None

    verdict: dict = {
        "schema": VERDICT_SCHEMA,
        "plate": reading.plate, "plate_color": reading.plate_color,
        "plate_confidence": reading.plate_confidence,
        "ts": format_ts(when), "ts_ms": ts_ms,
        "station_id": reading.station_id, "device_id": reading.device_id, "lane": reading.lane,
        "reading_id": reading.reading_id or None,
        "vehicle_kind": reading.vehicle_kind, "axle_count": reading.axle_count,
        "gross_kg": gross, "assessed_gross_kg": assessed,
        "limit_kg": lim.limit_kg, "limit_basis": lim.basis, "limit_version": lim.version,
        "limit_adjustments": lim.adjustments,
        "tolerance": tol, "tolerance_source": tol_source, "tolerance_mode": mode,
        "filing_threshold_kg": threshold_kg,
        "excess_kg": excess,
        "excess_pct": round(excess * 100.0 / lim.limit_kg, 2),
        "over_limit": over,
        "action": action,
        "violation": violation,
        "fine_yuan": road["fine_yuan"] if action == "fine" else 0,
        "road_penalty": road,
        "review_reason": reasons[0] if action == "review" else None,
        "review_reasons": reasons if over else [],
        "calibration": calib, "device_approval": approval, "deployment": deployment,
        "case_id": case_id, "passage_id": passage_id, "duplicate_of": duplicate_of,
        "permit": permit, "permitted": permitted and over,
        "enterprise_id": (vehicle.enterprise_id or None) if vehicle else None,
        "police": None, "axle_groups": None, "axle_findings": [], "counters": None,
        "source_site": None, "track_excerpt": None, "driver": {"id": None, "source": "unknown"},
    }
    # registry facts the evidence package and the console show (so they need no registry of their own)
    verdict["station"] = ({"name": station.name, "lat": lat, "lon": lon, "county": station.county,
                           "accuracy_class": station.accuracy_class} if station is not None else None)
    if deployment is not None and verdict["station"] is not None:
        verdict["station"].update(mobile=True, road=deployment.get("road"), direction=deployment.get("direction"),
                                  deployment_id=deployment.get("deployment_id"))
    verdict["vehicle"] = ({"owner": vehicle.owner or None, "transport_cert_no": vehicle.transport_cert_no or None,
                           "category": vehicle.category, "registered_total_kg": vehicle.registered_total_kg,
                           "rated_load_kg": vehicle.rated_load_kg, "curb_kg": vehicle.curb_kg,
                           "single_tyre_axles": vehicle.single_tyre_axles, "air_suspension": vehicle.air_suspension,
                           "single_drive_axle": vehicle.single_drive_axle,
                           "home_agency": vehicle.home_agency or None} if vehicle is not None else None)
    ent_rec = registry.enterprises.get(vehicle.enterprise_id) if vehicle and vehicle.enterprise_id else None
    verdict["enterprise"] = ({"id": ent_rec.enterprise_id, "name": ent_rec.name,
                              "licence_no": ent_rec.licence_no or None, "goods_vehicles": ent_rec.goods_vehicles}
                             if ent_rec is not None else None)
    if (registry.stations or registry.mobile_units) and station is None:
        verdict["station_note"] = "station not in registry"
    if vehicle is not None and vehicle.axle_count != reading.axle_count:
        verdict["axle_count_note"] = f"registry axle_count {vehicle.axle_count} ≠ measured {reading.axle_count}"
    if duplicate_of is not None:
        return verdict

    # 4. informational findings
    if vehicle is not None:
        verdict["police"] = police_assessment(gross, vehicle.rated_load_kg, vehicle.curb_kg,
                                              vehicle.registered_total_kg, cfg)
    else:
        verdict["police"] = {"fine_min_yuan": 0, "fine_max_yuan": 0, "points": 0, "fine_reason": "unknown_plate"}
    if reading.axle_spacings_m:
        verdict["axle_groups"] = [[i + 1 for i in g] for g in
                                  axle_groups(list(reading.axle_spacings_m), cfg["axle.group_max_spacing_m"])]
    verdict["axle_findings"] = axle_findings(list(reading.axle_loads_kg), list(reading.axle_spacings_m), cfg)

    if not over:
        return verdict

    # 5. driver, source, counters: only for a passage over the limit. A compliant passage names no driver
    #    (个人信息保护法 Art. 6: no more personal data than the purpose needs), and costs no card look-up
    drv_id, drv_src = None, "unknown"
    if driver is not None:
        drv_id = driver.active_driver(reading.plate, ts_ms)
        drv_src = "ic_card" if drv_id else "unknown"
    if drv_id is None and vehicle is not None and vehicle.driver_id:
        drv_id, drv_src = vehicle.driver_id, "registry"
    d = {"id": drv_id, "source": drv_src}
    if drv_src == "registry":
        d["presumed"] = True                 # the registry's assigned driver: shown, never liable by itself
    if drv_id and drv_id in registry.drivers:
        rd = registry.drivers[drv_id]
        d.update(name=rd.name, qualification_no=rd.qualification_no or None, enterprise_id=rd.enterprise_id or None)
    verdict["driver"] = d

    site = trace_source_site(registry, cfg, track, reading.plate, ts_ms)
    verdict["track_excerpt"] = site.pop("track", None)
    verdict["source_site"] = site

    since = ts_ms - int(cfg["art66.window_days"]) * DAY_MS
    add = 1 if violation else 0
    veh_n = counters.vehicle_violations(reading.plate, since, ts_ms, case_id) + add
    # a registry-assigned driver is only presumed: never counted (docs/legal-basis.md §5.1)
    drv_n = counters.driver_violations(drv_id, since, ts_ms, case_id) + add if drv_src == "ic_card" else None
    ent = ent_rec
    ent_n = (counters.enterprise_violating_vehicles(ent.enterprise_id, since, ts_ms, reading.plate) + add
             if ent else None)
    site_n = (counters.source_site_violations(site["site_id"], since, ts_ms, case_id) + add
              if site.get("site_id") else None)
    verdict["counters"] = {
        "window_days": int(cfg["art66.window_days"]), "since": epoch_ms_to_iso(since), "includes_current": bool(add),
        "vehicle": veh_n, "driver": drv_n,
        "enterprise_violating_vehicles": ent_n,
        "enterprise_goods_vehicles": ent.goods_vehicles if ent else None,
        "enterprise_share": round(ent_n / ent.goods_vehicles, 4) if ent and ent.goods_vehicles else None,
        "source_site": site_n,
        "note": "cases detected in the window, as known at detection (informational). Art. 66 consequences "
                "are derived from decided cases by `roadwatch escalations`, never stamped here.",
    }
    return verdict

