"""The 抄告 tables (migration 3): notices to home agencies (``outbound_notices``) and accepted notices from
other agencies (``inbound_notices``). Writes are insert-or-ignore on deterministic keys, so closing a case
again, re-importing a file or re-reading the topic changes nothing."""
from __future__ import annotations

import orjson

from .backend import ArchiveConnection


def _where(conds: list[tuple[str, object]]) -> tuple[str, tuple]:
    """`` WHERE …`` of the conditions whose value is given (a ``?`` in the condition takes the value)."""
    used = [(c, v) for c, v in conds if v]
    args = tuple(v for c, v in used if "?" in c)
    return (f" WHERE {' AND '.join(c for c, _ in used)}" if used else ""), args


def _out_row(r) -> dict:
    d = dict(r)
    d["notice"] = orjson.loads(d["notice"])
    return d


def insert_outbound(conn: ArchiveConnection, notice: dict, created_at: str) -> bool:
    """Store a notice once per case; True when it is new."""
    cur = conn.execute(
        """INSERT INTO outbound_notices (notice_id, case_id, to_agency, closed_on, due_on, created_at, notice)
           VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING""",
        (notice["notice_id"], notice["case_id"], notice["to_agency"], notice["decision"]["closed_on"],
         notice["due_on"], created_at, orjson.dumps(notice).decode()))
    return cur.rowcount == 1


def outbound(conn: ArchiveConnection, *, case_id: str | None = None, unsent: bool = False,
             closed_from: str | None = None, closed_before: str | None = None) -> list[dict]:
    """Outbound notices (newest closure first), optionally of one case, only the unsent, or closed in
    [closed_from, closed_before)."""
    where, args = _where([("case_id=?", case_id), ("sent_at IS NULL", unsent),
                          ("closed_on>=?", closed_from), ("closed_on<?", closed_before)])
    return [_out_row(r) for r in conn.execute(
        f"SELECT * FROM outbound_notices{where} ORDER BY closed_on DESC, notice_id", tuple(args))]


def mark_sent(conn: ArchiveConnection, notice_id: str, at: str, via: str, by: str) -> bool:
    """Record when a notice left (first time only); True when this call recorded it."""
    return conn.execute("UPDATE outbound_notices SET sent_at=?, sent_via=?, sent_by=? WHERE notice_id=? "
                        "AND sent_at IS NULL", (at, via, by, notice_id)).rowcount == 1


def overdue_count(conn: ArchiveConnection, today: str) -> int:
    return conn.execute("SELECT COUNT(*) FROM outbound_notices WHERE sent_at IS NULL AND due_on < ?",
                        (today,)).fetchone()[0]


def insert_inbound(conn: ArchiveConnection, row: dict) -> bool:
    cols = ("notice_key", "from_agency", "notice_id", "case_id", "plate", "enterprise_id", "driver_id",
            "decided_on", "closed_on", "received_at", "received_via", "received_by", "notice", "envelope")
    cur = conn.execute(f"INSERT INTO inbound_notices ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))}) "
                       "ON CONFLICT DO NOTHING", tuple(row.get(c) for c in cols))
    return cur.rowcount == 1


def inbound(conn: ArchiveConnection, *, plate: str | None = None, enterprise_id: str | None = None,
            driver_id: str | None = None) -> list[dict]:
    """Accepted inbound notices (newest decision first), optionally about one vehicle, enterprise or driver."""
    where, args = _where([("plate=?", plate), ("enterprise_id=?", enterprise_id), ("driver_id=?", driver_id)])
    out = []
    for r in conn.execute(f"SELECT notice_key, from_agency, notice_id, case_id, plate, enterprise_id, driver_id, "
                          f"decided_on, closed_on, received_at, received_via, received_by, notice "
                          f"FROM inbound_notices{where} ORDER BY decided_on DESC, notice_key", tuple(args)):
        d = dict(r)
        d["notice"] = orjson.loads(d["notice"])
        out.append(d)
    return out
