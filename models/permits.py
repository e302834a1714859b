"""大件运输许可 (oversize/overweight transport permits): the registry's ``permits`` list, and whether a
passage lies inside a valid permit's limits and route (pure; docs/legal-basis.md §5.3).

A passage of a permitted vehicle, within the permit's validity, on its route (a listed station, or a
station inside its corridor polygon) and within its permitted gross mass and axle loads is not a violation:
the verdict records it as ``permitted`` with the permit number. Outside any of them the permit does not
cover the passage (62号令: a permitted vehicle that leaves the permitted route, time or masses is treated
as over-limit transport); the verdict names the permit and every reason, and the case goes to review.

Format (docs/registry-format.md#permits)::

    {"permit_no": "豫大件2025-0001", "plate": "豫A12345", "valid_from": ISO, "valid_to": ISO,
     "max_gross_kg": 80000, "max_axle_loads_kg": [..] (optional, per axle),
     "stations": ["S1", …] and/or "corridor": [[lon, lat], …]}
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shapely.geometry import Point, Polygon

from .records import InvalidRecord, WimReading, parse_ts

_FIELDS = {"permit_no", "plate", "valid_from", "valid_to", "max_gross_kg", "max_axle_loads_kg", "stations",
           "corridor"}


class PermitError(ValueError):
    pass


@dataclass(frozen=True)
class Permit:
    permit_no: str
    plate: str
    valid_from: datetime
    valid_to: datetime
    max_gross_kg: float
    max_axle_loads_kg: tuple[float, ...] = ()
    stations: frozenset[str] = frozenset()
    corridor: Polygon | None = None

    def summary(self) -> dict:
        return {"permit_no": self.permit_no, "valid_from": self.valid_from.isoformat(),
                "valid_to": self.valid_to.isoformat(), "max_gross_kg": self.max_gross_kg,
                "max_axle_loads_kg": list(self.max_axle_loads_kg) or None,
                "stations": sorted(self.stations) or None, "corridor": self.corridor is not None}


def _num(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < float(v) < 1e6):
        raise PermitError(f"{where}: must be a mass in kg (0 < x < 1 000 000), got {v!r}")
    return float(v)


def parse_permits(data: dict) -> list[Permit]:
    """The ``permits`` list of a registry document (absent → none). Errors name the entry and field."""
    items = data.get("permits", []) if isinstance(data, dict) else []
    if not isinstance(items, list):
        raise PermitError("permits must be a list of objects")
    out, seen = [], set()
    for i, e in enumerate(items):
        where = f"permits[{i}]"
        if not isinstance(e, dict):
            raise PermitError(f"{where}: must be an object")
        unknown = set(e) - _FIELDS
        if unknown:
            raise PermitError(f"{where}: unknown field(s) {sorted(unknown)}")
        for f in ("permit_no", "plate", "valid_from", "valid_to", "max_gross_kg"):
            if f not in e:
                raise PermitError(f"{where}: missing {f}")
        no, plate = e["permit_no"], e["plate"]
        if not isinstance(no, str) or not 0 < len(no) <= 64 or not isinstance(plate, str) or not 0 < len(plate) <= 16:
            raise PermitError(f"{where}: permit_no (1–64 characters) and plate (1–16) must be text")
        if no in seen:
            raise PermitError(f"{where}: duplicate permit_no {no!r}")
        seen.add(no)
        try:
            vf, vt = parse_ts(e["valid_from"], "valid_from"), parse_ts(e["valid_to"], "valid_to")
        except InvalidRecord as err:
            raise PermitError(f"{where}: {err.detail}") from None
        if vt < vf:
            raise PermitError(f"{where}: valid_to precedes valid_from")
        axles = e.get("max_axle_loads_kg") or []
        if not isinstance(axles, list):
            raise PermitError(f"{where}: max_axle_loads_kg must be a list")
        stations = e.get("stations") or []
        if not isinstance(stations, list) or not all(isinstance(s, str) for s in stations):
            raise PermitError(f"{where}: stations must be a list of station ids")
        corridor = None
        if e.get("corridor") is not None:
            ring = e["corridor"]
            try:
                pts = [(float(p[0]), float(p[1])) for p in ring]
                if len(pts) < 3:
                    raise ValueError
                corridor = Polygon(pts)
                if not corridor.is_valid:
                    raise ValueError
            except (TypeError, ValueError, IndexError):
                raise PermitError(f"{where}: corridor must be a valid polygon of at least 3 [lon, lat]") from None
        if not stations and corridor is None:
            raise PermitError(f"{where}: a route is required (stations and/or corridor)")
        out.append(Permit(no, plate, vf, vt, _num(e["max_gross_kg"], f"{where}.max_gross_kg"),
                          tuple(_num(a, f"{where}.max_axle_loads_kg[{j}]") for j, a in enumerate(axles)),
                          frozenset(stations), corridor))
    return out


def registry_permits(registry) -> list[Permit]:
    """Permits of a loaded registry (``Registry.permits``, its document's entries as read): the file is not
    read a second time (0.1–0.3 s at 30 000 vehicles)."""
    return parse_permits({"permits": registry.permits})


class PermitIndex:
    def __init__(self, permits: list[Permit]):
        self._by_plate: dict[str, list[Permit]] = {}
        for p in permits:
            self._by_plate.setdefault(p.plate, []).append(p)

    def judge(self, reading: WimReading, station_lat: float | None, station_lon: float | None) -> dict | None:
        """None when the plate holds no permit valid at the reading's time; else the covering permit
        (``status: permitted``) or the best non-covering one with its ``reasons``."""
        t = parse_ts(reading.ts)
        valid = [p for p in self._by_plate.get(reading.plate, []) if p.valid_from <= t <= p.valid_to]
        if not valid:
            return None
        best = None
        for p in valid:
            reasons = []
            on_route = reading.station_id in p.stations or (
                p.corridor is not None and station_lat is not None and station_lon is not None
                and p.corridor.covers(Point(station_lon, station_lat)))
            if not on_route:
                reasons.append("off_permitted_route")
            if float(reading.gross_kg) > p.max_gross_kg:
                reasons.append(f"gross {float(reading.gross_kg):g} kg over the permitted {p.max_gross_kg:g} kg")
            if p.max_axle_loads_kg:
                if len(p.max_axle_loads_kg) != len(reading.axle_loads_kg):
                    reasons.append(f"{len(reading.axle_loads_kg)} axles measured, the permit lists "
                                   f"{len(p.max_axle_loads_kg)}")
                else:
                    over = [i + 1 for i, (m, lim) in enumerate(zip(reading.axle_loads_kg, p.max_axle_loads_kg))
                            if float(m) > lim]
                    if over:
                        reasons.append(f"axle(s) {over} over the permitted axle loads")
            res = {**p.summary(), "status": "permitted" if not reasons else "not_covered", "reasons": reasons}
            if not reasons:
                return res
            if best is None or len(reasons) < len(best["reasons"]):
                best = res
        return best
