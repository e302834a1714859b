"""案卷评查 wiring: the month's closed cases (streams/archive/case_review.py) → the reproducible sample →
each file's facts (its history, its documents, ``evidence verify`` on its package, its 抄告) → the pure
checklist (models/case_review.py). The CLI (``roadwatch case-review``) and the monthly report use it."""
from __future__ import annotations

from datetime import date
from pathlib import Path

from roadwatch.models import case_review as R
from roadwatch.models.config import Config
from roadwatch.models.evidence import EvidenceError, verify_package

from .archive.case_review import closed_in_month


def _trusted(pkg: Path, cfg: Config) -> Path:
    from .evidence_cmd import default_keys
    return Path(cfg["evidence.trusted_keys_dir"] or default_keys(pkg, cfg))


def month_review(conn, cfg: Config, month: str, as_of: date) -> dict:
    from . import documents
    from .cases import CaseStore
    store = CaseStore(conn, cfg, data_dir=cfg.data_dir)
    closed = closed_in_month(conn, month)
    stations = {r["case_id"]: r["station_id"] for r in closed}
    files = []
    for cid in R.sample(list(stations), month, cfg):
        case = store.show(cid)
        pkg = documents.package_of(store, cid)
        try:
            problems = verify_package(pkg, _trusted(pkg, cfg)) if pkg else ["no evidence package"]
        except EvidenceError as e:
            problems = [str(e)]
        files.append({"case_id": cid, "station_id": stations[cid], "history": case["history"],
                      "documents": case["documents"], "chain_problems": problems, "notice": case["agency_notice"]})
    out = R.review(files, len(closed), month, cfg, as_of)
    out["agency_notices"] = notices_of_month(conn, month, as_of)
    return out


def notices_of_month(conn, month: str, as_of: date) -> dict:
    """The 抄告 of the cases closed in ``month``: sent in time, sent late, overdue (not sent, past due), not
    yet due — and which are overdue."""
    from roadwatch.models.notices import overdue
    from roadwatch.models.rates import month_days

    from .archive.notices import outbound
    start, end = month_days(month)
    rows = outbound(conn, closed_from=start, closed_before=end)
    late = [r for r in rows if r["sent_at"] and r["sent_at"][:10] > r["due_on"]]
    over = [r for r in rows if overdue(r["due_on"], r["sent_at"], as_of)]
    return {"total": len(rows), "sent_in_time": sum(1 for r in rows if r["sent_at"]) - len(late),
            "sent_late": len(late), "overdue": len(over),
            "not_yet_due": sum(1 for r in rows if not r["sent_at"] and r not in over),
            "overdue_cases": [{"case_id": r["case_id"], "due_on": r["due_on"], "to_agency": r["to_agency"]}
                              for r in over]}
