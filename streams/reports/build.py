"""Assemble the monthly report dict from archive rows (or rows handed over directly).

``build_monthly_report`` is what the worker's month-close timer and ``roadwatch report monthly`` call;
the renderers (html/xlsx/csv) only format this dict. Everything numeric is computed in ``models.rates``,
``models.scoring`` and ``streams.reports.overload``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta

from roadwatch.models.config import Config
from roadwatch.models.rates import (PERCENT_RATES, RATE_NAMES, aggregate_month, compute_rates, month_days,
                          month_on_month, monthly_rates, parse_month, population_text, shift_month,
                          vehicle_flags)
from roadwatch.models.intercept import station_kinds
from roadwatch.models.records import format_ts, iso_to_epoch_ms
from roadwatch.models.scoring import agency_score, enterprise_score

from roadwatch.streams.archive import ArchiveConnection, report_tables
from roadwatch.streams.archive.intercept import month_tasks
from roadwatch.streams.cases import CaseStore

from .narrative import narrative
from .overload import overload_section
from .platforms import platform_section
from .write import write_report  # noqa: F401  (re-exported: streams.monthly imports it from here)

MAX_EXCLUDED_LISTED = 1000   # the JSON lists this many excluded rows; counts cover all of them

def _last_day(month: str) -> str:
    """YYYY-MM-DD of the month's last day: the date Art. 66 escalations are derived at."""
    _, end = month_days(month)
    return (date.fromisoformat(end) - timedelta(days=1)).isoformat()


def _bucket_by_month(rows: Iterable[Mapping], month: str) -> dict[str, list]:
    """Rows per YYYY-MM; a row whose day cannot be read goes to the report month (where it is listed)."""
    out: dict[str, list] = {}
    for r in rows:
        try:
            day = r["day"]
            key = day[:7] if isinstance(day, str) and len(day) == 10 else month
        except (KeyError, IndexError, TypeError):
            key = month
        out.setdefault(key, []).append(r)
    return out


def _ranking(scores: dict[str, dict | None], names: Mapping[str, str], rates: Mapping[str, dict],
             size: int) -> dict:
    items = [{"id": k, "name": names.get(k, k), "score": s["total"], "max_points": s["max_points"],
              "online_rate": rates[k]["online_rate"]["percent"],
              "vehicles": rates[k]["network_rate"]["denominator"]}
             for k, s in scores.items() if s is not None]
    best = sorted(items, key=lambda i: (-i["score"], i["id"]))
    worst = sorted(items, key=lambda i: (i["score"], i["id"]))
    return {"top": best[:size], "bottom": worst[:size], "count": len(items)}


def build_monthly_report(conn_or_rows, registry, month: str, cfg: Config,
                         snapshot_ts: datetime | str) -> dict:
    """The monthly report as a JSON-ready dict.

    ``conn_or_rows``: an archive connection (``streams.archive.open_archive``), a mapping of table name →
    rows (``vehicle_day``, ``wim_verdicts``, ``cases``, ``case_acts``, ``escalations``), or an iterable of vehicle_day
    rows alone (then the overload section says it is not available). ``snapshot_ts`` is stamped on every
    figure (the statistic time of §5.4). Raises ``models.records.InvalidRecord`` for a bad month.
    """
    parse_month(month)
    snapshot = format_ts(snapshot_ts) if isinstance(snapshot_ts, datetime) else str(snapshot_ts)
    n_trend = max(int(cfg["report.trend_months"]), 2)
    first_month = shift_month(month, -(n_trend - 1))

    if isinstance(conn_or_rows, ArchiveConnection):
        store = CaseStore(conn_or_rows, cfg)
        store.migrate()                      # cases from before the lifecycle get their history first
        tables: dict | None = report_tables(conn_or_rows, month, first_month)
        tables["escalations"] = store.escalations(_last_day(month))
        tables["intercept_tasks"] = month_tasks(conn_or_rows, month)
    elif isinstance(conn_or_rows, Mapping):
        tables = {k: list(conn_or_rows.get(k) or []) for k in
                  ("vehicle_day", "wim_verdicts", "cases", "case_acts", "escalations", "intercept_tasks")}
    else:
        tables = None
    vd_rows = tables["vehicle_day"] if tables is not None else list(conn_or_rows)
    buckets = _bucket_by_month(vd_rows, month)

    cur = monthly_rates(buckets.get(month, []), registry, month, cfg, snapshot)
    prev_month = shift_month(month, -1)
    prev = (monthly_rates(buckets[prev_month], registry, prev_month, cfg, snapshot)
            if buckets.get(prev_month) else None)
    if prev is not None and prev.rows.rows_valid == 0:
        prev = None
    dec = cfg["report.decimals"]

    # trend: overall rates of the last months (null where the archive has no rows for a month)
    trend_months = [shift_month(month, -i) for i in range(n_trend - 1, -1, -1)]
    series: dict[str, list] = {name: [] for name in RATE_NAMES}
    for tm in trend_months:
        if tm == month:
            rates = cur.rates
        else:
            mr = aggregate_month(buckets.get(tm, []), tm)
            rates = (compute_rates(cur.members, mr, cfg, snapshot, population_text(cfg, tm))
                     if mr.rows_valid else None)
        for name in RATE_NAMES:
            field_ = "percent" if name in PERCENT_RATES else "value"
            series[name].append(None if rates is None else rates[name][field_])

    # JT/T 809 platforms (平台连通率, 查岗响应率): only from an archive
    if isinstance(conn_or_rows, ArchiveConnection):
        platforms = platform_section(conn_or_rows, month, snapshot, cfg, registry)
    else:
        platforms = {"available": False, "items": [], "enterprise_platform": {},
                     "reason": "未提供归档：无平台链路数据 (no archive given: platform link tables absent)"}
    plat_rates = {p["center_id"]: p for p in platforms["items"]}

    def check_rate(e: str) -> dict | None:
        ctr = platforms["enterprise_platform"].get(e)
        return None if ctr is None else {**plat_rates[ctr]["inspection_response_rate"], "center_id": ctr}

    # scores and rankings
    agency = agency_score(cur.rates, cfg)
    county_scores = {c: agency_score(r, cfg) for c, r in cur.by_county.items()}
    ent_scores = {e: enterprise_score(r, cur.rates, cfg, check_rate(e)) for e, r in cur.by_enterprise.items()}
    ent_names = {e: (registry.enterprises[e].name if e in registry.enterprises else e) for e in cur.by_enterprise}
    size = cfg["report.ranking_size"]

    members = cur.members
    by_cat_count = {c: sum(1 for m in members if m.category == c) for c in cfg["report.categories"]}
    enterprises = {}
    for e in cur.by_enterprise:
        ent = registry.enterprises.get(e)
        enterprises[e] = {"name": ent_names[e], "county": ent.county if ent else "",
                          "vehicles": cur.by_enterprise[e]["network_rate"]["denominator"]}

    if tables is None:
        overload = {"available": False, "reason": "未提供归档：无称重数据 (no archive given: overload tables absent)"}
    else:
        names = registry.point_names()          # stations and mobile units
        overload = overload_section(tables["wim_verdicts"], tables["cases"], tables["case_acts"], names, dec,
                                    tables["escalations"], _last_day(month), intercept_tasks=tables["intercept_tasks"],
                                    month=month, now_ms=iso_to_epoch_ms(snapshot), station_kinds=station_kinds(registry))

    trace_vehicles = []
    for m in members:
        vm = cur.rows.vehicles.get(m.plate)
        flags = vehicle_flags(m, vm, cfg)
        trace_vehicles.append({
            "plate": m.plate, "category": m.category, "enterprise_id": m.enterprise_id, "county": m.county,
            **flags,
            "days": vm.days if vm else [],
            "pings": vm.pings if vm else 0, "qualified": vm.qualified if vm else 0,
            "km_total": float(vm.km_total) if vm else 0.0, "km_incomplete": float(vm.km_incomplete) if vm else 0.0,
            "drift_points": vm.drift_points if vm else 0, "overspeed_count": vm.overspeed_count if vm else 0,
            "fatigue_s": float(vm.fatigue_s) if vm else 0.0,
        })

    report = {
        "kind": "monthly",
        "month": month,
        "region": registry.region,
        "platform": cfg["report.platform_name"],
        "snapshot": snapshot,
        "config": {k: cfg[k] for k in ("report.decimals", "report.categories", "drift.min_points",
                                       "score.rate_basis")},
        "population": {
            "filter": population_text(cfg, month),
            "vehicles": len(members),
            "in_network": sum(1 for m in members if m.in_network),
            "by_category": by_cat_count,
            "enterprises": len([e for e in cur.by_enterprise if e in registry.enterprises]),
            "counties": len(cur.by_county),
        },
        "rates": cur.rates,
        "by_category": cur.by_category,
        "by_enterprise": cur.by_enterprise,
        "by_county": cur.by_county,
        "month_on_month": {
            "previous_month": prev_month,
            "available": prev is not None,
            "rates": month_on_month(cur.rates, prev.rates if prev else None, dec),
            "by_category": {c: month_on_month(r, prev.by_category.get(c) if prev else None, dec)
                            for c, r in cur.by_category.items()},
        },
        "trend": {"months": trend_months, "series": series},
        "scores": {"agency": agency, "by_county": county_scores, "by_enterprise": ent_scores},
        "rankings": {
            "enterprises": _ranking(ent_scores, ent_names, cur.by_enterprise, size),
            "counties": _ranking(county_scores, {}, cur.by_county, size),
        },
        "enterprises": enterprises,
        "platforms": platforms,
        "overload": overload,
        "trace": {
            "rows_used": sum(v["rows_used"] for v in trace_vehicles),
            "rows_excluded": cur.excluded_counts,
            "excluded_rows_total": len(cur.excluded_rows),
            "excluded_rows": [{"plate": p, "day": d, "code": c, "detail": t}
                              for p, d, c, t in cur.excluded_rows[:MAX_EXCLUDED_LISTED]],
            "vehicles": trace_vehicles,
        },
    }
    report["narrative"] = narrative(report)
    return report
