"""``roadwatch platform-link``: the superior platform's side of JT/T 809 — main-link server, slave-link
client, link state, positions into the ping path, platform inspections (查岗).

Per main-link connection: frames delimited by MSG_LENGTH (``codec.split_frames``), bounded by
``jt809.max_frame_bytes``; nothing but 0x1001 is accepted before a successful login (other frames are
dead-lettered, ``not_logged_in``); a login must arrive within ``jt809.auth_timeout_s``, a connection
is closed after ``jt809.max_refused_logins`` refusals, and a link silent for ``jt809.idle_timeout_s`` too. Logins are checked against the platform's configured user id,
password and GNSS centre id (``jt809.platforms_file``); a refused login is answered with its 0x1002
result, dead-lettered (``login_refused``) and counted per connection.

After a login the server opens the slave link back to the address the lower platform named (0x9001 with
the verify code, 0x9005 heartbeats), records an online session in the archive (``store.py``; the basis of
平台连通率) and accepts dynamic data: 0x1202 positions and 0x1203 re-uploads become interchange pings
(``terminal_id`` = ``809:<centre id>``) through the same ``PingBatcher`` as the JT/T 808 gateway, so the
worker applies the same quality rules and batches; 0x1402 alarms and link events go to
``platform-events``. Inspections queued by the console/CLI are sent as 0x9300/0x9301 (over the slave link,
the main link when the slave link is down); 0x1301 answers are archived against them.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from prometheus_client import Counter, Gauge

from roadwatch.models.config import Config, ConfigError
from roadwatch.models.pingschema import dicts_getter, validate_columns
from roadwatch.models.records import format_ts, plausible_years
from roadwatch.streams.archive import open_archive
from roadwatch.streams.batcher import KafkaPublisher, PingBatcher, Publisher
from roadwatch.streams.deadletter import dead_letter_bytes
from roadwatch.streams.topics import DEAD_LETTER, GPS_PINGS, PLATFORM_EVENTS

from . import codec as c
from . import messages as m
from roadwatch.streams.archive import platforms as store
from .platforms import Platform, load_platforms
from roadwatch.streams.outbox import Out, Outbox

log = logging.getLogger("roadwatch.platform_link")

LINKS = Gauge("roadwatch_jt809_links", "Logged-in JT/T 809 main links")
FRAMES = Counter("roadwatch_jt809_frames", "JT/T 809 frames received", ["msg_id"])
RULES = Counter("roadwatch_jt809_lenient_frames", "Frames accepted only by a leniency rule", ["rule"])
REJECTED = Counter("roadwatch_jt809_rejected", "JT/T 809 frames or links rejected", ["reason"])
LOGINS = Counter("roadwatch_jt809_logins", "0x1001 logins by 0x1002 result", ["result"])
PINGS = Counter("roadwatch_jt809_pings", "Positions accepted from lower platforms", ["kind"])
INSPECTIONS = Counter("roadwatch_jt809_inspections", "查岗 sent (0x9301) and answers received (0x1301)", ["what"])
_LIVE_PINGS, _REUPLOAD_PINGS = PINGS.labels(kind="live"), PINGS.labels(kind="reupload")
SOURCE = "platform-link"
_KNOWN = {f"0x{i:04X}" for i in m.DECODERS}


def _label(msg_id: int | None) -> str:
    if msg_id is None:
        return "unparsed"
    s = f"0x{msg_id:04X}"
    return s if s in _KNOWN else "other"


_frames_by_id: dict[int | None, Any] = {}


def _count_frame(msg_id: int | None) -> None:
    """FRAMES{msg_id} += 1 with the labelled child cached (labels() costs more than the rest of a frame)."""
    child = _frames_by_id.get(msg_id)
    if child is None:
        child = _frames_by_id[msg_id] = FRAMES.labels(msg_id=_label(msg_id))
    child.inc()


@dataclass(eq=False)
class _Link:
    peer: str
    writer: Any
    platform: Platform | None = None
    session_id: str | None = None
    verify_code: int = 0
    sn: int = 0
    refused: int = 0                  # refused logins on this connection
    dead_letters: int = 0             # frames dead-lettered on this connection
    slave: "_Slave | None" = None
    slave_task: asyncio.Task | None = None
    end_reason: str = "lost"
    last_seen: float = 0.0            # clock time of the last frame received
    last_written: float = 0.0         # last_seen as last written to the archive (crash recovery)

    def next_sn(self) -> int:
        self.sn = (self.sn + 1) & 0xFFFFFFFF
        return self.sn


@dataclass(eq=False)
class _Slave:
    writer: Any
    up: bool = False


class LinkServer:
    """State shared by all main links: platforms, the online link per centre, batcher, outbox, archive."""

    def __init__(self, cfg: Config, platforms: dict[int, Platform], publisher: Publisher,
                 clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.platforms = platforms
        self.publisher = publisher
        self.clock = clock
        self.conn = open_archive(cfg)
        self.batcher = PingBatcher.from_config(cfg, self._enqueue_batch)
        self.outbox = Outbox(publisher, log)
        self.buffer_max = cfg["gateway.buffer_max_pings"]
        self.online: dict[int, _Link] = {}
        self.connections: set[_Link] = set()
        self._vehicles: dict[str, tuple[str, int, int, float]] = {}
        self._accepting = asyncio.Event()
        self._accepting.set()
        self._tasks: list[asyncio.Task] = []
        self.server: asyncio.base_events.Server | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> asyncio.base_events.Server:
        n = store.close_open_sessions(self.conn, "server_restart")
        if n:
            log.warning("closed %d session(s) left open by a previous run at their last frame", n)
        self.server = await asyncio.start_server(self.handle, host, port)
        self._tasks = [asyncio.create_task(self._publish_loop(), name="jt809-publish"),
                       asyncio.create_task(self._tick_loop(), name="jt809-tick")]
        self.server.link_server = self  # type: ignore[attr-defined]
        log.info("JT/T 809 platform link listening on %s (%d platform(s) configured)",
                 ", ".join(str(s.getsockname()) for s in self.server.sockets), len(self.platforms))
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def aclose(self, drain_timeout_s: float = 5.0) -> None:
        if self.server is not None:
            self.server.close()
        for link in list(self.connections):
            link.end_reason = "server_stop"
            link.writer.close()
        for _ in range(50):                       # let the connection tasks record their end
            if not self.connections:
                break
            await asyncio.sleep(0.02)
        self._flush_vehicles()
        self.batcher.flush()
        await self.outbox.drain(drain_timeout_s, "platform link")
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # --- publishing (same outbox discipline as the JT/T 808 gateway) ----------------------------------

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

    def _event(self, center_id: int | None, event: str, detail: str = "", **extra: Any) -> None:
        ts = self.clock()
        store.record_event(self.conn, center_id, ts, event, detail)
        value = {"event": event, "center_id": center_id, "ts": format_ts_s(ts), "detail": detail, **extra}
        self._enqueue(Out(PLATFORM_EVENTS, str(center_id).encode(), orjson.dumps(value), None))

    def _dead_letter(self, link: _Link | None, reason: str, detail: str, original: bytes) -> None:
        REJECTED.labels(reason=reason).inc()
        if link is not None:
            link.dead_letters += 1
        self._enqueue(Out(DEAD_LETTER, SOURCE.encode(), dead_letter_bytes(SOURCE, reason, detail, original), None))

    async def _publish_loop(self) -> None:
        await self.outbox.run(asyncio.to_thread, lambda: self.buffered_pings, lambda pings: self._pressure())

    def _pressure(self) -> None:
        n = self.buffered_pings
        if n >= self.buffer_max and self._accepting.is_set():
            self._accepting.clear()
            log.warning("buffer full (%d pings): pausing reads from lower platforms", n)
        elif n < self.buffer_max and not self._accepting.is_set():
            self._accepting.set()

    async def _tick_loop(self) -> None:
        poll = self.cfg["jt809.queue_poll_s"]
        while True:
            await asyncio.sleep(min(poll, max(0.005, self.batcher.max_s / 4)))
            try:
                self.batcher.poll()
                self._flush_vehicles()
                await self.dispatch_inspections()
            except Exception:
                log.exception("platform link tick failed")
            self._pressure()

    def _flush_vehicles(self) -> None:
        if self._vehicles:
            rows, self._vehicles = list(self._vehicles.values()), {}
            store.note_vehicles(self.conn, rows)

    # --- inspections ---------------------------------------------------------------------------------

    async def dispatch_inspections(self) -> int:
        """Send every queued 查岗 (console/CLI) now; one to an offline platform is recorded as undeliverable."""
        sent = 0
        for q in store.queued_inspections(self.conn):
            now = self.clock()
            deadline = now + 60.0 * q["answer_minutes"]
            link = self.online.get(q["center_id"])
            if link is None or link.platform is None:
                store.mark_sent(self.conn, q["inspection_id"], now, None, False, deadline)
                INSPECTIONS.labels(what="undeliverable").inc()
                self._event(q["center_id"], "inspection_undeliverable", f"info_id {q['info_id']}: platform offline")
                continue
            p = link.platform
            body = m.encode_without_vehicle(m.POST_QUERY_REQ, m.encode_query_req(
                q["object_type"], q["object_id"], q["info_id"], q["question"], p.protocol, q["answer_minutes"]))
            sn = link.next_sn()
            frame = self._frame(link, m.DOWN_PLATFORM_MSG, body, sn)
            via = link.slave.writer if link.slave is not None and link.slave.up else link.writer
            via.write(frame)
            store.mark_sent(self.conn, q["inspection_id"], now, sn, True, deadline)
            INSPECTIONS.labels(what="sent").inc()
            self._event(q["center_id"], "inspection_sent", f"info_id {q['info_id']} via "
                        f"{'slave' if via is not link.writer else 'main'} link, deadline {q['answer_minutes']} min")
            sent += 1
        return sent

    # --- frames --------------------------------------------------------------------------------------

    def _frame(self, link: _Link, msg_id: int, body: bytes, sn: int | None = None) -> bytes:
        p = link.platform
        assert p is not None
        key = secrets.randbits(32) if p.encrypt_downlink else 0
        return c.build_frame(msg_id, body, sn=link.next_sn() if sn is None else sn, center_id=p.center_id,
                             protocol=p.protocol, cipher=p.cipher if p.encrypt_downlink else None, encrypt_key=key,
                             utc_time=int(self.clock()) if p.protocol == 2019 else None)

    def _parse(self, link: _Link, raw: bytes) -> c.Frame:
        p = link.platform
        if p is not None:
            return c.parse_frame(raw, p.protocol, p.cipher)
        try:
            fr = c.parse_frame(raw)
        except c.Jt809Error as e:
            plat = self.platforms.get(e.header.center_id) if e.header is not None else None
            if e.code != "encrypted" or plat is None:
                raise
            return c.parse_frame(raw, plat.protocol, plat.cipher)
        plat = self.platforms.get(fr.header.center_id)
        if plat is not None and plat.protocol != fr.header.protocol:
            return c.parse_frame(raw, plat.protocol, plat.cipher)
        return fr

    def on_frame(self, link: _Link, raw: bytes) -> list[bytes]:
        """Handle one frame as received; → reply frames. Never raises for bad input."""
        fr = None
        try:
            fr = self._parse(link, raw)
            fields = m.decode_body(fr.header.msg_id, fr.body, fr.header.protocol)
        except c.Jt809Error as e:
            if e.header is None and fr is not None:
                e.header = fr.header
            _count_frame(e.header.msg_id if e.header else None)
            self._dead_letter(link, e.code, e.detail, raw)
            return []
        h = fr.header
        _count_frame(h.msg_id)
        rules = fr.rules + list(fields.get("rules") or [])
        for r in rules:
            RULES.labels(rule=r).inc()
        if h.msg_id == m.LOGIN:
            return self._on_login(link, fr, fields, raw)
        if link.session_id is None or link.platform is None:
            self._dead_letter(link, "not_logged_in", f"{h.msg_id_hex} before a successful 0x1001 login", raw)
            return []
        if h.center_id != link.platform.center_id:
            self._dead_letter(link, "wrong_center", f"{h.msg_id_hex} names centre {h.center_id}, the link logged in "
                                                    f"as {link.platform.center_id}", raw)
            return []
        link.last_seen = now = self.clock()
        if h.msg_id == m.HEARTBEAT or now - link.last_written >= 5.0:
            store.touch_session(self.conn, link.session_id, now)
            link.last_written = now
        handler = self._HANDLERS.get(h.msg_id)
        if handler is None:
            self._dead_letter(link, "unsupported_msg", f"{h.msg_id_hex} is not a lower-platform request", raw)
            return []
        return handler(self, link, fr, fields, raw)

    def _on_login(self, link: _Link, fr: c.Frame, f: dict, raw: bytes) -> list[bytes]:
        h = fr.header
        plat = self.platforms.get(h.center_id)
        if plat is None or ("center_id" in f and f["center_id"] != h.center_id):
            result = m.LOGIN_BAD_CENTER
        elif f["user_id"] != plat.user_id:
            result = m.LOGIN_NO_USER
        elif f["password"] != plat.password:
            result = m.LOGIN_BAD_PASSWORD
        else:
            result = m.LOGIN_OK
        LOGINS.labels(result=str(result)).inc()
        if result != m.LOGIN_OK:
            link.refused += 1
            why = {m.LOGIN_BAD_CENTER: "unknown GNSS centre id", m.LOGIN_NO_USER: "user id not registered",
                   m.LOGIN_BAD_PASSWORD: "wrong password"}[result]
            self._dead_letter(link, "login_refused", f"centre {h.center_id} user {f['user_id']}: {why} "
                                                     f"(0x1002 result {result}; refusal #{link.refused} on {link.peer})", raw)
            self._event(h.center_id, "login_refused", f"{why}; refusal #{link.refused} on {link.peer}")
            reply = c.build_frame(m.LOGIN_RESP, m.encode_login_resp(result, 0), sn=link.next_sn(), center_id=h.center_id,
                                  protocol=h.protocol, utc_time=int(self.clock()) if h.protocol == 2019 else None)
            return [reply]
        if link.session_id is not None:               # a second login on a logged-in link: answer again
            return [self._frame(link, m.LOGIN_RESP, m.encode_login_resp(m.LOGIN_OK, link.verify_code))]
        old = self.online.get(plat.center_id)
        if old is not None and old is not link:
            old.end_reason = "replaced"
            old.writer.close()
            self._end_session(old)
        link.platform = plat
        link.verify_code = secrets.randbits(32)
        link.last_seen = link.last_written = self.clock()
        link.session_id = store.open_session(self.conn, plat.center_id, link.last_seen, plat.protocol, link.peer)
        self.online[plat.center_id] = link
        LINKS.set(len(self.online))
        self._event(plat.center_id, "login", f"{plat.name} from {link.peer}, protocol {plat.protocol}")
        reply = self._frame(link, m.LOGIN_RESP, m.encode_login_resp(m.LOGIN_OK, link.verify_code))
        if self.cfg["jt809.slave_link"] and f.get("down_link_port"):
            link.slave_task = asyncio.get_running_loop().create_task(
                self._slave_loop(link, f.get("down_link_ip") or "", f["down_link_port"]))
        return [reply]

    def _on_heartbeat(self, link: _Link, fr: c.Frame, f: dict, raw: bytes) -> list[bytes]:
        return [self._frame(link, m.HEARTBEAT_RESP, b"")]

    def _on_logout(self, link: _Link, fr: c.Frame, f: dict, raw: bytes) -> list[bytes]:
        assert link.platform is not None
        if f["user_id"] != link.platform.user_id or f["password"] != link.platform.password:
            self._dead_letter(link, "logout_refused", "0x1003 with credentials that do not match the login", raw)
            return []
        link.end_reason = "logout"
        self._end_session(link, self.clock())
        return [self._frame(link, m.LOGOUT_RESP, b"")]

    def _on_notice(self, link: _Link, fr: c.Frame, f: dict, raw: bytes) -> list[bytes]:
        self._event(link.platform.center_id if link.platform else None,
                    "disconnect_notice" if fr.header.msg_id == m.DISCONNECT_NOTICE else "close_notice",
                    orjson.dumps(f).decode())
        return []

    def _on_dynamic(self, link: _Link, fr: c.Frame, f: dict, raw: bytes) -> list[bytes]:
        p = link.platform
        assert p is not None
        now = self.clock()
        plate = f.get("plate") or ""
        if not plate or "\ufffd" in plate or len(plate) > 16:
            self._dead_letter(link, "bad_plate", f"0x1200/{f.get('data_type')} with plate {plate!r}", raw)
            return []
        self._vehicles[plate] = (plate, f["plate_color"], p.center_id, now)
        pings = m.message_pings(m.DYNAMIC, f, p.center_id)
        if pings:
            recv = int(now * 1000)
            for ping in pings:
                ping["recv_ts"] = recv
            # the worker's own checks, before batching: a position it would refuse (a 2011 mileage DWORD
            # beyond the ping range, a year outside time.min_year–max_year) must not poison a batch that
            # carries other platforms' pings; found by scripts/fuzz.py (jt809_link)
            _, errs = validate_columns(dicts_getter(pings), len(pings), years=plausible_years(self.cfg))
            if errs:
                i = min(errs)
                self._dead_letter(link, errs[i][0], f"0x1200/{f['data_type']} position {i}: {errs[i][1]}", raw)
                return []
            for ping in pings:
                self.batcher.add(ping)
            (_REUPLOAD_PINGS if f["data_type"] == "0x1203" else _LIVE_PINGS).inc(len(pings))
            self._pressure()
        return []

    def _on_platform_msg(self, link: _Link, fr: c.Frame, f: dict, raw: bytes) -> list[bytes]:
        p = link.platform
        assert p is not None
        if f.get("data_type") != "0x1301":
            return []
        iid = store.record_answer(self.conn, p.center_id, self.clock(), f.get("answer", ""), f.get("responder", ""),
                                  f.get("info_id"), f.get("source_msg_sn"))
        INSPECTIONS.labels(what="answered" if iid else "unmatched_answer").inc()
        self._event(p.center_id, "inspection_answer", f"inspection {iid or '(none we sent)'}: {f.get('answer', '')[:80]}")
        return []

    def _on_warn(self, link: _Link, fr: c.Frame, f: dict, raw: bytes) -> list[bytes]:
        p = link.platform
        assert p is not None
        self._event(p.center_id, "alarm", f"{f.get('data_type')} warn type {f.get('warn_type')}", fields=f)
        return []

    _HANDLERS = {
        m.HEARTBEAT: _on_heartbeat, m.LOGOUT: _on_logout, m.DISCONNECT_NOTICE: _on_notice, m.CLOSE_NOTICE: _on_notice,
        m.DYNAMIC: _on_dynamic, m.PLATFORM_MSG: _on_platform_msg, m.WARN_MSG: _on_warn,
    }

    # --- sessions -------------------------------------------------------------------------------------

    def _end_session(self, link: _Link, end_ts: float | None = None) -> None:
        """Close the link's session: at ``end_ts`` (logout, our own stop) or at its last frame (loss)."""
        if link.session_id is None or link.platform is None:
            return
        store.close_session(self.conn, link.session_id, link.last_seen if end_ts is None else end_ts, link.end_reason)
        link.session_id = None
        center = link.platform.center_id
        if self.online.get(center) is link:
            del self.online[center]
        LINKS.set(len(self.online))
        self._event(center, "offline", f"{link.end_reason}; {link.dead_letters} dead letter(s), "
                                       f"{link.refused} refused login(s) on {link.peer}")
        if link.slave_task is not None:
            link.slave_task.cancel()

    # --- connections ----------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        if len(self.connections) >= self.cfg["jt809.max_connections"]:
            REJECTED.labels(reason="max_connections").inc()
            writer.close()
            return
        link = _Link(peer, writer)
        self.connections.add(link)
        try:
            await self._serve(link, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("main link %s (centre %s) failed", peer, link.platform and link.platform.center_id)
        finally:
            self.connections.discard(link)
            self._end_session(link, self.clock() if link.end_reason in ("server_stop", "logout") else None)
            if link.dead_letters or link.refused:
                log.info("main link %s closed: %d dead letter(s), %d refused login(s)", peer, link.dead_letters,
                         link.refused)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        auth_deadline = time.monotonic() + self.cfg["jt809.auth_timeout_s"]
        idle = self.cfg["jt809.idle_timeout_s"]
        max_frame = self.cfg["jt809.max_frame_bytes"]
        while link.end_reason != "logout":
            if not self._accepting.is_set():
                await self._accepting.wait()
            timeout = idle if link.session_id is not None else max(0.0, auth_deadline - time.monotonic())
            try:
                data = await asyncio.wait_for(reader.read(65536), timeout)
            except asyncio.TimeoutError:
                if link.session_id is None:
                    REJECTED.labels(reason="auth_timeout").inc()
                    log.info("closing %s: no successful login within %.0f s", link.peer, self.cfg["jt809.auth_timeout_s"])
                else:
                    REJECTED.labels(reason="idle_timeout").inc()
                    link.end_reason = "idle"
                return
            if not data:
                return
            buf += data
            try:
                frames = c.split_frames(buf, max_frame)
            except c.Jt809Error as e:
                self._dead_letter(link, e.code, e.detail, bytes(buf[:max_frame]))
                return
            out = bytearray()
            for raw in frames:
                for reply in self.on_frame(link, raw):
                    out += reply
                if link.refused >= self.cfg["jt809.max_refused_logins"]:
                    break
            if out:
                writer.write(bytes(out))
                await asyncio.wait_for(writer.drain(), idle)
            if link.refused >= self.cfg["jt809.max_refused_logins"]:
                REJECTED.labels(reason="too_many_refused_logins").inc()
                log.warning("closing %s: %d refused logins", link.peer, link.refused)
                return

    # --- slave link -----------------------------------------------------------------------------------

    async def _slave_loop(self, link: _Link, host: str, port: int) -> None:
        """Keep the slave link to the lower platform up while the main link is logged in."""
        p = link.platform
        assert p is not None
        tmo = self.cfg["jt809.slave_connect_timeout_s"]
        hb = self.cfg["jt809.slave_heartbeat_s"]
        host = host or link.peer.strip("()").split(",")[0].strip("' ")
        while link.session_id is not None:
            writer = None
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), tmo)
                slave = _Slave(writer)
                writer.write(self._frame(link, m.SLAVE_LOGIN, m.encode_verify(link.verify_code)))
                buf = bytearray()
                resp = await asyncio.wait_for(self._read_one(reader, buf, link, m.SLAVE_LOGIN_RESP), tmo)
                if resp.get("result") != 0:
                    self._event(p.center_id, "slave_refused", f"0x9002 result {resp.get('result')}")
                    raise ConnectionError("slave login refused")
                slave.up = True
                link.slave = slave
                self._event(p.center_id, "slave_up", f"{host}:{port}")
                loop = asyncio.get_running_loop()
                while link.session_id is not None:
                    writer.write(self._frame(link, m.SLAVE_HEARTBEAT, b""))
                    await writer.drain()
                    due = loop.time() + hb
                    while (left := due - loop.time()) > 0:     # answers and notices until the next heartbeat
                        try:
                            await asyncio.wait_for(self._read_one(reader, buf, link, None), left)
                        except asyncio.TimeoutError:
                            break
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, ConnectionError, c.Jt809Error) as e:
                if link.slave is not None:
                    self._event(p.center_id, "slave_down", str(e) or type(e).__name__)
                link.slave = None
            finally:
                if writer is not None:
                    writer.close()
                if link.slave is not None and link.slave.writer is writer:
                    link.slave = None
            if link.session_id is not None:
                await asyncio.sleep(hb)

    async def _read_one(self, reader: asyncio.StreamReader, buf: bytearray, link: _Link, want: int | None) -> dict:
        """Read slave-link frames until ``want`` (or any frame when None); notices are recorded."""
        while True:
            for raw in c.split_frames(buf, self.cfg["jt809.max_frame_bytes"]):
                try:
                    fr = self._parse(link, raw)
                    f = m.decode_body(fr.header.msg_id, fr.body, fr.header.protocol)
                except c.Jt809Error as e:
                    self._dead_letter(link, e.code, e.detail, raw)
                    continue
                if fr.header.msg_id in (m.DISCONNECT_NOTICE, m.CLOSE_NOTICE, m.SLAVE_CLOSE_NOTICE):
                    self._on_notice(link, fr, f, raw)
                if want is None or fr.header.msg_id == want:
                    return f
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("slave link closed by the lower platform")
            buf += data


def format_ts_s(ts: float) -> str:
    from datetime import datetime, timezone
    return format_ts(datetime.fromtimestamp(ts, tz=timezone.utc))


async def serve(cfg: Config, platforms: dict[int, Platform], publisher: Publisher, host: str = "0.0.0.0",
                port: int | None = None, clock: Callable[[], float] = time.time) -> LinkServer:
    """Start the link server inside the running loop; stop it with ``await server.aclose()``."""
    srv = LinkServer(cfg, platforms, publisher, clock)
    await srv.start(host, cfg["jt809.port"] if port is None else port)
    return srv


# --- CLI ----------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="main-link TCP port (default: jt809.port)")
    p.add_argument("--bootstrap", default=os.environ.get("ROADWATCH_KAFKA") or "localhost:9092",
                   help="Kafka bootstrap servers (default $ROADWATCH_KAFKA or localhost:9092)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.cli import UsageError
    try:
        platforms = load_platforms(cfg)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if not platforms:
        raise UsageError("no lower platform configured: set jt809.platforms_file (see docs/jt809.md)")
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    if args.metrics_port:
        from prometheus_client import start_http_server
        start_http_server(args.metrics_port)
    publisher = KafkaPublisher(bootstrap=args.bootstrap)

    async def main() -> None:
        try:
            srv = await serve(cfg, platforms, publisher, args.host, args.port)
        except OSError as e:
            raise UsageError(f"cannot listen on {args.host}:{args.port or cfg['jt809.port']}: {e.strerror}") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping platform link")
        await srv.aclose()

    try:
        asyncio.run(main())
    finally:
        publisher.close()
    return 0
