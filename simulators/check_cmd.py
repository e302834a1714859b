"""``roadwatch scenario check``: compare what the system produced (the archive) with a scenario's
expected outcomes; print a diff table; exit 1 on any difference.

The expectations are rebuilt from the scenario file (``build`` is deterministic), so no state from
``simulate`` is needed except the archive. The check is strict: an alert (type, plate) the scenario did
not expect, or a WIM case in a scenario that expects none, is a difference too — unless the scenario
lists it under ``[[expect.tolerate]]`` with a reason (docs/scenarios.md).

The archive's rows are read by ``streams/archive/outcomes.py`` (SQLite read-only, or PostgreSQL).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import orjson

from roadwatch.models.config import Config
from roadwatch.streams.archive import ArchiveError
from roadwatch.streams.archive import outcomes as db
from roadwatch.streams.archive.outcomes import VEHICLE_DAY_FIELDS
from roadwatch.streams.cli import UsageError

from .behaviours import ScenarioError
from .intercept_check import KINDS as INTERCEPT_KINDS
from .intercept_check import check_rows as intercept_check_rows
from .scenario import build, load_scenario

OPS = {"=": lambda a, e, tol: abs(a - e) <= tol, ">": lambda a, e, tol: a > e + tol,
       ">=": lambda a, e, tol: a >= e - tol, "<": lambda a, e, tol: a < e - tol, "<=": lambda a, e, tol: a <= e + tol}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="scenario name (library) or TOML path")
    p.add_argument("--archive", help="archive: a SQLite file or a postgresql:// URL (default: the configured "
                                     "archive)")
    p.add_argument("--all", action="store_true", help="also list the expectations that matched")
    p.add_argument("--from", dest="from_dir", metavar="DIR",
                   help="use DIR/expectations.json and DIR/registry.json written by `simulate --out DIR` "
                        "instead of rebuilding the scenario (fast for big scenarios)")


def actual(conn: object, e: dict, registry, cfg: Config, span: tuple[str, str]):
    k = e["kind"]
    if k == "alert":
        return db.alert_count(conn, e["type"], e["plate"], e.get("from"), e.get("to"))
    if k == "verdicts":
        return sorted([a, int(f)] for a, f in db.verdict_actions(conn, e["plate"]))
    if k == "cases_total":
        return db.verdict_count(conn, e["action"], *span)
    if k == "source_site":
        sites = sorted(set(db.case_source_sites(conn, e["plate"])), key=lambda x: x or "")
        return sites[0] if len(sites) == 1 else (sites or "no case")
    if k == "escalation":
        n = 0
        for manifest in db.case_manifests(conn):
            try:
                items = orjson.loads(manifest).get("escalations") or []
            except (orjson.JSONDecodeError, AttributeError):
                continue
            n += any(isinstance(x, dict) and x.get("target") == e["target"] and x.get("id") == e["id"] for x in items)
        return n
    if k == "vehicle_day":
        if e["field"] not in VEHICLE_DAY_FIELDS:
            raise UsageError(f"vehicle_day has no field {e['field']!r}")
        return db.vehicle_day_field(conn, e["plate"], e["day"], e["field"])
    if k == "rate":
        return rate(conn, e["name"], registry, cfg, span)
    raise UsageError(f"unknown expectation kind {k!r}")


def rate(conn, name: str, registry, cfg: Config, span: tuple[str, str]) -> float | None:
    """The §5.2 ratios over the 两客一危 population of the registry, from ``vehicle_day``."""
    cats = set(cfg["report.categories"])
    pop = {v.plate for v in registry.vehicles.values() if v.category in cats}
    in_net = {p for p in pop if registry.vehicles[p].in_network}
    per: dict[str, list] = defaultdict(lambda: [0, 0, 0.0, 0.0, 0])
    for plate, pings, q, kt, ki, dp in db.rate_rows(conn, *span):
        if plate in pop:
            a = per[plate]
            a[0] += pings; a[1] += q; a[2] += kt; a[3] += ki; a[4] += dp
    online = [p for p, a in per.items() if a[0] > 0]
    if name == "online_rate":
        return len(online) / len(in_net) if in_net else None
    if name == "quality_rate":
        tot = sum(a[0] for a in per.values())
        return sum(a[1] for a in per.values()) / tot if tot else None
    if name == "drift_rate":
        return sum(1 for p in online if per[p][4] >= cfg["drift.min_points"]) / len(online) if online else None
    if name == "track_rate":
        km = sum(a[2] for a in per.values())
        return 1 - sum(a[3] for a in per.values()) / km if km else None
    raise UsageError(f"unknown rate {name!r} (online_rate, quality_rate, drift_rate, track_rate)")


def subject(e: dict) -> str:
    k = e["kind"]
    return {"alert": lambda: f"{e['type']} {e['plate']}" + (f" [{e.get('from', '')}, {e.get('to', '')})" if e.get('from') or e.get('to') else ""),
            "verdicts": lambda: e["plate"], "cases_total": lambda: e["action"],
            "source_site": lambda: e["plate"], "escalation": lambda: f"{e['target']} {e['id']}",
            "vehicle_day": lambda: f"{e['plate']} {e['day']} {e['field']}", "rate": lambda: e["name"]}[k]()


def expected_text(e: dict):
    k = e["kind"]
    if k in ("alert", "cases_total", "escalation"):
        return e["count"]
    if k == "verdicts":
        return e["actions"]
    if k == "source_site":
        return e["site_id"]
    if k == "vehicle_day":
        return f"{e['op']} {e['value']}" + (f" ±{e['tolerance']}" if e.get("tolerance") else "")
    return f"{e['value']:.4f} ±{e['tolerance']}"


def matches(e: dict, got) -> bool:
    k = e["kind"]
    if k in ("alert", "cases_total", "escalation"):
        return got == e["count"]
    if k == "verdicts":
        return got == e["actions"]
    if k == "source_site":
        return got == e["site_id"]
    if k == "vehicle_day":
        return got is not None and OPS[e.get("op", "=")](float(got), float(e["value"]), float(e.get("tolerance") or 0))
    if k == "rate":
        return got is not None and abs(got - e["value"]) <= e["tolerance"]
    return False


def compare(expectations: list[dict], conn: object, registry, cfg: Config, span: tuple[str, str],
            tolerate: list[dict] | None = None) -> list[dict]:
    """One row per expectation, then one per unexpected outcome: an alert (type, plate) nobody expected,
    or a WIM verdict when the scenario expects no cases at all. ``tolerate`` entries (type, optional
    plate, reason) turn an unexpected outcome into an accepted one, shown with its reason."""
    rows = []
    for e in expectations:
        if e["kind"] in INTERCEPT_KINDS:           # checked by simulators/intercept_check.py
            continue
        got = actual(conn, e, registry, cfg, span)
        rows.append({"ok": matches(e, got), "kind": e["kind"], "subject": subject(e),
                     "expected": expected_text(e), "actual": round(got, 4) if isinstance(got, float) else got,
                     "why": e.get("why", "")})
    tolerate = tolerate or []

    def tolerated(typ: str, plate: str) -> str | None:
        for t in tolerate:
            if t["type"] == typ and t.get("plate") in (None, plate):
                return t["reason"]
        return None
    expected_keys = {(e["type"], e["plate"]) for e in expectations if e["kind"] == "alert"}
    for typ, plate, n in db.alerts_by_plate(conn, *span):
        if (typ, plate) in expected_keys or typ == "overload":   # overload alerts mirror cases (checked below)
            continue
        reason = tolerated(typ, plate)
        rows.append({"ok": reason is not None, "kind": "alert", "subject": f"{typ} {plate}", "expected": 0,
                     "actual": n, "why": f"tolerated: {reason}" if reason else
                     "unexpected alert (nothing injected for this vehicle and type)"})
    if not any(e["kind"] in ("cases_total", "verdicts") for e in expectations):
        for action, plate, n in db.verdicts_by_plate(conn, *span):
            reason = tolerated(f"case_{action}", plate)
            rows.append({"ok": reason is not None, "kind": "case", "subject": f"{action} {plate}", "expected": 0,
                         "actual": n, "why": f"tolerated: {reason}" if reason else
                         "unexpected WIM verdict (the scenario injects no passage)"})
    return rows


def parse_tolerate(raw: dict) -> list[dict]:
    """``[[expect.tolerate]]`` entries: type (alert type, or case_<action>), optional vehicle|plate, reason."""
    out = []
    for i, t in enumerate(raw.get("tolerate", [])):
        if not isinstance(t, dict) or not t.get("type") or not str(t.get("reason", "")).strip():
            raise ScenarioError(f"expect.tolerate[{i}] needs a type and a reason")
        out.append({"type": str(t["type"]), "plate": t.get("plate"), "vehicle": t.get("vehicle"),
                    "reason": str(t["reason"])})
    return out


def render(rows: list[dict], show_all: bool) -> str:
    shown = [r for r in rows if show_all or not r["ok"]]
    head = ("", "kind", "subject", "expected", "actual", "why")
    table = [head] + [("ok" if r["ok"] else "DIFF", r["kind"], r["subject"], str(r["expected"]), str(r["actual"]),
                       r["why"]) for r in shown]
    widths = [min(60, max(_w(row[i]) for row in table)) for i in range(5)]
    lines = []
    for row in table:
        lines.append("  ".join(_pad(str(c), widths[i]) for i, c in enumerate(row[:5])) + "  " + row[5])
    return "\n".join(lines)


def _w(s: str) -> int:
    return sum(2 if ord(c) > 0x2E80 else 1 for c in s)


def _pad(s: str, width: int) -> str:
    return s + " " * max(0, width - _w(s))


def run(args: argparse.Namespace, cfg: Config) -> int:
    try:
        scn = load_scenario(args.scenario)
        if args.from_dir:
            from roadwatch.models.registry import RegistryError, load_registry
            d = Path(args.from_dir)
            try:
                expectations = orjson.loads((d / "expectations.json").read_bytes())
                registry = load_registry(d / "registry.json")
            except (OSError, orjson.JSONDecodeError, RegistryError) as e:
                raise UsageError(f"--from {d}: {e}") from None
        else:
            built = build(scn, cfg)
            expectations, registry = built.expectations, built.registry
    except ScenarioError as e:
        raise UsageError(str(e)) from None
    try:
        tolerate = parse_tolerate(scn.raw.get("expect", {}))
    except ScenarioError as e:
        raise UsageError(str(e)) from None
    if scn.raw.get("expect", {}).get("strict_alerts", True) is not True:
        raise UsageError(f"{scn.name}: [expect] strict_alerts = false is no longer accepted — checks are strict; "
                         "list accepted extras under [[expect.tolerate]] with a reason")
    aliases = {} if args.from_dir else built.aliases
    for t in tolerate:
        if t["vehicle"]:
            if t["vehicle"] not in aliases:
                raise UsageError(f"expect.tolerate: unknown vehicle alias {t['vehicle']!r}"
                                 + (" (use plate with --from)" if args.from_dir else ""))
            t["plate"] = aliases[t["vehicle"]]
    try:
        conn = db.open_for_check(args.archive or cfg.archive_path)
    except ArchiveError as e:
        raise UsageError(str(e)) from None
    try:
        span = (scn.start.strftime("%Y-%m-%d"), scn.end.strftime("%Y-%m-%d"))
        rows = compare(expectations, conn, registry, cfg, span, tolerate)
        # --- JT/T 809 platform expectations: 平台连通率, 查岗响应率 (simulators/platform_scenario.py) ---
        from .platform_scenario import check_rows as platform_check_rows
        rows += platform_check_rows(scn, conn, registry, cfg)
        # --- end of JT/T 809 platform expectations ---
        rows += intercept_check_rows(expectations, args.archive or cfg.archive_path, registry, cfg)     # 布控: tasks, 拦截率, 查处率
    except ArchiveError as e:
        raise UsageError(str(e)) from None
    finally:
        conn.close()
    bad = sum(1 for r in rows if not r["ok"])
    out = render(rows, args.all)
    if out.count("\n") > 0:
        print(out)
    print(f"scenario {scn.name}: {len(rows) - bad} of {len(rows)} checks match"
          + ("" if not bad else f", {bad} difference(s)"), file=sys.stderr)
    return 1 if bad else 0
