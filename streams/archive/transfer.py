"""``roadwatch archive copy``: move an archive onto another backend (a pilot's SQLite file onto the
production PostgreSQL server), all or nothing.

Both sides are migrated to the current schema first. Every table of the source is copied (columns present
on both sides), in one destination transaction; the destination tables must be empty, so a copy never
mixes two archives. A source table the destination does not know stops the copy (nothing is dropped
silently). Identity columns (``case_actions.id``) keep their values and the PostgreSQL sequence is moved
past them.
"""
from __future__ import annotations

from .backend import POSTGRESQL, ArchiveConnection, ArchiveError

CHUNK = 5000
_SKIP = {"schema_version"}


def copy_archive(src: ArchiveConnection, dst: ArchiveConnection, progress=None) -> dict[str, int]:
    """Copy every table of ``src`` into ``dst``. Returns rows copied per table."""
    src_tables = [t for t in src.tables() if t not in _SKIP]
    dst_tables = set(dst.tables())
    unknown = [t for t in src_tables if t not in dst_tables]
    if unknown:
        raise ArchiveError(f"the destination has no table {', '.join(unknown)} (is it an older roadwatch?)")
    plan = []
    for t in src_tables:
        cols = [c for c in src.columns(t) if c in set(dst.columns(t))]
        plan.append((t, cols))
    copied: dict[str, int] = {}
    with dst.transaction():
        for t, _ in plan:
            if dst.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is not None:
                raise ArchiveError(f"destination table {t} is not empty: copy only into a fresh archive")
        for t, cols in plan:
            names = ", ".join(cols)
            ins = f"INSERT INTO {t} ({names}) VALUES ({', '.join('?' * len(cols))})"
            n = 0
            # the source is read in full per table: archives of a pilot fit in memory; chunks keep the
            # destination's statements bounded
            rows = [tuple(r) for r in src.execute(f"SELECT {names} FROM {t}")]
            for i in range(0, len(rows), CHUNK):
                dst.executemany(ins, rows[i:i + CHUNK])
                n += len(rows[i:i + CHUNK])
            copied[t] = n
            if progress:
                progress(t, n)
        if dst.backend == POSTGRESQL:
            _advance_identities(dst)
    return copied


def _advance_identities(dst: ArchiveConnection) -> None:
    for r in dst.execute("SELECT table_name, column_name FROM information_schema.columns "
                         "WHERE table_schema = current_schema() AND is_identity = 'YES'").fetchall():
        t, c = r[0], r[1]
        dst.execute(f"SELECT setval(pg_get_serial_sequence('{t}', '{c}'), "
                    f"COALESCE((SELECT MAX({c}) FROM {t}), 0) + 1, false)")
