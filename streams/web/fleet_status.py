"""Today's monitoring rates so far, for the console's fleet page (not the regulator report).

Same formulas as the monthly indicators (docs/legal-basis.md §8), applied to today's ``vehicle_day``
rows of the 两客一危 vehicles in the registry (``report.categories``, ``in_network``):

- 上线率 online rate   = vehicles with ≥ 1 ping today / vehicles in the network
- 数据合格率 quality   = Σ qualified pings / Σ pings
- 轨迹完整率 track     = (Σ km_total − Σ km_incomplete) / Σ km_total
- 漂移车辆率 drift     = vehicles with ≥ ``drift.min_points`` drift points / online vehicles
- 平均超速次数 / 平均疲劳驾驶时长 = Σ / online vehicles

A rate whose denominator is zero is ``None`` (shown as "—"), never 0 or 100 %.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from roadwatch.models.config import Config
from roadwatch.models.registry import Registry

UNREGISTERED = ""     # enterprise key for plates the registry does not know


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@dataclass
class _Acc:
    vehicles: int = 0
    online_now: int = 0
    online_today: int = 0
    pings: int = 0
    qualified: int = 0
    km_total: float = 0.0
    km_incomplete: float = 0.0
    drift_vehicles: int = 0
    overspeed: int = 0
    fatigue_s: float = 0.0
    alerts_today: int = 0
    open_cases: int = 0
    counties: set = field(default_factory=set)

    def row(self) -> dict:
        return {
            "vehicles": self.vehicles, "online_now": self.online_now, "online_today": self.online_today,
            "pings": self.pings, "qualified": self.qualified,
            "km_total": round(self.km_total, 3), "km_incomplete": round(self.km_incomplete, 3),
            "drift_vehicles": self.drift_vehicles, "overspeed": self.overspeed,
            "fatigue_s": round(self.fatigue_s, 1), "alerts_today": self.alerts_today,
            "open_cases": self.open_cases,
            "online_rate": _ratio(self.online_today, self.vehicles),
            "quality_rate": _ratio(self.qualified, self.pings),
            "track_rate": _ratio(self.km_total - self.km_incomplete, self.km_total),
            "drift_rate": _ratio(self.drift_vehicles, self.online_today),
            "avg_overspeed": _ratio(self.overspeed, self.online_today),
            "avg_fatigue_s": _ratio(self.fatigue_s, self.online_today),
        }


def today_status(cfg: Config, registry: Registry, day: str, day_rows: Iterable[dict],
                 fleet_now: Iterable[dict], alerts_by_plate: dict[str, int],
                 open_cases_by_enterprise: dict[str, int]) -> dict:
    cats = set(cfg["report.categories"])
    drift_min = cfg["drift.min_points"]
    monitored = {p: v for p, v in registry.vehicles.items() if v.category in cats and v.in_network}
    total = _Acc()
    per: dict[str, _Acc] = {}

    def acc_for(plate: str) -> _Acc | None:
        v = monitored.get(plate)
        if v is None:
            return None
        return per.setdefault(v.enterprise_id, _Acc())

    for plate, v in monitored.items():
        a = per.setdefault(v.enterprise_id, _Acc())
        a.vehicles += 1
        total.vehicles += 1
        a.alerts_today += alerts_by_plate.get(plate, 0)
        total.alerts_today += alerts_by_plate.get(plate, 0)
    unregistered_online = 0
    for r in day_rows:
        a = acc_for(r["plate"])
        if a is None:
            unregistered_online += int(r["pings"] > 0 and r["plate"] not in registry.vehicles)
            continue
        for t in (a, total):
            t.pings += r["pings"]
            t.qualified += r["qualified"]
            t.km_total += r["km_total"]
            t.km_incomplete += r["km_incomplete"]
            t.overspeed += r["overspeed_count"]
            t.fatigue_s += r["fatigue_s"]
            if r["pings"] > 0:
                t.online_today += 1
                if r["drift_points"] >= drift_min:
                    t.drift_vehicles += 1
    for v in fleet_now:
        if v.get("state") != "offline":
            a = acc_for(v.get("plate", ""))
            if a is not None:
                a.online_now += 1
                total.online_now += 1
    for ent_id, n in open_cases_by_enterprise.items():
        if ent_id in per or ent_id in registry.enterprises:
            per.setdefault(ent_id, _Acc()).open_cases += n
        total.open_cases += n
    enterprises = []
    for ent_id, a in per.items():
        ent = registry.enterprises.get(ent_id)
        row = a.row()
        row.update(enterprise_id=ent_id, name=ent.name if ent else ent_id, county=ent.county if ent else "")
        enterprises.append(row)
    enterprises.sort(key=lambda r: (r["online_rate"] is None, r["online_rate"] or 0.0, r["name"]))
    return {"day": day, "totals": total.row(), "unregistered_online": unregistered_online,
            "enterprises": enterprises}
