"""Sampled truck tracks (``track_points``, written with each ping snapshot): the console's recent track and
retention by data time."""
from __future__ import annotations

from .backend import ArchiveConnection


def recent_track(conn: ArchiveConnection, plate: str, limit: int = 500) -> list[dict]:
    """The newest ``limit`` sampled points of ``plate``, oldest first: ``{ts_ms, lat, lon, speed_kmh}``."""
    rows = conn.execute("SELECT ts_ms, lat, lon, speed_kmh FROM track_points WHERE plate=? "
                        "ORDER BY ts_ms DESC LIMIT ?", (plate, int(limit))).fetchall()
    return [dict(r) for r in reversed(rows)]


def prune_track_points(conn: ArchiveConnection, before_ms: int) -> int:
    """Delete points older than ``before_ms`` (data time); returns how many."""
    return conn.execute("DELETE FROM track_points WHERE ts_ms < ?", (int(before_ms),)).rowcount
