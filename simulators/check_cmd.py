"""``roadwatch scenario check``: compare what the system produced (the SQLite archive) with a scenario's
expected outcomes; print a diff table; exit 1 on any difference.

The expectations are rebuilt from the scenario file (``build`` is deterministic), so no state from
``simulate`` is needed except the archive. Unexpected alerts — a (type, plate) the scenario did not
expect — are differences too unless the scenario sets ``[expect] strict_alerts = false``.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path

import orjson

from roadwatch.models.config import Config
from roadwatch.streams.cli import UsageError

from .behaviours import ScenarioError
from .scenario import build, load_scenario

OPS = {"=": lambda a, e, tol: abs(a - e) <= tol, ">": lambda a, e, tol: a > e + tol,
       ">=": lambda a, e, tol: a >= e - tol, "<": lambda a, e, tol: a < e - tol, "<=": lambda a, e, tol: a <= e + tol}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="scenario name (library) or TOML path")
    p.add_argument("--archive", help="SQLite archive (default: the configured archive path)")
    p.add_argument("--all", action="store_true", help="also list the expectations that matched")
    p.add_argument("--from", dest="from_dir", metavar="DIR",
                   help="use DIR/expectations.json and DIR/registry.json written by `simulate --out DIR` "
                        "instead of rebuilding the scenario (fast for big scenarios)")


def _rows(conn: sqlite3.Connection, sql: str, args=()) -> list:
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as e:
        raise UsageError(f"archive has no usable table for this check ({e})") from None


def actual(conn: sqlite3.Connection, e: dict, registry, cfg: Config, span: tuple[str, str]):
    k = e["kind"]
    if k == "alert":
        sql, args = "SELECT COUNT(*) FROM alerts WHERE type=? AND plate=?", [e["type"], e["plate"]]
        if e.get("from"):
            sql += " AND start_ts >= ?"
            args.append(e["from"])
        if e.get("to"):
            sql += " AND start_ts < ?"
            args.append(e["to"])
        return _rows(conn, sql, args)[0][0]
    if k == "verdicts":
        return sorted([r[0], int(r[1])] for r in _rows(conn, "SELECT action, fine_yuan FROM wim_verdicts WHERE plate=?",
                                                        (e["plate"],)))
    if k == "cases_total":
        return _rows(conn, "SELECT COUNT(*) FROM wim_verdicts WHERE action=? AND day BETWEEN ? AND ?",
                     (e["action"], *span))[0][0]
    if k == "source_site":
        sites = sorted({r[0] for r in _rows(conn, "SELECT source_site_id FROM cases WHERE plate=?", (e["plate"],))},
                       key=lambda x: x or "")
        return sites[0] if len(sites) == 1 else (sites or "no case")
    if k == "escalation":
        n = 0
        for (manifest,) in _rows(conn, "SELECT manifest FROM cases"):
            try:
                items = orjson.loads(manifest).get("escalations") or []
            except (orjson.JSONDecodeError, AttributeError):
                continue
            n += any(isinstance(x, dict) and x.get("target") == e["target"] and x.get("id") == e["id"] for x in items)
        return n
    if k == "vehicle_day":
        r = _rows(conn, f"SELECT {e['field']} FROM vehicle_day WHERE plate=? AND day=?", (e["plate"], e["day"])) \
            if e["field"] in VEHICLE_DAY_FIELDS else None
        if r is None:
            raise UsageError(f"vehicle_day has no field {e['field']!r}")
        return r[0][0] if r else None
    if k == "rate":
        return rate(conn, e["name"], registry, cfg, span)
    raise UsageError(f"unknown expectation kind {k!r}")


VEHICLE_DAY_FIELDS = ("pings", "qualified", "km_total", "km_incomplete", "drift_points", "overspeed_count",
                      "fatigue_s", "curfew_events", "offline_events")


def rate(conn, name: str, registry, cfg: Config, span: tuple[str, str]) -> float | None:
    """The §5.2 ratios over the 两客一危 population of the registry, from ``vehicle_day``."""
    cats = set(cfg["report.categories"])
    pop = {v.plate for v in registry.vehicles.values() if v.category in cats}
    in_net = {p for p in pop if registry.vehicles[p].in_network}
    per: dict[str, list] = defaultdict(lambda: [0, 0, 0.0, 0.0, 0])
    for plate, pings, q, kt, ki, dp in _rows(conn, "SELECT plate, pings, qualified, km_total, km_incomplete, drift_points "
                                                   "FROM vehicle_day WHERE day BETWEEN ? AND ?", span):
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


def compare(expectations: list[dict], conn: sqlite3.Connection, registry, cfg: Config, span: tuple[str, str],
            strict_alerts: bool = True) -> list[dict]:
    rows = []
    for e in expectations:
        got = actual(conn, e, registry, cfg, span)
        rows.append({"ok": matches(e, got), "kind": e["kind"], "subject": subject(e),
                     "expected": expected_text(e), "actual": round(got, 4) if isinstance(got, float) else got,
                     "why": e.get("why", "")})
    if strict_alerts:
        expected_keys = {(e["type"], e["plate"]) for e in expectations if e["kind"] == "alert"}
        for typ, plate, n in _rows(conn, "SELECT type, plate, COUNT(*) FROM alerts WHERE day BETWEEN ? AND ? "
                                         "GROUP BY type, plate ORDER BY type, plate", span):
            if (typ, plate) not in expected_keys and typ != "overload":
                rows.append({"ok": False, "kind": "alert", "subject": f"{typ} {plate}", "expected": 0, "actual": n,
                             "why": "unexpected alert (nothing injected for this vehicle and type)"})
    return rows


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
    path = Path(args.archive) if args.archive else cfg.archive_path
    if not path.is_file():
        raise UsageError(f"archive not found: {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        span = (scn.start.strftime("%Y-%m-%d"), scn.end.strftime("%Y-%m-%d"))
        strict = bool(scn.raw.get("expect", {}).get("strict_alerts", True))
        rows = compare(expectations, conn, registry, cfg, span, strict)
        # --- JT/T 809 platform expectations: 平台连通率, 查岗响应率 (simulators/platform_scenario.py) ---
        from .platform_scenario import check_rows as platform_check_rows
        rows += platform_check_rows(scn, conn, registry, cfg)
        # --- end of JT/T 809 platform expectations ---
    finally:
        conn.close()
    bad = sum(1 for r in rows if not r["ok"])
    out = render(rows, args.all)
    if out.count("\n") > 0:
        print(out)
    print(f"scenario {scn.name}: {len(rows) - bad} of {len(rows)} checks match"
          + ("" if not bad else f", {bad} difference(s)"), file=sys.stderr)
    return 1 if bad else 0
