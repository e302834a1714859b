"""Who holds a data directory or a port: the checks that let ``demo`` and ``worker`` refuse to start
(touching nothing) instead of wiping a running demo's data or dying on a busy port with a traceback.

A worker holds a *shared* ``flock`` on ``<data_dir>/.roadwatch.lock`` for its lifetime (several workers may
share one data directory and archive: scale-out); the demo holds an *exclusive* lock on ``<base>/demo.lock``
and, before it wipes ``<base>/demo``, makes sure no process holds that directory's lock. The kernel drops a
lock with its process, so a crashed holder never leaves a stale lock behind.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from .errors import UsageError

LOCK_NAME = ".roadwatch.lock"
STOPPING = ", stopping"   # the end of a holder's note once it is shutting down (``note_stopping``)
_HELD: list = []          # open lock files of this process (closing one would release its lock)
_NOTES: dict = {}         # path → (its open lock file, its note) of this process's latest hold of it


class Busy(UsageError):
    """Another process holds what this command needs (exit 2, one line)."""


def _describe(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "another roadwatch process"


def hold(path: Path, what: str, *, shared: bool = False) -> None:
    """Lock ``path`` for the rest of this process, or raise ``Busy`` naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+", encoding="utf-8")
    first = _try(f, fcntl.LOCK_EX)          # the first holder rewrites the note; later sharers append
    if first:
        f.seek(0)
        f.truncate()
    elif not (shared and _try(f, fcntl.LOCK_SH)):
        f.close()
        raise Busy(f"{path.parent} is in use by {_describe(path)}")
    note = f"{what} (pid {os.getpid()})"
    f.write(note + "\n")
    f.flush()
    if first and shared:
        fcntl.flock(f, fcntl.LOCK_SH)        # downgrade: other workers may share the directory
    _HELD.append(f)
    _NOTES[str(path)] = (f, note)


def note_stopping(path: Path) -> None:
    """Say in the note of ``path`` — an exclusive lock this process holds — that it is stopping, so that a
    demo started meanwhile waits for it (``wait_released``) instead of refusing. No-op for a lock not held."""
    held = _NOTES.get(str(path))
    if held is not None:
        f, note = held
        f.seek(0)
        f.truncate()
        f.write(note + STOPPING + "\n")
        f.flush()


def is_stopping(who: str | None) -> bool:
    """``who`` (``holder``'s answer) is a holder that said it is stopping."""
    return bool(who) and who.endswith(STOPPING)


def wait_released(path: Path, timeout_s: float) -> str | None:
    """Wait until nobody holds ``path`` (None), at most ``timeout_s``; then who still holds it."""
    end = time.monotonic() + timeout_s
    while (who := holder(path)) and time.monotonic() < end:
        time.sleep(0.1)
    return who


def _try(f, mode: int) -> bool:
    try:
        fcntl.flock(f, mode | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def holder(path: Path) -> str | None:
    """Who holds ``path`` right now (None = nobody); leaves it unlocked."""
    if not path.exists():
        return None
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return _describe(path)
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def check_port_free(host: str, port: int) -> None:
    """Raise ``Busy`` when ``host:port`` cannot be bound (another demo, worker or program listens there)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise Busy(f"port {port} on {host} is already in use (another roadwatch demo or worker?); "
                           f"stop it or choose another port (--port, or web.port in the config)") from None
            raise Busy(f"cannot listen on {host}:{port}: {e.strerror}") from None
