"""report.csv (one row per rate per population) and the trace CSVs (per vehicle, excluded rows).

UTF-8 with BOM so Excel opens the Chinese labels correctly.
"""
from __future__ import annotations

import csv
import io

from roadwatch.models.rates import RATE_NAMES

RATE_COLUMNS = ("population_type", "population_id", "population_name", "rate", "label", "numerator",
                "denominator", "percent", "value", "unit", "numerator_label", "denominator_label",
                "vehicles", "rows", "reason", "population_filter", "snapshot")
VEHICLE_COLUMNS = ("plate", "category", "enterprise_id", "county", "in_network", "online", "drift_vehicle",
                   "rows_used", "rows_not_in_network", "pings", "qualified", "km_total", "km_incomplete",
                   "drift_points", "overspeed_count", "fatigue_s", "days")


def populations(report: dict):
    """(type, id, name, rates) for the whole population and every breakdown, in report order."""
    yield "all", "", report["region"] or "全部", report["rates"]
    for c, r in report["by_category"].items():
        yield "category", c, c, r
    for e, r in report["by_enterprise"].items():
        yield "enterprise", e, report["enterprises"].get(e, {}).get("name", e), r
    for c, r in report["by_county"].items():
        yield "county", c, c, r


def _text(rows: list[list], header) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return "\ufeff" + buf.getvalue()


def _blank(v):
    return "" if v is None else v


def render_rates_csv(report: dict) -> str:
    rows = []
    for ptype, pid, pname, rates in populations(report):
        for name in RATE_NAMES:
            r = rates[name]
            rows.append([ptype, pid, pname, name, r["label"], r["numerator"], r["denominator"],
                         _blank(r.get("percent")), _blank(r.get("value")), r["unit"], r["numerator_label"],
                         r["denominator_label"], r["trace"]["vehicles"], r["trace"]["rows"], _blank(r["reason"]),
                         r["population"], r["snapshot"]])
    for p in (report.get("platforms") or {}).get("items", []):
        for name in ("connectivity_rate", "inspection_response_rate"):
            r = p[name]
            rows.append(["platform", p["center_id"], p["name"], r["name"], r["label"], r["numerator"], r["denominator"],
                         _blank(r.get("percent")), "", r["unit"], r["numerator_label"], r["denominator_label"],
                         p["vehicles"], "", _blank(r["reason"]), "JT/T 809 下级平台", r["snapshot"]])
    ic = (report.get("overload") or {}).get("interception")
    for s in (ic["stations"] + [ic["total"]]) if ic else []:
        sid = s["station_id"] or ""
        for key, num, den in (("interception_rate", "拦截车辆数", "布控任务数"),
                              ("enforcement_rate", "作出处罚决定（未撤销）的案件数", "检测案件数")):
            r = s[key]
            rows.append(["station", sid, s["name"], key, r["name"], r["numerator"], r["denominator"],
                         _blank(r["percent"]), "", "%", num, den, "", "", "",
                         f"检测站（{s['kind'] or '合计'}），布控按首次检测月份", report["snapshot"]])
    return _text(rows, RATE_COLUMNS)


def render_trace_vehicles_csv(report: dict) -> str:
    rows = []
    for v in report["trace"]["vehicles"]:
        rows.append([int(v[c]) if isinstance(v[c], bool) else v[c] for c in VEHICLE_COLUMNS[:-1]]
                    + [" ".join(v["days"])])
    return _text(rows, VEHICLE_COLUMNS)


def render_trace_excluded_csv(report: dict) -> str:
    rows = [[e["plate"], e["day"], e["code"], e["detail"]] for e in report["trace"]["excluded_rows"]]
    return _text(rows, ("plate", "day", "code", "detail"))
