"""Shared builders for the report tests (tests/test_rates.py, tests/test_report_*.py)."""
from __future__ import annotations

from roadwatch.models.registry import parse_registry


def plate(i: int, prefix: str = "鄂B") -> str:
    return f"{prefix}{i:05d}"


def make_registry(vehicles, enterprises=(), region="测试市", stations=()):
    """vehicles: dicts with plate, category and optional enterprise_id, county, in_network."""
    ents = {e["enterprise_id"]: dict(e) for e in enterprises}
    for v in vehicles:
        eid = v.get("enterprise_id", "E1")
        ents.setdefault(eid, {"enterprise_id": eid, "name": f"{eid}运输公司", "county": "甲县"})
    vs = [{"plate_color": 2, "enterprise_id": "E1", "vehicle_kind": "bus", **v} for v in vehicles]
    return parse_registry({"region": region, "enterprises": list(ents.values()), "vehicles": vs,
                           "stations": list(stations)})


def vd(p: str, day: str, pings: int = 100, qualified: int = 100, km_total: float = 0.0,
       km_incomplete: float = 0.0, drift_points: int = 0, overspeed_count: int = 0, fatigue_s: float = 0.0,
       curfew_events: int = 0, offline_events: int = 0) -> dict:
    """One vehicle_day row (the archive's columns)."""
    return {"plate": p, "day": day, "pings": pings, "qualified": qualified, "km_total": km_total,
            "km_incomplete": km_incomplete, "drift_points": drift_points, "overspeed_count": overspeed_count,
            "fatigue_s": fatigue_s, "curfew_events": curfew_events, "offline_events": offline_events,
            "updated_at": "2020-08-01T00:00:00+08:00"}


def fleet(n_by_category: dict, in_network=lambda i: True, enterprise=lambda i: "E1", county=lambda i: "甲县"):
    """Registry vehicle dicts, numbered consecutively across categories."""
    out, i = [], 0
    for cat, n in n_by_category.items():
        for _ in range(n):
            out.append({"plate": plate(i), "category": cat, "in_network": in_network(i),
                        "enterprise_id": enterprise(i), "county": county(i)})
            i += 1
    return out
