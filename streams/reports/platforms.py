"""The report's 平台考核 section: 平台连通率 and 查岗响应率 per lower platform (JT/T 809 link archive),
and which platform's 查岗响应率 an enterprise is scored on (the platform that forwarded most of its
vehicles this month). Rates come from ``models.platform_rates``; rows from ``streams.archive.platforms``."""
from __future__ import annotations

from collections import Counter
from datetime import datetime

from roadwatch.models.config import Config, ConfigError
from roadwatch.models.platform_rates import connectivity_rate, inspection_rate
from roadwatch.models.rates import parse_month, shift_month
from roadwatch.models.records import BEIJING, parse_ts
from roadwatch.streams.archive import platforms as store
from roadwatch.streams.jt809.platforms import load_platforms


def month_window(month: str, snapshot: str) -> tuple[float, float]:
    """[first instant of the month, min(end of the month, snapshot)) in epoch seconds (Beijing months)."""
    y, m = parse_month(month)
    ny, nm = parse_month(shift_month(month, 1))
    start = datetime(y, m, 1, tzinfo=BEIJING).timestamp()
    end = datetime(ny, nm, 1, tzinfo=BEIJING).timestamp()
    try:
        snap = parse_ts(snapshot).timestamp()
    except Exception:          # an unreadable snapshot: the whole month
        snap = end
    return start, max(start, min(end, snap))


def platform_section(conn, month: str, snapshot: str, cfg: Config, registry) -> dict:
    start, end = month_window(month, snapshot)
    try:
        configured = load_platforms(cfg)
    except ConfigError:
        configured = {}
    sessions = store.sessions_between(conn, start, end, end)
    inspections = store.inspections_between(conn, start, end, end)
    vehicles = store.vehicle_platforms(conn)
    centers = sorted(set(configured) | set(sessions) | {i["center_id"] for i in inspections})
    dec = cfg["report.decimals"]
    items = []
    for ctr in centers:
        own = [i for i in inspections if i["center_id"] == ctr]
        items.append({
            "center_id": ctr,
            "name": configured[ctr].name if ctr in configured else str(ctr),
            "connectivity_rate": connectivity_rate(sessions.get(ctr, []), start, end, dec, snapshot),
            "inspection_response_rate": inspection_rate(own, dec, snapshot),
            "vehicles": sum(1 for c in vehicles.values() if c == ctr),
        })
    # enterprise → the platform that forwarded most of its vehicles
    per_ent: dict[str, Counter] = {}
    for v in registry.vehicles.values():
        ctr = vehicles.get(v.plate)
        if ctr is not None and v.enterprise_id:
            per_ent.setdefault(v.enterprise_id, Counter())[ctr] += 1
    ent_platform = {e: min(cnt, key=lambda c: (-cnt[c], c)) for e, cnt in per_ent.items()}
    return {"available": bool(centers), "period": {"start_s": start, "end_s": end}, "items": items,
            "enterprise_platform": ent_platform,
            "reason": None if centers else "归档中无 JT/T 809 平台记录 (no platform link data in the archive)"}
