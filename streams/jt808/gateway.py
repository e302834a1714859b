"""``roadwatch gateway``: asyncio TCP server for JT/T 808 terminals, publishing to Kafka.

Per connection: 0x7E framing bounded by ``gateway.max_frame_bytes``, idle timeout, a token-bucket frame
rate limit (abuse → close), and replies (0x8100 to registration, 0x8001 to everything else a terminal
expects an answer to). Pings go through a ``PingBatcher`` to ``gps-pings``; IC-card events to
``driver-events``; rejects to ``dead-letter`` with the original frame.

Publishing runs in one background task that hands records to a ``Publisher`` in a worker thread (the
kafka-python producer blocks) and only drops them from its outbox once ``flush`` confirmed delivery. If
Kafka is unreachable the outbox grows; at ``gateway.buffer_max_pings`` buffered pings the gateway stops
reading from every socket (back-pressure): terminals get no acknowledgement and keep their positions in
their blind-area store, to re-upload them later as 0x0704. Nothing is acknowledged that was not buffered.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import time
from collections import deque
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from roadwatch.models.config import Config
from roadwatch.models.records import DriverEvent
from roadwatch.models.registry import Registry, RegistryError, load_registry
from roadwatch.streams.batcher import KafkaPublisher, PingBatcher, Publisher
from roadwatch.streams.deadletter import dead_letter_bytes
from roadwatch.streams.topics import DEAD_LETTER, DRIVER_EVENTS, GPS_PINGS

from . import codec as c

log = logging.getLogger("roadwatch.gateway")

CONNECTIONS = Gauge("roadwatch_gateway_connections", "Open JT/T 808 terminal connections")
FRAMES = Counter("roadwatch_gateway_frames", "JT/T 808 frames received", ["msg_id"])
REJECTED = Counter("roadwatch_gateway_rejected", "Frames or connections rejected by the gateway", ["reason"])
BUFFERED = Gauge("roadwatch_gateway_buffered_pings", "Pings accepted but not yet confirmed by Kafka")
PINGS = Counter("roadwatch_gateway_pings", "Pings accepted from terminals")
PUBLISH_ERRORS = Counter("roadwatch_gateway_publish_errors", "Failed attempts to publish to Kafka")
BACKPRESSURE = Gauge("roadwatch_gateway_backpressure", "1 while socket reads are paused (buffer full)")

_KNOWN_IDS = {f"0x{i:04X}" for i in c.DECODERS} | {"0x0900", "0x0210", "0x0107", "0x0201", "0x0800", "0x0801"}
SOURCE = "gateway"


def _id_label(msg_id: int | None) -> str:
    if msg_id is None:
        return "unparsed"
    s = f"0x{msg_id:04X}"
    return s if s in _KNOWN_IDS else "other"


def auth_code_for(terminal_id: str) -> str:
    """Authentication code issued at registration. Deterministic so a restarted gateway recognises codes
    stored by terminals; it is an identifier, not a secret (the terminal↔plate binding is the registry)."""
    return hashlib.sha256(b"roadwatch-jt808:" + terminal_id.encode()).hexdigest()[:16].upper()


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


@dataclass
class _Out:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    pings: int = 0


@dataclass(eq=False)
class _Conn:
    peer: str
    writer: Any = None
    terminal_id: str | None = None
    serial: int = 0
    reassembler: c.Reassembler = field(default_factory=c.Reassembler)

    def next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial


class Gateway:
    """State shared by all connections: terminal↔plate map, current drivers, batcher, outbox."""

    def __init__(self, cfg: Config, registry: Registry, publisher: Publisher):
        self.cfg = cfg
        self.publisher = publisher
        self.registry_terminals: dict[str, tuple[str, int]] = {
            c.terminal_key(v.terminal_id): (v.plate, v.plate_color) for v in registry.vehicles.values() if v.terminal_id}
        self.terminals: dict[str, tuple[str, int]] = dict(self.registry_terminals)   # by codec.terminal_key
        self.drivers: dict[str, str] = {}          # terminal key → qualification no. of the logged-in driver
        self.batcher = PingBatcher.from_config(cfg, self._enqueue_batch)
        self.outbox: deque[_Out] = deque()
        self.outbox_pings = 0
        self.buffer_max = cfg["gateway.buffer_max_pings"]
        self.max_frame = cfg["gateway.max_frame_bytes"]
        self.idle_s = cfg["gateway.idle_timeout_s"]
        self.rate = float(cfg["gateway.max_frames_per_s"])
        self.max_conns = cfg["gateway.max_connections"]
        self.connections: set[_Conn] = set()
        self.kafka_ok = True
        self.server: asyncio.base_events.Server | None = None
        self._accepting = asyncio.Event()
        self._accepting.set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._thread: _PublishThread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> asyncio.base_events.Server:
        self.server = await asyncio.start_server(self.handle, host, port, limit=max(65536, self.max_frame * 2))
        self._thread = _PublishThread()
        self._tasks = [asyncio.create_task(self._publish_loop(), name="gateway-publish"),
                       asyncio.create_task(self._flush_loop(), name="gateway-flush")]
        self.server.gateway = self  # type: ignore[attr-defined]
        addrs = ", ".join(str(s.getsockname()) for s in self.server.sockets)
        log.info("JT/T 808 gateway listening on %s", addrs)
        return self.server

    async def aclose(self, drain_timeout_s: float = 5.0) -> None:
        """Stop accepting, close connections, flush the batcher and wait (bounded) for the outbox."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            if conn.writer is not None:
                conn.writer.close()
        self.batcher.flush()
        self._wake.set()
        deadline = time.monotonic() + drain_timeout_s
        while self.outbox and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.outbox:
            log.error("gateway stopped with %d records (%d pings) not delivered to Kafka",
                      len(self.outbox), self.outbox_pings)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._thread is not None:
            self._thread.stop()

    # --- publishing --------------------------------------------------------------------------------

    @property
    def buffered_pings(self) -> int:
        return self.batcher.pending + self.outbox_pings

    def _enqueue(self, out: _Out) -> None:
        self.outbox.append(out)
        self.outbox_pings += out.pings
        self._wake.set()

    def _enqueue_batch(self, partition: int, key: bytes, value: bytes) -> None:
        self._enqueue(_Out(GPS_PINGS, key, value, partition, self.batcher.last_batch_size))

    def _dead_letter(self, reason: str, detail: str, original: bytes) -> None:
        REJECTED.labels(reason=reason).inc()
        self._enqueue(_Out(DEAD_LETTER, SOURCE.encode(), dead_letter_bytes(SOURCE, reason, detail, original), None))

    def _update_pressure(self) -> None:
        n = self.buffered_pings
        BUFFERED.set(n)
        if n >= self.buffer_max and self._accepting.is_set():
            self._accepting.clear()
            BACKPRESSURE.set(1)
            log.warning("buffer full (%d pings ≥ gateway.buffer_max_pings=%d): pausing reads from %d "
                        "terminals until Kafka catches up", n, self.buffer_max, len(self.connections))
        elif n < self.buffer_max and not self._accepting.is_set():
            self._accepting.set()
            BACKPRESSURE.set(0)
            log.warning("buffer below limit again (%d pings): resuming reads", n)

    def _publish_chunk(self, chunk: list[_Out]) -> None:
        for o in chunk:
            self.publisher.send(o.topic, o.key, o.value, o.partition)
        self.publisher.flush()

    async def _publish_loop(self) -> None:
        assert self._thread is not None
        backoff = 0.1
        while True:
            if not self.outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            chunk = [self.outbox[i] for i in range(min(len(self.outbox), 512))]
            try:
                await self._thread.submit(self._publish_chunk, chunk)
            except Exception as e:  # PublishError or anything the client library throws: keep and retry
                PUBLISH_ERRORS.inc()
                if self.kafka_ok:
                    log.error("Kafka unreachable (%s); buffering — %d pings pending", e, self.buffered_pings)
                    self.kafka_ok = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if not self.kafka_ok:
                log.warning("Kafka reachable again; delivering %d buffered records", len(self.outbox))
                self.kafka_ok = True
            for _ in chunk:
                self.outbox_pings -= self.outbox.popleft().pings
            self._update_pressure()

    async def _flush_loop(self) -> None:
        tick = min(0.05, max(0.005, self.batcher.max_s / 4))
        while True:
            await asyncio.sleep(tick)
            try:
                self.batcher.poll()
            except Exception:
                log.exception("batcher flush failed")
            self._update_pressure()

    # --- connections -------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        if len(self.connections) >= self.max_conns:
            REJECTED.labels(reason="max_connections").inc()
            log.warning("refusing %s: %d connections (gateway.max_connections)", peer, len(self.connections))
            writer.close()
            return
        conn = _Conn(peer, writer)
        self.connections.add(conn)
        CONNECTIONS.inc()
        try:
            await self._serve(conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("connection %s (terminal %s) failed", peer, conn.terminal_id)
        finally:
            self.connections.discard(conn)
            CONNECTIONS.dec()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        tokens, last = self.rate, time.monotonic()
        while True:
            if not self._accepting.is_set():
                await self._accepting.wait()
            try:
                data = await asyncio.wait_for(reader.read(65536), self.idle_s)
            except asyncio.TimeoutError:
                REJECTED.labels(reason="idle_timeout").inc()
                log.info("closing %s (terminal %s): idle for %.0f s", conn.peer, conn.terminal_id, self.idle_s)
                return
            if not data:
                return
            buf += data
            try:
                frames = c.split_frames(buf, self.max_frame)
            except c.Jt808Error as e:
                REJECTED.labels(reason=e.code).inc()
                log.warning("closing %s (terminal %s): %s", conn.peer, conn.terminal_id, e.detail)
                return
            out = bytearray()
            for frame in frames:
                now = time.monotonic()
                tokens = min(self.rate, tokens + (now - last) * self.rate)
                last = now
                if tokens < 1:
                    REJECTED.labels(reason="rate_limit").inc()
                    log.warning("closing %s (terminal %s): more than %g frames/s (gateway.max_frames_per_s)",
                                conn.peer, conn.terminal_id, self.rate)
                    if out:
                        writer.write(bytes(out))
                    return
                tokens -= 1
                reply = self.on_frame(conn, frame)
                if reply:
                    out += reply
            if out:
                writer.write(bytes(out))
                try:
                    await asyncio.wait_for(writer.drain(), self.idle_s)
                except asyncio.TimeoutError:
                    REJECTED.labels(reason="write_timeout").inc()
                    return

    # --- one frame ---------------------------------------------------------------------------------

    def _reply(self, conn: _Conn, head: c.Message, msg_id: int, body: bytes) -> bytes:
        return c.build_frame(msg_id, head.terminal_id, conn.next_serial(), body, head.version,
                             head.protocol_version or 1)

    def _ack(self, conn: _Conn, head: c.Message, result: int) -> bytes:
        return self._reply(conn, head, c.PLATFORM_RESPONSE, c.encode_general_response(head.serial, head.msg_id, result))

    def on_frame(self, conn: _Conn, frame: bytes) -> bytes | None:
        """Handle one escaped frame; returns the reply frame(s) or None. Never raises for bad input."""
        try:
            msg = c.parse_frame(frame)
            if msg.is_fragment:
                FRAMES.labels(msg_id=_id_label(msg.msg_id)).inc()
                conn.terminal_id = msg.terminal_id
                full = conn.reassembler.add(msg)
                if full is None:
                    return self._ack(conn, msg, c.RESULT_OK)
                msg = full
            else:
                FRAMES.labels(msg_id=_id_label(msg.msg_id)).inc()
        except c.Jt808Error as e:
            head = e.message
            if not (head and head.is_fragment):
                FRAMES.labels(msg_id=_id_label(head.msg_id if head else None)).inc()
            if e.code == "unsupported_msg" and head is not None:
                REJECTED.labels(reason=e.code).inc()
                return self._ack(conn, head, c.RESULT_UNSUPPORTED)
            self._dead_letter(e.code, e.detail, frame)
            if head is None:
                return None
            return self._ack(conn, head, c.RESULT_MSG_ERROR)
        conn.terminal_id = msg.terminal_id
        handler = self._HANDLERS.get(msg.msg_id)
        if handler is None:               # decodable but not a terminal→platform request (e.g. 0x8001)
            return self._ack(conn, msg, c.RESULT_UNSUPPORTED) if msg.msg_id < 0x8000 else None
        return handler(self, conn, msg, frame)

    def _on_registration(self, conn: _Conn, msg: c.Message, frame: bytes) -> bytes:
        f = msg.fields or {}
        tid = c.terminal_key(msg.terminal_id)
        known = self.registry_terminals.get(tid)
        plate, color = known if known else (f.get("plate"), f.get("plate_color"))
        if not plate or not 1 <= len(plate) <= 16 or "\ufffd" in plate:
            REJECTED.labels(reason="unknown_vehicle").inc()
            log.warning("registration from terminal %s without a usable plate (%r)", msg.terminal_id,
                        f.get("plate") or f.get("vin"))
            body = c.encode_registration_response(msg.serial, 2)      # 2 = no such vehicle
        else:
            if self.terminals.get(tid) != (plate, color):
                log.info("terminal %s registered as %s (colour %s)", msg.terminal_id, plate, color)
            self.terminals[tid] = (plate, color)
            body = c.encode_registration_response(msg.serial, 0, auth_code_for(tid))
        return self._reply(conn, msg, c.REGISTRATION_RESPONSE, body)

    def _on_ack_only(self, conn: _Conn, msg: c.Message, frame: bytes) -> bytes:
        return self._ack(conn, msg, c.RESULT_OK)

    def _on_deregistration(self, conn: _Conn, msg: c.Message, frame: bytes) -> bytes:
        tid = c.terminal_key(msg.terminal_id)
        if tid not in self.registry_terminals:
            self.terminals.pop(tid, None)
        self.drivers.pop(tid, None)
        return self._ack(conn, msg, c.RESULT_OK)

    def _on_terminal_response(self, conn: _Conn, msg: c.Message, frame: bytes) -> None:
        return None

    def _on_location(self, conn: _Conn, msg: c.Message, frame: bytes) -> bytes:
        tid = c.terminal_key(msg.terminal_id)
        vehicle = self.terminals.get(tid)
        if vehicle is None:
            self._dead_letter("unknown_terminal", f"terminal {msg.terminal_id} has no plate (not registered, "
                              f"not in the registry)", frame)
            return self._ack(conn, msg, c.RESULT_FAILURE)
        pings = c.message_pings(msg, vehicle[0], vehicle[1], self.drivers.get(tid))
        errors = (msg.fields or {}).get("item_errors") or []
        if errors:
            first = errors[0]
            self._dead_letter(first["code"], f"{len(errors)} bad item(s) in 0x0704, first #{first['index']}: "
                              f"{first['detail']}", frame)
            if not pings:
                return self._ack(conn, msg, c.RESULT_MSG_ERROR)
        recv = int(time.time() * 1000)
        for p in pings:
            p["recv_ts"] = recv
            self.batcher.add(p)
        PINGS.inc(len(pings))
        self._update_pressure()
        return self._ack(conn, msg, c.RESULT_OK)

    def _on_driver_card(self, conn: _Conn, msg: c.Message, frame: bytes) -> bytes:
        f = msg.fields or {}
        tid = c.terminal_key(msg.terminal_id)
        vehicle = self.terminals.get(tid)
        if vehicle is None:
            self._dead_letter("unknown_terminal", f"driver card from unmapped terminal {msg.terminal_id}", frame)
            return self._ack(conn, msg, c.RESULT_FAILURE)
        if f["event"] == "login" and f.get("ic_result") != 0:
            log.info("terminal %s: IC card read failed (result %s)", msg.terminal_id, f.get("ic_result"))
            return self._ack(conn, msg, c.RESULT_OK)
        if f["event"] == "login":
            driver_id = f.get("qualification_no", "")
            self.drivers[tid] = driver_id
        else:
            driver_id = self.drivers.pop(tid, "")
        ev = DriverEvent(plate=vehicle[0], terminal_id=msg.terminal_id, ts=f["ts"], event=f["event"], driver_id=driver_id,
                         driver_name=f.get("driver_name", ""))
        self._enqueue(_Out(DRIVER_EVENTS, vehicle[0].encode("utf-8"), orjson.dumps(ev.asdict()), None))
        return self._ack(conn, msg, c.RESULT_OK)

    _HANDLERS = {
        c.REGISTRATION: _on_registration, c.AUTHENTICATION: _on_ack_only, c.HEARTBEAT: _on_ack_only,
        c.DEREGISTRATION: _on_deregistration, c.LOCATION: _on_location, c.BATCH_LOCATION: _on_location,
        c.DRIVER_CARD: _on_driver_card, c.TERMINAL_RESPONSE: _on_terminal_response,
    }


async def serve(cfg: Config, registry: Registry, publisher: Publisher, host: str = "0.0.0.0",
                port: int | None = None) -> asyncio.base_events.Server:
    """Start the gateway inside the running loop. The returned server carries ``server.gateway``; stop it
    with ``await server.gateway.aclose()`` (flushes pending pings)."""
    gw = Gateway(cfg, registry, publisher)
    return await gw.start(host, cfg["gateway.port"] if port is None else port)


# --- CLI ----------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="TCP port (default: gateway.port)")
    p.add_argument("--registry", metavar="FILE", help="registry JSON: vehicles' terminal_id → plate")
    p.add_argument("--bootstrap", default=os.environ.get("ROADWATCH_KAFKA") or "localhost:9092",
                   help="Kafka bootstrap servers (default $ROADWATCH_KAFKA or localhost:9092)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.cli import UsageError
    try:
        registry = load_registry(args.registry)
    except RegistryError as e:
        raise UsageError(str(e)) from None
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python logs every reconnect attempt; the gateway logs outages and recoveries itself
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    if args.metrics_port:
        from prometheus_client import start_http_server
        start_http_server(args.metrics_port)
    publisher = KafkaPublisher(bootstrap=args.bootstrap)

    async def main() -> None:
        try:
            server = await serve(cfg, registry, publisher, args.host, args.port)
        except OSError as e:
            raise UsageError(f"cannot listen on {args.host}:{args.port or cfg['gateway.port']}: {e.strerror}") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping gateway")
        await server.gateway.aclose()  # type: ignore[attr-defined]

    try:
        asyncio.run(main())
    finally:
        publisher.close()
    return 0
