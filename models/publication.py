"""Publication of decided cases (行政执法公示): the entry for the public list, masked, and its deadline.

Pure. ``entry`` turns a case (``CaseStore.show``) into what the public list shows: the decision's number and
date, the masked plate and party, the facts in one line, the penalty, the basis and the authority — never
the driver, never a person's full name (config ``publication.*``). ``publish_by`` is the decision date plus
``publication.within_working_days`` working days of the configured calendar (``calendar.*``). A decision
withdrawn (revoked) is not listed; it is named, without details, among ``withdrawn`` so an earlier copy of
the list can be corrected. Legal basis: docs/legal-basis.md §9.3.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta

from .config import Config
from .documents import KIND_CODES

ORG_MARKERS = ("公司", "企业", "厂", "中心", "合作社", "站", "局", "队", "场", "集团", "商行", "经营部")


class CalendarError(ValueError):
    pass


def _dates(text: str, key: str) -> set[date]:
    out = set()
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                out.add(date.fromisoformat(part))
            except ValueError:
                raise CalendarError(f"{key}: {part!r} is not a YYYY-MM-DD date") from None
    return out


def is_working_day(d: date, cfg: Config) -> bool:
    """Mon–Fri unless a listed holiday; a listed make-up day (调休, e.g. a Saturday) is a working day."""
    if d in _dates(cfg["calendar.extra_workdays"], "calendar.extra_workdays"):
        return True
    return d.weekday() < 5 and d not in _dates(cfg["calendar.holidays"], "calendar.holidays")


def add_working_days(start: date, n: int, cfg: Config) -> date:
    """The ``n``-th working day after ``start`` (the day of the act itself does not count)."""
    d, left = start, n
    while left > 0:
        d += timedelta(days=1)
        if is_working_day(d, cfg):
            left -= 1
    return d


def mask_party(name: str | None, cfg: Config) -> str:
    """A natural person's name keeps its first character (张**); an organisation's name is kept unless
    ``publication.mask_organisations``."""
    mask_orgs = cfg["publication.mask_organisations"]
    if not name:
        return "—"
    is_org = any(m in name for m in ORG_MARKERS)
    if is_org and not mask_orgs:
        return name
    return name[0] + "*" * max(1, len(name) - 1) if not is_org else name[:2] + "*" * max(1, len(name) - 4) + name[-2:]


def mask_plate(plate: str, cfg: Config) -> str:
    """``middle``: the first two and the last two characters stay (湘BN983S → 湘B***3S);
    ``none``: unmasked."""
    if cfg["publication.plate_mask"] == "none" or len(plate) < 5:
        return plate
    return plate[:2] + "*" * (len(plate) - 4) + plate[-2:]


def entry(case: dict, cfg: Config) -> dict:
    m = case.get("manifest") or {}
    site, exc = m.get("site") or {}, m.get("excess") or {}
    owner = ((case.get("liable") or {}).get("owner") or {}).get("owner")
    decided = next(h for h in case["history"] if h["act"] == "decide")
    day = datetime.fromisoformat(decided["at"]).date()
    fine = int(case.get("fine_yuan") or 0)
    return {
        "doc_no": f"{cfg['documents.number_prefix']}{KIND_CODES['decision']}〔{day.year}〕{case['case_id']}号",
        "case_id": case["case_id"], "decided_on": day.isoformat(),
        "publish_by": add_working_days(day, int(cfg["publication.within_working_days"]), cfg).isoformat(),
        "party": mask_party(owner, cfg), "plate": mask_plate(case["plate"], cfg),
        "facts": f"{str((m.get('time') or {}).get('ts') or case.get('ts'))[:10]} 于 {site.get('name') or case.get('station_id')}"
                 f" 车货总质量超过限定标准 {exc.get('kg', 0):,.0f} 千克（{exc.get('pct', 0)}%），违法超限运输",
        "penalty": f"罚款人民币 {fine:,} 元" if fine else "警告",
        "basis": ((m.get("penalties") or {}).get("road_administration") or {}).get("basis") or "",
        "authority": cfg["documents.agency_name"],
    }


def decision_list(cases: list[dict], cfg: Config, as_of: date) -> dict:
    """The public list as of ``as_of``: decisions dated on or before it, not withdrawn by then."""
    listed, withdrawn = [], []
    for c in cases:
        acts = {h["act"]: h for h in c.get("history") or []}
        if "decide" not in acts or datetime.fromisoformat(acts["decide"]["at"]).date() > as_of:
            continue
        w = acts.get("withdraw")
        if w and datetime.fromisoformat(w["at"]).date() <= as_of:
            withdrawn.append({"case_id": c["case_id"], "withdrawn_on": datetime.fromisoformat(w["at"]).date().isoformat()})
            continue
        listed.append(entry(c, cfg))
    listed.sort(key=lambda e: (e["decided_on"], e["case_id"]), reverse=True)
    return {"schema": "roadwatch.decision-list/1", "as_of": as_of.isoformat(), "authority": cfg["documents.agency_name"],
            "within_working_days": int(cfg["publication.within_working_days"]),
            "decisions": listed, "withdrawn": withdrawn}
