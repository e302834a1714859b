"""Finding vehicles: by any part of the plate ("B57J9X", "粤", "湘A"), by enterprise or county name, and the
vehicle tree by enterprise (the left-hand tree of every monitoring platform), each with its live state."""
from __future__ import annotations

from aiohttp import web

MAX_RESULTS = 200


def _norm(s: str) -> str:
    return "".join(s.split()).upper()


def search_vehicles(registry, live: list[dict], q: str, limit: int = MAX_RESULTS) -> dict:
    """Registry vehicles and live plates the registry does not know, matching ``q`` anywhere in the plate,
    the enterprise name or the county; plate matches first."""
    qn = _norm(q)
    now = {v.get("plate"): v for v in live}
    plate_hits, other_hits = [], []
    seen = set()
    for plate, v in registry.vehicles.items():
        ent = registry.enterprises.get(v.enterprise_id)
        ent_name = ent.name if ent else ""
        county = v.county or (ent.county if ent else "")
        in_plate = qn in _norm(plate)
        if not (in_plate or qn in _norm(ent_name) or qn in _norm(county)):
            continue
        n = now.get(plate) or {}
        row = {"plate": plate, "category": v.category, "enterprise_id": v.enterprise_id, "enterprise": ent_name,
               "county": county, "state": n.get("state") or "no_data", "lat": n.get("lat"), "lon": n.get("lon"),
               "ts": n.get("ts") or n.get("last_ts"), "registered": True}
        (plate_hits if in_plate else other_hits).append(row)
        seen.add(plate)
    for plate, n in now.items():
        if plate and plate not in seen and qn in _norm(plate):
            plate_hits.append({"plate": plate, "category": n.get("category") or "", "enterprise_id": "",
                               "enterprise": "", "county": "", "state": n.get("state") or "no_data",
                               "lat": n.get("lat"), "lon": n.get("lon"), "ts": n.get("ts") or n.get("last_ts"),
                               "registered": False})
    plate_hits.sort(key=lambda r: r["plate"])
    other_hits.sort(key=lambda r: (r["enterprise"], r["plate"]))
    hits = plate_hits + other_hits
    return {"q": q, "total": len(hits), "vehicles": hits[:limit]}


def vehicle_tree(registry, live: list[dict]) -> list[dict]:
    """Enterprises (by county, name) with their vehicles and live state counts."""
    now = {v.get("plate"): v for v in live}
    out = []
    by_ent: dict[str, list] = {}
    for plate, v in registry.vehicles.items():
        by_ent.setdefault(v.enterprise_id, []).append(v)
    for ent_id, vs in by_ent.items():
        ent = registry.enterprises.get(ent_id)
        vehicles = []
        counts: dict[str, int] = {}
        for v in sorted(vs, key=lambda x: x.plate):
            s = (now.get(v.plate) or {}).get("state") or "no_data"
            counts[s] = counts.get(s, 0) + 1
            vehicles.append({"plate": v.plate, "category": v.category, "state": s})
        out.append({"enterprise_id": ent_id, "name": ent.name if ent else ent_id,
                    "county": ent.county if ent else "", "counts": counts, "vehicles": vehicles})
    out.sort(key=lambda e: (e["county"], e["name"]))
    return out


async def api_search(request: web.Request) -> web.Response:
    from .console import STATE, _error, _json
    st = request.app[STATE]
    q = (request.query.get("q") or "").strip()
    if not q or len(q) > 40:
        return _error(400, "bad_param", "q: 1 to 40 characters of a plate, an enterprise or a county")
    return _json(search_vehicles(st.registry, st.fleet.vehicles(), q))


async def api_tree(request: web.Request) -> web.Response:
    from .console import STATE, _json
    st = request.app[STATE]
    return _json({"enterprises": vehicle_tree(st.registry, st.fleet.vehicles())})
