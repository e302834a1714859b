"""The case-file review's read (models/case_review.py): which cases were closed in a month."""
from __future__ import annotations

from roadwatch.models.rates import month_days

from .backend import ArchiveConnection


def closed_in_month(conn: ArchiveConnection, month: str) -> list[dict]:
    """``{case_id, station_id}`` of every case closed (legal date of its ``close`` act, Beijing) in ``month``,
    in case-id order."""
    start, end = month_days(month)
    return [dict(r) for r in conn.execute(
        "SELECT c.case_id, c.station_id FROM case_acts a JOIN cases c ON c.case_id = a.case_id "
        "WHERE a.action = 'close' AND a.at >= ? AND a.at < ? ORDER BY c.case_id", (start, end))]
