"""``scenario check`` rows for 布控: the archived intercept tasks against a scenario's derived ones, and the
month's 拦截率 and 查处率 as the system reports them (``InterceptStore.rates`` — what the report, the
fleet/status page and the metrics read — and the monthly report's overload total).

Strict like the rest of the check: a task the scenario did not derive is a difference, and so is a task
with other targets, an ETA outside the tolerance, another basis, passage count or outcome.
"""
from __future__ import annotations

from datetime import datetime, timezone

from roadwatch.models.config import Config
from roadwatch.models.records import iso_to_epoch_ms
from roadwatch.streams.archive import open_archive
from roadwatch.streams.intercept import InterceptStore
from roadwatch.streams.reports.build import build_monthly_report

KINDS = ("intercept_task", "interception", "enforcement_rate")
RATE_FIELDS = ("tasks", "intercepted", "not_found", "released", "expired", "open")


def _row(ok: bool, kind: str, subject: str, expected, actual, why: str) -> dict:
    return {"ok": bool(ok), "kind": kind, "subject": subject, "expected": expected, "actual": actual, "why": why}


def _task_view(t: dict) -> dict:
    return {"station_id": t["station_id"], "passages": len(t["passages"]), "basis": t["basis"],
            "targets": [x["point_id"] for x in t["targets"]], "eta_min": [x["eta_min"] for x in t["targets"]],
            "outcome": (t.get("outcome") or {}).get("outcome")}


def task_rows(expected: list[dict], tasks: list[dict]) -> list[dict]:
    rows = []
    by_key = {(t["plate"], int(t["detected_ms"])): t for t in tasks}
    for e in expected:
        key = (e["plate"], iso_to_epoch_ms(e["detected_at"]))
        t = by_key.pop(key, None)
        want = {k: e[k] for k in ("station_id", "passages", "basis", "targets", "outcome")}
        subject = f"{e['plate']} {e['detected_at'][11:16]}"
        if t is None:
            rows.append(_row(False, "intercept_task", subject, want, "no task", e["why"]))
            continue
        got = _task_view(t)
        etas_ok = len(got["eta_min"]) == len(e["eta_min"]) and all(
            abs(a - b) <= e["eta_tolerance_min"] for a, b in zip(got["eta_min"], e["eta_min"]))
        same = all(got[k] == want[k] for k in want) and etas_ok
        shown = {**want, "eta_min": e["eta_min"]}
        rows.append(_row(same, "intercept_task", subject, shown, got,
                         e["why"] + f" (ETA ±{e['eta_tolerance_min']} min)"))
    for (plate, _ms), t in sorted(by_key.items()):
        rows.append(_row(False, "intercept_task", f"{plate} {t['detected_at'][11:16]}", "no task", _task_view(t),
                         "unexpected intercept task (no fine-level passage scripted for it)"))
    return rows


def rate_row(e: dict, rates: dict) -> dict:
    tot = rates["total"]
    got = {k: tot[k] for k in RATE_FIELDS}
    got.update(numerator=tot["interception_rate"]["numerator"], denominator=tot["interception_rate"]["denominator"],
               unloaded_kg=tot["unloaded_kg"], median_min=tot["median_detect_to_intercept_min"],
               stations={r["station_id"]: [r["interception_rate"]["numerator"], r["interception_rate"]["denominator"]]
                         for r in rates["stations"]})
    want = {k: e[k] for k in (*RATE_FIELDS, "numerator", "denominator", "unloaded_kg", "median_min", "stations")}
    pct = tot["interception_rate"]["percent"]
    return _row(got == want, "interception", f"拦截率 {e['month']}", f"{e['numerator']}/{e['denominator']}",
                f"{got['numerator']}/{got['denominator']}" + (f" ({pct} %)" if pct is not None else "")
                + ("" if got == want else f" {got}"), e["why"])


def enforcement_row(e: dict, report: dict) -> dict:
    over = report.get("overload") or {}
    rate = (over.get("total") or {}).get("enforcement_rate") if over.get("available") else None
    got = (rate["numerator"], rate["denominator"]) if rate else None
    return _row(got == (e["numerator"], e["denominator"]), "enforcement_rate", f"查处率 {e['month']}",
                f"{e['numerator']}/{e['denominator']}", f"{got[0]}/{got[1]}" if got else "no overload section",
                e["why"])


def check_rows(expectations: list[dict], archive, registry, cfg: Config) -> list[dict]:
    """Rows for the scenario's intercept expectations (none when it has none)."""
    mine = [e for e in expectations if e["kind"] in KINDS]
    if not mine:
        return []
    conn = open_archive(archive)
    store = InterceptStore(conn, cfg, registry)
    now = datetime.now(timezone.utc)
    rows = task_rows([e for e in mine if e["kind"] == "intercept_task"], store.list(limit=100_000, now=now))
    for e in mine:
        if e["kind"] == "interception":
            rows.append(rate_row(e, store.rates(e["month"], now=now)))
        elif e["kind"] == "enforcement_rate":
            rows.append(enforcement_row(e, build_monthly_report(conn, registry, e["month"], cfg, now)))
    return rows
