"""公路安全保护条例 Art. 66 consequences, derived from case histories (pure; docs/legal-basis.md §4).

Nothing here is stamped on a case: every function takes the cases' current histories and recomputes.

- vehicle: more than ``art66.vehicle_driver_threshold`` counting cases (status ``art66.counts_from``
  or later) whose **decision date** lies in the window of ``art66.window_days`` days
  ending at the evaluation date → 吊销车辆营运证;
- driver: the same, over cases whose driver is *identified* (IC card at the passage, or entered by an
  officer); a registry-assigned ("presumed") driver never counts → 责令停止从事营业性运输;
- enterprise: distinct vehicles with a counting case in the window strictly above
  ``art66.enterprise_share`` × its registered goods vehicles → 责令停业整顿.

The order in which cases arrive or acts are entered does not matter: only legal dates do. A withdrawn case
(撤销) never counts, at any date: the revoked decision is void from the start (docs/legal-basis.md §4.3).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from .config import Config
from .lifecycle import Act, TransitionError, derive

SANCTIONS = {
    "vehicle": "吊销车辆营运证",
    "driver": "责令停止从事营业性运输",
    "enterprise": "责令停业整顿",
}
BASIS = "《公路安全保护条例》第六十六条"
IDENTIFIED_SOURCES = frozenset({"ic_card", "officer"})
VOID = frozenset({"withdrawn", "dismissed"})


@dataclass
class CaseFacts:
    """What Art. 66 needs of one case: its subjects and its acts (legal dates)."""
    case_id: str
    plate: str
    enterprise_id: str | None
    goods_vehicles: int | None          # the enterprise's registered goods vehicles (from the case)
    driver_id: str | None               # driver found at detection
    driver_source: str                  # ic_card | registry | unknown
    acts: list[Act] = field(default_factory=list)

    def driver_at(self, until: str | None = None) -> tuple[str | None, str]:
        """(driver id, source) as of ``until``: an officer's entry overrides detection."""
        d = derive(self.acts, until=until)["driver"]
        if d:
            return d["id"], "officer"
        return self.driver_id, self.driver_source


def _day(iso: str) -> date:
    return datetime.fromisoformat(iso).date() if "T" in iso or len(iso) > 10 else date.fromisoformat(iso)


def window(at: str, cfg: Config) -> tuple[date, date]:
    """(first day, last day) of the window ending at ``at``, both inclusive."""
    end = _day(at)
    return end - timedelta(days=int(cfg["art66.window_days"]) - 1), end


def counting_statuses(cfg: Config) -> tuple[str, ...]:
    order = ("decided", "served", "closed")
    return order[order.index(cfg["art66.counts_from"]):]


def counting(case: CaseFacts, cfg: Config, until: str) -> date | None:
    """The case's decision day if, as of ``until``, it counts for Art. 66 (else None)."""
    if derive(case.acts)["status"] in VOID:
        return None                 # a withdrawn (撤销) decision is void from the start: it never counted
    d = derive(case.acts, until=until)
    if d["status"] in counting_statuses(cfg) and d["decided_on"]:
        return _day(d["decided_on"])
    return None


def escalations_at(cases: list[CaseFacts], cfg: Config, at: str) -> list[dict]:
    """One entry per subject over its threshold in the window ending at ``at`` (legal dates ≤ ``at``)."""
    start, end = window(at, cfg)
    thr = int(cfg["art66.vehicle_driver_threshold"])
    share = float(cfg["art66.enterprise_share"])
    by_vehicle: dict[str, list[str]] = {}
    by_driver: dict[str, list[str]] = {}
    by_ent: dict[str, dict[str, list[str]]] = {}
    fleet: dict[str, int] = {}
    for c in cases:
        day = counting(c, cfg, at)
        if day is None or not (start <= day <= end):
            continue
        by_vehicle.setdefault(c.plate, []).append(c.case_id)
        drv, src = c.driver_at(at)
        if drv and src in IDENTIFIED_SOURCES:
            by_driver.setdefault(drv, []).append(c.case_id)
        if c.enterprise_id:
            by_ent.setdefault(c.enterprise_id, {}).setdefault(c.plate, []).append(c.case_id)
            if c.goods_vehicles:
                fleet[c.enterprise_id] = int(c.goods_vehicles)
    out = []
    common = {"window_start": start.isoformat(), "window_end": end.isoformat(), "basis": BASIS}
    for target, groups in (("vehicle", by_vehicle), ("driver", by_driver)):
        for subject, ids in sorted(groups.items()):
            if len(ids) > thr:
                out.append({"target": target, "subject": subject, "count": len(ids), "threshold": thr,
                            "case_ids": sorted(ids), "sanction": SANCTIONS[target], **common})
    for ent, plates in sorted(by_ent.items()):
        n = fleet.get(ent, 0)
        limit = round(share * n, 9)
        if n > 0 and len(plates) > limit:
            out.append({"target": "enterprise", "subject": ent, "count": len(plates), "threshold": limit,
                        "goods_vehicles": n, "case_ids": sorted(i for ids in plates.values() for i in ids),
                        "sanction": SANCTIONS["enterprise"], **common})
    return out


def crossings(cases: list[CaseFacts], cfg: Config) -> dict[tuple[str, str], dict]:
    """Per (target, subject): the earliest date, over the full histories, at which the subject was over its
    threshold, with the escalation at that date. Only decision days can raise a count, so those are the
    dates evaluated."""
    days = sorted({d for c in cases if (d := counting(c, cfg, "9999-12-31")) is not None})
    out: dict[tuple[str, str], dict] = {}
    for d in days:
        for e in escalations_at(cases, cfg, d.isoformat()):
            out.setdefault((e["target"], e["subject"]), e)
    return out


def proposal_id(target: str, subject: str, case_ids: list[str]) -> str:
    h = hashlib.sha256(f"{target}|{subject}|{','.join(sorted(case_ids))}".encode()).hexdigest()
    return "P" + h[:23].upper()


# --- the escalation proposal's own workflow -------------------------------------------------------------
# proposed ─legal_review─▶ reviewed ─notify─▶ notified (hearing right) ─decide─▶ decided
# any before decided ─withdraw(reason)─▶ withdrawn

PROPOSAL_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "legal_review": (frozenset({"proposed"}), "reviewed"),
    "notify": (frozenset({"reviewed"}), "notified"),
    "decide": (frozenset({"notified"}), "decided"),
    "withdraw": (frozenset({"proposed", "reviewed", "notified"}), "withdrawn"),
}
PROPOSAL_OPEN = frozenset({"proposed", "reviewed", "notified"})


def proposal_check(status: str, history: list[Act], act: Act, *, hearing_days: int) -> str:
    if act.action not in PROPOSAL_TRANSITIONS:
        raise TransitionError("bad_action", f"unknown proposal action {act.action!r}; one of "
                                            f"{', '.join(PROPOSAL_TRANSITIONS)}")
    if not act.by or not act.by.strip():
        raise TransitionError("bad_input", "the officer (by) is required")
    if act.action == "withdraw" and not (act.reason or "").strip():
        raise TransitionError("reason_required", "withdraw needs a reason")
    froms, to = PROPOSAL_TRANSITIONS[act.action]
    if status not in froms:
        raise TransitionError("bad_transition", f"cannot {act.action} a proposal that is {status}")
    if act.action == "decide":
        notified = next(a for a in history if a.action == "notify")
        earliest = _day(notified.at) + timedelta(days=hearing_days + (1 if hearing_days else 0))
        if _day(act.at) < earliest:
            raise TransitionError("too_early", f"decision dated {act.at[:10]} falls inside the hearing-request "
                                               f"period ({hearing_days} days from {notified.at[:10]}); "
                                               f"earliest {earliest.isoformat()}")
    return to


def proposal_status(acts: list[Act]) -> str:
    status = "proposed"
    for a in acts:
        if a.action in PROPOSAL_TRANSITIONS and status in PROPOSAL_TRANSITIONS[a.action][0]:
            status = PROPOSAL_TRANSITIONS[a.action][1]
    return status
