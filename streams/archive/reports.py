"""The monthly report's reads: the rows ``streams/reports/build.py`` turns into a report."""
from __future__ import annotations

from roadwatch.models.rates import month_days

from .backend import ArchiveConnection

_VD_COLUMNS = ("plate, day, pings, qualified, km_total, km_incomplete, drift_points, overspeed_count, "
               "fatigue_s, curfew_events, offline_events")


def _rows(conn: ArchiveConnection, sql: str, args: tuple) -> list[dict]:
    return [dict(r) for r in conn.execute(sql, args)]


def report_tables(conn: ArchiveConnection, month: str, first_month: str) -> dict[str, list[dict]]:
    """The rows a report needs: vehicle_day from ``first_month`` (trend window) to ``month``; the
    overload tables (verdicts, cases, the cases' acts) of ``month``."""
    start, _ = month_days(first_month)
    m_start, m_end = month_days(month)
    return {
        "vehicle_day": _rows(conn, f"SELECT {_VD_COLUMNS} FROM vehicle_day WHERE day >= ? AND day < ?",
                             (start, m_end)),
        "wim_verdicts": _rows(conn, "SELECT station_id, plate, day, action, over_limit, excess_kg, fine_yuan, "
                                    "review_reason, case_id FROM wim_verdicts WHERE day >= ? AND day < ?",
                              (m_start, m_end)),
        "cases": _rows(conn, "SELECT case_id, plate, station_id, day, action, violation, fine_yuan, "
                             "enterprise_id, driver_id, source_site_id, status, manifest FROM cases "
                             "WHERE day >= ? AND day < ?", (m_start, m_end)),
        "case_acts": _rows(conn, "SELECT a.case_id, a.seq, a.action, a.at FROM case_acts a "
                                 "JOIN cases c ON c.case_id = a.case_id WHERE c.day >= ? AND c.day < ? "
                                 "ORDER BY a.case_id, a.seq", (m_start, m_end)),
    }


def month_case_tables(conn: ArchiveConnection, month: str) -> dict[str, list[dict]]:
    """The month's cases and their acts only (the 查处率 of the status page and the metrics, without the
    vehicle-day rows a full report reads)."""
    m_start, m_end = month_days(month)
    return {
        "cases": _rows(conn, "SELECT case_id, station_id, action, fine_yuan FROM cases WHERE day >= ? AND day < ?",
                       (m_start, m_end)),
        "case_acts": _rows(conn, "SELECT a.case_id, a.seq, a.action, a.at FROM case_acts a "
                                 "JOIN cases c ON c.case_id = a.case_id WHERE c.day >= ? AND c.day < ? "
                                 "ORDER BY a.case_id, a.seq", (m_start, m_end)),
    }


def month_has_rows(conn: ArchiveConnection, month: str) -> bool:
    """Whether the archive holds any vehicle-day row or WIM verdict of ``month`` (YYYY-MM)."""
    start, end = month_days(month)
    for table in ("vehicle_day", "wim_verdicts"):
        if conn.execute(f"SELECT 1 FROM {table} WHERE day >= ? AND day < ? LIMIT 1", (start, end)).fetchone():
            return True
    return False


def months_with_data(conn: ArchiveConnection) -> list[str]:
    """Every month (YYYY-MM) with a vehicle-day row or a WIM verdict, newest first."""
    months = {r[0] for r in conn.execute("SELECT DISTINCT substr(day, 1, 7) FROM vehicle_day")}
    months |= {r[0] for r in conn.execute("SELECT DISTINCT substr(day, 1, 7) FROM wim_verdicts")}
    return sorted((m for m in months if m), reverse=True)
