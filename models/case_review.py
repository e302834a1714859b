"""案卷评查 (case-file review): a reproducible monthly sample of closed case files and a checklist score per
file. Pure: the caller hands over each file's facts (history, documents on the chain, what the chain
verifier found, the 抄告's due day and dispatch); docs/legal-basis.md §9.6.

Checklist (each item passes, fails, or — a deadline not yet reached — is not scored):

- documents: 违法行为通知书, 行政处罚告知书, 行政处罚决定书, 抄告单 each on the case's evidence chain and intact
  (no verifier finding names its file);
- evidence chain intact (``roadwatch evidence verify`` finds nothing);
- deadlines: the decision after the 陈述申辩 period (处罚法 Art. 45, ``case.statement_days``); the decision
  within ``review.decision_days`` of filing (Art. 60); service within ``review.service_days`` of the decision
  (Art. 61); the 抄告 sent by its due day (62号令 Art. 44).

Score = 100 × passed / scored, one decimal (half up). Tables per officer (who decided the case) and per
station: files, mean score, files with full marks, failures per item.
"""
from __future__ import annotations

import hashlib
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from .config import Config

DOCUMENT_ITEMS = {"doc_notice": "notice", "doc_inform": "inform", "doc_decision": "decision",
                  "doc_agency_notice": "agency_notice"}
ITEMS = {
    "doc_notice": "违法行为通知书",
    "doc_inform": "行政处罚告知书",
    "doc_decision": "行政处罚决定书",
    "doc_agency_notice": "抄告单",
    "evidence_chain": "证据链完整",
    "statement_period": "陈述申辩期满后决定",
    "decision_deadline": "立案后按期决定",
    "service_deadline": "决定后按期送达",
    "agency_notice_deadline": "结案后按期抄告",
}


def _round1(x: float) -> float:
    return float(Decimal(str(x)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def sample(case_ids: list[str], month: str, cfg: Config) -> list[str]:
    """The files drawn for ``month``: ``review.sample_rate`` of them (half up, at least one when any and the
    rate is above zero), chosen by a hash of (``review.seed``, month, case id) — the same seed draws the same
    files whatever order the archive returns them in."""
    ids = sorted(set(case_ids))
    rate = float(cfg["review.sample_rate"])
    if not ids or rate <= 0:
        return []
    k = max(1, int(Decimal(str(rate * len(ids))).quantize(Decimal("1"), rounding=ROUND_HALF_UP)))
    seed = int(cfg["review.seed"])
    ranked = sorted(ids, key=lambda c: (hashlib.sha256(f"{seed}|{month}|{c}".encode()).hexdigest(), c))
    return sorted(ranked[:min(k, len(ids))])


def _day(iso: str | None) -> date | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso).date() if len(iso) > 10 else date.fromisoformat(iso)


def score(file: dict, cfg: Config, as_of: date) -> dict:
    """One file's checklist. ``file``: case_id, station_id, history ([{act, by, at}]), documents
    ([{kind, files: [{path}]}]), chain_problems ([str]), notice ({due_on, sent_at} or None)."""
    acts = {h["act"]: h for h in file.get("history") or []}
    day = {a: _day(h.get("at")) for a, h in acts.items()}
    problems = file.get("chain_problems") or []
    docs: dict[str, list[str]] = {}
    for d in file.get("documents") or []:
        docs.setdefault(d["kind"], []).extend(f["path"] for f in d.get("files") or [])
    items: dict[str, dict] = {}

    def put(name: str, ok: bool | None, detail: str) -> None:
        items[name] = {"label": ITEMS[name], "ok": ok, "detail": detail}

    for name, kind in DOCUMENT_ITEMS.items():
        paths = docs.get(kind)
        if not paths:
            put(name, False, "not on the evidence chain")
            continue
        hit = [p for p in problems if any(path in p for path in paths)]
        put(name, not hit, "; ".join(hit) if hit else "on the chain, intact")
    put("evidence_chain", not problems, "; ".join(problems[:5]) if problems else "verified")
    # (item, earlier act, later act, the rule on the days between, what the days are)
    sd, dl, sv = (int(cfg[k]) for k in ("case.statement_days", "review.decision_days", "review.service_days"))
    for name, first, then, ok, what in (
            ("statement_period", "notify", "decide", lambda d: d > sd, f"decided {{}} day(s) after notification "
                                                                      f"(period {sd} days)"),
            ("decision_deadline", "file", "decide", lambda d: d <= dl, f"decided {{}} day(s) after filing (limit {dl})"),
            ("service_deadline", "decide", "serve", lambda d: d <= sv, f"served {{}} day(s) after the decision "
                                                                       f"(limit {sv})")):
        if day.get(first) and day.get(then):
            days = (day[then] - day[first]).days
            put(name, ok(days), what.format(days))
        else:
            put(name, False, f"no {first} or no {then} in the history")
    n = file.get("notice")
    if not n:
        put("agency_notice_deadline", False, "no 抄告 made on closure")
    else:
        due, sent = date.fromisoformat(n["due_on"]), _day(n.get("sent_at"))
        if sent is not None:
            put("agency_notice_deadline", sent <= due, f"sent {sent.isoformat()}, due {due.isoformat()}")
        elif as_of > due:
            put("agency_notice_deadline", False, f"not sent, due {due.isoformat()}")
        else:
            put("agency_notice_deadline", None, f"not yet due ({due.isoformat()})")
    scored = [i for i in items.values() if i["ok"] is not None]
    passed = sum(1 for i in scored if i["ok"])
    officer = (acts.get("decide") or acts.get("close") or {}).get("by") or "—"
    return {"case_id": file["case_id"], "station_id": file.get("station_id"), "officer": officer,
            "score": _round1(100.0 * passed / len(scored)) if scored else None, "passed": passed,
            "scored": len(scored), "items": items}


def table(scored: list[dict], key: str) -> list[dict]:
    """Rows per ``key`` (officer | station_id): files, mean score, files with full marks, failures per item."""
    groups: dict[str, list[dict]] = {}
    for s in scored:
        groups.setdefault(s[key] or "—", []).append(s)
    out = []
    for k in sorted(groups):
        rows = groups[k]
        vals = [r["score"] for r in rows if r["score"] is not None]
        out.append({key: k, "files": len(rows), "mean_score": _round1(sum(vals) / len(vals)) if vals else None,
                    "full_marks": sum(1 for r in rows if r["score"] == 100.0),
                    "failures": {name: sum(1 for r in rows if r["items"][name]["ok"] is False) for name in ITEMS}})
    return out


def review(files: list[dict], closed: int, month: str, cfg: Config, as_of: date) -> dict:
    """The month's review: the sample's scores and the tables per officer and per station."""
    scored = [score(f, cfg, as_of) for f in files]
    return {"month": month, "closed_cases": closed, "sampled": len(scored),
            "sample_rate": float(cfg["review.sample_rate"]), "seed": int(cfg["review.seed"]),
            "as_of": as_of.isoformat(), "items": ITEMS, "files": scored,
            "by_officer": table(scored, "officer"), "by_station": table(scored, "station_id")}
