"""联网联控 monthly indicators (docs/legal-basis.md §8): pure functions over vehicle-day rows.

Every rate is a plain ratio of monthly counts over a stated population, exactly as the official reports
reproduce (191/192 = 99.48 %). Each result keeps numerator, denominator, population text and snapshot time
(§5.4: a rate without them cannot be checked), is rounded half-up with ``decimal`` (never float rounding),
and is null with a reason when its denominator is 0.

Population (§5.1): registry vehicles whose category is in ``report.categories`` (两客一危); 普通货车 and
plates unknown to the registry are excluded and counted. 入网 is the registry's ``in_network`` flag; rows of
a vehicle that is not 入网 are excluded from the data rates (and listed, since it means the registry is
stale). 上线 = 入网 vehicle with at least one ping in the month.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable, Mapping

from .records import InvalidRecord

PERCENT_RATES = ("network_rate", "online_rate", "track_integrity_rate", "data_qualified_rate", "drift_rate")
AVERAGES = ("avg_overspeed_count", "avg_fatigue_seconds")
RATE_NAMES = PERCENT_RATES + AVERAGES

LABELS = {
    "network_rate": "车辆入网率",
    "online_rate": "车辆上线率",
    "track_integrity_rate": "轨迹完整率",
    "data_qualified_rate": "数据合格率",
    "drift_rate": "卫星定位漂移车辆率",
    "avg_overspeed_count": "平均车辆超速次数",
    "avg_fatigue_seconds": "平均疲劳驾驶时长",
}
# (numerator label, denominator label, unit)
TERMS = {
    "network_rate": ("入网车辆数", "应入网车辆数", "%"),
    "online_rate": ("上线车辆数", "入网车辆数", "%"),
    "track_integrity_rate": ("轨迹完整里程(km)", "总里程(km)", "%"),
    "data_qualified_rate": ("合格数据条数", "数据总条数", "%"),
    "drift_rate": ("漂移车辆数", "上线车辆数", "%"),
    "avg_overspeed_count": ("超速次数", "上线车辆数", "次/车"),
    "avg_fatigue_seconds": ("疲劳驾驶时长(秒)", "上线车辆数", "秒/车"),
}

INT_COLUMNS = ("pings", "qualified", "drift_points", "overspeed_count")
NUM_COLUMNS = ("km_total", "km_incomplete", "fatigue_s")
OPTIONAL_INT_COLUMNS = ("curfew_events", "offline_events")

NO_ENTERPRISE = "(无企业)"
NO_COUNTY = "(未知区县)"

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --- months ---------------------------------------------------------------------------------------------

def parse_month(month: Any) -> tuple[int, int]:
    m = _MONTH_RE.match(month) if isinstance(month, str) else None
    if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1900:
        raise InvalidRecord("bad_month", f"month must be YYYY-MM, got {month!r}")
    return int(m.group(1)), int(m.group(2))


def shift_month(month: str, delta: int) -> str:
    y, m = parse_month(month)
    idx = y * 12 + (m - 1) + delta
    return f"{idx // 12:04d}-{idx % 12 + 1:02d}"


def month_days(month: str) -> tuple[str, str]:
    """[first day, first day of the next month) as YYYY-MM-DD strings (for SQL range queries)."""
    return f"{month}-01", f"{shift_month(month, 1)}-01"


# --- decimal helpers ------------------------------------------------------------------------------------

def to_decimal(x: Any) -> Decimal:
    """Exact decimal of a count or of a float as printed (repr), so 0.1 stays 0.1."""
    if isinstance(x, Decimal):
        return x
    if isinstance(x, int):
        return Decimal(x)
    return Decimal(repr(float(x)))


def round_half_up(x: Decimal, decimals: int) -> Decimal:
    return x.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def percent(numerator: Any, denominator: Any, decimals: int) -> Decimal | None:
    d = to_decimal(denominator)
    if d == 0:
        return None
    return round_half_up(to_decimal(numerator) * 100 / d, decimals)


def _num_out(x: Decimal | int) -> int | float:
    """JSON number: counts stay ints, decimal sums become the float that prints the same digits."""
    if isinstance(x, int):
        return x
    return int(x) if x == x.to_integral_value() and abs(x) < 2**53 else float(x)


# --- vehicle-day rows -----------------------------------------------------------------------------------

@dataclass
class VehicleMonth:
    """One vehicle's month: sums of its vehicle-day rows (decimal km/seconds so sums are exact)."""
    plate: str
    days: list[str] = field(default_factory=list)
    pings: int = 0
    qualified: int = 0
    km_total: Decimal = Decimal(0)
    km_incomplete: Decimal = Decimal(0)
    drift_points: int = 0
    overspeed_count: int = 0
    fatigue_s: Decimal = Decimal(0)
    curfew_events: int = 0
    offline_events: int = 0

    @property
    def rows(self) -> int:
        return len(self.days)


@dataclass
class MonthRows:
    month: str
    vehicles: dict[str, VehicleMonth]               # plate → sums of its valid rows in the month
    excluded: list[tuple[str, str, str, str]]       # (plate, day, code, detail) of invalid rows
    rows_valid: int


def check_row(row: Mapping) -> dict:
    """Validate one vehicle_day row; returns a plain dict or raises InvalidRecord(code, detail)."""
    try:
        r = dict(row)
    except (TypeError, ValueError):
        raise InvalidRecord("bad_row", f"not a mapping: {type(row).__name__}") from None
    plate, day = r.get("plate"), r.get("day")
    if not isinstance(plate, str) or not plate.strip():
        raise InvalidRecord("bad_row", "plate missing")
    if not isinstance(day, str) or not _DAY_RE.match(day):
        raise InvalidRecord("bad_day", f"day {day!r} is not YYYY-MM-DD")
    try:
        date.fromisoformat(day)
    except ValueError:
        raise InvalidRecord("bad_day", f"day {day!r} is not a calendar date") from None
    for col in INT_COLUMNS + OPTIONAL_INT_COLUMNS:
        v = r.get(col, 0 if col in OPTIONAL_INT_COLUMNS else None)
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidRecord("bad_row", f"{col} must be an integer, got {v!r}")
        if v < 0:
            raise InvalidRecord("bad_row", f"{col} is negative ({v})")
        r[col] = v
    for col in NUM_COLUMNS:
        v = r.get(col)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InvalidRecord("bad_row", f"{col} must be a finite number, got {v!r}")
        if v < 0:
            raise InvalidRecord("bad_row", f"{col} is negative ({v})")
    if r["qualified"] > r["pings"]:
        raise InvalidRecord("inconsistent_row", f"qualified {r['qualified']} > pings {r['pings']}")
    if to_decimal(r["km_incomplete"]) > to_decimal(r["km_total"]):
        raise InvalidRecord("inconsistent_row",
                            f"km_incomplete {r['km_incomplete']} > km_total {r['km_total']}")
    return r


def aggregate_month(rows: Iterable[Mapping], month: str) -> MonthRows:
    """Sum the month's valid rows per plate. Rows of other months are ignored; invalid rows are kept
    (plate, day, code, detail) so the report can say what it left out and why."""
    parse_month(month)
    prefix = month + "-"
    vehicles: dict[str, VehicleMonth] = {}
    excluded: list[tuple[str, str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    valid = 0
    for row in rows:
        try:
            r = check_row(row)
        except InvalidRecord as e:
            raw_day = _peek(row, "day")
            if isinstance(raw_day, str) and _DAY_RE.match(raw_day) and not raw_day.startswith(prefix):
                continue   # another month's (bad) row: that month's report lists it
            excluded.append((str(_peek(row, "plate") or ""), str(raw_day or ""), e.code, e.detail))
            continue
        if not r["day"].startswith(prefix):
            continue
        key = (r["plate"], r["day"])
        if key in seen:
            excluded.append((key[0], key[1], "duplicate_row", "second row for the same plate and day"))
            continue
        seen.add(key)
        valid += 1
        vm = vehicles.get(r["plate"])
        if vm is None:
            vm = vehicles[r["plate"]] = VehicleMonth(r["plate"])
        vm.days.append(r["day"])
        vm.pings += r["pings"]
        vm.qualified += r["qualified"]
        vm.km_total += to_decimal(r["km_total"])
        vm.km_incomplete += to_decimal(r["km_incomplete"])
        vm.drift_points += r["drift_points"]
        vm.overspeed_count += r["overspeed_count"]
        vm.fatigue_s += to_decimal(r["fatigue_s"])
        vm.curfew_events += r["curfew_events"]
        vm.offline_events += r["offline_events"]
    for vm in vehicles.values():
        vm.days.sort()
    return MonthRows(month, vehicles, excluded, valid)


def _peek(row: Any, key: str) -> Any:
    try:
        return row[key]
    except (KeyError, IndexError, TypeError):
        return None


# --- populations and rates ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    """A 两客一危 vehicle of the registry, with the attributes the breakdowns group by."""
    plate: str
    category: str
    enterprise_id: str
    county: str
    in_network: bool


def population(registry, cfg) -> list[Member]:
    """应入网 population: registry vehicles in ``report.categories``; county falls back to the enterprise's."""
    cats = set(cfg["report.categories"])
    out = []
    for v in registry.vehicles.values():
        if v.category not in cats:
            continue
        county = v.county
        if not county and v.enterprise_id in registry.enterprises:
            county = registry.enterprises[v.enterprise_id].county
        out.append(Member(v.plate, v.category, v.enterprise_id or NO_ENTERPRISE, county or NO_COUNTY,
                          bool(v.in_network)))
    out.sort(key=lambda m: m.plate)
    return out


def vehicle_flags(m: Member, vm: VehicleMonth | None, cfg) -> dict:
    """Which counts this vehicle enters (the per-vehicle trace)."""
    online = m.in_network and vm is not None and vm.pings >= 1
    return {
        "in_network": m.in_network,
        "online": online,
        "drift_vehicle": online and vm.drift_points >= cfg["drift.min_points"],
        "rows_used": vm.rows if (vm is not None and m.in_network) else 0,
        "rows_not_in_network": vm.rows if (vm is not None and not m.in_network) else 0,
    }


def compute_rates(members: Iterable[Member], month_rows: MonthRows, cfg, snapshot: str,
                  population_text: str) -> dict[str, dict]:
    """All seven indicators over ``members``: name → {numerator, denominator, percent|value, …}."""
    dec = cfg["report.decimals"]
    drift_min = cfg["drift.min_points"]
    n_all = n_net = n_online = n_drift = 0
    rows_net = rows_online = 0
    pings = qualified = overspeed = 0
    km_total = km_incomplete = fatigue = Decimal(0)
    for m in members:
        n_all += 1
        if not m.in_network:
            continue
        n_net += 1
        vm = month_rows.vehicles.get(m.plate)
        if vm is None:
            continue
        rows_net += vm.rows
        if vm.pings < 1:
            continue
        n_online += 1
        rows_online += vm.rows
        pings += vm.pings
        qualified += vm.qualified
        km_total += vm.km_total
        km_incomplete += vm.km_incomplete
        overspeed += vm.overspeed_count
        fatigue += vm.fatigue_s
        if vm.drift_points >= drift_min:
            n_drift += 1

    def rec(name, num, den, veh, rows, zero_reason):
        num_label, den_label, unit = TERMS[name]
        out = {
            "name": name, "label": LABELS[name],
            "numerator": _num_out(num), "denominator": _num_out(den),
            "numerator_label": num_label, "denominator_label": den_label, "unit": unit,
            "population": population_text, "snapshot": snapshot,
            "reason": None,
            "trace": {"vehicles": veh, "rows": rows},
        }
        if name in PERCENT_RATES:
            p = percent(num, den, dec)
            out["percent"] = None if p is None else float(p)
        else:
            d = to_decimal(den)
            out["value"] = None if d == 0 else float(round_half_up(to_decimal(num) / d, dec))
        if to_decimal(den) == 0:
            out["reason"] = zero_reason
        return out

    no_online = "分母为0：统计期内无上线车辆 (no vehicle reported in the month)"
    return {
        "network_rate": rec("network_rate", n_net, n_all, n_all, rows_net,
                            "分母为0：无应入网车辆 (no 两客一危 vehicle in this population)"),
        "online_rate": rec("online_rate", n_online, n_net, n_net, rows_net,
                           "分母为0：无入网车辆 (no vehicle of this population is 入网)"),
        "track_integrity_rate": rec("track_integrity_rate", km_total - km_incomplete, km_total,
                                    n_online, rows_online,
                                    "分母为0：总里程为0 (no distance travelled)" if n_online else no_online),
        "data_qualified_rate": rec("data_qualified_rate", qualified, pings, n_online, rows_online, no_online),
        "drift_rate": rec("drift_rate", n_drift, n_online, n_online, rows_online, no_online),
        "avg_overspeed_count": rec("avg_overspeed_count", overspeed, n_online, n_online, rows_online, no_online),
        "avg_fatigue_seconds": rec("avg_fatigue_seconds", fatigue, n_online, n_online, rows_online, no_online),
    }


def population_text(cfg, month: str, extra: str = "") -> str:
    cats = "、".join(cfg["report.categories"])
    base = f"两客一危车辆({cats}), 注册库在册, {month}"
    return f"{base}; {extra}" if extra else base


@dataclass
class MonthlyRates:
    month: str
    snapshot: str
    members: list[Member]
    rows: MonthRows
    rates: dict[str, dict]
    by_category: dict[str, dict[str, dict]]
    by_enterprise: dict[str, dict[str, dict]]
    by_county: dict[str, dict[str, dict]]
    excluded_counts: dict[str, int]
    excluded_rows: list[tuple[str, str, str, str]]   # (plate, day, code, detail)


def monthly_rates(rows: Iterable[Mapping], registry, month: str, cfg, snapshot: str) -> MonthlyRates:
    """Overall rates and the category / enterprise / county breakdowns of one month."""
    mr = aggregate_month(rows, month)
    members = population(registry, cfg)
    by_plate = {m.plate: m for m in members}
    excluded = list(mr.excluded)
    cats = set(cfg["report.categories"])
    for plate, vm in sorted(mr.vehicles.items()):
        m = by_plate.get(plate)
        if m is None:
            v = registry.vehicles.get(plate)
            code, detail = (("unknown_plate", "plate not in the registry") if v is None else
                            ("not_in_population", f"category {v.category} is not 两客一危") if v.category not in cats
                            else ("unknown_plate", "plate not in the registry"))
        elif not m.in_network:
            code, detail = "not_in_network", "registry says not 入网 but the vehicle reported data"
        else:
            continue
        excluded.extend((plate, d, code, detail) for d in vm.days)
    counts = Counter(code for _, _, code, _ in excluded)

    def group(key) -> dict[str, dict[str, dict]]:
        groups: dict[str, list[Member]] = {}
        for m in members:
            groups.setdefault(key(m), []).append(m)
        return groups

    rates = compute_rates(members, mr, cfg, snapshot, population_text(cfg, month))
    by_category = {}
    for cat in cfg["report.categories"]:   # every configured category, even when empty (→ null rates)
        ms = [m for m in members if m.category == cat]
        by_category[cat] = compute_rates(ms, mr, cfg, snapshot, population_text(cfg, month, f"类别={cat}"))
    by_enterprise = {eid: compute_rates(ms, mr, cfg, snapshot, population_text(cfg, month, f"企业={eid}"))
                     for eid, ms in sorted(group(lambda m: m.enterprise_id).items())}
    by_county = {c: compute_rates(ms, mr, cfg, snapshot, population_text(cfg, month, f"区县={c}"))
                 for c, ms in sorted(group(lambda m: m.county).items())}
    return MonthlyRates(month, snapshot, members, mr, rates, by_category, by_enterprise, by_county,
                        dict(sorted(counts.items())), excluded)


def month_on_month(current: dict[str, dict], previous: dict[str, dict] | None, decimals: int) -> dict:
    """Per rate: previous figure and the change (percentage points for rates), from the published
    (rounded) figures so the delta matches what a reader subtracts. Null with a reason when absent."""
    out = {}
    for name in RATE_NAMES:
        field_ = "percent" if name in PERCENT_RATES else "value"
        cur = current[name].get(field_)
        if name == "network_rate":
            out[name] = {"previous": None, "delta": None,
                         "reason": "注册库为当前快照，无历史入网数据 (registry has no history)"}
            continue
        if previous is None:
            out[name] = {"previous": None, "delta": None, "reason": "上月无数据 (no rows for the previous month)"}
            continue
        prev = previous[name].get(field_)
        if cur is None or prev is None:
            out[name] = {"previous": prev, "delta": None, "reason": "本月或上月分母为0 (a denominator is 0)"}
            continue
        delta = round_half_up(to_decimal(cur) - to_decimal(prev), decimals)
        out[name] = {"previous": prev, "delta": float(delta), "reason": None}
    return out
