"""Console users and their sessions (``users``, ``sessions``). Hashing, roles and the rules of who may do
what are ``streams/web/auth.py``; only the SHA-256 of a session token is stored."""
from __future__ import annotations

from .backend import ArchiveConnection


def insert_user(conn: ArchiveConnection, username: str, role: str, pw_hash: str, created_at: str) -> None:
    conn.execute("INSERT INTO users(username, role, pw_hash, created_at) VALUES (?,?,?,?)",
                 (username, role, pw_hash, created_at))


def update_user(conn: ArchiveConnection, username: str, role: str, pw_hash: str | None = None) -> None:
    """A new role, and a new password hash when given."""
    if pw_hash is not None:
        conn.execute("UPDATE users SET role = ?, pw_hash = ? WHERE username = ?", (role, pw_hash, username))
    else:
        conn.execute("UPDATE users SET role = ? WHERE username = ?", (role, username))


def delete_user(conn: ArchiveConnection, username: str) -> bool:
    """The user and their sessions; False when there was no such user."""
    cur = conn.execute("DELETE FROM users WHERE username = ?", (username,))
    end_sessions(conn, username)
    return cur.rowcount > 0


def list_users(conn: ArchiveConnection) -> list[dict]:
    return [dict(r) for r in conn.execute("SELECT username, role, created_at FROM users ORDER BY username")]


def get_user(conn: ArchiveConnection, username: str) -> dict | None:
    """``{username, role, pw_hash}`` or None."""
    r = conn.execute("SELECT username, role, pw_hash FROM users WHERE username = ?", (username,)).fetchone()
    return dict(r) if r else None


def count_admins(conn: ArchiveConnection) -> int:
    return conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetchone()[0]


def insert_session(conn: ArchiveConnection, token_hash: str, username: str, expires_at: float, csrf: str,
                   now: float) -> None:
    """A new session; sessions expired at ``now`` are removed on the way."""
    conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
    conn.execute("INSERT INTO sessions(token_hash, username, expires_at, csrf) VALUES (?,?,?,?)",
                 (token_hash, username, expires_at, csrf))


def session_by_token(conn: ArchiveConnection, token_hash: str):
    """The session with its user's current role (username, role, csrf, expires_at), or None."""
    return conn.execute(
        "SELECT s.username, u.role, s.csrf, s.expires_at FROM sessions s JOIN users u USING (username)"
        " WHERE s.token_hash = ?", (token_hash,)).fetchone()


def delete_session(conn: ArchiveConnection, token_hash: str) -> None:
    conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))


def end_sessions(conn: ArchiveConnection, username: str) -> None:
    """Every session of ``username`` (its role or password changed, or it was removed)."""
    conn.execute("DELETE FROM sessions WHERE username = ?", (username,))
