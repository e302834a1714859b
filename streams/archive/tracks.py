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


def last_track_ts(conn: ArchiveConnection, plate: str) -> int | None:
    """The newest stored point of ``plate`` (ms), or None: how far its track has arrived."""
    return conn.execute("SELECT MAX(ts_ms) FROM track_points WHERE plate=?", (plate,)).fetchone()[0]


def upsert_track_points(conn: ArchiveConnection, rows: list[tuple]) -> None:
    """(plate, ts_ms, lat, lon, speed_kmh) rows; a point already stored takes the new position."""
    with conn.transaction():
        conn.executemany("""INSERT INTO track_points (plate, ts_ms, lat, lon, speed_kmh) VALUES (?,?,?,?,?)
                            ON CONFLICT (plate, ts_ms) DO UPDATE SET lat = excluded.lat, lon = excluded.lon,
                            speed_kmh = excluded.speed_kmh""", rows)


def track_between(conn: ArchiveConnection, plate: str, since_ms: int, until_ms: int) -> list:
    """(ts_ms, lat, lon, speed_kmh) rows of ``plate`` in ``[since_ms, until_ms]``, oldest first."""
    return conn.execute("""SELECT ts_ms, lat, lon, speed_kmh FROM track_points
                           WHERE plate=? AND ts_ms BETWEEN ? AND ? ORDER BY ts_ms""",
                        (plate, int(since_ms), int(until_ms))).fetchall()


def track_span(conn: ArchiveConnection, plate: str) -> tuple[int | None, int | None, int]:
    """(first ts_ms, last ts_ms, number of points) kept for ``plate``."""
    r = conn.execute("SELECT MIN(ts_ms), MAX(ts_ms), COUNT(*) FROM track_points WHERE plate = ?", (plate,)).fetchone()
    return r[0], r[1], r[2]


def newest_track_points(conn: ArchiveConnection, plate: str, lo_ms: int, hi_ms: int, limit: int) -> list:
    """The newest ``limit`` (ts_ms, lat, lon, speed_kmh) rows of ``plate`` in ``[lo_ms, hi_ms]``, newest first."""
    return conn.execute("SELECT ts_ms, lat, lon, speed_kmh FROM track_points WHERE plate = ? AND ts_ms BETWEEN ? "
                        "AND ? ORDER BY ts_ms DESC LIMIT ?", (plate, lo_ms, hi_ms, limit)).fetchall()


def plates_in_area(conn: ArchiveConnection, south: float, west: float, north: float, east: float, from_ms: int,
                   to_ms: int) -> list:
    """区域查车: (plate, points, first ts_ms, last ts_ms, max speed) of every vehicle with a point inside the
    rectangle in ``[from_ms, to_ms]``, by plate."""
    return conn.execute(
        "SELECT plate, COUNT(*), MIN(ts_ms), MAX(ts_ms), MAX(speed_kmh) FROM track_points "
        "WHERE ts_ms BETWEEN ? AND ? AND lat BETWEEN ? AND ? AND lon BETWEEN ? AND ? GROUP BY plate ORDER BY plate",
        (from_ms, to_ms, south, north, west, east)).fetchall()
