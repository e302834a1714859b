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
import heapq
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from .config import Config
from .lifecycle import Act, TransitionError, derive, reached

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


@dataclass(frozen=True)
class _Counted:
    """A case that counts: from ``since`` (legal date it reached the counting status) it is one violation
    dated by its decision day ``decided``."""
    case_id: str
    plate: str
    enterprise_id: str | None
    goods_vehicles: int | None
    driver: str | None              # identified driver only
    decided: date
    since: date


def _prepare(cases: list[CaseFacts], cfg: Config, until: str | None = None) -> list[_Counted]:
    statuses = counting_statuses(cfg)
    cutoff = _day(until) if until else None
    out = []
    for c in cases:
        full = derive(c.acts)
        if full["status"] in VOID:
            continue                # a withdrawn (撤销) decision is void from the start: it never counted
        since = reached(c.acts, statuses)
        if since is None or not full["decided_on"] or (cutoff is not None and _day(since) > cutoff):
            continue
        drv, src = c.driver_at(until)
        out.append(_Counted(c.case_id, c.plate, c.enterprise_id, c.goods_vehicles,
                            drv if drv and src in IDENTIFIED_SOURCES else None, _day(full["decided_on"]),
                            _day(since)))
    return out


def counting_ids(cases: list[CaseFacts], cfg: Config) -> set[str]:
    """Ids of the cases that count (at some date) on their full histories."""
    return {c.case_id for c in _prepare(cases, cfg)}


def counting(case: CaseFacts, cfg: Config, until: str) -> date | None:
    """The case's decision day if, as of ``until``, it counts for Art. 66 (else None)."""
    got = _prepare([case], cfg, until)
    return got[0].decided if got else None


def _groups(counted: list[_Counted]) -> dict[tuple[str, str], list[tuple[_Counted, str]]]:
    """(target, subject) → [(case, member)]: members are cases for vehicle and driver, plates for enterprise."""
    g: dict[tuple[str, str], list] = {}
    for c in counted:
        g.setdefault(("vehicle", c.plate), []).append((c, c.case_id))
        if c.driver:
            g.setdefault(("driver", c.driver), []).append((c, c.case_id))
        if c.enterprise_id:
            g.setdefault(("enterprise", c.enterprise_id), []).append((c, c.plate))
    return g


def _over(target: str, members: int, items: list, cfg: Config) -> tuple[bool, float, int | None]:
    """(over the threshold?, threshold, goods vehicles)."""
    if target != "enterprise":
        thr = int(cfg["art66.vehicle_driver_threshold"])
        return members > thr, thr, None
    fleet = next((int(c.goods_vehicles) for c, _ in items if c.goods_vehicles), 0)
    limit = round(float(cfg["art66.enterprise_share"]) * fleet, 9)
    return fleet > 0 and members > limit, limit, fleet


def _entry(target, subject, members, threshold, fleet, case_ids, start: date, end: date) -> dict:
    e = {"target": target, "subject": subject, "count": members, "threshold": threshold,
         "case_ids": sorted(case_ids), "sanction": SANCTIONS[target], "window_start": start.isoformat(),
         "window_end": end.isoformat(), "basis": BASIS}
    if fleet is not None:
        e["goods_vehicles"] = fleet
    return e


def escalations_at(cases: list[CaseFacts], cfg: Config, at: str) -> list[dict]:
    """One entry per subject over its threshold in the window ending at ``at`` (legal dates ≤ ``at``)."""
    start, end = window(at, cfg)
    out = []
    order = {"vehicle": 0, "driver": 1, "enterprise": 2}
    for (target, subject), items in sorted(_groups(_prepare(cases, cfg, at)).items(),
                                           key=lambda kv: (order[kv[0][0]], kv[0][1])):
        live = [(c, m) for c, m in items if start <= c.decided <= end]
        members = len({m for _, m in live})
        over, thr, fleet = _over(target, members, items, cfg)
        if over:
            out.append(_entry(target, subject, members, thr, fleet, [c.case_id for c, _ in live], start, end))
    return out


def crossings(cases: list[CaseFacts], cfg: Config,
              only: tuple[str, str] | None = None) -> dict[tuple[str, str], dict]:
    """Per (target, subject) (or just ``only``): the escalation at the earliest date, over the full histories,
    at which the subject was over its threshold. Counts only rise on the day a case starts counting, so those days are
    swept in order; a case leaves the window for good once its decision day is older than the window."""
    days_w = int(cfg["art66.window_days"])
    out: dict[tuple[str, str], dict] = {}
    for (target, subject), items in _groups(_prepare(cases, cfg)).items():
        if only is not None and (target, subject) != only:
            continue
        items = sorted(items, key=lambda cm: (cm[0].since, cm[0].case_id))
        heap: list = []
        active: dict[str, set] = {}
        i = 0
        for d in sorted({c.since for c, _ in items}):
            while i < len(items) and items[i][0].since <= d:
                c, m = items[i]
                heapq.heappush(heap, (c.decided, c.case_id, m))
                active.setdefault(m, set()).add(c.case_id)
                i += 1
            start = d - timedelta(days=days_w - 1)
            while heap and heap[0][0] < start:
                _, cid, m = heapq.heappop(heap)
                active[m].discard(cid)
                if not active[m]:
                    del active[m]
            over, thr, fleet = _over(target, len(active), items, cfg)
            if over:
                out[(target, subject)] = _entry(target, subject, len(active), thr, fleet,
                                                [cid for ids in active.values() for cid in ids], start, d)
                break
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
