"""``roadwatch gateway``: asyncio TCP server for JT/T 808 terminals, publishing to Kafka.

Identity (docs/operations.md "Terminal identity"): a terminal registers (0x0100) with the plate and colour
of a registry vehicle and receives an auth code (stored hashed, ``terminal_auth.py``); every connection must
authenticate (0x0102) before anything else is accepted. Everything else gets the JT/T 808 failure answer
(0x8001 result 1, or the 0x8100 result code) and is dead-lettered ONCE per connection and reason, with the
count of frames, when the connection ends or authenticates. Second connection of an authenticated terminal:
the newest successful authentication wins and the older connection is closed (``superseded``) — a stale
half-open socket must not lock out a reconnecting terminal, and only the code's holder can do it.

Bounds per client: ``gateway.auth_timeout_s`` (deadline to authenticate), ``gateway.max_unauthenticated``
(oldest evicted when full), ``gateway.max_pending_per_address``, ``gateway.idle_timeout_s``,
``gateway.max_frames_per_s``, ``gateway.max_frame_bytes``, ``gateway.reassembly_max_bytes``/``_messages``.

Cost per position: each connection is a ``Protocol`` whose ``data_received`` parses everything the read
delivered and answers with one write; timeouts are sweeps over the connections, not a timer per read;
counters are summed per connection event and handed to Prometheus once per tick; after a read the loop
naps ``gateway.coalesce_ms`` so the reads arriving meanwhile share one wake-up (docs/performance.md).
Pings go through a ``PingBatcher`` to ``gps-pings``; IC-card events to ``driver-events``; rejects to
``dead-letter``.

Front ends (``gateway.front_end``, ``native.py``): with the compiled extension ``_frontend.c`` the sockets
belong to a native epoll thread that splits frames, applies the frame budget and answers the authenticated
terminal's strict 0x0200 and 0x0002 itself (the same bytes and serials as ``data_received``), handing the
positions over in batches (``_drain_native``); every other frame comes to ``_native_frame``, which handles
it exactly as ``data_received`` would while that connection waits. Without the extension, ``_Conn`` is the
asyncio protocol described above.

Publishing runs in one background task that hands records to the ``AioKafkaPublisher`` in the loop
(``gateway.producer``), or to a ``Publisher`` in a worker thread (kafka-python blocks), and only drops
them from its outbox once Kafka confirmed delivery. If Kafka is unreachable the outbox grows; at
``gateway.buffer_max_pings`` buffered pings the gateway stops reading from every socket (back-pressure):
terminals get no acknowledgement and keep their positions in their blind-area store, to re-upload them
later as 0x0704. Nothing is acknowledged that was not buffered.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import OrderedDict, deque
from time import monotonic as _monotonic
from time import time as _time
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from roadwatch.models.config import Config
from roadwatch.models.records import DriverEvent
from roadwatch.models.registry import Registry, RegistryError, load_registry
from roadwatch.streams.batcher import AioKafkaPublisher, KafkaPublisher, PingBatcher, Publisher
from roadwatch.streams.deadletter import dead_letter_bytes
from roadwatch.streams.outbox import Out, Outbox
from roadwatch.streams.topics import DEAD_LETTER, DRIVER_EVENTS, GPS_PINGS

from . import codec as c
from . import fastpath, native
from .listener import Listener, connection_budget, listen_socket, raise_nofile
from .terminal_auth import (REG_NO_TERMINAL, REG_NO_VEHICLE, REG_OK, REG_TERMINAL_TAKEN, REG_VEHICLE_TAKEN,
                            TerminalAuth)

log = logging.getLogger("roadwatch.gateway")

CONNECTIONS = Gauge("roadwatch_gateway_connections", "Open JT/T 808 terminal connections")
UNAUTHENTICATED = Gauge("roadwatch_gateway_unauthenticated", "Open connections not yet authenticated")
FRAMES = Counter("roadwatch_gateway_frames", "JT/T 808 frames received", ["msg_id"])
REJECTED = Counter("roadwatch_gateway_rejected", "Frames or connections rejected by the gateway", ["reason"])
CLOSED = Counter("roadwatch_gateway_closed", "Connections closed by the gateway", ["reason"])
BUFFERED = Gauge("roadwatch_gateway_buffered_pings", "Pings accepted but not yet confirmed by Kafka")
PINGS = Counter("roadwatch_gateway_pings", "Pings accepted from terminals")
PUBLISHED = Counter("roadwatch_gateway_published_pings", "Pings confirmed delivered to Kafka")
PUBLISH_ERRORS = Counter("roadwatch_gateway_publish_errors", "Failed attempts to publish to Kafka")
BACKPRESSURE = Gauge("roadwatch_gateway_backpressure", "1 while socket reads are paused (buffer full)")
FRONT_END = Gauge("roadwatch_gateway_front_end", "1 for the front end that runs the sockets (gateway.front_end)",
                  ["front_end"])

_KNOWN_IDS = {f"0x{i:04X}" for i in c.DECODERS} | {"0x0900", "0x0210", "0x0107", "0x0201", "0x0800", "0x0801"}
SOURCE = "gateway"
_EVENT_SLICE_S = 0.01          # the native front end's frames handled per loop iteration, at most (in time)
# 0x0100 answer → reject reason
_REG_REASONS = {REG_VEHICLE_TAKEN: "vehicle_already_bound", REG_NO_VEHICLE: "unknown_vehicle",
                REG_TERMINAL_TAKEN: "terminal_already_registered", REG_NO_TERMINAL: "terminal_not_for_vehicle"}


def _id_label(msg_id: int | None) -> str:
    if msg_id is None:
        return "unparsed"
    s = f"0x{msg_id:04X}"
    return s if s in _KNOWN_IDS else "other"


class _PublishThread:
    """One daemon thread for the blocking publisher calls (kafka-python blocks; a daemon thread never
    holds up interpreter exit the way a ThreadPoolExecutor worker stuck in a Kafka bootstrap would)."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="roadwatch-gw-publish", daemon=True).start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, args, fut, loop = item
            try:
                res, exc = fn(*args), None
            except BaseException as e:  # handed to the awaiting task
                res, exc = None, e
            with contextlib.suppress(RuntimeError):      # loop already closed
                loop.call_soon_threadsafe(_settle, fut, res, exc)

    def submit(self, fn, *args) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._q.put((fn, args, fut, loop))
        return fut

    def stop(self) -> None:
        self._q.put(None)


def _settle(fut: asyncio.Future, res: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(res)


class _Reassembly:
    """Fragments of split messages on one connection, bounded in messages and bytes (the codec's
    ``Reassembler`` bounds only the count). ``add`` → complete message, None (waiting), or raises
    ``Jt808Error('reassembly_overflow')``."""
    __slots__ = ("parts", "bytes", "max_bytes", "max_messages")

    def __init__(self, max_bytes: int, max_messages: int):
        self.parts: dict[tuple, dict[int, bytes]] = {}
        self.bytes = 0
        self.max_bytes, self.max_messages = max_bytes, max_messages

    def add(self, frag: c.Message) -> c.Message | None:
        count = frag.packet_count or 0
        key = (frag.msg_id, count, frag.serial - (frag.packet_index or 0))
        parts = self.parts.get(key)
        if parts is None:
            if len(self.parts) >= self.max_messages:
                raise c.Jt808Error("reassembly_overflow", f"more than {self.max_messages} split messages "
                                   "in progress (gateway.reassembly_max_messages)", frag)
            parts = self.parts[key] = {}
        old = parts.get(frag.packet_index or 0)
        self.bytes += len(frag.body) - (len(old) if old else 0)
        if self.bytes > self.max_bytes:
            raise c.Jt808Error("reassembly_overflow", f"{self.bytes} bytes of fragments in progress exceed "
                               f"{self.max_bytes} (gateway.reassembly_max_bytes)", frag)
        parts[frag.packet_index or 0] = frag.body
        if len(parts) < count:
            return None
        del self.parts[key]
        body = b"".join(parts[i] for i in range(1, count + 1))
        self.bytes -= len(body)
        msg = c.Message(frag.msg_id, frag.terminal_id, key[2] + 1, frag.version, frag.protocol_version, body,
                        frag.encryption)
        msg.fields = c.decode_body(msg.msg_id, body, msg.version, msg)
        return msg


class _Conn(asyncio.Protocol):
    """One terminal connection. Small on purpose (slots, lazy extras): 50 000 of them live at once."""
    __slots__ = ("gw", "transport", "host", "buf", "tid", "digits", "vehicle", "serial", "opened", "last_rx",
                 "tokens", "t_tok", "rejects", "reasm", "failures", "closed_reason", "ack_head", "ack_prefix",
                 "ack_xor", "cid", "info")

    def __init__(self, gw: "Gateway", host: str, now: float):
        self.gw = gw
        self.transport: asyncio.Transport | None = None
        self.host = host
        self.buf = bytearray()
        self.tid: str | None = None            # terminal key once authenticated
        self.digits = ""                       # its BCD digits as last sent (fast-path identity check)
        self.vehicle: tuple[str, int] | None = None
        self.serial = 0
        self.opened = self.last_rx = self.t_tok = now
        self.tokens = gw.rate
        self.rejects: dict[str, list] | None = None    # reason → [count, first frame, detail, terminal id]
        self.reasm: _Reassembly | None = None
        self.failures = 0
        self.closed_reason: str | None = None
        self.ack_head = self.ack_prefix = b""    # the fast path's 0x8001 start for this header (``fastpath``)
        self.ack_xor = 0
        self.cid = 0                           # the native front end's connection id
        self.info: tuple | None = None         # (plate, colour, driver) last handed to the native front end

    # --- asyncio callbacks ---
    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.closed_reason is not None:      # evicted before the transport existed
            transport.abort()
            return
        if self.gw.reads_paused:
            transport.pause_reading()

    def connection_lost(self, exc) -> None:
        self.gw.forget(self)
        self.transport = None

    def pause_writing(self) -> None:            # the terminal does not read its replies
        self.close("write_backlog")

    def data_received(self, data: bytes) -> None:
        gw = self.gw
        now = _monotonic()
        self.last_rx = now
        if gw.coalesce_s and not gw.nap_armed:
            gw.arm_nap(now)
        buf = self.buf
        if not buf and data[-1:] == b"\x7e" and data[:1] == b"\x7e" and data.count(b"\x7e") == 2 \
                and len(data) <= gw.max_frame:
            frames = (data,)                     # one whole frame per read: what a terminal nearly always sends
        else:
            buf += data
            try:
                frames = c.split_frames(buf, gw.max_frame)
            except c.Jt808Error as e:
                gw.count_reject(e.code)
                self.close(e.code)
                return
            if not frames:
                return
        rate = gw.rate
        tokens = min(rate, self.tokens + (now - self.t_tok) * rate)
        self.t_tok = now
        out = []
        for frame in frames:
            if tokens < 1:
                gw.count_reject("rate_limit")
                if out:
                    self.transport.write(b"".join(out))      # type: ignore[union-attr]
                self.close("rate_limit")
                return
            tokens -= 1
            if self.tid is not None:
                fix = fastpath.location(frame)
                if fix is not None and (fix[1] == self.digits or c.terminal_key(fix[1]) == self.tid):
                    out.append(gw.on_fast_location(self, fix))
                    continue
            reply = gw.on_frame(self, frame)
            if reply:
                out.append(reply)
            if self.closed_reason is not None:
                break
        self.tokens = tokens
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.closed_reason is not None and self.transport is not None:
            self.transport.close()               # after the failure answer went out

    # --- helpers ---
    def next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    def reject(self, reason: str, detail: str, frame: bytes, terminal_id: str | None) -> None:
        """Counted now; dead-lettered once per connection and reason (``flush_rejects``)."""
        self.gw.count_reject(reason)
        if self.rejects is None:
            self.rejects = {}
        r = self.rejects.get(reason)
        if r is None:
            self.rejects[reason] = [1, frame, detail, terminal_id]
        else:
            r[0] += 1

    def close(self, reason: str, abort: bool = False) -> None:
        """Close with a reason (counted once). Writes already queued still go out unless ``abort``."""
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        CLOSED.labels(reason=reason).inc()
        if self.transport is not None and (abort or self.gw.current is not self):
            if abort:
                self.transport.abort()
            else:
                self.transport.close()


class GatewayServer:
    """What ``serve`` returns: ``sockets`` (like ``asyncio.Server``) and ``gateway``."""

    def __init__(self, gateway: "Gateway", sock: socket.socket):
        self.gateway = gateway
        self.sockets = [sock]

    def close(self) -> None:
        if self.gateway.listener is not None:
            self.gateway.listener.close()


class Gateway:
    """State shared by all connections: registry index, identity store, drivers, batcher, outbox."""

    def __init__(self, cfg: Config, registry: Registry, publisher: Publisher, auth: TerminalAuth):
        self.cfg = cfg
        self.publisher = publisher
        self.auth = auth
        self.registry = registry
        # registry index: terminal key → plate; a terminal id listed on two vehicles identifies neither
        self.registry_terminal: dict[str, str] = {}
        self.ambiguous: set[str] = set()
        for v in registry.vehicles.values():
            if v.terminal_id:
                k = c.terminal_key(v.terminal_id)
                if k in self.registry_terminal:
                    self.ambiguous.add(k)
                self.registry_terminal[k] = v.plate
        for k in sorted(self.ambiguous):
            log.error("registry lists terminal %s on several vehicles: it is refused until that is fixed", k)
        self.drivers: dict[str, str] = {}          # terminal key → qualification no. of the logged-in driver
        self.batcher = PingBatcher.from_config(cfg, self._enqueue_batch)
        self.outbox = Outbox(publisher, log)
        self.buffer_max = cfg["gateway.buffer_max_pings"]
        self.max_frame = cfg["gateway.max_frame_bytes"]
        self.idle_s = cfg["gateway.idle_timeout_s"]
        self.auth_s = cfg["gateway.auth_timeout_s"]
        self.rate = float(cfg["gateway.max_frames_per_s"])
        self.max_conns = cfg["gateway.max_connections"]
        self.max_unauth = min(cfg["gateway.max_unauthenticated"], self.max_conns)
        self.max_per_host = cfg["gateway.max_pending_per_address"]
        self.max_failures = cfg["gateway.max_auth_failures"]
        self.reasm_bytes = cfg["gateway.reassembly_max_bytes"]
        self.reasm_msgs = cfg["gateway.reassembly_max_messages"]
        self.conn_limit = self.max_conns
        self.connections: set[_Conn] = set()
        self.pending: OrderedDict[_Conn, None] = OrderedDict()    # unauthenticated, oldest first
        self.pending_by_host: dict[str, int] = {}
        self.by_terminal: dict[str, _Conn] = {}
        self.reads_paused = False
        self.current: _Conn | None = None        # the connection whose frame is being handled
        self.listener: Listener | None = None
        self._resumed_at = 0.0
        self._rejects: dict[str, int] = {}
        self._frames: dict[int | None, int] = {}
        self._locations = 0                      # fast-path 0x0200 frames (= pings) since the last tick
        self._pings = 0
        self._room = self.buffer_max             # pings the batcher may take before back-pressure is checked
        self.coalesce_s = cfg["gateway.coalesce_ms"] / 1000.0
        self.nap_armed = False
        self._nap_from = 0.0
        self._tasks: list[asyncio.Task] = []
        self._thread: _PublishThread | None = None
        self._revoked_mark = ""
        # the front end that runs the sockets: "native" (``_frontend.c``) or "python" (``_Conn.data_received``)
        self.front_end = native.choose(cfg["gateway.front_end"])
        self.fe: Any = None
        self.native_conns: dict[int, _Conn] = {}
        self._native_events: deque[tuple] = deque()   # reported by the front end, not handled yet
        self._events_scheduled = False

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> GatewayServer:
        old, new = raise_nofile()
        self.conn_limit = connection_budget(self.max_conns, self.cfg["gateway.fd_reserve"])
        sock = listen_socket(host, port, min(self.max_conns, 65535))
        self._revoked_mark = self.auth.latest_revocation()
        self.listener = Listener(sock, self._admit, self._full, self.cfg["gateway.accept_pause_s"])
        if self.front_end == "native":
            # positions wake the loop when a partition's batch could be full; else they wait for the tick,
            # which wakes anyway to publish (one wake-up of the interpreter per tick, not per read)
            self.fe = native.new_frontend(self.rate, self.max_frame, self.coalesce_s, self.buffer_max,
                                          self.batcher.max_pings)
            asyncio.get_running_loop().add_reader(self.fe.fileno(), self._drain_native)
        for name in native.FRONT_ENDS[1:]:
            FRONT_END.labels(front_end=name).set(1 if name == self.front_end else 0)
        if not isinstance(self.publisher, AioKafkaPublisher):
            self._thread = _PublishThread()
        self._tasks = [asyncio.create_task(self._publish_loop(), name="gateway-publish"),
                       asyncio.create_task(self._tick_loop(), name="gateway-tick")]
        log.info("JT/T 808 gateway listening on %s; descriptor limit %d (raised from %d), up to %d connections "
                 "(gateway.max_connections=%d, gateway.fd_reserve=%d); %s front end (gateway.front_end=%s)",
                 sock.getsockname(), new, old, self.conn_limit, self.max_conns, self.cfg["gateway.fd_reserve"],
                 self.front_end, self.cfg["gateway.front_end"])
        return GatewayServer(self, sock)

    async def aclose(self, drain_timeout_s: float = 5.0) -> None:
        """Stop accepting, close connections, flush the batcher and wait (bounded) for the outbox."""
        if self.listener is not None:
            self.listener.close()
        for conn in list(self.connections):
            conn.close("shutdown")
            if conn.transport is None:
                self.forget(conn)
        await asyncio.sleep(0)                    # let connection_lost run: it dead-letters pending rejects
        if self.fe is not None:
            self.fe.stop()                        # nothing more is read or answered
            self._drain_native()                  # the positions and closes the native front end still holds
            self._run_native_events(final=True)
            asyncio.get_running_loop().remove_reader(self.fe.fileno())
            self.fe.release()
            self.fe = None
            for conn in list(self.native_conns.values()):
                conn.connection_lost(None)
            self.native_conns.clear()
        self.batcher.flush()
        self._flush_counts()
        await self.outbox.drain(drain_timeout_s, "gateway")
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._thread is not None:
            self._thread.stop()

    def health(self) -> tuple[str, list[str]]:
        """("ok" | "degraded", reasons) for /healthz."""
        reasons = []
        if self.listener is not None and self.listener.paused:
            reasons.append(f"not accepting: {self.listener.paused}")
        if self.reads_paused:
            reasons.append("buffer full: reads paused")
        if not self.outbox.kafka_ok:
            reasons.append("Kafka unreachable: buffering")
        return ("degraded" if reasons else "ok"), reasons

    # --- accepting ---------------------------------------------------------------------------------

    def _full(self) -> bool:
        return len(self.connections) >= self.conn_limit

    def _admit(self, sock: socket.socket, addr: tuple) -> None:
        host = addr[0] if isinstance(addr, tuple) and addr else str(addr)
        if self.pending_by_host.get(host, 0) >= self.max_per_host:
            self.count_reject("address_limit")
            CLOSED.labels(reason="address_limit").inc()
            sock.close()
            return
        if len(self.pending) >= self.max_unauth:           # evict the oldest stranger, admit the new one
            oldest = next(iter(self.pending))
            oldest.close("evicted_unauthenticated", abort=True)
            self.forget(oldest)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(self, host, time.monotonic())
        self.connections.add(conn)
        CONNECTIONS.set(len(self.connections))      # at once, not at the next tick: connects are rare events
        self.pending[conn] = None
        self.pending_by_host[host] = self.pending_by_host.get(host, 0) + 1
        if self.fe is not None:                     # the native front end owns the socket from now on
            try:
                conn.cid = self.fe.add(sock.fileno())
            except OSError as e:
                log.debug("could not attach %s: %s", host, e)
                sock.close()
                self.forget(conn)
                return
            sock.detach()
            self.native_conns[conn.cid] = conn
            conn.transport = native.NativeTransport(self.fe, conn.cid)     # type: ignore[assignment]
            return
        asyncio.get_running_loop().create_task(self._attach(conn, sock))

    async def _attach(self, conn: _Conn, sock: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: conn, sock)
        except Exception as e:            # peer gone between accept and transport creation
            log.debug("could not attach %s: %s", conn.host, e)
            sock.close()
            self.forget(conn)

    def _unpend(self, conn: _Conn) -> None:
        if self.pending.pop(conn, 0) is None:
            n = self.pending_by_host.get(conn.host, 1) - 1
            if n > 0:
                self.pending_by_host[conn.host] = n
            else:
                self.pending_by_host.pop(conn.host, None)

    def forget(self, conn: _Conn) -> None:
        """Connection gone: drop it everywhere and dead-letter what it was refused."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        CONNECTIONS.set(len(self.connections))
        self._unpend(conn)
        if conn.tid is not None and self.by_terminal.get(conn.tid) is conn:
            del self.by_terminal[conn.tid]
        self.flush_rejects(conn)
        if self.listener is not None and self.listener.paused == "max_connections":
            self.listener.resume()

    # --- coalesced wake-ups --------------------------------------------------------------------------

    def arm_nap(self, now: float) -> None:
        """First read since the loop last napped: once this iteration's callbacks ran, sleep until
        ``gateway.coalesce_ms`` after ``now``, so the reads arriving meanwhile are handled in one wake-up."""
        self.nap_armed = True
        self._nap_from = now
        asyncio.get_running_loop().call_soon(self._nap)

    def _nap(self) -> None:
        wait = self._nap_from + self.coalesce_s - _monotonic()
        if wait > 0:
            time.sleep(wait)               # the loop blocks on purpose: sockets fill, the next poll takes all
        self.nap_armed = False

    # --- publishing --------------------------------------------------------------------------------

    @property
    def buffered_pings(self) -> int:
        return self.batcher.pending + self.outbox.pings

    @property
    def kafka_ok(self) -> bool:
        return self.outbox.kafka_ok

    def _enqueue(self, out: Out) -> None:
        self.outbox.put(out)

    def _enqueue_batch(self, partition: int, key: bytes, value: bytes) -> None:
        self._enqueue(Out(GPS_PINGS, key, value, partition, self.batcher.last_batch_size))
        self._room = self.buffer_max - self.outbox.pings

    def count_reject(self, reason: str) -> None:
        self._rejects[reason] = self._rejects.get(reason, 0) + 1

    def _dead_letter(self, reason: str, detail: str, original: bytes) -> None:
        self.count_reject(reason)
        self._enqueue(Out(DEAD_LETTER, SOURCE.encode(), dead_letter_bytes(SOURCE, reason, detail, original), None))

    def flush_rejects(self, conn: _Conn) -> None:
        """One dead letter per reason for everything this connection was refused (first frame + count)."""
        if not conn.rejects:
            return
        for reason, (n, frame, detail, tid) in conn.rejects.items():
            self._enqueue(Out(DEAD_LETTER, SOURCE.encode(), dead_letter_bytes(
                SOURCE, reason, f"{n} frame(s) refused on one connection from {conn.host} "
                f"(terminal {tid or '?'}); first: {detail}", frame), None))
        conn.rejects = None

    def _flush_counts(self) -> None:
        """Hand the per-tick sums to Prometheus (a labelled ``inc`` per frame costs more than the parse)."""
        if self._frames:
            frames, self._frames = self._frames, {}
            for mid, n in frames.items():
                FRAMES.labels(msg_id=_id_label(mid)).inc(n)
        if self._rejects:
            rejects, self._rejects = self._rejects, {}
            for reason, n in rejects.items():
                REJECTED.labels(reason=reason).inc(n)
        if self._locations:
            FRAMES.labels(msg_id="0x0200").inc(self._locations)
            self._pings += self._locations
            self._locations = 0
        if self._pings:
            PINGS.inc(self._pings)
            self._pings = 0
        CONNECTIONS.set(len(self.connections))
        UNAUTHENTICATED.set(len(self.pending))

    def _update_pressure(self) -> None:
        n = self.buffered_pings
        self._room = self.buffer_max - self.outbox.pings
        BUFFERED.set(n)
        if self.fe is not None:
            self.fe.set_room(self._room - self.batcher.pending)
        if n >= self.buffer_max and not self.reads_paused:
            self.reads_paused = True
            BACKPRESSURE.set(1)
            if self.fe is not None:
                self.fe.pause(True)
            for conn in self.connections:
                if conn.transport is not None:
                    conn.transport.pause_reading()
            log.warning("buffer full (%d pings ≥ gateway.buffer_max_pings=%d): pausing reads from %d "
                        "terminals until Kafka catches up", n, self.buffer_max, len(self.connections))
        elif n < self.buffer_max and self.reads_paused:
            self.reads_paused = False
            BACKPRESSURE.set(0)
            self._resumed_at = time.monotonic()
            if self.fe is not None:
                self.fe.pause(False)
                self._schedule_native_events()     # the frames that waited for room
            for conn in self.connections:
                if conn.transport is not None and conn.closed_reason is None:
                    conn.transport.resume_reading()
            log.warning("buffer below limit again (%d pings): resuming reads", n)

    async def _publish_loop(self) -> None:
        def delivered(pings: int) -> None:
            PUBLISHED.inc(pings)
            self._update_pressure()
        if isinstance(self.publisher, AioKafkaPublisher):
            # in the loop: the outbox's chunk goes to ``publish``, which sends and confirms it as the outbox's
            # own send-then-flush function would in the thread
            publisher = self.publisher
            submit: Any = lambda _send_and_flush, chunk: publisher.publish(chunk)
        else:
            assert self._thread is not None
            submit = self._thread.submit
        await self.outbox.run(submit, lambda: self.buffered_pings, delivered, lambda e: PUBLISH_ERRORS.inc())

    async def _tick_loop(self) -> None:
        """Per tick: due ping batches, counters, back-pressure; less often: deadlines, idle connections,
        revoked codes, and moving long-lived objects out of the cyclic collector."""
        # wake when the oldest pending ping is due (one wake-up per batch interval while pings flow, not a
        # fixed 50 ms tick), and at least every ``tick`` for counters, back-pressure and deadlines
        tick = min(0.25, max(0.005, self.batcher.max_s / 2))
        sweep_every = max(tick, min(1.0, self.auth_s / 4))
        # the idle check walks every connection: a tenth of the timeout is precise enough
        idle_every = max(sweep_every, self.idle_s / 10)
        revocation_every = self.cfg["gateway.revocation_check_s"]
        freeze_every = self.cfg["gateway.gc_freeze_s"]
        next_sweep = next_revocation = next_idle = time.monotonic()
        next_freeze = time.monotonic() + freeze_every
        while True:
            due = self.batcher.next_due()
            await asyncio.sleep(tick if due is None else min(tick, max(0.002, due - time.monotonic())))
            try:
                if self.fe is not None:
                    self._drain_native()      # the positions the native front end answered since the last tick
            except Exception:
                log.exception("draining the native front end failed")
            try:
                due = self.batcher.next_due()
                if due is not None and due <= time.monotonic() + 0.001:
                    # all partitions at once: one publish cycle (send + flush in the publish thread, ~1 ms of
                    # CPU in kafka-python) per batch interval instead of one per partition
                    self.batcher.flush()
            except Exception:
                log.exception("batcher flush failed")
            self._flush_counts()
            self._update_pressure()
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + sweep_every
                self._sweep_pending(now)
            if now >= next_idle:
                next_idle = now + idle_every
                self._sweep_idle(now)
            if now >= next_revocation:
                next_revocation = now + revocation_every
                self._close_revoked()
            if freeze_every and now >= next_freeze:
                next_freeze = now + freeze_every
                gc.freeze()

    def _sweep_pending(self, now: float) -> None:
        while self.pending:
            conn = next(iter(self.pending))
            if now - conn.opened < self.auth_s:
                break
            conn.close("auth_timeout", abort=True)
            self.forget(conn)

    def _sweep_idle(self, now: float) -> None:
        limit = now - self.idle_s
        if self.reads_paused or self._resumed_at > limit:
            return                         # silence is ours while reads are (or were just) paused
        if self.fe is not None:                  # the native front end knows when each socket was last read
            silent = [self.native_conns.get(cid) for cid in self.fe.idle(limit)]
            idle = [x for x in silent if x is not None and x.tid is not None]
        else:
            idle = [x for x in self.connections if x.last_rx < limit and x.tid is not None]
        for conn in idle:
            log.info("closing %s (terminal %s): idle for %.0f s", conn.host, conn.tid, self.idle_s)
            conn.close("idle_timeout", abort=True)
            self.forget(conn)

    def _close_revoked(self) -> None:
        try:
            keys, self._revoked_mark = self.auth.revoked_since(self._revoked_mark)
        except Exception:
            log.exception("cannot read revoked terminals from the archive")
            return
        for k in keys:
            conn = self.by_terminal.get(k)
            if conn is not None:
                log.warning("terminal %s: auth code revoked, closing its connection", k)
                conn.close("revoked")
                self.forget(conn)

    # --- one frame ---------------------------------------------------------------------------------

    def _reply(self, conn: _Conn, head: c.Message, msg_id: int, body: bytes) -> bytes:
        return c.build_frame(msg_id, head.terminal_id, conn.next_serial(), body, head.version,
                             head.protocol_version or 1)

    def _ack(self, conn: _Conn, head: c.Message, result: int) -> bytes:
        return self._reply(conn, head, c.PLATFORM_RESPONSE, c.encode_general_response(head.serial, head.msg_id, result))

    def on_frame(self, conn: _Conn, frame: bytes) -> bytes | None:
        """Handle one escaped frame; returns the reply frame(s) or None. Never raises for bad input."""
        self.current = conn
        try:
            return self._on_frame(conn, frame)
        finally:
            self.current = None

    def _on_frame(self, conn: _Conn, frame: bytes) -> bytes | None:
        try:
            msg = c.parse_frame(frame)
        except c.Jt808Error as e:
            head = e.message
            self._frames[head.msg_id if head else None] = self._frames.get(head.msg_id if head else None, 0) + 1
            if conn.tid is None:                   # a stranger's noise: once per connection
                if e.code == "unsupported_msg" or head is None:
                    conn.reject("not_authenticated" if head else e.code, e.detail, frame, head and head.terminal_id)
                    return self._ack(conn, head, c.RESULT_FAILURE) if head and head.msg_id < 0x8000 else None
                conn.reject(e.code, e.detail, frame, head.terminal_id)
                return self._ack(conn, head, c.RESULT_MSG_ERROR)
            if head is not None and c.terminal_key(head.terminal_id) != conn.tid:
                return self._impostor(conn, head, frame)
            if e.code == "unsupported_msg" and head is not None:
                self.count_reject(e.code)
                return self._ack(conn, head, c.RESULT_UNSUPPORTED)
            self._dead_letter(e.code, e.detail, frame)
            if head is None:
                return None
            return self._ack(conn, head, c.RESULT_MSG_ERROR)
        mid = msg.msg_id
        self._frames[mid] = self._frames.get(mid, 0) + 1
        if mid == c.REGISTRATION:
            return self._on_registration(conn, msg, frame)
        if mid == c.AUTHENTICATION:
            return self._on_authentication(conn, msg, frame)
        if conn.tid is None:
            conn.reject("not_authenticated", f"0x{mid:04X} before a successful 0x0102", frame, msg.terminal_id)
            return self._ack(conn, msg, c.RESULT_FAILURE) if mid < 0x8000 else None
        if c.terminal_key(msg.terminal_id) != conn.tid:
            return self._impostor(conn, msg, frame)
        if msg.is_fragment:
            if conn.reasm is None:
                conn.reasm = _Reassembly(self.reasm_bytes, self.reasm_msgs)
            try:
                full = conn.reasm.add(msg)
            except c.Jt808Error as e:
                self._dead_letter(e.code, e.detail, frame)
                conn.close(e.code)
                return self._ack(conn, msg, c.RESULT_FAILURE)
            if full is None:
                return self._ack(conn, msg, c.RESULT_OK)
            msg = full
        handler = self._HANDLERS.get(msg.msg_id)
        if handler is None:               # decodable but not a terminal→platform request (e.g. 0x8001)
            return self._ack(conn, msg, c.RESULT_UNSUPPORTED) if msg.msg_id < 0x8000 else None
        return handler(self, conn, msg, frame)

    def on_fast_location(self, conn: _Conn, parsed: tuple) -> bytes:
        """A well-formed 0x0200 of the authenticated terminal (``fastpath.location``): buffer, acknowledge."""
        head, digits, serial, (ts, lat, lon, speed, heading, alt, alarm, status, mileage) = parsed
        conn.digits = digits
        plate, color = conn.vehicle                  # type: ignore[misc]
        # the header's protocol (a 2019 header is 15 bytes up to the serial) names the alarm bits downstream
        self.batcher.add_row((plate, digits, ts, lat, lon, speed, heading, alt, color, alarm, status, 0,
                              self.drivers.get(conn.tid), mileage, int(_time() * 1000),
                              2019 if len(head) == 15 else 2013))    # ROW_FIELDS
        self._locations += 1
        if self.batcher.pending >= self._room:
            self._update_pressure()
        if head != conn.ack_head:
            conn.ack_head = head
            conn.ack_prefix, conn.ack_xor = fastpath.ack_prefix(head)
        serial_out = conn.serial = (conn.serial + 1) & 0xFFFF
        return fastpath.ack_with(conn.ack_prefix, conn.ack_xor, serial_out, serial, c.LOCATION, c.RESULT_OK)

    # --- the native front end (``native.py``, ``_frontend.c``) ----------------------------------------------

    def _drain_native(self) -> None:
        """What the native front end has for us: positions it answered (rows for the batcher), frames it
        passed up, connections it lost or closed — handled in the order they happened."""
        fe = self.fe
        if fe is None:
            return
        rows, events, locations, heartbeats, first = fe.drain()
        # The positions first, all of them: they were answered, and none can depend on an event still queued
        # (a connection whose frame waits for Python is read no further). A partition's wait
        # (``stream.batch_max_ms``) runs from the oldest row's arrival, not from the drain.
        if rows:
            self._add_rows(rows, first)
        if events:
            self._native_events.extend(events)
            self._run_native_events()
        if locations:
            self._locations += locations
        if heartbeats:
            self._frames[c.HEARTBEAT] = self._frames.get(c.HEARTBEAT, 0) + heartbeats
        if rows and self.batcher.pending >= self._room:
            self._update_pressure()
        if self.fe is not None:
            self.fe.set_room(self._room - self.batcher.pending)

    def _run_native_events(self, final: bool = False) -> None:
        """The frames, closes and losses the front end reported, in order — as uvloop hands a Python front
        end its reads: at most ``_EVENT_SLICE_S`` of work per loop iteration (a burst of 20 000 batch uploads
        must not hold up /metrics and the Kafka client), and no frame while reads are paused for
        back-pressure (its connection waits, unanswered, as a paused socket would). ``final``: at shutdown,
        frames are dropped unanswered and the rest is handled."""
        self._events_scheduled = False
        q = self._native_events
        conns = self.native_conns
        stop_at = time.monotonic() + _EVENT_SLICE_S
        while q:
            pos, cid, payload, serial, kind = q[0]
            if kind == native.UP and not final:
                if self.reads_paused:
                    return                         # _update_pressure schedules us when reads resume
                if time.monotonic() > stop_at:
                    self._schedule_native_events()
                    return
            q.popleft()
            conn = conns.get(cid)
            if conn is None:
                continue
            try:
                if kind == native.UP:
                    if not final:
                        self._native_frame(conn, payload, serial)
                elif kind == native.LOST:
                    del conns[cid]
                    conn.connection_lost(None)
                else:                              # closed by the front end: rate_limit, frame_too_large, …
                    if kind == native.REJECTED:
                        self.count_reject(payload)
                    conn.close(payload)
            except Exception:                      # a fault of ours: that connection ends, the others go on
                log.exception("gateway: handling a frame of %s failed; closing that connection", conn.host)
                self.current = None
                if conn.transport is not None:
                    conn.transport.abort()

    def _schedule_native_events(self) -> None:
        if not self._events_scheduled and self._native_events:
            self._events_scheduled = True
            asyncio.get_running_loop().call_soon(self._run_native_events)

    def _add_rows(self, rows: list, first: float) -> None:
        add = self.batcher.add_row
        for r in rows:
            try:
                add(r, first)
            except Exception:     # answered already: never dropped (a batch that failed to go out stays queued)
                log.exception("gateway: queueing a position failed")

    def _native_frame(self, conn: _Conn, frame: bytes, serial: int) -> None:
        """One frame the native front end passed up: handled as ``_Conn.data_received`` handles a frame, the
        answer and the connection's state handed back (``resume``)."""
        conn.serial = serial
        reply: bytes | None = None
        if conn.tid is not None:
            fix = fastpath.location(frame)
            if fix is not None and (fix[1] == conn.digits or c.terminal_key(fix[1]) == conn.tid):
                reply = self.on_fast_location(conn, fix)
        if reply is None:
            reply = self.on_frame(conn, frame)
        info = None
        if conn.tid is not None and conn.vehicle is not None:
            info = (conn.vehicle[0], conn.vehicle[1], self.drivers.get(conn.tid))
            if info == conn.info:
                info = conn.info
            conn.info = info
        if self.fe is not None:
            self.fe.resume(conn.cid, conn.serial, reply or b"", conn.tid if info is not None else None, info,
                           conn.closed_reason is not None)
        if self.batcher.pending >= self._room:
            self._update_pressure()

    def _impostor(self, conn: _Conn, head: c.Message, frame: bytes) -> bytes | None:
        """A frame carrying another terminal id on an authenticated connection: refused, connection closed."""
        conn.reject("terminal_mismatch", f"frame for terminal {head.terminal_id} on the connection "
                    f"authenticated as {conn.tid}", frame, head.terminal_id)
        conn.close("terminal_mismatch")
        return self._ack(conn, head, c.RESULT_FAILURE) if head.msg_id < 0x8000 else None

    def _failure(self, conn: _Conn) -> None:
        conn.failures += 1
        if conn.failures >= self.max_failures:
            conn.close("auth_failures")

    def _on_registration(self, conn: _Conn, msg: c.Message, frame: bytes) -> bytes:
        f = msg.fields or {}
        tid = c.terminal_key(msg.terminal_id)
        plate, color = f.get("plate") or "", f.get("plate_color")
        v = self.registry.vehicles.get(plate) if plate else None
        if v is None or v.plate_color != color:
            result, detail = REG_NO_VEHICLE, f"plate {plate or f.get('vin')!r} colour {color} is not in the registry"
        elif tid in self.ambiguous:
            result, detail = REG_NO_TERMINAL, f"the registry lists terminal {tid} on several vehicles"
        elif self.registry_terminal.get(tid, plate) != plate:
            result, detail = REG_TERMINAL_TAKEN, (f"the registry assigns terminal {tid} to "
                                                  f"{self.registry_terminal[tid]}, not {plate}")
        elif v.terminal_id and c.terminal_key(v.terminal_id) != tid:
            result, detail = REG_VEHICLE_TAKEN, f"the registry assigns {plate} to another terminal"
        else:
            try:
                result, code = self.auth.issue(tid, plate, color)
            except Exception:
                log.exception("cannot store the registration of terminal %s", tid)
                return self._reply(conn, msg, c.PLATFORM_RESPONSE,
                                   c.encode_general_response(msg.serial, msg.msg_id, c.RESULT_FAILURE))
            if result == REG_OK:
                log.info("terminal %s registered as %s (colour %s)", msg.terminal_id, plate, color)
                return self._reply(conn, msg, c.REGISTRATION_RESPONSE,
                                   c.encode_registration_response(msg.serial, REG_OK, code))
            detail = (f"terminal {tid} is already registered (revoke it first)" if result == REG_TERMINAL_TAKEN
                      else f"{plate} is already bound to another terminal")
        conn.reject(_REG_REASONS[result], detail, frame, msg.terminal_id)
        self._failure(conn)
        return self._reply(conn, msg, c.REGISTRATION_RESPONSE, c.encode_registration_response(msg.serial, result))

    def _on_authentication(self, conn: _Conn, msg: c.Message, frame: bytes) -> bytes:
        tid = c.terminal_key(msg.terminal_id)
        code = (msg.fields or {}).get("auth_code") or ""
        if conn.tid is not None and conn.tid != tid:
            return self._impostor(conn, msg, frame) or b""
        try:
            b = self.auth.verify(tid, code) if code else None
        except Exception:
            log.exception("cannot check the auth code of terminal %s", tid)
            return self._ack(conn, msg, c.RESULT_FAILURE)
        v = self.registry.vehicles.get(b.plate) if b else None
        if b is None or v is None or v.plate_color != b.plate_color:
            conn.reject("auth_failed", f"terminal {msg.terminal_id}: " + (
                "wrong or revoked auth code" if b is None else f"bound vehicle {b.plate} left the registry"),
                frame, msg.terminal_id)
            self._failure(conn)
            return self._ack(conn, msg, c.RESULT_FAILURE)
        if conn.tid is None:
            self._unpend(conn)
            conn.tid, conn.vehicle = tid, (b.plate, b.plate_color)
            old = self.by_terminal.get(tid)
            if old is not None and old is not conn:
                log.info("terminal %s authenticated on a new connection from %s: closing the older one from %s",
                         tid, conn.host, old.host)
                old.close("superseded")
                self.forget(old)
            self.by_terminal[tid] = conn
            self.flush_rejects(conn)
        return self._ack(conn, msg, c.RESULT_OK)

    def _on_ack_only(self, conn: _Conn, msg: c.Message, frame: bytes) -> bytes:
        return self._ack(conn, msg, c.RESULT_OK)

    def _on_deregistration(self, conn: _Conn, msg: c.Message, frame: bytes) -> bytes:
        """0x0003 from the authenticated terminal: its code is revoked; it must register again."""
        tid = conn.tid
        assert tid is not None
        try:
            self.auth.revoke(tid, "deregistered by the terminal (0x0003)")
        except Exception:
            log.exception("cannot store the deregistration of terminal %s", tid)
            return self._ack(conn, msg, c.RESULT_FAILURE)
        self.drivers.pop(tid, None)
        if self.by_terminal.get(tid) is conn:
            del self.by_terminal[tid]
        conn.tid = conn.vehicle = None
        conn.digits = ""                               # the fast path's identity belongs to the binding
        conn.opened = time.monotonic()                 # a fresh deadline to register and authenticate
        self.pending[conn] = None
        self.pending_by_host[conn.host] = self.pending_by_host.get(conn.host, 0) + 1
        return self._ack(conn, msg, c.RESULT_OK)

    def _on_terminal_response(self, conn: _Conn, msg: c.Message, frame: bytes) -> None:
        return None

    def _on_location(self, conn: _Conn, msg: c.Message, frame: bytes) -> bytes:
        plate, color = conn.vehicle          # type: ignore[misc]
        pings = c.message_pings(msg, plate, color, self.drivers.get(conn.tid))    # type: ignore[arg-type]
        errors = (msg.fields or {}).get("item_errors") or []
        if errors:
            first = errors[0]
            self._dead_letter(first["code"], f"{len(errors)} bad item(s) in 0x0704, first #{first['index']}: "
                              f"{first['detail']}", frame)
            if not pings:
                return self._ack(conn, msg, c.RESULT_MSG_ERROR)
        recv = int(time.time() * 1000)
        add = self.batcher.add
        for p in pings:
            p["recv_ts"] = recv
            add(p)
        self._pings += len(pings)
        if self.buffered_pings >= self.buffer_max:
            self._update_pressure()
        return self._ack(conn, msg, c.RESULT_OK)

    def _on_driver_card(self, conn: _Conn, msg: c.Message, frame: bytes) -> bytes:
        f = msg.fields or {}
        tid = conn.tid
        assert tid is not None and conn.vehicle is not None
        if f["event"] == "login" and f.get("ic_result") != 0:
            log.info("terminal %s: IC card read failed (result %s)", msg.terminal_id, f.get("ic_result"))
            return self._ack(conn, msg, c.RESULT_OK)
        if f["event"] == "login":
            driver_id = f.get("qualification_no", "")
            self.drivers[tid] = driver_id
        else:
            driver_id = self.drivers.pop(tid, "")
        plate = conn.vehicle[0]
        ev = DriverEvent(plate=plate, terminal_id=msg.terminal_id, ts=f["ts"], event=f["event"], driver_id=driver_id,
                         driver_name=f.get("driver_name", ""))
        self._enqueue(Out(DRIVER_EVENTS, plate.encode("utf-8"), orjson.dumps(ev.asdict()), None))
        return self._ack(conn, msg, c.RESULT_OK)

    _HANDLERS = {
        c.HEARTBEAT: _on_ack_only, c.DEREGISTRATION: _on_deregistration, c.LOCATION: _on_location,
        c.BATCH_LOCATION: _on_location, c.DRIVER_CARD: _on_driver_card, c.TERMINAL_RESPONSE: _on_terminal_response,
    }


async def serve(cfg: Config, registry: Registry, publisher: Publisher, host: str = "0.0.0.0",
                port: int | None = None) -> GatewayServer:
    """Start the gateway inside the running loop (identity store: the archive at ``cfg.archive_path``).
    The returned server carries ``server.gateway``; stop it with ``await server.gateway.aclose()``."""
    gw = Gateway(cfg, registry, publisher, TerminalAuth(cfg.archive_path))
    return await gw.start(host, cfg["gateway.port"] if port is None else port)


# --- CLI ----------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="TCP port (default: gateway.port)")
    p.add_argument("--registry", metavar="FILE", help="registry JSON: the vehicles terminals may register as")
    p.add_argument("--bootstrap", default=os.environ.get("ROADWATCH_KAFKA") or "localhost:9092",
                   help="Kafka bootstrap servers (default $ROADWATCH_KAFKA or localhost:9092)")
    p.add_argument("--metrics-port", type=int, help="serve /metrics and /healthz on this port")
    p.add_argument("--profile", metavar="FILE", help="sample the event loop with pyinstrument; text report to FILE at exit")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.cli import UsageError
    try:
        registry = load_registry(args.registry)
    except RegistryError as e:
        raise UsageError(str(e)) from None
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port")
    try:
        native.choose(cfg["gateway.front_end"])
    except native.FrontEndUnavailable as e:
        raise UsageError(str(e)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the Kafka clients log every reconnect attempt; the gateway logs outages and recoveries itself
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    publisher: Any = (AioKafkaPublisher(args.bootstrap) if cfg["gateway.producer"] == "aiokafka"
                      else KafkaPublisher(bootstrap=args.bootstrap))
    try:
        auth = TerminalAuth(cfg.archive_path)
    except Exception as e:
        from roadwatch.streams.archive import redact
        raise UsageError(f"cannot open the archive {redact(cfg.archive_path)}: {e}") from None

    async def main() -> None:
        gw = Gateway(cfg, registry, publisher, auth)
        try:
            await gw.start(args.host, cfg["gateway.port"] if args.port is None else args.port)
        except OSError as e:
            raise UsageError(f"cannot listen on {args.host}:{args.port or cfg['gateway.port']}: {e.strerror}") from None
        if args.metrics_port:
            from .health_http import start_health_server
            await start_health_server(args.host, args.metrics_port, gw.health,
                                      lambda: {"front_end": gw.front_end})
        # everything alive now lives as long as the process: keep it out of the cyclic collector's scans
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping gateway")
        await gw.aclose()
        if isinstance(publisher, AioKafkaPublisher):
            await publisher.aclose()

    if cfg["gateway.event_loop"] == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise UsageError("gateway.event_loop = \"uvloop\" needs the uvloop package "
                             "(pip install uvloop, or set gateway.event_loop = \"asyncio\")") from None
        run_loop = uvloop.run
    else:
        run_loop = asyncio.run
    profiler = None
    if args.profile:
        try:
            from pyinstrument import Profiler
        except ImportError:
            raise UsageError("--profile needs pyinstrument (pip install pyinstrument)") from None
        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
    try:
        run_loop(main())
    finally:
        if isinstance(publisher, KafkaPublisher):
            publisher.close()
        if profiler is not None:
            profiler.stop()
            Path(args.profile).write_text(profiler.output_text(unicode=True, show_all=False))
    return 0
