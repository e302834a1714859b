"""The gateway's listening socket: its own accept loop, so running out of connections or descriptors
pauses accepting (one log line, a metric) instead of asyncio's "socket.accept() out of system resource"
storm; the kernel backlog holds new connects meanwhile.

``raise_nofile`` lifts the soft descriptor limit to the hard one at start; ``connection_budget`` turns the
limit into the number of terminal connections, keeping ``gateway.fd_reserve`` descriptors for the Kafka
producer, the archive and /metrics.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import time
from typing import Callable

from prometheus_client import Counter, Gauge

log = logging.getLogger("roadwatch.gateway")

ACCEPTING = Gauge("roadwatch_gateway_accepting", "1 while the gateway accepts new connections, 0 while paused")
ACCEPT_PAUSES = Counter("roadwatch_gateway_accept_pauses", "Times accepting paused", ["reason"])

_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
LOG_EVERY_S = 60.0


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE → hard. Returns (old soft, new soft)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if new > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            new = soft
    return soft, new


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 16


def connection_budget(max_connections: int, fd_reserve: int) -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft - open_descriptors() - fd_reserve))


def listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.setblocking(False)
    return sock


class Listener:
    """Accepts in batches from the loop's reader callback; ``admit(sock, addr)`` takes each new socket.
    ``full()`` says whether another connection may be accepted now."""

    def __init__(self, sock: socket.socket, admit: Callable[[socket.socket, tuple], None],
                 full: Callable[[], bool], pause_s: float):
        self.sock = sock
        self.admit = admit
        self.full = full
        self.pause_s = pause_s
        self.paused: str | None = None
        self._loop = asyncio.get_running_loop()
        self._last_log = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop.add_reader(sock.fileno(), self._on_readable)
        ACCEPTING.set(1)

    def _on_readable(self) -> None:
        for _ in range(512):
            if self.full():
                self.pause("max_connections", None)
                return
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _RESOURCE_ERRNOS:
                    self.pause("descriptors", self.pause_s)
                    return
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                log.error("accept failed: %s", e)
                return
            self.admit(conn, addr)

    def pause(self, reason: str, retry_s: float | None) -> None:
        """Stop accepting; with ``retry_s`` try again after it, else until ``resume``."""
        if self.paused is None and not self._closed:
            self._loop.remove_reader(self.sock.fileno())
            self.paused = reason
            ACCEPTING.set(0)
            ACCEPT_PAUSES.labels(reason=reason).inc()
            now = time.monotonic()
            if now - self._last_log >= LOG_EVERY_S:
                self._last_log = now
                log.warning("accepting paused (%s); new connects wait in the listen backlog "
                            "(this line at most once a minute; see roadwatch_gateway_accept_pauses)", reason)
        if retry_s is not None and self._timer is None:
            self._timer = self._loop.call_later(retry_s, self._retry)

    def _retry(self) -> None:
        self._timer = None
        self.resume()

    def resume(self) -> None:
        if self.paused is not None and not self._closed and not self.full():
            self.paused = None
            ACCEPTING.set(1)
            self._loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.paused is None:
            self._loop.remove_reader(self.sock.fileno())
        if self._timer is not None:
            self._timer.cancel()
        self.sock.close()
