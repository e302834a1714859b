"""The gateway's native front end (``gateway.front_end``): which one runs, and the transport stand-in.

``_frontend`` (``_frontend.c``, built by setuptools when a C compiler is there, optional) runs the sockets
of the gateway's connections in one epoll thread without the GIL: it splits frames, applies the per
connection frame budget, and answers the authenticated terminal's strict 0x0200 location reports and
0x0002 heartbeats itself, with the bytes and serial numbering the Python gateway writes, batching the
positions. Everything else is handed to ``Gateway`` exactly as the Python front end would handle it
(``Gateway._native_frame``); the connection waits meanwhile, so answers keep their order. Without the
extension (no compiler at install time), ``auto`` runs the Python front end.
"""
from __future__ import annotations

import logging

log = logging.getLogger("roadwatch.gateway")

try:
    from . import _frontend
except ImportError:             # not built (no compiler when installed): the Python front end runs
    _frontend = None  # type: ignore[assignment]

FRONT_ENDS = ("auto", "python", "native")

# kinds of drained events (``_frontend.c``)
UP, LOST, CLOSED, REJECTED = 1, 2, 3, 4


class FrontEndUnavailable(RuntimeError):
    pass


def available() -> bool:
    return _frontend is not None


def choose(setting: str) -> str:
    """``gateway.front_end`` → "native" or "python"; raises ``FrontEndUnavailable`` for "native" without the
    extension."""
    if setting == "python":
        return "python"
    if _frontend is None:
        if setting == "native":
            raise FrontEndUnavailable("gateway.front_end = \"native\" needs the compiled extension "
                                      "roadwatch.streams.jt808._frontend (reinstall with a C compiler and the "
                                      "Python headers, or set gateway.front_end = \"auto\" or \"python\")")
        return "python"
    return "native"


def new_frontend(rate: float, max_frame: int, coalesce_s: float, room: int, note_rows: int):
    """``note_rows`` positions (or any frame for Python, a close, back-pressure) wake the gateway's loop at
    once; fewer wait for its next tick (``Gateway._tick_loop``)."""
    assert _frontend is not None
    return _frontend.Frontend(rate, max_frame, coalesce_s, room, note_rows)


class NativeTransport:
    """What a ``_Conn`` of the native front end holds as ``transport``: writes and closes go to the loop
    thread's socket; reads are paused for all connections at once (``Gateway._update_pressure``)."""
    __slots__ = ("fe", "cid")

    def __init__(self, fe, cid: int):
        self.fe, self.cid = fe, cid

    def write(self, data: bytes) -> None:
        self.fe.send(self.cid, data)

    def close(self) -> None:
        self.fe.close(self.cid, False)

    def abort(self) -> None:
        self.fe.close(self.cid, True)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0
