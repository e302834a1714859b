"""FALLBACK case workflow, used only until ``streams.cases.CaseStore.act`` exists.

The lead passes the real ``case_actions(case_id, action, operator, reason)`` callable to the console; this
module implements the same transition rules directly on the archive so the console works and is tested
standalone:

    detected --review--> reviewed --confirm--> confirmed --notify--> notified
                                  \\-dismiss (reason required)--> dismissed

Each action appends a row to ``case_actions`` (operator, reason, time) and updates ``cases.status`` in one
transaction; the status check is part of the UPDATE, so two operators racing on one case cannot both win.
"""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from roadwatch.models.records import format_ts
from roadwatch.streams.archive import open_archive

# action → (statuses it may start from, resulting status)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "review": (frozenset({"detected"}), "reviewed"),
    "confirm": (frozenset({"reviewed"}), "confirmed"),
    "dismiss": (frozenset({"reviewed"}), "dismissed"),
    "notify": (frozenset({"confirmed"}), "notified"),
}
REASON_REQUIRED = frozenset({"dismiss"})
MAX_REASON = 500


class CaseActionError(ValueError):
    """``code``: not_found | bad_action | bad_transition | reason_required | bad_input."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def allowed_actions(status: str) -> list[str]:
    return [a for a, (froms, _) in TRANSITIONS.items() if status in froms]


def apply_case_action(conn: sqlite3.Connection, case_id: str, action: str, operator: str,
                      reason: str | None, now: datetime | None = None) -> dict:
    """Validate and apply one action; returns the case row (as a dict, with the new status)."""
    if action not in TRANSITIONS:
        raise CaseActionError("bad_action", f"unknown action {action!r}; one of {', '.join(TRANSITIONS)}")
    if not isinstance(operator, str) or not operator.strip():
        raise CaseActionError("bad_input", "operator is required")
    reason = (reason or "").strip() or None
    if action in REASON_REQUIRED and reason is None:
        raise CaseActionError("reason_required", f"{action} needs a reason")
    if reason is not None and len(reason) > MAX_REASON:
        raise CaseActionError("bad_input", f"reason longer than {MAX_REASON} characters")
    froms, to = TRANSITIONS[action]
    ts = format_ts(now or datetime.now(timezone.utc))
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT status FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        if row is None:
            raise CaseActionError("not_found", f"no case {case_id!r}")
        status = row[0]
        if status not in froms:
            raise CaseActionError("bad_transition",
                                  f"cannot {action} a case that is {status} (allowed: {', '.join(sorted(froms))})")
        cur = conn.execute("UPDATE cases SET status = ? WHERE case_id = ? AND status = ?", (to, case_id, status))
        if cur.rowcount != 1:   # pragma: no cover - guarded by BEGIN IMMEDIATE
            raise CaseActionError("bad_transition", "case changed concurrently")
        conn.execute("INSERT INTO case_actions(case_id, action, operator, reason, ts) VALUES (?,?,?,?,?)",
                     (case_id, action, operator, reason, ts))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    out = conn.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
    return dict(out)


def archive_case_actions(archive_path: str | Path) -> Callable[[str, str, str, str | None], dict]:
    """The fallback ``case_actions`` callable over an archive file (one connection per calling thread)."""
    def act(case_id: str, action: str, operator: str, reason: str | None) -> dict:
        return apply_case_action(open_archive(archive_path), case_id, action, operator, reason)
    act.__name__ = "fallback_case_actions"
    return act
