"""JT/T 808 terminal bindings (``terminal_auth``): which terminal is bound to which vehicle, with the salted
hash of its auth code. The rules live in the table itself (primary key per terminal, a partial unique index
for one active terminal per vehicle), so gateways on several hosts sharing the archive cannot race past them.

Every function is one autocommit statement read with ``fetchall`` (an unfinished SELECT keeps a SQLite read
transaction open, which defers the commit of the connection's later writes). Portable SQL: ``ON CONFLICT …
DO UPDATE … WHERE`` and partial indexes exist in SQLite ≥ 3.24 and PostgreSQL.
"""
from __future__ import annotations

from .backend import ArchiveConnection, integrity_errors

BOUND, TERMINAL_TAKEN, VEHICLE_TAKEN = "bound", "terminal_taken", "vehicle_taken"

_COLS = "terminal_key, plate, plate_color, issued_at, revoked_at, revoked_reason"


def _one(conn: ArchiveConnection, sql: str, args: tuple):
    rows = conn.execute(sql, args).fetchall()
    return rows[0] if rows else None


def bind_terminal(conn: ArchiveConnection, terminal_key: str, plate: str, plate_color: int, salt_hex: str,
                  code_hash: str, issued_at: str) -> str:
    """Bind the terminal to the vehicle: ``BOUND``; ``TERMINAL_TAKEN`` when the terminal has an active
    binding (kept); ``VEHICLE_TAKEN`` when the vehicle has one. A revoked binding is replaced."""
    try:
        cur = conn.execute(
            "INSERT INTO terminal_auth (terminal_key, plate, plate_color, salt, code_hash, issued_at) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (terminal_key) DO UPDATE SET plate = excluded.plate, "
            "plate_color = excluded.plate_color, salt = excluded.salt, code_hash = excluded.code_hash, "
            "issued_at = excluded.issued_at, revoked_at = NULL, revoked_reason = NULL "
            "WHERE terminal_auth.revoked_at IS NOT NULL",
            (terminal_key, plate, plate_color, salt_hex, code_hash, issued_at))
    except integrity_errors():                      # the vehicle's partial unique index
        return VEHICLE_TAKEN
    return BOUND if cur.rowcount else TERMINAL_TAKEN


def active_binding(conn: ArchiveConnection, terminal_key: str):
    """The terminal's active row with ``salt`` and ``code_hash``, or None."""
    return _one(conn, f"SELECT {_COLS}, salt, code_hash FROM terminal_auth WHERE terminal_key = ? "
                      "AND revoked_at IS NULL", (terminal_key,))


def binding(conn: ArchiveConnection, terminal_key: str):
    """The terminal's row (active or revoked), without the code hash; or None."""
    return _one(conn, f"SELECT {_COLS} FROM terminal_auth WHERE terminal_key = ?", (terminal_key,))


def revoke_binding(conn: ArchiveConnection, terminal_key: str, revoked_at: str, reason: str) -> bool:
    """False when the terminal had no active binding."""
    cur = conn.execute("UPDATE terminal_auth SET revoked_at = ?, revoked_reason = ? "
                       "WHERE terminal_key = ? AND revoked_at IS NULL", (revoked_at, reason, terminal_key))
    return cur.rowcount > 0


def revoked_after(conn: ArchiveConnection, since: str) -> list:
    """(terminal_key, revoked_at) of the bindings revoked after ``since``, oldest first."""
    return conn.execute("SELECT terminal_key, revoked_at FROM terminal_auth WHERE revoked_at > ? "
                        "ORDER BY revoked_at", (since,)).fetchall()


def latest_revocation(conn: ArchiveConnection) -> str | None:
    row = _one(conn, "SELECT MAX(revoked_at) AS m FROM terminal_auth", ())
    return row["m"] if row else None


def all_bindings(conn: ArchiveConnection) -> list:
    return conn.execute(f"SELECT {_COLS} FROM terminal_auth ORDER BY terminal_key").fetchall()
