"""Stop events (``vehicle_stops``, written with each ping snapshot by streams/gps.py): the cargo-source
search (models/overload.py ``trace_source_site``) reads them; retention by data time with the track."""
from __future__ import annotations

from .backend import ArchiveConnection

STOP_COLS = ("plate", "start_ms", "end_ms", "lat", "lon", "closed_ms")


def save_stops(conn: ArchiveConnection, retract, stops) -> None:
    """Withdrawals ``(plate, after_ms)`` first — a late-data replay re-derived every stop of the plate closed
    after that time — then the stops ``(plate, start_ms, end_ms, lat, lon, closed_ms)``; a stop already
    stored (same plate and start) takes the new values, so a replayed commit changes nothing."""
    with conn.transaction():
        if retract:
            conn.executemany("DELETE FROM vehicle_stops WHERE plate = ? AND closed_ms > ?",
                             [(p, int(t)) for p, t in retract])
        if stops:
            conn.bulk_upsert("vehicle_stops", STOP_COLS, [tuple(s) for s in stops], ("plate", "start_ms"),
                             STOP_COLS[2:])


def stops_between(conn: ArchiveConnection, plate: str, since_ms: int, until_ms: int) -> list:
    """(start_ms, end_ms, lat, lon) of ``plate``'s stops overlapping ``[since_ms, until_ms]``, by start."""
    return conn.execute("""SELECT start_ms, end_ms, lat, lon FROM vehicle_stops
                           WHERE plate = ? AND end_ms >= ? AND start_ms <= ? ORDER BY start_ms""",
                        (plate, int(since_ms), int(until_ms))).fetchall()


def prune_stops(conn: ArchiveConnection, before_ms: int) -> int:
    """Delete stops that ended before ``before_ms`` (data time); returns how many."""
    return conn.execute("DELETE FROM vehicle_stops WHERE end_ms < ?", (int(before_ms),)).rowcount
