"""Terminal identity in the archive: which terminal is bound to which vehicle, with what auth code.

JT/T 808 registration (0x0100) binds a terminal id to a vehicle (plate + colour) and returns an auth code
that the terminal presents in every later authentication (0x0102). Only a salted SHA-256 of the code is
stored; the code itself exists only in the 0x8100 reply and in the terminal. The code is 128 random bits,
so a fast salted hash is enough (a slow password hash buys nothing against a guess space of 2^128).

Rules held by the table itself, so two gateway processes sharing the archive cannot race past them:
- one row per terminal (primary key); an active row (``revoked_at`` NULL) is never replaced — the
  terminal re-registers only after ``roadwatch terminals revoke`` or its own authenticated 0x0003;
- at most one active terminal per vehicle (partial unique index).

The table and its queries are ``streams/archive/terminals.py``; the same on SQLite and PostgreSQL.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from roadwatch.streams.archive import ArchiveConnection, open_archive
from roadwatch.streams.archive import terminals as db

# 0x8100 results (JT/T 808-2013 §8.6): 0 ok, 1 vehicle already registered, 2 no such vehicle,
# 3 terminal already registered, 4 no such terminal
REG_OK, REG_VEHICLE_TAKEN, REG_NO_VEHICLE, REG_TERMINAL_TAKEN, REG_NO_TERMINAL = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Binding:
    terminal_key: str
    plate: str
    plate_color: int
    issued_at: str
    revoked_at: str | None
    revoked_reason: str | None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _hash(salt: bytes, code: str) -> str:
    return hashlib.sha256(salt + code.encode("utf-8")).hexdigest()


class TerminalAuth:
    """The ``terminal_auth`` table of one archive. Methods are short synchronous statements."""

    def __init__(self, archive: str | Path):
        """``archive``: ``Config.archive_path`` — a SQLite file or a ``postgresql://`` URL."""
        self.target = Path(archive).resolve() if isinstance(archive, Path) else archive
        self._conns: dict[int, ArchiveConnection] = {}
        self._db()                                                 # opened, schema applied

    def _db(self) -> ArchiveConnection:
        # open_archive resolves the path on every call (~50 µs); a gateway asks on every 0x0100/0x0102
        conn = self._conns.get(threading.get_ident())
        if conn is None:
            conn = self._conns[threading.get_ident()] = open_archive(self.target)
        return conn

    def issue(self, terminal_key: str, plate: str, plate_color: int) -> tuple[int, str]:
        """Bind the terminal to the vehicle and return ``(REG_OK, code)``, or ``(REG_TERMINAL_TAKEN, "")``
        when the terminal has an active binding, ``(REG_VEHICLE_TAKEN, "")`` when the vehicle has one."""
        code = secrets.token_hex(16).upper()
        salt = secrets.token_bytes(16)
        res = db.bind_terminal(self._db(), terminal_key, plate, plate_color, salt.hex(), _hash(salt, code), _now())
        if res == db.VEHICLE_TAKEN:
            return REG_VEHICLE_TAKEN, ""
        if res == db.TERMINAL_TAKEN:                    # active row kept: the terminal is bound already
            return REG_TERMINAL_TAKEN, ""
        return REG_OK, code

    def verify(self, terminal_key: str, code: str) -> Binding | None:
        """The active binding when ``code`` is the terminal's current auth code, else None."""
        row = db.active_binding(self._db(), terminal_key)
        if row is None:
            return None
        if not hmac.compare_digest(_hash(bytes.fromhex(row["salt"]), code), row["code_hash"]):
            return None
        return _binding(row)

    def get(self, terminal_key: str) -> Binding | None:
        row = db.binding(self._db(), terminal_key)
        return _binding(row) if row else None

    def revoke(self, terminal_key: str, reason: str) -> bool:
        """Deactivate the terminal's code (it must register again). False if it had no active binding."""
        return db.revoke_binding(self._db(), terminal_key, _now(), reason[:200])

    def revoked_since(self, since: str) -> tuple[list[str], str]:
        """Terminals revoked after ``since`` (an ISO time from a previous call, or "") and the new mark."""
        rows = db.revoked_after(self._db(), since)
        mark = rows[-1]["revoked_at"] if rows else since
        return [r["terminal_key"] for r in rows], mark

    def latest_revocation(self) -> str:
        return db.latest_revocation(self._db()) or ""

    def list(self) -> list[Binding]:
        return [_binding(r) for r in db.all_bindings(self._db())]


def _binding(row) -> Binding:
    return Binding(row["terminal_key"], row["plate"], row["plate_color"], row["issued_at"], row["revoked_at"],
                   row["revoked_reason"])
