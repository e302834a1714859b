"""The registry file: enterprises, vehicles, drivers, cargo-source sites, zones, WIM stations.

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
from .records import (CATEGORIES, Driver, Enterprise, InvalidRecord, PLATE_COLORS, SourceSite, Station,
                      Vehicle, Zone, parse_ts)

# wim: a weigh-in-motion 非现场执法点; checkpoint: a 超限检测站 (fixed enforcement station that stops trucks)
STATION_KINDS = ("wim", "checkpoint")
MAX_REGISTRY_BYTES = 512 * 1024 * 1024
SECTIONS = ("enterprises", "drivers", "vehicles", "source_sites", "zones", "stations")
# every top-level key a registry may hold: a misspelt one (e.g. "vehicle") would silently drop its entries
TOP_LEVEL_KEYS = ("region", *SECTIONS, "permits")      # permits: read by models/permits.py


class RegistryError(ValueError):
    pass


@dataclass
class Registry:
    enterprises: dict[str, Enterprise] = field(default_factory=dict)
    vehicles: dict[str, Vehicle] = field(default_factory=dict)      # by plate
    drivers: dict[str, Driver] = field(default_factory=dict)
    source_sites: dict[str, SourceSite] = field(default_factory=dict)
    zones: dict[str, Zone] = field(default_factory=dict)
    stations: dict[str, Station] = field(default_factory=dict)
    region: str = ""

    def vehicle(self, plate: str) -> Vehicle | None:
        return self.vehicles.get(plate)

    def station_device(self, station_id: str, device_id: str) -> dict | None:
        st = self.stations.get(station_id)
        if st is None:
            return None
        for dev in st.devices:
            if dev.get("device_id") == device_id:
                return dev
        return None

    def to_dict(self) -> dict:
        return {
            "region": self.region,
            "enterprises": [e.asdict() for e in self.enterprises.values()],
            "vehicles": [v.asdict() for v in self.vehicles.values()],
            "drivers": [d.asdict() for d in self.drivers.values()],
            "source_sites": [s.asdict() for s in self.source_sites.values()],
            "zones": [z.asdict() for z in self.zones.values()],
            "stations": [s.asdict() for s in self.stations.values()],
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


def _build(cls, entry: Any, where: str):
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: expected an object")
    known = set(cls._options.fieldset)
    unknown = set(entry) - known
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {sorted(unknown)}")
    try:
        rec = cls(**entry)
    except TypeError as e:
        raise RegistryError(f"{where}: {e}") from None
    for name, typ in cls._options.fields.items():
        v = getattr(rec, name)
        base = typing.get_origin(typ) or typ   # faust stores `list` fields as typing.List
        if typ is typing.List:
            base = list
        ok = {str: isinstance(v, str), int: isinstance(v, int) and not isinstance(v, bool),
              float: isinstance(v, (int, float)) and not isinstance(v, bool), bool: isinstance(v, bool),
              list: isinstance(v, list)}.get(base, True)
        if not ok:
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
    reg = Registry(region=data.get("region", ""))
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
            if not isinstance(dev, dict) or not isinstance(dev.get("device_id"), str):
                raise RegistryError(f"stations[{i}].devices[{j}]: needs device_id")
            if dev["device_id"] in devices:
                raise RegistryError(f"stations[{i}].devices[{j}]: duplicate device_id {dev['device_id']!r} "
                                    f"(also at station {devices[dev['device_id']]})")
            devices[dev["device_id"]] = s.station_id
            for k in ("valid_from", "valid_to"):
                if dev.get(k) is not None:
                    try:
                        parse_ts(dev[k], k)
                    except InvalidRecord as err:
                        raise RegistryError(f"stations[{i}].devices[{j}]: {err.detail}") from None
            problem = check_device(dev)      # device type, road, approval records (models/devices.py)
            if problem:
                raise RegistryError(f"stations[{i}].devices[{j}] ({dev['device_id']}): {problem}")
        if s.kind not in STATION_KINDS:
            raise RegistryError(f"stations[{i}] ({s.station_id}): kind must be one of {STATION_KINDS}")
        reg.stations[s.station_id] = s
    _check_road_graph(reg)
    return reg


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
