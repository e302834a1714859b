"""The enforcement case as a history: pure transition rules (no I/O).

A case is the ordered list of its acts; its status is derived by folding them (``derive``). Legal basis
per step: docs/legal-basis.md §4.

::

    detected ─review─▶ reviewed                        (optional: a reviewer takes the case)
    detected|reviewed ─confirm─▶ confirmed ─file─▶ filed ─notify─▶ notified ─decide─▶ decided
        ─serve─▶ served ─close─▶ closed
    detected|reviewed ─dismiss(reason)─▶ dismissed
    any status before closed (and not dismissed) ─withdraw(reason)─▶ withdrawn

The graph has no cycle, so every action occurs at most once in a case: an act's id is
``<case_id>:<action>`` and replaying it is a no-op. Facts that are not transitions (``amend``: a driver
identified by an officer, a source site traced later) may repeat; their id hashes their content.

Legal dates: each act carries ``at`` (the date the act has in law, e.g. the decision date, which may
precede the day it is entered) and ``entered_at`` (wall clock). Legal dates never go backwards along a
case, and a decision is refused before the owner's 陈述申辩 period after notification has run out.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta

# action → (statuses it may start from, resulting status)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "review": (frozenset({"detected"}), "reviewed"),
    "confirm": (frozenset({"detected", "reviewed"}), "confirmed"),
    "dismiss": (frozenset({"detected", "reviewed"}), "dismissed"),
    "file": (frozenset({"confirmed"}), "filed"),
    "notify": (frozenset({"filed"}), "notified"),
    "decide": (frozenset({"notified"}), "decided"),
    "serve": (frozenset({"decided"}), "served"),
    "close": (frozenset({"served"}), "closed"),
    "withdraw": (frozenset({"detected", "reviewed", "confirmed", "filed", "notified", "decided", "served"}),
                 "withdrawn"),
}
ACTIONS = tuple(TRANSITIONS)
FACT_ACTIONS = ("amend", "conflict")           # facts recorded on a case without changing its status
STATUSES = ("detected", "reviewed", "confirmed", "dismissed", "filed", "notified", "decided", "served",
            "closed", "withdrawn")
FINAL = frozenset({"dismissed", "closed", "withdrawn"})
REASON_REQUIRED = frozenset({"dismiss", "withdraw", "close"})
MAX_REASON = 500
LABELS = {"detected": "检测", "reviewed": "审核中", "confirmed": "确认", "dismissed": "不予立案",
          "filed": "立案", "notified": "告知", "decided": "决定", "served": "送达", "closed": "结案",
          "withdrawn": "撤销"}


class TransitionError(ValueError):
    """A refused act. ``code``: bad_action | bad_transition | reason_required | bad_input | too_early."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Act:
    case_id: str
    action: str
    by: str
    at: str                  # legal date-time of the act, ISO-8601 with offset
    entered_at: str          # when it was entered
    reason: str | None = None
    driver_id: str | None = None
    details: dict | None = None

    def as_dict(self) -> dict:
        d = {"act_id": act_id(self), "act": self.action, "by": self.by, "at": self.at,
             "entered_at": self.entered_at, "reason": self.reason}
        if self.driver_id:
            d["driver_id"] = self.driver_id
        if self.details:
            d["details"] = self.details
        return d


def act_id(act: Act) -> str:
    if act.action in TRANSITIONS:
        return f"{act.case_id}:{act.action}"
    body = f"{act.case_id}|{act.action}|{act.at}|{act.driver_id or ''}|{sorted((act.details or {}).items())}"
    return f"{act.case_id}:{act.action}:{hashlib.sha256(body.encode()).hexdigest()[:16]}"


def allowed_actions(status: str) -> list[str]:
    return [a for a, (froms, _) in TRANSITIONS.items() if status in froms]


def _legal_day(iso: str) -> date:
    return datetime.fromisoformat(iso).date()


def check(status: str, history: list[Act], act: Act, *, statement_days: int) -> str:
    """The status after ``act``, or TransitionError. ``history``: the case's earlier acts in order."""
    if act.action in FACT_ACTIONS:
        if status in FINAL:
            raise TransitionError("bad_transition", f"cannot amend a case that is {status}")
        return status
    if act.action not in TRANSITIONS:
        raise TransitionError("bad_action", f"unknown action {act.action!r}; one of {', '.join(ACTIONS)}")
    if not act.by or not act.by.strip():
        raise TransitionError("bad_input", "the officer (by) is required")
    if act.action in REASON_REQUIRED and not (act.reason or "").strip():
        raise TransitionError("reason_required", f"{act.action} needs a reason")
    if act.reason is not None and len(act.reason) > MAX_REASON:
        raise TransitionError("bad_input", f"reason longer than {MAX_REASON} characters")
    froms, to = TRANSITIONS[act.action]
    if status not in froms:
        allowed = ", ".join(allowed_actions(status)) or "none"
        raise TransitionError("bad_transition",
                              f"cannot {act.action} a case that is {status} (allowed now: {allowed})")
    last = [a for a in history if a.action in TRANSITIONS]
    if last and _legal_day(act.at) < _legal_day(last[-1].at):
        raise TransitionError("bad_input", f"{act.action} dated {act.at[:10]} precedes the case's "
                                           f"{last[-1].action} dated {last[-1].at[:10]}")
    if act.action == "decide":
        notified = next(a for a in last if a.action == "notify")
        earliest = _legal_day(notified.at) + timedelta(days=statement_days + (1 if statement_days else 0))
        if _legal_day(act.at) < earliest:
            raise TransitionError("too_early", f"decision dated {act.at[:10]} falls inside the owner's "
                                               f"陈述申辩 period ({statement_days} days from notification on "
                                               f"{notified.at[:10]}); earliest {earliest.isoformat()}")
    return to


def derive(acts: list[Act], *, until: str | None = None) -> dict:
    """Status and the legal facts of a case from its acts (optionally only acts with legal date ≤ ``until``,
    compared by day): ``status``, ``decided_on`` (legal date of the decision), ``driver`` (the latest
    officer-entered driver, with its source)."""
    status, decided_on, driver = "detected", None, None
    cutoff = _legal_day(until) if until else None
    for a in acts:
        if cutoff is not None and _legal_day(a.at) > cutoff:
            continue
        if a.action in TRANSITIONS and status in TRANSITIONS[a.action][0]:
            status = TRANSITIONS[a.action][1]
            if a.action == "decide":
                decided_on = a.at
        if a.driver_id:
            driver = {"id": a.driver_id, "source": "officer", "by": a.by, "at": a.at}
    return {"status": status, "decided_on": decided_on, "driver": driver}


def reached(acts: list[Act], statuses) -> str | None:
    """Legal date of the act by which the case first reached one of ``statuses`` (None if it never did)."""
    status = "detected"
    for a in acts:
        if a.action in TRANSITIONS and status in TRANSITIONS[a.action][0]:
            status = TRANSITIONS[a.action][1]
            if status in statuses:
                return a.at
    return None


def funnel_stages(status: str) -> set[str]:
    """Every stage a case in ``status`` has passed through (for the report's funnel)."""
    order = ("detected", "confirmed", "filed", "notified", "decided", "served", "closed")
    if status in order:
        return set(order[:order.index(status) + 1])
    return {"detected", status}
