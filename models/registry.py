"""The registry file: enterprises, vehicles, drivers, cargo-source sites, zones, WIM stations, mobile units.

One JSON document (docs/formats.md#registry) written by the fleet generator or exported from 运政 data.
Loading validates every entry and raises ``RegistryError`` naming the entry and field at fault.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .devices import check_device
from .mobile import check_deployments, index_deployments
from .notices import AGENCY_ID_RE
from .records import (CATEGORIES, Driver, Enterprise, InvalidRecord, MobileUnit, PLATE_COLORS, SourceSite,
                      Station, Vehicle, Zone, parse_ts)
from .registry_error import RegistryError      # its own module: the command line catches it without Faust

# wim: a weigh-in-motion 非现场执法点; checkpoint: a 超限检测站 (fixed enforcement station that stops trucks)
STATION_KINDS = ("wim", "checkpoint")
MAX_REGISTRY_BYTES = 512 * 1024 * 1024
SECTIONS = ("enterprises", "drivers", "vehicles", "source_sites", "zones", "stations", "mobile_units")
# every top-level key a registry may hold: a misspelt one (e.g. "vehicle") would silently drop its entries
TOP_LEVEL_KEYS = ("region", *SECTIONS, "permits")      # permits: read by models/permits.py


@dataclass
class Registry:
    enterprises: dict[str, Enterprise] = field(default_factory=dict)
    vehicles: dict[str, Vehicle] = field(default_factory=dict)      # by plate
    drivers: dict[str, Driver] = field(default_factory=dict)
    source_sites: dict[str, SourceSite] = field(default_factory=dict)
    zones: dict[str, Zone] = field(default_factory=dict)
    stations: dict[str, Station] = field(default_factory=dict)
    mobile_units: dict[str, MobileUnit] = field(default_factory=dict)   # models/mobile.py
    region: str = ""
    # the document's ``permits`` entries as read: models/permits.py ``registry_permits`` checks and parses them
    permits: list = field(default_factory=list)

    def vehicle(self, plate: str) -> Vehicle | None:
        return self.vehicles.get(plate)

    def station_device(self, station_id: str, device_id: str) -> dict | None:
        """The device entry of a fixed station, or of a mobile unit (``station_id`` = its unit id)."""
        unit = self.mobile_units.get(station_id)
        if unit is not None:
            return unit.device if unit.device.get("device_id") == device_id else None
        st = self.stations.get(station_id)
        if st is None:
            return None
        for dev in st.devices:
            if dev.get("device_id") == device_id:
                return dev
        return None

    def point_name(self, point_id: str) -> str:
        """Name of a fixed station or mobile unit (the id itself when the registry has neither)."""
        p = self.stations.get(point_id) or self.mobile_units.get(point_id)
        return p.name if p is not None else point_id

    def point_names(self) -> dict[str, str]:
        """Weighing point id → name, fixed stations and mobile units (report and console rows)."""
        return {**{u: m.name for u, m in self.mobile_units.items()}, **{s: st.name for s, st in self.stations.items()}}

    def deployment_index(self, unit_id: str) -> tuple[list[int], list[dict]] | None:
        """A unit's deployments sorted by start (models/mobile.py), built once per unit."""
        unit = self.mobile_units.get(unit_id)
        if unit is None:
            return None
        cache = self.__dict__.setdefault("_roadwatch_deployments", {})
        key = id(unit.deployments), len(unit.deployments)
        hit = cache.get(unit_id)
        if hit is None or hit[0] != key:
            hit = cache[unit_id] = (key, index_deployments(unit.deployments))
        return hit[1]

    def to_dict(self) -> dict:
        extra = {"mobile_units": [u.asdict() for u in self.mobile_units.values()]} if self.mobile_units else {}
        if self.permits:
            extra["permits"] = self.permits
        return {
            "region": self.region,
            "enterprises": [e.asdict() for e in self.enterprises.values()],
            "vehicles": [v.asdict() for v in self.vehicles.values()],
            "drivers": [d.asdict() for d in self.drivers.values()],
            "source_sites": [s.asdict() for s in self.source_sites.values()],
            "zones": [z.asdict() for z in self.zones.values()],
            "stations": [s.asdict() for s in self.stations.values()],
            **extra,
        }

    def dump(self, path: str | Path) -> None:
        Path(path).write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))


def _polygon(entry: dict, where: str) -> list:
    poly = entry.get("polygon")
    if not isinstance(poly, list) or len(poly) < 3:
        raise RegistryError(f"{where}: polygon must list at least 3 [lon, lat] points")
    for pt in poly:
        if (not isinstance(pt, list) or len(pt) != 2
                or any(isinstance(c, bool) or not isinstance(c, (int, float)) for c in pt)
                or not (-180 <= pt[0] <= 180 and -90 <= pt[1] <= 90)):
            raise RegistryError(f"{where}: polygon point {pt!r} is not [lon, lat] in degrees")
    return poly


# a field's JSON type by the base of its annotation (faust stores ``list`` fields as ``typing.List``);
# annotations of other types are not checked here
_TYPE_CHECKS = {
    str: lambda v: isinstance(v, str),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    bool: lambda v: isinstance(v, bool),
    list: lambda v: isinstance(v, list),
}


class _Shape(typing.NamedTuple):
    known: frozenset            # the record's field names
    checks: tuple               # (name, check) of each field whose JSON type is checked
    required: tuple             # fields without a default
    defaults: tuple | None      # (name, default) of the others; None: the record is built by Faust's __init__


_SHAPES: dict[type, _Shape] = {}      # worked out once per record class


def _stores_only(cls) -> bool:
    """Faust's generated ``__init__`` only stores each value (a default for an optional field given None),
    through one descriptor call per field, when no field coerces, is tagged or is evaluated lazily and the
    class neither validates nor has a ``__post_init__``. Half of a 100 000-vehicle registry's load was
    those calls."""
    o = cls._options
    return not (o.validation or hasattr(cls, "__post_init__") or
                any(d.coerce or d.tag or d.lazy_coercion for d in o.descriptors.values()))


def _shape(cls) -> _Shape:
    """Worked out once per record class: a registry of a province's fleet builds tens of thousands."""
    shape = _SHAPES.get(cls)
    if shape is None:
        o = cls._options
        checks = []
        for name, typ in o.fields.items():
            base = list if typ is typing.List else (typing.get_origin(typ) or typ)
            if base in _TYPE_CHECKS:
                checks.append((name, _TYPE_CHECKS[base]))
        order = list(o.fieldpos.values())
        shape = _SHAPES[cls] = _Shape(
            frozenset(o.fieldset), tuple(checks), tuple(f for f in order if f not in o.optionalset),
            tuple((f, o.defaults[f]) for f in order if f in o.optionalset) if _stores_only(cls) else None)
    return shape


def _build(cls, entry: Any, where: str):
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: expected an object")
    shape = _shape(cls)
    if not shape.known.issuperset(entry):
        raise RegistryError(f"{where}: unknown field(s) {sorted(set(entry) - shape.known)}")
    if shape.defaults is None:
        try:
            rec = cls(**entry)
        except TypeError as e:
            raise RegistryError(f"{where}: {e}") from None
        values = rec.__dict__
    else:
        # what ``cls(**entry)`` stores, in its order (tests/test_foundation_registry.py compares the two), one
        # key at a time into the record's own dict: it then shares its keys with the class's other records, as
        # Faust's do (a copied dict would hold its own: a vehicle's dict 832 B instead of 280, sys.getsizeof)
        missing = [f for f in shape.required if f not in entry]
        if missing:
            raise RegistryError(f"{where}: missing required field(s) {missing}")
        rec = object.__new__(cls)
        values = rec.__dict__
        values["__evaluated_fields__"] = set()
        for f in shape.required:
            values[f] = entry[f]
        for f, default in shape.defaults:
            v = entry.get(f)
            values[f] = default if v is None else v
    for name, ok in shape.checks:
        v = values[name]
        if not ok(v):
            raise RegistryError(f"{where}: field {name} has the wrong type ({type(v).__name__})")
    return rec

def _unique(seen: dict, key: str, where: str, name: str) -> None:
    """Ids are unique per kind: a second entry with the same id would silently replace the first."""
    if key in seen:
        raise RegistryError(f"{where}: duplicate {name} {key!r}")


def _in_range(rec, name: str, lo: float, hi: float, where: str) -> None:
    v = getattr(rec, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise RegistryError(f"{where}: {name} must lie in [{lo}, {hi}], got {v!r}")


def parse_registry(data: dict) -> Registry:
    if not isinstance(data, dict):
        raise RegistryError("registry must be a JSON object")
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:       # a misspelt "vehicle" would otherwise leave every plate unknown
        raise RegistryError(f"unknown top-level key(s) {unknown}: a registry holds only {list(TOP_LEVEL_KEYS)}")
    if not isinstance(data.get("region", ""), str):
        raise RegistryError("region must be a string")
    reg = Registry(region=data.get("region", ""), permits=data.get("permits", []))
    for section in SECTIONS:
        if not isinstance(data.get(section, []), list):
            raise RegistryError(f"{section} must be a list of objects")
    for i, e in enumerate(data.get("enterprises", [])):
        ent = _build(Enterprise, e, f"enterprises[{i}]")
        _in_range(ent, "goods_vehicles", 0, 10_000_000, f"enterprises[{i}]")
        _unique(reg.enterprises, ent.enterprise_id, f"enterprises[{i}]", "enterprise_id")
        reg.enterprises[ent.enterprise_id] = ent
    for i, e in enumerate(data.get("drivers", [])):
        d = _build(Driver, e, f"drivers[{i}]")
        _unique(reg.drivers, d.driver_id, f"drivers[{i}]", "driver_id")
        reg.drivers[d.driver_id] = d
    terminals: dict[str, str] = {}
    for i, e in enumerate(data.get("vehicles", [])):
        v = _build(Vehicle, e, f"vehicles[{i}]")
        where = f"vehicles[{i}] ({v.plate})"
        if v.category not in CATEGORIES:
            raise RegistryError(f"{where}: category must be one of {CATEGORIES}")
        if v.plate_color not in PLATE_COLORS:
            raise RegistryError(f"{where}: plate_color {v.plate_color} is not a JT/T 415 code")
        if v.vehicle_kind not in ("truck", "train", "bus"):
            raise RegistryError(f"{where}: vehicle_kind must be truck, train or bus")
        if not 2 <= v.axle_count <= 12:
            raise RegistryError(f"{where}: axle_count must be 2–12")
        for name in ("registered_total_kg", "rated_load_kg", "curb_kg"):
            _in_range(v, name, 0, 200_000, where)
        _in_range(v, "single_tyre_axles", 0, 12, where)
        _in_range(v, "route_km", 0, 10_000, where)
        if v.enterprise_id and v.enterprise_id not in reg.enterprises:
            raise RegistryError(f"{where}: unknown enterprise_id {v.enterprise_id!r}")
        if v.home_agency and not AGENCY_ID_RE.match(v.home_agency):
            raise RegistryError(f"{where}: home_agency must be an agency id (1–64 letters, digits, '_', '.', '-')")
        if v.plate in reg.vehicles:
            raise RegistryError(f"{where}: duplicate plate")
        if v.terminal_id:
            # one terminal, one vehicle: otherwise A's positions would be mapped to B
            other = terminals.setdefault(v.terminal_id, v.plate)
            if other != v.plate:
                raise RegistryError(f"{where}: terminal_id {v.terminal_id!r} already belongs to {other}")
        reg.vehicles[v.plate] = v
    for i, e in enumerate(data.get("source_sites", [])):
        s = _build(SourceSite, e, f"source_sites[{i}]")
        _polygon(e, f"source_sites[{i}]")
        _unique(reg.source_sites, s.site_id, f"source_sites[{i}]", "site_id")
        reg.source_sites[s.site_id] = s
    for i, e in enumerate(data.get("zones", [])):
        z = _build(Zone, e, f"zones[{i}]")
        _polygon(e, f"zones[{i}]")
        _unique(reg.zones, z.zone_id, f"zones[{i}]", "zone_id")
        reg.zones[z.zone_id] = z
    devices: dict[str, str] = {}
    for i, e in enumerate(data.get("stations", [])):
        s = _build(Station, e, f"stations[{i}]")
        _unique(reg.stations, s.station_id, f"stations[{i}]", "station_id")
        _in_range(s, "lat", -90, 90, f"stations[{i}]")
        _in_range(s, "lon", -180, 180, f"stations[{i}]")
        _in_range(s, "lanes", 0, 64, f"stations[{i}]")
        if s.tolerance is not None:
            _in_range(s, "tolerance", 0, 0.2, f"stations[{i}]")   # the range of overlimit.filing_tolerance
        for j, dev in enumerate(s.devices):
            _device(dev, f"stations[{i}].devices[{j}]", f"station {s.station_id}", devices)
        if s.kind not in STATION_KINDS:
            raise RegistryError(f"stations[{i}] ({s.station_id}): kind must be one of {STATION_KINDS}")
        reg.stations[s.station_id] = s
    _check_road_graph(reg)
    _mobile_units(data.get("mobile_units", []), reg, devices)
    return reg


def _device(dev, where: str, owner: str, devices: dict[str, str]) -> None:
    """One weighing device (a station's or a mobile unit's): an id unique across the registry, parseable
    certificate dates, the description and approval records (models/devices.py)."""
    if not isinstance(dev, dict) or not isinstance(dev.get("device_id"), str):
        raise RegistryError(f"{where}: needs device_id")
    if dev["device_id"] in devices:
        raise RegistryError(f"{where}: duplicate device_id {dev['device_id']!r} (also at {devices[dev['device_id']]})")
    devices[dev["device_id"]] = owner
    for k in ("valid_from", "valid_to"):
        if dev.get(k) is not None:
            try:
                parse_ts(dev[k], k)
            except InvalidRecord as err:
                raise RegistryError(f"{where}: {err.detail}") from None
    problem = check_device(dev)      # device type, road, approval records (models/devices.py)
    if problem:
        raise RegistryError(f"{where} ({dev['device_id']}): {problem}")


def _mobile_units(entries: list, reg: Registry, devices: dict[str, str]) -> None:
    """Mobile units: ids unique across stations and units (a reading names either in ``station_id``), one
    device through the same checks as a station's (models/devices.py), deployments (models/mobile.py)."""
    for i, e in enumerate(entries):
        u = _build(MobileUnit, e, f"mobile_units[{i}]")
        where = f"mobile_units[{i}] ({u.unit_id})"
        _unique(reg.mobile_units, u.unit_id, where, "unit_id")
        if u.unit_id in reg.stations:
            raise RegistryError(f"{where}: unit_id is also a station id (a reading names one of them)")
        _in_range(u, "lanes", 0, 64, where)
        if u.tolerance is not None:
            _in_range(u, "tolerance", 0, 0.2, where)
        dev = u.device
        _device(dev, f"{where}.device", f"mobile unit {u.unit_id}", devices)
        problem = None
        if dev.get("device_type", "mobile") != "mobile":
            problem = "device_type must be mobile"
        elif (dev.get("approval") or {}).get("announcement"):
            problem = "approval.announcement belongs on each deployment (its location is what is announced)"
        if problem:
            raise RegistryError(f"{where}.device ({dev['device_id']}): {problem}")
        problem = check_deployments(u.deployments, reg.stations)
        if problem:
            raise RegistryError(f"{where}: {problem}")
        reg.mobile_units[u.unit_id] = u
    ids: dict[str, str] = {}
    for u in reg.mobile_units.values():
        for d in u.deployments:
            other = ids.setdefault(d["deployment_id"], u.unit_id)
            if other != u.unit_id or sum(x["deployment_id"] == d["deployment_id"] for x in u.deployments) > 1:
                raise RegistryError(f"mobile_units ({u.unit_id}): duplicate deployment_id {d['deployment_id']!r}")


def _check_road_graph(reg: Registry) -> None:
    """Each station's ``downstream`` neighbours: known station ids, a finite road distance > 0, no self-loop
    and no neighbour listed twice (the intercept planner walks this graph, models/intercept.py)."""
    for i, s in enumerate(reg.stations.values()):
        where = f"stations[{i}] ({s.station_id})"
        seen: set[str] = set()
        for j, edge in enumerate(s.downstream):
            w = f"{where}.downstream[{j}]"
            if not isinstance(edge, dict) or set(edge) != {"station", "km"}:
                raise RegistryError(f"{w}: expected {{\"station\": <station id>, \"km\": <road distance>}}")
            to, km = edge["station"], edge["km"]
            if not isinstance(to, str) or to not in reg.stations:
                raise RegistryError(f"{w}: unknown station {to!r}")
            if to == s.station_id:
                raise RegistryError(f"{w}: a station cannot be its own downstream neighbour")
            if to in seen:
                raise RegistryError(f"{w}: {to!r} listed twice")
            seen.add(to)
            if isinstance(km, bool) or not isinstance(km, (int, float)) or not math.isfinite(km) or not 0 < km <= 2000:
                raise RegistryError(f"{w}: km must be a road distance in (0, 2000], got {km!r}")


def load_registry(path: str | Path | None) -> Registry:
    """Empty registry for ``None`` (every plate is then unknown → review)."""
    if path is None:
        return Registry()
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise RegistryError(f"cannot read registry {p}: {e.strerror}") from None
    if len(raw) > MAX_REGISTRY_BYTES:
        raise RegistryError(f"registry {p} is larger than {MAX_REGISTRY_BYTES} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise RegistryError(f"registry {p} is not valid JSON: {e}") from None
    return parse_registry(data)
