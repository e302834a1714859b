"""``scenario check`` rows for 布控: the archived intercept tasks against a scenario's derived ones, and the
month's 拦截率 and 查处率 as the system shows them — the console's status page and the metrics
(``streams.intercept.month_summary``) and the monthly report's overload section — each against the
derived figures.

Strict like the rest of the check: a task the scenario did not derive is a difference, and so is a task
with other targets, an ETA outside the tolerance, another basis, passage count or outcome.
"""
from __future__ import annotations

from datetime import datetime, timezone

from roadwatch.models.config import Config
from roadwatch.models.records import iso_to_epoch_ms
from roadwatch.streams.archive import open_archive
from roadwatch.streams.intercept import InterceptStore, month_summary
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


def _rates(section: dict) -> dict:
    """The figures a scenario derives, from an interception section (report or console summary)."""
    tot = section["total"]
    return {**{k: tot[k] for k in RATE_FIELDS},
            "numerator": tot["interception_rate"]["numerator"], "denominator": tot["interception_rate"]["denominator"],
            "unloaded_kg": tot["unloaded_kg"], "median_min": tot["median_detect_to_intercept_min"],
            "stations": {r["station_id"]: [r["interception_rate"]["numerator"], r["interception_rate"]["denominator"]]
                         for r in section["stations"] if r["tasks"]},
            "enforcement": [tot["enforcement_rate"]["numerator"], tot["enforcement_rate"]["denominator"]]}


def rate_rows(e: dict, where: str, section: dict | None) -> list[dict]:
    """拦截率 (with tasks per status, unloaded mass, median time, per station) and 查处率 as ``where`` shows them."""
    if section is None:
        return [_row(False, e["kind"], f"{where} {e['month']}", "a section", "none", e["why"])]
    got = _rates(section)
    if e["kind"] == "interception":
        want = {k: e[k] for k in (*RATE_FIELDS, "numerator", "denominator", "unloaded_kg", "median_min", "stations")}
        mine = {k: got[k] for k in want}
        pct = section["total"]["interception_rate"]["percent"]
        return [_row(mine == want, "interception", f"拦截率 {e['month']} ({where})",
                     f"{e['numerator']}/{e['denominator']}",
                     f"{got['numerator']}/{got['denominator']}" + (f" ({pct} %)" if pct is not None else "")
                     + ("" if mine == want else f" {mine}"), e["why"])]
    want = [e["numerator"], e["denominator"]]
    return [_row(got["enforcement"] == want, "enforcement_rate", f"查处率 {e['month']} ({where})",
                 "/".join(map(str, want)), "/".join(map(str, got["enforcement"])), e["why"])]


def check_rows(expectations: list[dict], archive, registry, cfg: Config) -> list[dict]:
    """Rows for the scenario's intercept expectations (none when it has none): each task, then the month's
    rates as the console's status page and the metrics show them (``month_summary``) and as the monthly
    report prints them — both must equal the derived figures."""
    mine = [e for e in expectations if e["kind"] in KINDS]
    if not mine:
        return []
    conn = open_archive(archive)
    store = InterceptStore(conn, cfg, registry)
    now = datetime.now(timezone.utc)
    rows = task_rows([e for e in mine if e["kind"] == "intercept_task"], store.list(limit=100_000, now=now))
    sections: dict[str, tuple] = {}
    for e in mine:
        if e["kind"] not in ("interception", "enforcement_rate"):
            continue
        if e["month"] not in sections:
            report = build_monthly_report(conn, registry, e["month"], cfg, now)
            sections[e["month"]] = (month_summary(conn, cfg, registry, e["month"], now),
                                    (report.get("overload") or {}).get("interception"))
        console, printed = sections[e["month"]]
        rows += rate_rows(e, "console", console) + rate_rows(e, "report", printed)
    return rows
