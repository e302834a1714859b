"""Scenarios: a TOML file (docs/scenarios.md) → registry + feed records + expected outcomes.

``build(scenario, cfg)`` is pure and deterministic: the scenario's seed drives one ``numpy`` generator, and
the same file gives byte-identical registry and feed. Background vehicles follow clean day plans (speeds
well under every limit, rests before 4 h, ≤ 7.5 h a day, no night driving, outside every zone), so any
alert the system raises must come from a scripted behaviour.
"""
from __future__ import annotations

import time as _time
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from roadwatch.models.config import Config
from roadwatch.models.records import BEIJING, CATEGORIES, PLATE_RE, Driver, Enterprise, Vehicle, format_ts

from . import behaviours as bh
from . import expectations as ex
from . import interception as icpt
from .behaviours import ScenarioError
from .feed import driver_record, merge, ping_records, wim_record
from .fleet import HUNAN, SITE_NAMES, generate_fleet, make_plate, near, square
from .gps_terminal import (Track, concat, destination, drift, expand_legs, haversine_km, sort_by_receipt,
                           take)
from .wim_station import WimTraffic, art3_limit, make_reading, passage_readings, public

SCENARIO_DIR = Path(__file__).parent / "scenarios"
VEHICLE_FIELDS = set(Vehicle._options.fieldset) - {"plate", "category", "enterprise_id"}


@dataclass
class Scenario:
    name: str
    description: str
    seed: int
    start: datetime
    hours: float
    raw: dict
    path: Path | None = None

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.hours)


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    for cand in (SCENARIO_DIR / name_or_path, SCENARIO_DIR / f"{name_or_path}.toml"):
        if cand.is_file():
            return cand
    raise ScenarioError(f"scenario not found: {name_or_path} (library: {', '.join(sorted(list_library()))})")


def list_library() -> list[str]:
    return [p.stem for p in SCENARIO_DIR.glob("*.toml")]


def load_scenario(name_or_path: str) -> Scenario:
    path = resolve(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from None
    return parse_scenario(raw, path)


def parse_scenario(raw: dict, path: Path | None = None) -> Scenario:
    s = raw.get("scenario")
    if not isinstance(s, dict):
        raise ScenarioError("missing [scenario] table")
    try:
        start = datetime.fromisoformat(str(s.get("start", "2025-03-03T00:00:00+08:00")))
    except ValueError:
        raise ScenarioError(f"scenario.start {s.get('start')!r} is not ISO-8601") from None
    if start.tzinfo is None:
        raise ScenarioError("scenario.start needs a UTC offset (e.g. +08:00)")
    hours = s.get("hours", 24)
    if not isinstance(hours, (int, float)) or not 0 < hours <= 24 * 62:
        raise ScenarioError("scenario.hours must be in (0, 1488]")
    seed = s.get("seed", 1)
    if not isinstance(seed, int):
        raise ScenarioError("scenario.seed must be an integer")
    for b in raw.get("behaviour", []):
        if b.get("kind") not in bh.BEHAVIOURS:
            raise ScenarioError(f"unknown behaviour kind {b.get('kind')!r} (one of {sorted(bh.BEHAVIOURS)})")
    return Scenario(str(s.get("name", path.stem if path else "scenario")), str(s.get("description", "")),
                    seed, start, float(hours), raw, path)


@dataclass
class Built:
    registry: object
    records: list
    expectations: list
    aliases: dict
    stats: dict = field(default_factory=dict)
    pings: dict = field(default_factory=dict)   # final ping columns (tests inspect them)
    readings: list = field(default_factory=list)
    field_outcomes: list = field(default_factory=list)   # what the field teams record (simulators/interception.py)


class Context:
    """Everything behaviours need while a scenario is built."""

    def __init__(self, scn: Scenario, cfg: Config, images_dir: Path | None):
        self.scn, self.cfg, self.images_dir = scn, cfg, images_dir
        self.rng = np.random.default_rng(scn.seed)
        raw = scn.raw
        fl = raw.get("fleet", {})
        self.fleet = fl
        try:
            self.reg = generate_fleet(int(fl.get("vehicles", 10)), int(fl.get("stations", 1)), scn.seed,
                                      enterprises=fl.get("enterprises"),
                                      expired_devices=int(fl.get("expired_devices", 1)),
                                      not_in_network=float(fl.get("not_in_network", 0.02)), as_of=scn.start,
                                      station_counties=fl.get("station_counties"),
                                      checkpoints=tuple(fl.get("checkpoints", ())))
        except ValueError as e:
            raise ScenarioError(f"fleet: {e}") from None
        self.t_start = int(scn.start.timestamp())
        self.t_end = int(scn.end.timestamp())
        self.interval = int(raw["scenario"].get("interval_s", 30))
        self.parked_interval = int(raw["scenario"].get("parked_interval_s", 600))
        self.aliases: dict[str, str] = {}
        self.ent_alias: dict[str, str] = {}
        self.expect: list[dict] = []
        self.post: list = []
        self.readings: list[dict] = []
        self.passages: list[dict] = []
        self.events: list[dict] = []
        self.scripted: set[str] = set()
        self._site_moves: dict[str, tuple] = {}
        # 布控 and 流动治超 (simulators/interception.py)
        self.gps_plates: set[str] = set()
        self.route_legs: dict[str, list] = {}
        self.forced_outcomes: dict[tuple, str] = {}
        self.field_outcomes: list[dict] = []
        self.raw_field = raw.get("field_team", {})
        self._add_enterprises(raw.get("enterprise", []))
        self._add_vehicles(raw.get("vehicle", []))
        icpt.add_mobile_units(self, raw.get("mobile_unit", []))
        self.vlist = list(self.reg.vehicles.values())
        self.vid_of = {v.plate: i for i, v in enumerate(self.vlist)}

    # --- registry additions ------------------------------------------------------------------------
    def _add_enterprises(self, ents):
        for i, e in enumerate(ents):
            alias = e.get("alias") or f"ent{i + 1}"
            eid = e.get("enterprise_id", f"ES{i + 1:03d}")
            self.reg.enterprises[eid] = Enterprise(enterprise_id=eid, name=e.get("name", f"场景运输公司{i + 1}"),
                                                   county=HUNAN.counties[0], licence_no=f"湘交运管许可SC{i + 1:08d}号",
                                                   goods_vehicles=int(e.get("goods_vehicles", 10)))
            self.ent_alias[alias] = eid

    def _add_vehicles(self, vehs):
        rng = np.random.default_rng(self.scn.seed + 7919)
        for i, spec in enumerate(vehs):
            alias = spec.get("alias")
            if not alias:
                raise ScenarioError(f"vehicle[{i}] needs an alias")
            cat = spec.get("category", "普通货车")
            if cat not in CATEGORIES:
                raise ScenarioError(f"vehicle {alias}: category must be one of {CATEGORIES}")
            plate = spec.get("plate") or make_plate(rng)
            while plate in self.reg.vehicles and not spec.get("plate"):
                plate = make_plate(rng)
            if not PLATE_RE.match(plate) or plate in self.reg.vehicles:
                raise ScenarioError(f"vehicle {alias}: plate {plate!r} invalid or already used")
            ent_ref = spec.get("enterprise")
            eid = self.ent_alias.get(ent_ref, ent_ref) if ent_ref else next(iter(self.reg.enterprises))
            if eid not in self.reg.enterprises:
                raise ScenarioError(f"vehicle {alias}: unknown enterprise {ent_ref!r}")
            did = spec.get("driver_id", f"DS{i + 1:04d}")
            if did not in self.reg.drivers:
                self.reg.drivers[did] = Driver(driver_id=did, name=spec.get("driver_name", f"场景驾驶员{i + 1}"),
                                               enterprise_id=eid, qualification_no=f"4301{i + 1:014d}")
            bus = cat in ("客运班车", "旅游包车")
            base = dict(vehicle_kind="bus" if bus else "truck", axle_count=2,
                        registered_total_kg=18000.0, curb_kg=6500.0 if not bus else 12000.0,
                        rated_load_kg=0.0 if bus else 11370.0, terminal_id=f"013{i + 1:09d}")
            extra = {k: v for k, v in spec.items() if k in VEHICLE_FIELDS}
            base.update(extra)
            if not bus and "registered_total_kg" not in extra:
                lim = art3_limit(base["vehicle_kind"], base["axle_count"], base.get("single_drive_axle", False))
                base["registered_total_kg"] = float(lim)
                base["rated_load_kg"] = float(lim - base["curb_kg"] - 130)
            ent = self.reg.enterprises[eid]
            v = Vehicle(plate=plate, plate_color=2, category=cat, enterprise_id=eid, owner=ent.name,
                        transport_cert_no=f"湘交运管SC{i + 1:010d}号", county=ent.county, driver_id=did, **base)
            if not bus and ent.enterprise_id not in self.ent_alias.values():
                ent.goods_vehicles += 1
            self.reg.vehicles[plate] = v
            self.aliases[alias] = plate
            self.scripted.add(plate)

    # --- helpers for behaviours ----------------------------------------------------------------------
    def when(self, spec: dict) -> int:
        at = spec.get("at")
        if at is None:
            raise ScenarioError(f"behaviour {spec.get('kind')!r} needs 'at' (HH:MM with optional day, or ISO)")
        if isinstance(at, str) and len(at) == 5 and at[2] == ":":
            d = self.scn.start.date() + timedelta(days=int(spec.get("day", 0)))
            dt = datetime(d.year, d.month, d.day, int(at[:2]), int(at[3:]), tzinfo=BEIJING)
        else:
            try:
                dt = datetime.fromisoformat(str(at))
            except ValueError:
                raise ScenarioError(f"behaviour at={at!r} is neither HH:MM nor ISO-8601") from None
        t = int(dt.timestamp())
        if not self.t_start <= t < self.t_end:
            raise ScenarioError(f"behaviour at {format_ts(dt)} is outside the scenario span")
        return t

    def site_for(self, spec: dict):
        sid = spec.get("site", next(iter(self.reg.source_sites)))
        stid = spec.get("station", next(iter(self.reg.stations), None))
        if sid not in self.reg.source_sites or stid not in self.reg.stations:
            raise ScenarioError(f"load_at_site: unknown site {sid!r} or station {stid!r}")
        return self.reg.source_sites[sid], self.reg.stations[stid]

    def site_home(self, spec: dict) -> tuple:
        """Moves the site ``km_to_station`` km west of the station (so the drive is short) → truck home."""
        site, st = self.site_for(spec)
        km = float(spec.get("km_to_station", 15.0))
        lon, lat = destination(st.lon, st.lat, 270.0, km)
        site.polygon = square(float(lon), float(lat), 150.0)
        if st.county:                                  # it now lies in the station's county: say so
            site.name = f"{st.county}{SITE_NAMES.get(site.kind, '')}货运源头{int(site.site_id[1:])}"
        hl, ha = destination(lon, lat, 270.0, 3.0)
        return float(hl), float(ha)

    def wim_passage(self, spec: dict, veh: Vehicle | None, t: int, station_id: str | None = None) -> dict:
        stid = station_id or spec.get("station") or next(iter(self.reg.stations))
        st = self.reg.stations.get(stid) or self.reg.mobile_units.get(stid)
        if st is None:
            raise ScenarioError(f"passage: unknown station {stid!r}")
        unit = self.reg.mobile_units.get(stid)
        devices = [unit.device] if unit is not None else st.devices
        at = datetime.fromtimestamp(t, tz=BEIJING)
        want = spec.get("device", "valid")
        valid = [d for d in devices if datetime.fromisoformat(d["valid_from"]) <= at <= datetime.fromisoformat(d["valid_to"])]
        dev = (valid[0] if valid else None) if want == "valid" else next((d for d in devices if d not in valid), None)
        if dev is None:
            raise ScenarioError(f"passage: station {stid} has no {want} device at {format_ts(at)}")
        plate = spec.get("plate_read") or (veh.plate if veh else spec.get("plate"))
        if not plate:
            raise ScenarioError("passage needs a vehicle or a plate")
        kind = spec.get("vehicle_kind", veh.vehicle_kind if veh else "truck")
        axles = int(spec.get("axle_count", veh.axle_count if veh else 2))
        sda = bool(spec.get("single_drive_axle", veh.single_drive_axle if veh else False))
        gross = _num_gross(spec, kind, axles, sda)
        seq = len(self.readings) + 1
        rid = f"{stid}-S{seq:06d}"
        reading = make_reading(st, dev, plate=plate, plate_color=2, kind=kind, axles=axles, single_drive_axle=sda,
                               ts=at, gross_kg=gross, rng=self.rng, lane=int(spec.get("lane", 1)),
                               confidence=float(spec.get("confidence", 0.97)),
                               speed_kmh=float(spec.get("speed", 50.0)), reading_id=rid, images_dir=self.images_dir)
        self.readings.append(reading)
        regveh = self.reg.vehicles.get(plate)
        # a mobile unit weighs lawfully only inside one of its deployments (models/mobile.py)
        in_place = unit is None or ex.deployment_at(unit, t) is not None
        verdict = ex.reference_verdict(reading, regveh, st, self.cfg, calibration_ok=want == "valid",
                                       deployed=in_place)
        self.passages.append({"reading": reading, "verdict": verdict, "t": t, "station": stid, "plate": plate,
                              "vehicle": regveh, "duplicate": False})
        if spec.get("duplicate"):
            dup = dict(reading, lane=reading["lane"] + 1, ts=format_ts(at + timedelta(seconds=1)),
                       reading_id=f"{stid}-S{seq:06d}b")
            self.readings.append(dup)
            self.passages.append({"reading": dup, "verdict": verdict, "t": t + 1, "station": stid, "plate": plate,
                                  "vehicle": regveh, "duplicate": True})
        return verdict


def _num_gross(spec: dict, kind: str, axles: int, sda: bool) -> float:
    if "gross_kg" in spec:
        return float(spec["gross_kg"])
    if "over_limit_kg" in spec:
        return float(art3_limit(kind, axles, sda) + spec["over_limit_kg"])
    raise ScenarioError("passage needs gross_kg or over_limit_kg")


# --- background traffic (vectorised) ----------------------------------------------------------------------

def background_legs(ctx: Context, vids: np.ndarray, params: dict) -> dict:
    """Clean day plans for ``vids``: depot → out (rest) → destination (stop) → back (rest) → depot, daytime
    only, every continuous drive < 3 h, ≤ 7.5 h a day, speed ≤ 85 % of the lowest applicable limit.

    Depots are near the seat of the vehicle's county. With background WIM, a truck whose nearest station
    is within ``station_reach_km`` drives out and back through it, and each crossing is a passage
    (``_passages``: vid, station index, epoch s) — so a truck is weighed only where its track is."""
    rng = ctx.rng
    cfg = ctx.cfg
    n_days = max(1, int(np.ceil((ctx.t_end - ctx.t_start) / 86400)))
    day0 = int(datetime.combine(ctx.scn.start.date(), datetime.min.time(), tzinfo=BEIJING).timestamp())
    tl, ta = HUNAN.traffic_lon, HUNAN.traffic_lat
    nv = len(vids)
    depot_lon, depot_lat = depot_points(ctx, vids)
    cats = [ctx.vlist[v].category for v in vids]
    is_goods = np.array([c == "普通货车" for c in cats])
    limit = np.array([ex.speed_limit(c, "other", False, cfg) for c in cats])
    cruise = limit * rng.uniform(0.65, 0.8, size=nv)
    p_active = np.where(is_goods, params.get("truck_active_days", 0.3), params.get("active_days", 0.6))
    active = rng.random((nv, n_days)) < p_active[:, None]
    vi, di = np.nonzero(active)
    m = len(vi)
    # trips leave from 07:00, or just after the span starts when it starts later in the day (a live demo)
    dep = np.maximum(day0 + di * 86400 + 7 * 3600, ctx.t_start + 300) + rng.integers(0, 90 * 60, size=m)
    # a short span (a live demo of a few hours) gets shorter trips, so that whole trips fit in it
    k = min(1.0, max(0.25, ((ctx.t_end - ctx.t_start) / 3600 - 1.0) / 8.0))
    d1 = (rng.uniform(0.75, 2.0, size=m) * 3600 * k).astype(np.int64)
    d2 = (rng.uniform(0.25, 1.0, size=m) * 3600 * k).astype(np.int64)
    r1 = rng.integers(25 * 60, 45 * 60, size=m)
    s2 = (rng.integers(30 * 60, 90 * 60, size=m) * k).astype(np.int64)
    r3 = rng.integers(25 * 60, 45 * 60, size=m)
    sp = cruise[vi]
    # the home station of each truck (nearest, within reach) when the scenario has background WIM
    st_of = np.full(nv, -1)
    stations = list(ctx.reg.stations.values())
    if params.get("background_wim", False) and stations:
        trucks = np.array([ctx.vlist[v].vehicle_kind in ("truck", "train") for v in vids], dtype=bool)
        s_lon = np.array([s.lon for s in stations])
        s_lat = np.array([s.lat for s in stations])
        dist = haversine_km(depot_lon[:, None], depot_lat[:, None], s_lon[None, :], s_lat[None, :])
        best = np.argmin(dist, axis=1)
        reach = float(params.get("station_reach_km", 40.0))
        st_of = np.where(trucks & (dist[np.arange(nv), best] <= reach), best, -1)
    via = st_of[vi] >= 0
    s_pt = (np.where(via, [stations[i].lon if i >= 0 else 0.0 for i in st_of[vi]], depot_lon[vi]),
            np.where(via, [stations[i].lat if i >= 0 else 0.0 for i in st_of[vi]], depot_lat[vi]))
    dS = np.where(via, np.round(haversine_km(depot_lon[vi], depot_lat[vi], *s_pt) / np.maximum(sp, 1) * 3600),
                  0).astype(np.int64)
    inside = (dep >= ctx.t_start) & (dep + 2 * dS + 2 * d1 + 2 * d2 + r1 + s2 + r3 <= ctx.t_end)
    vi, di, dep, d1, d2, r1, s2, r3, sp, via, dS = (a[inside] for a in (vi, di, dep, d1, d2, r1, s2, r3, sp, via, dS))
    s_pt = (s_pt[0][inside], s_pt[1][inside])
    m = len(vi)
    c_lon, c_lat = (tl[0] + tl[1]) / 2, (ta[0] + ta[1]) / 2
    p0 = (depot_lon[vi], depot_lat[vi])
    toward = np.degrees(np.arctan2((c_lon - p0[0]) * np.cos(np.radians(p0[1])), c_lat - p0[1])) % 360
    brg = toward + rng.uniform(-60, 60, size=m)
    p1 = destination(s_pt[0], s_pt[1], brg, sp * d1 / 3600)
    p1 = (np.clip(p1[0], *tl), np.clip(p1[1], *ta))
    p2 = destination(p1[0], p1[1], brg, sp * d2 / 3600)
    p2 = (np.clip(p2[0], *tl), np.clip(p2[1], *ta))
    # trip legs in time order
    t = dep.copy()
    legs: list[tuple] = []
    itv, pitv = ctx.interval, ctx.parked_interval
    vid = vids[vi]
    jit = 0.03

    def add(t0, dur, i, a, b, speed, acc):
        legs.append((vid, t0, dur, np.full(m, i), a[0], a[1], b[0], b[1], speed, np.full(m, acc), np.full(m, jit),
                     np.zeros(m, dtype=np.int64)))

    add(t, dS, itv, p0, s_pt, sp, True); t = t + dS       # to the home station (none: dS = 0, dropped)
    pass_out = t.copy()
    add(t, d1, itv, s_pt, p1, sp, True); t = t + d1
    add(t, r1, pitv, p1, p1, np.zeros(m), False); t = t + r1
    add(t, d2, itv, p1, p2, sp, True); t = t + d2
    add(t, s2, pitv, p2, p2, np.zeros(m), False); t = t + s2
    add(t, d2, itv, p2, p1, sp, True); t = t + d2
    add(t, r3, pitv, p1, p1, np.zeros(m), False); t = t + r3
    add(t, d1, itv, p1, s_pt, sp, True); t = t + d1
    pass_back = t.copy()
    add(t, dS, itv, s_pt, p0, sp, True); t = t + dS
    trip_end = t
    # parked legs at the depot between trips (and before the first / after the last)
    order = np.lexsort((dep, vi))
    park_from, park_to, park_v = [], [], []
    vs, ds, es = vi[order], dep[order], trip_end[order]
    first_of = np.r_[True, vs[1:] != vs[:-1]][: len(vs)]   # [: len] keeps both empty when no trip fits
    prev_end = np.where(first_of, ctx.t_start, np.r_[0, es[:-1]][: len(vs)])
    park_from.append(prev_end); park_to.append(ds); park_v.append(vs)
    last_of = np.r_[vs[1:] != vs[:-1], True][: len(vs)]
    park_from.append(es[last_of]); park_to.append(np.full(int(last_of.sum()), ctx.t_end)); park_v.append(vs[last_of])
    idle = np.setdiff1d(np.arange(nv), vi)
    park_from.append(np.full(len(idle), ctx.t_start)); park_to.append(np.full(len(idle), ctx.t_end)); park_v.append(idle)
    pf, pt, pv = np.concatenate(park_from), np.concatenate(park_to), np.concatenate(park_v)
    keep = pt > pf
    pf, pt, pv = pf[keep], pt[keep], pv[keep]
    idle_itv = int(params.get("idle_interval_s", pitv))
    cols = {k: [] for k in ("vid", "t0", "dur", "interval", "lon0", "lat0", "lon1", "lat1", "speed", "acc",
                            "jitter", "alarm")}
    for L in legs:
        for k, arr in zip(cols, L):
            cols[k].append(np.asarray(arr))
    np_ = len(pv)
    for k, arr in zip(cols, (vids[pv], pf, pt - pf, np.full(np_, idle_itv), depot_lon[pv], depot_lat[pv],
                             depot_lon[pv], depot_lat[pv], np.zeros(np_), np.zeros(np_, dtype=bool),
                             np.zeros(np_), np.zeros(np_, dtype=np.int64))):
        cols[k].append(arr)
    out = {k: np.concatenate(v) for k, v in cols.items()}
    keep = out["dur"] > 0
    out = {k: v[keep] for k, v in out.items()}
    for k, dt in (("vid", np.int64), ("t0", np.int64), ("dur", np.int64), ("interval", np.int64),
                  ("acc", np.bool_), ("alarm", np.int64)):
        out[k] = out[k].astype(dt)
    caps = np.zeros(len(ctx.vlist))
    caps[vids] = limit * 0.85
    out["_caps"] = caps
    w = np.flatnonzero(via)
    out["_passages"] = (np.r_[vid[w], vid[w]], np.r_[st_of[vi[w]], st_of[vi[w]]], np.r_[pass_out[w], pass_back[w]])
    return out


def depot_points(ctx: Context, vids) -> tuple[np.ndarray, np.ndarray]:
    """Each vehicle's depot: 0–15 km from the seat of its county (inside the traffic area)."""
    box = (HUNAN.traffic_lon, HUNAN.traffic_lat)
    pts = [near(HUNAN, ctx.vlist[v].county, ctx.rng, 0.0, 15.0, box) for v in vids]
    return np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)


# --- build ------------------------------------------------------------------------------------------------

def build(scn: Scenario, cfg: Config, images_dir: Path | None = None) -> Built:
    t_gen = _time.perf_counter()
    ctx = Context(scn, cfg, images_dir)
    raw = scn.raw
    fl = ctx.fleet
    rng = ctx.rng

    # scripted behaviours, per vehicle in time order
    per_vehicle: dict[str, list] = defaultdict(list)
    wim_only = []
    for b in raw.get("behaviour", []):
        alias = b.get("vehicle")
        if alias is None:
            if b["kind"] != "passage":
                raise ScenarioError(f"behaviour {b['kind']!r} needs a vehicle alias")
            wim_only.append(b)
            continue
        if alias not in ctx.aliases:
            raise ScenarioError(f"behaviour {b['kind']!r}: unknown vehicle alias {alias!r}")
        per_vehicle[alias].append(b)
    tracks: list[Track] = []
    for alias, specs in per_vehicle.items():
        plate = ctx.aliases[alias]
        veh = ctx.reg.vehicles[plate]
        vspec = next(v for v in raw.get("vehicle", []) if v.get("alias") == alias)
        gps_specs = [s for s in specs if s["kind"] in bh.GPS_BEHAVIOURS]
        gps_on = vspec.get("gps", True)
        for s in specs:
            if s["kind"] == "passage":
                bh.passage(ctx, s, None, veh)
            elif s["kind"] == "route" and not gps_on:       # no terminal: weighed on the way, no track
                icpt.route(ctx, s, None, veh)
        if not gps_specs or not gps_on:
            continue
        gps_specs.sort(key=ctx.when)
        home = vspec.get("home")
        if home is None:
            home = (icpt.route_home(ctx, gps_specs[0]) if gps_specs[0]["kind"] == "route"
                    else bh.home_hint(ctx, gps_specs[0]))
        if home is None:
            home = (float(rng.uniform(*HUNAN.traffic_lon)), float(rng.uniform(*HUNAN.traffic_lat)))
        tr = Track(ctx.vid_of[plate], ctx.t_start, home[0], home[1], ctx.interval, ctx.parked_interval)
        first = ctx.when(gps_specs[0])
        if vspec.get("driver_card", True):
            ctx.events.append({"plate": plate, "terminal_id": veh.terminal_id,
                               "ts": format_ts(datetime.fromtimestamp(first - 60, tz=BEIJING)), "event": "login",
                               "driver_id": veh.driver_id, "driver_name": ctx.reg.drivers[veh.driver_id].name})
        for s in gps_specs:
            t = ctx.when(s)
            if t < tr.t:
                raise ScenarioError(f"vehicle {alias}: behaviour {s['kind']!r} at {s.get('at')} overlaps the previous one")
            if t > tr.t:
                tr.stop(t - tr.t)
            bh.BEHAVIOURS[s["kind"]](ctx, s, tr, veh)
        if tr.t < ctx.t_end:
            tr.stop(ctx.t_end - tr.t)
        tracks.append(tr)
    for s in wim_only:
        bh.passage(ctx, s, None, None)

    # background GPS
    bg = fl.get("background_gps", True)
    parts = []
    caps = None
    passages, tracked = None, np.zeros(0, dtype=np.int64)
    if bg:
        silent_rate = float(fl.get("silent_rate", 0.0))
        cand = np.array([i for i, v in enumerate(ctx.vlist) if v.in_network and v.plate not in ctx.scripted],
                        dtype=np.int64)
        if len(cand):
            silent = rng.random(len(cand)) < silent_rate
            bl = background_legs(ctx, cand[~silent], fl)
            caps = bl.pop("_caps")
            passages = bl.pop("_passages")
            tracked = cand[~silent]
            parts.append(expand_legs(bl, rng))
    for tr in tracks:
        parts.append(expand_legs(tr.legs.arrays(), rng))
    cols = concat(parts)
    if cols:
        if caps is not None:
            bgm = caps[cols["vid"]] > 0
            cols["speed_kmh"] = np.where(bgm, np.minimum(cols["speed_kmh"], caps[cols["vid"]]), cols["speed_kmh"])
        cols = take(cols, np.lexsort((cols["ts"], cols["vid"])))
        in_order_receipt(cols)
        for hook in ctx.post:
            cols = hook(cols)
        if bg:
            cols = background_faults(ctx, cols, fl)
        cols = sort_by_receipt(cols)

    # background WIM
    if fl.get("background_wim", False):
        background_wim(ctx, fl, passages, tracked)
    derive_wim(ctx)
    icpt.derive(ctx)
    derive_rates(ctx, cols, fl)

    # explicit expectations (override derived ones with the same identity)
    ctx.expect = merge_expectations(ctx.expect, explicit_expectations(ctx, raw.get("expect", {})))

    parts_n = cfg["stream.partitions"]
    vinfo = [(v.plate, v.plate_color, v.terminal_id or "0", v.driver_id or None) for v in ctx.vlist]
    ping_recs = ping_records(cols, vinfo, parts_n, cfg["stream.batch_max_pings"],
                             float(raw["scenario"].get("flush_s", 5.0))) if cols else []
    wim_recs = []
    settle = bool(raw["scenario"].get("settle_before_scripted_wim", True))
    for r in sorted(ctx.readings, key=lambda r: (r["ts"], r["reading_id"])):
        ts_ms = int(datetime.fromisoformat(r["ts"]).timestamp() * 1000) + 2000
        wim_recs.append(wim_record(public(r), parts_n, ts_ms, barrier=settle and "_truth" not in r))
    ev_recs = [driver_record(e, parts_n, int(datetime.fromisoformat(e["ts"]).timestamp() * 1000)) for e in ctx.events]
    records = merge(ev_recs, ping_recs, wim_recs)
    n_pings = int(len(cols["vid"])) if cols else 0
    stats = {"pings": n_pings, "ping_records": len(ping_recs), "wim_readings": len(wim_recs),
             "driver_events": len(ev_recs), "vehicles": len(ctx.reg.vehicles),
             "stations": len(ctx.reg.stations), "generate_s": round(_time.perf_counter() - t_gen, 2)}
    return Built(ctx.reg, records, ctx.expect, dict(ctx.aliases), stats, cols, ctx.readings, ctx.field_outcomes)


def in_order_receipt(cols: dict) -> None:
    """A terminal's fixes reach the platform in the order it sent them (one TCP connection): receipt times
    made non-decreasing per vehicle (``cols`` sorted by vehicle, then fix time). Without this, a
    state-change fix 1 s after the previous one could be received first — an out-of-order pair no
    terminal produces unless a scenario scripts it (re-uploads do, after this step)."""
    if len(cols["vid"]) == 0:
        return
    span = np.int64(1) << np.int64(40)          # > any epoch second: keeps each vehicle's run separate
    key = cols["vid"].astype(np.int64) * span + cols["recv_ts"].astype(np.int64)
    cols["recv_ts"] = np.maximum.accumulate(key) - cols["vid"].astype(np.int64) * span


def background_faults(ctx: Context, cols: dict, fl: dict) -> dict:
    """Province-style noise on background vehicles: drifted fixes and unqualified values at given rates."""
    rng = ctx.rng
    bgmask = ~np.isin(cols["vid"], [ctx.vid_of[p] for p in ctx.scripted])
    moving = np.flatnonzero(bgmask & (cols["speed_kmh"] > 0))
    n_drift_veh = int(float(fl.get("drift_vehicle_rate", 0.0)) * len(np.unique(cols["vid"][bgmask])))
    drifted = np.zeros(0, dtype=np.int64)
    if n_drift_veh and len(moving):
        movers = np.unique(cols["vid"][moving])
        vids = rng.choice(movers, size=min(n_drift_veh, len(movers)), replace=False)
        picked = []
        for v in np.sort(vids):
            idx = moving[cols["vid"][moving] == v]
            picked.append(idx[len(idx) // 2])
        drifted = np.asarray(picked, dtype=np.int64)
        drift(cols, drifted, km=40.0, bearing=225.0)   # south-west: away from the zones' corner
        for i in drifted:    # the derived effect, per vehicle: that day's drift count
            plate = ctx.vlist[int(cols["vid"][i])].plate
            ctx.expect.append({"kind": "vehicle_day", "plate": plate, "day": _day_of(int(cols["ts"][i])),
                               "field": "drift_points", "op": ">=", "value": 1,
                               "why": "one fix displaced 40 km (background drift_vehicle_rate)"})
    rate = float(fl.get("bad_value_rate", 0.0))
    if rate > 0 and len(moving):
        sel = np.setdiff1d(moving[rng.random(len(moving)) < rate], drifted)
        cols["speed_kmh"][sel] = 200.0
    return cols


def _day_of(t: int) -> str:
    return datetime.fromtimestamp(t, tz=BEIJING).strftime("%Y-%m-%d")


def background_wim(ctx: Context, fl: dict, passages: tuple | None, tracked: np.ndarray) -> None:
    """Background WIM readings, one passage at a time where the truck really is: trucks with a GPS track
    are weighed when their trips cross their home station (``background_legs``); trucks without one (not
    in the network, or silent this month) cross the station nearest their county seat on their active
    days, twice, hours apart. Verdicts and case totals are derived by the reference rules."""
    if "wim_per_hour" in fl:
        raise ScenarioError("fleet.wim_per_hour is gone: background passages follow the trucks' trips "
                            "(truck_active_days, station_reach_km — docs/scenarios.md)")
    stations = list(ctx.reg.stations.values())
    if not stations:
        return
    traffic = WimTraffic(overload_rate=float(fl.get("overload_rate", 0.05)), images=str(fl.get("images", "suspect")))
    rng = ctx.rng
    events: list[tuple[int, int, int]] = []           # (t, vid, station index)
    if passages is not None:
        events += list(zip(passages[2].tolist(), passages[0].tolist(), passages[1].tolist()))
    # trucks without a track: their county seat's nearest station, active days drawn like the tracked ones
    tracked_set = set(tracked.tolist())
    untracked = [i for i, v in enumerate(ctx.vlist) if v.vehicle_kind in ("truck", "train")
                 and v.plate not in ctx.scripted and i not in tracked_set]
    if untracked:
        s_lon = np.array([s.lon for s in stations])
        s_lat = np.array([s.lat for s in stations])
        n_days = max(1, int(np.ceil((ctx.t_end - ctx.t_start) / 86400)))
        day0 = int(datetime.combine(ctx.scn.start.date(), datetime.min.time(), tzinfo=BEIJING).timestamp())
        p_active = float(fl.get("truck_active_days", 0.3))
        reach = float(fl.get("station_reach_km", 40.0))
        for i in untracked:
            lon, lat = near(HUNAN, ctx.vlist[i].county, rng, 0.0, 15.0, (HUNAN.traffic_lon, HUNAN.traffic_lat))
            d = haversine_km(lon, lat, s_lon, s_lat)
            k = int(np.argmin(d))
            if d[k] > reach:
                continue
            for day in np.flatnonzero(rng.random(n_days) < p_active):
                t1 = day0 + int(day) * 86400 + 7 * 3600 + int(rng.integers(0, 8 * 3600))
                t2 = t1 + int(rng.integers(2 * 3600, 5 * 3600))
                events += [(t, i, k) for t in (t1, t2) if ctx.t_start <= t < ctx.t_end]
    events.sort()
    seq = 0
    for t, vid, k in events:
        st = stations[k]
        at = datetime.fromtimestamp(t, tz=BEIJING)
        for r in passage_readings(st, ctx.vlist[vid], at, rng, traffic, ctx.images_dir, seq):
            seq += 1
            veh = ctx.reg.vehicles.get(r["plate"])
            at_r = datetime.fromisoformat(r["ts"])
            dev = next(d for d in st.devices if d["device_id"] == r["device_id"])
            ok = datetime.fromisoformat(dev["valid_from"]) <= at_r <= datetime.fromisoformat(dev["valid_to"])
            verdict = ex.reference_verdict(r, veh, st, ctx.cfg, calibration_ok=ok)
            ctx.readings.append(r)
            ctx.passages.append({"reading": r, "verdict": verdict, "t": int(at_r.timestamp()),
                                 "station": st.station_id, "plate": r["plate"], "vehicle": veh,
                                 "duplicate": r["_truth"]["duplicate"], "background": True})


def derive_wim(ctx: Context) -> None:
    """Per-plate verdicts of scripted passages, case totals, and Art. 66 escalations (reference counting)."""
    if not ctx.passages:
        return
    cfg = ctx.cfg
    distinct = ex.distinct_passages(ctx.passages, cfg["overlimit.dedup_window_s"])
    per_plate: dict[str, list] = defaultdict(list)
    totals: dict[str, int] = defaultdict(int)
    for p in distinct:
        v = p["verdict"]
        totals[v["action"]] += 1
        if not p.get("background"):
            per_plate[p["plate"]].append([v["action"], v["fine_yuan"]])
    for plate, acts in per_plate.items():
        ctx.expect.append({"kind": "verdicts", "plate": plate, "actions": sorted(acts),
                           "why": "; ".join(f"{a[0]} {a[1]}" for a in sorted(acts)) + " by the Art. 3/43 reference"})
    for action in ("none", "warning", "fine", "review"):
        ctx.expect.append({"kind": "cases_total", "action": action, "count": totals.get(action, 0),
                           "why": f"{totals.get(action, 0)} distinct passages → {action}"})
    # Art. 66: more than N violations in the window; enterprise share strictly above
    thr = cfg["art66.vehicle_driver_threshold"]
    share = cfg["art66.enterprise_share"]
    window_s = cfg["art66.window_days"] * 86400
    viol: dict[tuple, list] = defaultdict(list)
    esc: dict[tuple, int] = defaultdict(int)
    touched: set = set()
    for p in distinct:
        veh = p["vehicle"]
        if veh is None:
            continue
        ent = ctx.reg.enterprises.get(veh.enterprise_id)
        subjects = [("vehicle", veh.plate), ("driver", veh.driver_id)]
        for s in subjects:
            touched.add(s)
        if ent is not None:
            touched.add(("enterprise", ent.enterprise_id))
        if p["verdict"]["action"] not in ("warning", "fine"):
            continue
        t = p["t"]
        for s in subjects:
            viol[s] = [x for x in viol[s] if x > t - window_s] + [t]
            if len(viol[s]) > thr:
                esc[s] += 1
        if ent is not None:
            key = ("ent_plates", ent.enterprise_id)
            viol[key] = [x for x in viol[key] if x[0] > t - window_s] + [(t, veh.plate)]
            plates = {x[1] for x in viol[key]}
            if ent.goods_vehicles and len(plates) / ent.goods_vehicles > share:
                esc[("enterprise", ent.enterprise_id)] += 1
    scripted = set()
    for p in distinct:
        v = p["vehicle"]
        if v is not None and not p.get("background"):
            scripted |= {("vehicle", v.plate), ("driver", v.driver_id), ("enterprise", v.enterprise_id)}
    for target, sid in sorted(touched & scripted):
        ctx.expect.append({"kind": "escalation", "target": target, "id": sid, "count": esc.get((target, sid), 0),
                           "why": f"cases carrying a {target} escalation (more than {thr} violations"
                                  + (f", or share > {share:.0%}" if target == "enterprise" else "") + ")"})


def derive_rates(ctx: Context, cols: dict, fl: dict) -> None:
    """Monthly rates of the 两客一危 population, computed from the generated fixes by the §5.2 formulas."""
    if not fl.get("derive_rates", False) or not cols:
        return
    cfg = ctx.cfg
    cats = set(cfg["report.categories"])
    pop = [i for i, v in enumerate(ctx.vlist) if v.category in cats]
    in_net = [i for i in pop if ctx.vlist[i].in_network]
    mask = np.isin(cols["vid"], pop)
    online = np.unique(cols["vid"][mask])
    ctx.expect.append({"kind": "rate", "name": "online_rate", "value": float(len(online) / max(1, len(in_net))),
                       "tolerance": float(fl.get("rate_tolerance", 0.005)),
                       "why": f"{len(online)} of {len(in_net)} in-network 两客一危 vehicles report"})
    c = take(cols, np.flatnonzero(mask))
    lo, hi = cfg["quality.speed_range_kmh"]
    bad = (c["speed_kmh"] < lo) | (c["speed_kmh"] > hi)
    ctx.expect.append({"kind": "rate", "name": "quality_rate", "value": float(1 - bad.sum() / max(1, len(bad))),
                       "tolerance": float(fl.get("rate_tolerance", 0.005)),
                       "why": f"{int(bad.sum())} unqualified of {len(bad)} fixes"})
    # drift (§5.2 proposal): between consecutive *qualified* fixes, implied speed > drift.v_max_kmh, or a jump
    # > drift.stationary_jump_km while the fix reports speed ≤ drift.stationary_speed_kmh, the two fixes at
    # most drift.stationary_jump_max_s apart (0 = no time bound; docs/legal-basis.md §6)
    c = take(c, np.lexsort((c["ts"], c["vid"])))
    c = take(c, np.flatnonzero(~((c["speed_kmh"] < lo) | (c["speed_kmh"] > hi))))
    d = haversine_km(c["lon"][:-1], c["lat"][:-1], c["lon"][1:], c["lat"][1:])
    dt = np.maximum(np.diff(c["ts"]), 1)
    same = c["vid"][1:] == c["vid"][:-1]
    jump = (c["speed_kmh"][1:] <= cfg["drift.stationary_speed_kmh"]) & (d > cfg["drift.stationary_jump_km"])
    if cfg["drift.stationary_jump_max_s"] > 0:
        jump &= dt <= cfg["drift.stationary_jump_max_s"]
    fast = same & ((d / dt * 3600 > cfg["drift.v_max_kmh"]) | jump)
    drift_veh = np.unique(c["vid"][1:][fast])
    ctx.expect.append({"kind": "rate", "name": "drift_rate", "value": float(len(drift_veh) / max(1, len(online))),
                       "tolerance": float(fl.get("rate_tolerance", 0.005)),
                       "why": f"{len(drift_veh)} drifting of {len(online)} online vehicles"})
    # track completeness over qualified, non-drifted fixes: gaps > track.gap_s and > track.gap_km
    keep = np.ones(len(c["vid"]), dtype=bool)
    keep[1:][fast] = False
    lo_s, hi_s = cfg["quality.speed_range_kmh"]
    keep &= (c["speed_kmh"] >= lo_s) & (c["speed_kmh"] <= hi_s)
    k = take(c, np.flatnonzero(keep))
    d = haversine_km(k["lon"][:-1], k["lat"][:-1], k["lon"][1:], k["lat"][1:])
    dt = np.diff(k["ts"])
    same = k["vid"][1:] == k["vid"][:-1]
    total = float(d[same].sum())
    gap = same & (dt > cfg["track.gap_s"]) & (d > cfg["track.gap_km"])
    ctx.expect.append({"kind": "rate", "name": "track_rate", "value": 1.0 - float(d[gap].sum()) / max(total, 1e-9),
                       "tolerance": float(fl.get("rate_tolerance", 0.005)),
                       "why": f"{float(d[gap].sum()):.1f} km in gaps of {total:,.0f} km"})


def explicit_expectations(ctx: Context, raw: dict) -> list[dict]:
    out = []

    def plate_of(e):
        if "vehicle" in e:
            if e["vehicle"] not in ctx.aliases:
                raise ScenarioError(f"expectation refers to unknown vehicle alias {e['vehicle']!r}")
            return ctx.aliases[e["vehicle"]]
        return e.get("plate")
    for e in raw.get("alert", []):
        out.append(ex.alert(e["type"], plate_of(e), e.get("count", 1), e.get("why", "stated in the scenario"),
                            **({"from": e["from"]} if "from" in e else {}), **({"to": e["to"]} if "to" in e else {})))
    for e in raw.get("verdicts", []):
        out.append({"kind": "verdicts", "plate": plate_of(e), "actions": sorted([list(a) for a in e["actions"]]),
                    "why": e.get("why", "stated in the scenario")})
    for e in raw.get("cases_total", []):
        out.append({"kind": "cases_total", "action": e["action"], "count": int(e["count"]),
                    "why": e.get("why", "stated in the scenario")})
    for e in raw.get("escalation", []):
        sid = e.get("id") or (plate_of(e) if e["target"] == "vehicle" else
                              ctx.ent_alias.get(e.get("enterprise"), e.get("enterprise")))
        out.append({"kind": "escalation", "target": e["target"], "id": sid, "count": int(e["count"]),
                    "why": e.get("why", "stated in the scenario")})
    for e in raw.get("vehicle_day", []):
        out.append({"kind": "vehicle_day", "plate": plate_of(e), "day": e["day"], "field": e["field"],
                    "op": e.get("op", "="), "value": e["value"], "tolerance": e.get("tolerance", 0),
                    "why": e.get("why", "stated in the scenario")})
    for e in raw.get("rate", []):
        out.append({"kind": "rate", "name": e["name"], "value": float(e["value"]),
                    "tolerance": float(e.get("tolerance", 0.005)), "why": e.get("why", "stated in the scenario")})
    for e in raw.get("source_site", []):
        out.append({"kind": "source_site", "plate": plate_of(e), "site_id": e.get("site_id"),
                    "why": e.get("why", "stated in the scenario")})
    return out


def identity(e: dict) -> tuple:
    k = e["kind"]
    if k == "alert":
        return (k, e["type"], e["plate"])
    if k in ("verdicts", "source_site"):
        return (k, e["plate"])
    if k == "cases_total":
        return (k, e["action"])
    if k == "escalation":
        return (k, e["target"], e["id"])
    if k == "vehicle_day":
        return (k, e["plate"], e["day"], e["field"])
    if k == "rate":
        return (k, e["name"])
    return (k, repr(e))


def merge_expectations(derived: list[dict], explicit: list[dict]) -> list[dict]:
    """Sum derived alert counts per (type, plate); explicit expectations replace derived ones."""
    out: dict[tuple, dict] = {}
    for e in derived:
        key = identity(e)
        if key in out and e["kind"] == "alert":
            prev = out[key]
            out[key] = dict(prev, count=prev["count"] + e["count"], why=prev["why"] + "; " + e["why"])
        else:
            out[key] = e
    for e in explicit:
        out[identity(e)] = dict(e, explicit=True)
    return list(out.values())
