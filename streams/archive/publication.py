"""The reads of the public decision list (streams/publish_cmd.py): which cases have a decision."""
from __future__ import annotations

from .backend import ArchiveConnection


def decided_cases(conn: ArchiveConnection) -> list[tuple[str, str]]:
    """(case_id, decided_on) of every case with a decision — also one later withdrawn (the caller lists it as
    withdrawn) — in case-id order; the caller filters by date."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT case_id, decided_on FROM case_state WHERE decided_on IS NOT NULL ORDER BY case_id")]
