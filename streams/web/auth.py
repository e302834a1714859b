"""Console users, sessions, CSRF and login rate limiting.

Users and sessions live in the archive (tables below). Passwords are hashed with argon2id (argon2-cffi
defaults, RFC 9106 low-memory profile); only the SHA-256 of a session token is stored, so a leaked archive
does not hand out live sessions. The session cookie is HttpOnly + SameSite=Strict; every state-changing
request must also carry the session's synchronizer token in ``X-CSRF-Token`` (and, when the browser sends
one, an ``Origin`` matching the host). Roles are ordered: viewer < operator < admin.

No secret is in the repo: the first admin comes from ``ROADWATCH_ADMIN_USER`` + ``ROADWATCH_ADMIN_PASSWORD``
or from ``roadwatch users add NAME --role admin``.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Mapping

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from prometheus_client import Counter

from roadwatch.models.config import Config
from roadwatch.models.records import format_ts
from roadwatch.streams.archive import ArchiveConnection
from roadwatch.streams.archive import users as db

ROLES = ("viewer", "operator", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
USERNAME_RE = re.compile(r"^[\w.@-]{1,64}$")
MAX_PASSWORD_LEN = 1024            # argon2 hashes anything, but unbounded input is a DoS lever
COOKIE = "rw_session"
CSRF_HEADER = "X-CSRF-Token"

LOGINS = Counter("roadwatch_console_logins_total", "Console login attempts", ["result"])

_HASHERS: dict[tuple[int, int], tuple[PasswordHasher, str]] = {}


def _hasher(cfg: Config) -> tuple[PasswordHasher, str]:
    """The hasher for the configured cost, and a dummy hash of that cost: verified when the user does
    not exist, so a wrong name costs as much time as a wrong password."""
    key = (cfg["web.argon2_time_cost"], cfg["web.argon2_memory_kib"])
    if key not in _HASHERS:
        h = PasswordHasher(time_cost=key[0], memory_cost=key[1])
        _HASHERS[key] = (h, h.hash(secrets.token_urlsafe(16)))
    return _HASHERS[key]


class AuthError(ValueError):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Session:
    username: str
    role: str
    csrf: str
    expires_at: float

    def allows(self, role: str) -> bool:
        return _RANK.get(self.role, -1) >= _RANK[role]


def role_allows(have: str, need: str) -> bool:
    return _RANK.get(have, -1) >= _RANK[need]


def _now_iso() -> str:
    return format_ts(datetime.now(timezone.utc))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# --- users ------------------------------------------------------------------------------------------------

def check_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        raise AuthError("bad_username", "username: 1–64 letters, digits, _ . @ -")
    return username


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AuthError("bad_role", f"role must be one of {', '.join(ROLES)}")
    return role


def check_password(password: str, cfg: Config) -> str:
    n = cfg["web.min_password_len"]
    if not isinstance(password, str) or len(password) < n:
        raise AuthError("weak_password", f"password must have at least {n} characters")
    if len(password) > MAX_PASSWORD_LEN:
        raise AuthError("bad_password", f"password longer than {MAX_PASSWORD_LEN} characters")
    return password


def hash_password(password: str, cfg: Config) -> str:
    return _hasher(cfg)[0].hash(password)


def verify_password(pw_hash: str | None, password: str, cfg: Config) -> bool:
    """Constant-ish time: a missing user still pays for one argon2 verification (the cost parameters are
    read from the stored hash, so changing the configured cost never locks anyone out)."""
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_LEN:
        return False
    hasher, dummy = _hasher(cfg)
    try:
        return hasher.verify(pw_hash or dummy, password) and pw_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def upsert_user(conn: ArchiveConnection, username: str, role: str, password: str | None,
                cfg: Config) -> str:
    """Create a user or update role / password. Returns ``created`` or ``updated``.
    Changing a password or role ends that user's sessions."""
    check_username(username)
    check_role(role)
    if db.get_user(conn, username) is None:
        if password is None:
            raise AuthError("weak_password", "a new user needs a password")
        pw_hash = hash_password(check_password(password, cfg), cfg)
        db.insert_user(conn, username, role, pw_hash, _now_iso())
        return "created"
    pw_hash = hash_password(check_password(password, cfg), cfg) if password is not None else None
    db.update_user(conn, username, role, pw_hash)
    db.end_sessions(conn, username)
    return "updated"


def delete_user(conn: ArchiveConnection, username: str) -> bool:
    return db.delete_user(conn, username)


def list_users(conn: ArchiveConnection) -> list[dict]:
    return db.list_users(conn)


def get_user(conn: ArchiveConnection, username: str) -> dict | None:
    return db.get_user(conn, username)


def count_admins(conn: ArchiveConnection) -> int:
    return db.count_admins(conn)


def ensure_admin_from_env(conn: ArchiveConnection, cfg: Config,
                          env: Mapping[str, str] | None = None) -> str | None:
    """Create the admin named in the environment if that user does not exist yet (an existing user's
    password is never reset from the environment). Returns the username created, else None."""
    env = os.environ if env is None else env
    user, password = env.get("ROADWATCH_ADMIN_USER"), env.get("ROADWATCH_ADMIN_PASSWORD")
    if not user or not password:
        return None
    if get_user(conn, user) is not None:
        return None
    upsert_user(conn, user, "admin", password, cfg)
    return user


# --- sessions -----------------------------------------------------------------------------------------

def create_session(conn: ArchiveConnection, username: str, ttl_s: float,
                   now: float | None = None) -> tuple[str, Session]:
    """A new session; returns the cookie token (shown once, stored hashed) and the session."""
    now = time.time() if now is None else now
    user = db.get_user(conn, username)
    if user is None:
        raise AuthError("unknown_user", f"no user {username!r}")
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    db.insert_session(conn, token_hash(token), username, now + ttl_s, csrf, now)
    return token, Session(username, user["role"], csrf, now + ttl_s)


def lookup_session(conn: ArchiveConnection, token: str | None, now: float | None = None) -> Session | None:
    if not token or len(token) > 128:
        return None
    now = time.time() if now is None else now
    th = token_hash(token)
    row = db.session_by_token(conn, th)
    if row is None:
        return None
    if row["expires_at"] <= now:
        db.delete_session(conn, th)
        return None
    return Session(row["username"], row["role"], row["csrf"], row["expires_at"])


def delete_session(conn: ArchiveConnection, token: str | None) -> None:
    if token:
        db.delete_session(conn, token_hash(token))


def csrf_ok(session: Session, header_value: str | None) -> bool:
    return bool(header_value) and hmac.compare_digest(session.csrf.encode(), header_value.encode())


# --- login rate limiting ------------------------------------------------------------------------------------

class LoginLimiter:
    """Sliding-window count of failed logins per key (``user:NAME`` and ``addr:IP``). In memory: a
    restart forgets it, which is acceptable next to argon2's cost per guess.

    Atomic: ``reserve`` checks the limit and records the attempt in one step (no await in between, and a
    lock for callers on other threads), *before* the argon2 check; a failed login keeps its reservation,
    a successful one returns it (``succeed``). So N parallel guesses get at most ``max_failures`` argon2
    checks and 401s per user and per address — the rest are 429 — however the requests interleave."""

    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic):
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._fails[key]
        return q

    def retry_after(self, keys: list[str]) -> float:
        """Seconds until a new attempt is allowed for all ``keys`` (0 = allowed now)."""
        now = self.clock()
        wait = 0.0
        for k in keys:
            q = self._recent(k, now)
            if len(q) >= self.max_failures:
                wait = max(wait, q[0] + self.window_s - now)
        return wait

    def reserve(self, keys: list[str]) -> tuple[float, float | None]:
        """Check and take one attempt for every key at once: ``(0, stamp)`` when allowed — the attempt
        already counts as a failure until ``succeed(keys, stamp)`` — or ``(retry_after_s, None)``."""
        with self._lock:
            wait = self.retry_after(keys)
            if wait > 0:
                return wait, None
            stamp = self.clock()
            self._record(keys, stamp)
            return 0.0, stamp

    def fail(self, keys: list[str]) -> None:
        with self._lock:
            self._record(keys, self.clock())

    def _record(self, keys: list[str], stamp: float) -> None:
        for k in keys:
            self._fails.setdefault(k, deque()).append(stamp)
        if len(self._fails) > 100_000:      # bound memory under a spray from many addresses
            for k in list(self._fails)[:50_000]:
                del self._fails[k]

    def succeed(self, keys: list[str] | str, stamp: float | None = None) -> None:
        """A successful login: the user's failures are forgotten; the reservation ``stamp`` taken for the
        other keys (the address) is returned, earlier failures from that address still count."""
        keys = [keys] if isinstance(keys, str) else keys
        with self._lock:
            self._fails.pop(keys[0], None)
            for k in keys[1:]:
                q = self._fails.get(k)
                if q is not None and stamp is not None:
                    try:
                        q.remove(stamp)
                    except ValueError:
                        pass
                    if not q:
                        del self._fails[k]
