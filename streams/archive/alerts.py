"""The console's view of alerts: the archived alerts with their acknowledgement (``alert_acks``, the
newest one per alert) and the operators' handling notes (``alert_notes``, append-only). Alerts themselves
are written by the GPS path (``snapshots.upsert_alerts``)."""
from __future__ import annotations

from .backend import ArchiveConnection

_ACK_SQL = ("INSERT INTO alert_acks(alert_id, operator, note, ts) VALUES (?,?,?,?) "
            "ON CONFLICT(alert_id) DO UPDATE SET operator = excluded.operator, note = excluded.note, "
            "ts = excluded.ts")


def alerts_for_console(conn: ArchiveConnection, type_: str | None = None, plate: str | None = None,
                       day: str | None = None, limit: int = 300) -> list[dict]:
    """The newest ``limit`` archived alerts (filtered by type, plate, day when given) with ``ack_by``,
    ``ack_ts``, ``ack_note``."""
    sql = ("SELECT a.alert_id, a.type, a.plate, a.start_ts, a.end_ts, a.severity, a.lat, a.lon, a.late, "
           "a.details, k.operator AS ack_by, k.ts AS ack_ts, k.note AS ack_note FROM alerts a "
           "LEFT JOIN alert_acks k ON k.alert_id = a.alert_id")
    used = {col: v for col, v in (("a.type", type_), ("a.plate", plate), ("a.day", day)) if v}
    if used:
        sql += " WHERE " + " AND ".join(f"{col} = ?" for col in used)
    sql += " ORDER BY a.start_ts DESC LIMIT ?"
    return [dict(r) for r in conn.execute(sql, [*used.values(), limit])]


def acks_for(conn: ArchiveConnection, alert_ids: list[str]) -> dict[str, dict]:
    """``{alert_id: {ack_by, ack_ts, ack_note}}`` of the acknowledged ones among ``alert_ids``."""
    out = {}
    for i in range(0, len(alert_ids), 500):
        chunk = alert_ids[i:i + 500]
        q = (f"SELECT alert_id, operator, ts, note FROM alert_acks "
             f"WHERE alert_id IN ({','.join('?' * len(chunk))})")
        for r in conn.execute(q, chunk):
            out[r["alert_id"]] = {"ack_by": r["operator"], "ack_ts": r["ts"], "ack_note": r["note"]}
    return out


def alert_exists(conn: ArchiveConnection, alert_id: str) -> bool:
    return conn.execute("SELECT 1 FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone() is not None


def ack_alert(conn: ArchiveConnection, alert_id: str, operator: str, note: str | None, ts: str) -> None:
    """The alert's acknowledgement: the newest replaces the one stored."""
    conn.execute(_ACK_SQL, (alert_id, operator, note, ts))


def add_alert_note(conn: ArchiveConnection, alert_id: str, operator: str, note: str, ts: str) -> None:
    """An operator's handling note (kept) which also acknowledges the alert, in one transaction."""
    with conn.transaction():
        conn.execute("INSERT INTO alert_notes(alert_id, operator, note, ts) VALUES (?,?,?,?)",
                     (alert_id, operator, note, ts))
        conn.execute(_ACK_SQL, (alert_id, operator, note, ts))


def alert_notes(conn: ArchiveConnection, alert_id: str) -> list[dict]:
    """The alert's notes, oldest first: ``{operator, note, ts}``."""
    return [dict(r) for r in conn.execute(
        "SELECT operator, note, ts FROM alert_notes WHERE alert_id = ? ORDER BY id", (alert_id,))]


def alerts_per_plate(conn: ArchiveConnection, day: str) -> dict[str, int]:
    """How many alerts each vehicle had on ``day`` (YYYY-MM-DD, Beijing)."""
    return {r[0]: r[1] for r in conn.execute("SELECT plate, COUNT(*) FROM alerts WHERE day = ? GROUP BY plate",
                                             (day,))}
