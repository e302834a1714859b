"""The JT/T 809 link's archive rows (the link itself is ``streams/jt809/``); portable SQL.

- ``platform_sessions``: one row per main-link login (online interval); the basis of 平台连通率.
- ``platform_events``: append-only link events (login, refused login, logout, loss, slave link …).
- ``platform_inspections`` / ``platform_inspection_answers``: every 查岗 sent and every answer received;
  the basis of 查岗响应率. The console and the CLI queue inspections here; the link server sends them.
- ``platform_vehicles``: the platform each plate was last forwarded by (shown in the console).

Times are epoch seconds (REAL) so interval arithmetic needs no date functions of a particular database.
``conn`` is an ``ArchiveConnection`` (``open_archive``).
"""
from __future__ import annotations

import uuid
from typing import Any

from roadwatch.models.platform_rates import inspection_status


def _id() -> str:
    return uuid.uuid4().hex


# --- sessions and events ----------------------------------------------------------------------------

def record_event(conn: Any, center_id: int | None, ts: float, event: str, detail: str = "") -> None:
    conn.execute("INSERT INTO platform_events (event_id, center_id, ts, event, detail) VALUES (?, ?, ?, ?, ?)",
                 (_id(), center_id, ts, event, detail[:500]))


def close_open_sessions(conn: Any, reason: str) -> int:
    """Close sessions a previous server left open, at their last frame (a crash loses no online time it
    saw, and credits none it did not)."""
    cur = conn.execute("UPDATE platform_sessions SET end_ts = last_seen, end_reason = ? WHERE end_ts IS NULL", (reason,))
    return cur.rowcount


def open_session(conn: Any, center_id: int, ts: float, protocol: int, peer: str) -> str:
    sid = _id()
    conn.execute("INSERT INTO platform_sessions (session_id, center_id, start_ts, last_seen, protocol, peer) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (sid, center_id, ts, ts, protocol, peer))
    return sid


def touch_session(conn: Any, session_id: str, ts: float) -> None:
    conn.execute("UPDATE platform_sessions SET last_seen = ? WHERE session_id = ? AND end_ts IS NULL AND last_seen < ?",
                 (ts, session_id, ts))


def close_session(conn: Any, session_id: str, end_ts: float | None, reason: str) -> None:
    """End a session at ``end_ts`` (None: at its last frame)."""
    if end_ts is None:
        conn.execute("UPDATE platform_sessions SET end_ts = last_seen, end_reason = ? "
                     "WHERE session_id = ? AND end_ts IS NULL", (reason, session_id))
    else:
        conn.execute("UPDATE platform_sessions SET end_ts = ?, last_seen = ?, end_reason = ? "
                     "WHERE session_id = ? AND end_ts IS NULL", (end_ts, end_ts, reason, session_id))


def sessions_between(conn: Any, start: float, end: float, now: float) -> dict[int, list[tuple[float, float]]]:
    """center → online intervals overlapping [start, end); an open session counts up to its last frame."""
    out: dict[int, list[tuple[float, float]]] = {}
    for r in conn.execute("SELECT center_id, start_ts, COALESCE(end_ts, last_seen) FROM platform_sessions "
                          "WHERE start_ts < ? AND COALESCE(end_ts, last_seen) > ?", (end, start)):
        out.setdefault(int(r[0]), []).append((float(r[1]), float(r[2])))
    return out


# --- inspections ------------------------------------------------------------------------------------

def queue_inspection(conn: Any, center_id: int, question: str, ts: float, requested_by: str,
                     answer_minutes: int, object_type: int = 1, object_id: str = "") -> str:
    """Queue one 查岗 for ``center_id``; the link server sends it (``queued_inspections``)."""
    iid = _id()
    with conn.transaction():
        nxt = conn.execute("SELECT COALESCE(MAX(info_id), 0) + 1 FROM platform_inspections WHERE center_id = ?",
                           (center_id,)).fetchone()[0]
        conn.execute("INSERT INTO platform_inspections (inspection_id, center_id, object_type, object_id, info_id, "
                     "question, answer_minutes, requested_ts, requested_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (iid, center_id, object_type, object_id or str(center_id), int(nxt), question, answer_minutes,
                      ts, requested_by))
    return iid


def queued_inspections(conn: Any) -> list[dict]:
    cur = conn.execute("SELECT inspection_id, center_id, object_type, object_id, info_id, question, answer_minutes "
                       "FROM platform_inspections WHERE sent_ts IS NULL ORDER BY requested_ts, inspection_id")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def mark_sent(conn: Any, inspection_id: str, ts: float, msg_sn: int | None, delivered: bool,
              deadline_ts: float) -> None:
    conn.execute("UPDATE platform_inspections SET sent_ts = ?, msg_sn = ?, delivered = ?, deadline_ts = ? "
                 "WHERE inspection_id = ? AND sent_ts IS NULL",
                 (ts, msg_sn, 1 if delivered else 0, deadline_ts, inspection_id))


def record_answer(conn: Any, center_id: int, ts: float, answer: str, responder: str = "",
                  info_id: int | None = None, source_msg_sn: int | None = None) -> str | None:
    """Archive an answer and attach it to the inspection it names (2011: INFO_ID; 2019: the request's
    MSG_SN). → the inspection id, or None when it names none we sent."""
    if source_msg_sn is not None:
        row = conn.execute("SELECT inspection_id FROM platform_inspections WHERE center_id = ? AND msg_sn = ? "
                           "AND sent_ts IS NOT NULL ORDER BY sent_ts DESC LIMIT 1", (center_id, source_msg_sn)).fetchone()
    else:
        row = conn.execute("SELECT inspection_id FROM platform_inspections WHERE center_id = ? AND info_id = ? "
                           "AND sent_ts IS NOT NULL", (center_id, info_id)).fetchone()
    iid = row[0] if row else None
    conn.execute("INSERT INTO platform_inspection_answers (answer_id, inspection_id, center_id, ts, info_id, "
                 "source_msg_sn, responder, answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (_id(), iid, center_id, ts, info_id, source_msg_sn, responder, answer))
    if iid is not None:
        conn.execute("UPDATE platform_inspections SET answered_ts = ?, answer = ? "
                     "WHERE inspection_id = ? AND answered_ts IS NULL", (ts, answer, iid))
    return iid


def inspections_between(conn: Any, start: float, end: float, now: float,
                        center_id: int | None = None) -> list[dict]:
    """Inspections requested in [start, end) with their derived ``status``."""
    sql = ("SELECT inspection_id, center_id, object_type, object_id, info_id, question, answer_minutes, requested_ts, "
           "requested_by, sent_ts, msg_sn, delivered, deadline_ts, answered_ts, answer FROM platform_inspections "
           "WHERE requested_ts >= ? AND requested_ts < ?")
    args: tuple = (start, end)
    if center_id is not None:
        sql += " AND center_id = ?"
        args += (center_id,)
    cur = conn.execute(sql + " ORDER BY requested_ts DESC", args)
    names = [d[0] for d in cur.description]
    out = []
    for r in cur.fetchall():
        d = dict(zip(names, r))
        answered = d["answered_ts"] if d["answered_ts"] is not None and d["answered_ts"] <= now else None
        d["status"] = inspection_status(d["sent_ts"], d["deadline_ts"], answered, bool(d["delivered"]), now)
        out.append(d)
    return out


# --- vehicles ---------------------------------------------------------------------------------------

def note_vehicles(conn: Any, rows: list[tuple[str, int, int, float]]) -> None:
    """Upsert (plate, colour, centre, ts): the platform each plate was last forwarded by."""
    conn.executemany("INSERT INTO platform_vehicles (plate, plate_color, center_id, last_seen) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (plate) DO UPDATE SET plate_color = excluded.plate_color, "
                     "center_id = excluded.center_id, last_seen = excluded.last_seen", rows)


def vehicle_platforms(conn: Any, plates: list[str] | None = None) -> dict[str, int]:
    if plates is None:
        return {r[0]: int(r[1]) for r in conn.execute("SELECT plate, center_id FROM platform_vehicles")}
    out = {}
    for p in plates:
        r = conn.execute("SELECT center_id FROM platform_vehicles WHERE plate = ?", (p,)).fetchone()
        if r:
            out[p] = int(r[0])
    return out


def known_centers(conn: Any) -> set[int]:
    rows = conn.execute("SELECT center_id FROM platform_sessions UNION SELECT center_id FROM platform_inspections")
    return {int(r[0]) for r in rows}


def link_state(conn: Any) -> dict[int, dict]:
    """center → latest session (online when end_ts is NULL)."""
    out: dict[int, dict] = {}
    for r in conn.execute("SELECT center_id, start_ts, last_seen, end_ts, end_reason, protocol, peer "
                          "FROM platform_sessions ORDER BY start_ts"):
        out[int(r[0])] = {"online": r[3] is None, "since": r[1] if r[3] is None else r[3], "last_seen": r[2],
                          "end_reason": r[4], "protocol": r[5], "peer": r[6]}
    return out


def slave_state(conn: Any) -> dict[int, dict]:
    """center → the slave link as its latest event says: up after ``slave_up`` until ``slave_down``,
    ``slave_refused``, a new login or the main link going ``offline``."""
    out: dict[int, dict] = {}
    for r in conn.execute("SELECT center_id, ts, event FROM platform_events WHERE center_id IS NOT NULL AND event IN "
                          "('slave_up', 'slave_down', 'slave_refused', 'login', 'offline') ORDER BY ts"):
        out[int(r[0])] = {"online": r[2] == "slave_up", "since": r[1]}
    return out
