"""What the system produced, as ``roadwatch scenario check`` reads it (simulators/check_cmd.py): alert and
verdict counts, the cases' source sites and escalations, vehicle-day fields and the rows of the §5.2 rates.

``open_for_check`` opens the archive without changing it: a SQLite file read-only (no migration, no new
file), a PostgreSQL archive without applying migrations. A table the archive does not have is an
``ArchiveError`` naming it.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from .backend import POSTGRESQL, ArchiveError, parse_target

VEHICLE_DAY_FIELDS = ("pings", "qualified", "km_total", "km_incomplete", "drift_points", "overspeed_count",
                      "fatigue_s", "curfew_events", "offline_events")


def open_for_check(target):
    """The archive ``target`` (path, ``sqlite:…`` or ``postgresql://…``), read-only for SQLite."""
    backend, loc = parse_target(target)
    if backend == POSTGRESQL:
        from . import open_archive
        return open_archive(loc, migrate_now=False)
    if not Path(loc).is_file():
        raise ArchiveError(f"archive not found: {loc}")
    return sqlite3.connect(f"file:{loc}?mode=ro", uri=True)


def _rows(conn, sql: str, args=()) -> list:
    try:
        return list(conn.execute(sql, args).fetchall())
    except sqlite3.OperationalError as e:
        raise ArchiveError(f"archive has no usable table for this check ({e})") from None
    except Exception as e:  # noqa: BLE001 - psycopg's UndefinedTable / UndefinedColumn (driver not imported here)
        if type(e).__name__ in ("UndefinedTable", "UndefinedColumn"):
            raise ArchiveError(f"archive has no usable table for this check ({e})") from None
        raise


def alert_count(conn, type_: str, plate: str, from_ts: str | None = None, to_ts: str | None = None) -> int:
    """Alerts of ``type_`` for ``plate`` (starting in ``[from_ts, to_ts)`` when given)."""
    sql, args = "SELECT COUNT(*) FROM alerts WHERE type=? AND plate=?", [type_, plate]
    if from_ts:
        sql += " AND start_ts >= ?"
        args.append(from_ts)
    if to_ts:
        sql += " AND start_ts < ?"
        args.append(to_ts)
    return _rows(conn, sql, args)[0][0]


def verdict_actions(conn, plate: str) -> list[tuple[str, int]]:
    """(action, fine_yuan) of every WIM verdict of ``plate``."""
    return [(r[0], r[1]) for r in _rows(conn, "SELECT action, fine_yuan FROM wim_verdicts WHERE plate=?", (plate,))]


def verdict_count(conn, action: str, first_day: str, last_day: str) -> int:
    return _rows(conn, "SELECT COUNT(*) FROM wim_verdicts WHERE action=? AND day BETWEEN ? AND ?",
                 (action, first_day, last_day))[0][0]


def case_source_sites(conn, plate: str) -> list[str | None]:
    return [r[0] for r in _rows(conn, "SELECT source_site_id FROM cases WHERE plate=?", (plate,))]


def case_manifests(conn) -> list[str]:
    """Every case's manifest (JSON text)."""
    return [r[0] for r in _rows(conn, "SELECT manifest FROM cases")]


def vehicle_day_field(conn, plate: str, day: str, field: str):
    """One field of one vehicle-day row (None without a row); ``field`` one of ``VEHICLE_DAY_FIELDS``."""
    if field not in VEHICLE_DAY_FIELDS:
        raise ValueError(f"vehicle_day has no field {field!r}")
    r = _rows(conn, f"SELECT {field} FROM vehicle_day WHERE plate=? AND day=?", (plate, day))
    return r[0][0] if r else None


def rate_rows(conn, first_day: str, last_day: str) -> list[tuple]:
    """(plate, pings, qualified, km_total, km_incomplete, drift_points) of every vehicle-day in the span."""
    return [tuple(r) for r in _rows(conn, "SELECT plate, pings, qualified, km_total, km_incomplete, drift_points "
                                          "FROM vehicle_day WHERE day BETWEEN ? AND ?", (first_day, last_day))]


def alerts_by_plate(conn, first_day: str, last_day: str) -> list[tuple[str, str, int]]:
    """(type, plate, count) of the alerts in the span."""
    return [tuple(r) for r in _rows(conn, "SELECT type, plate, COUNT(*) FROM alerts WHERE day BETWEEN ? AND ? "
                                          "GROUP BY type, plate ORDER BY type, plate", (first_day, last_day))]


def verdicts_by_plate(conn, first_day: str, last_day: str) -> list[tuple[str, str, int]]:
    """(action, plate, count) of the WIM verdicts in the span."""
    return [tuple(r) for r in _rows(conn, "SELECT action, plate, COUNT(*) FROM wim_verdicts WHERE day BETWEEN ? "
                                          "AND ? GROUP BY action, plate ORDER BY action, plate",
                                    (first_day, last_day))]
