"""A simulated lower platform (下级平台) on JT/T 809: the other end of ``roadwatch platform-link``.

It logs in on the main link (0x1001 with user id, password, centre id and the address of its own slave-link
server), answers the slave-link login (0x9002) and heartbeats (0x9006), forwards positions (0x1202, and
0x1203 re-uploads in groups of up to 5) in the 2011 or 2019 layout, optionally encrypted and optionally
without escaping (as careless senders do), answers inspections (0x9301 → 0x1301) after a configurable delay
or not at all (miss rate), and drops or logs out of the link when told to.

``play`` runs a timeline against a server that shares its clock (``SimClock``): every action happens at
its simulated time and is acknowledged before the clock moves on (a heartbeat round trip is the barrier:
TCP keeps order and the server answers frames in order), so online time and answer times recorded by the
server are exact — which is what lets ``scenario check`` compare 平台连通率 and 查岗响应率 exactly.
"""
from __future__ import annotations

import asyncio
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from roadwatch.streams.jt809 import codec as c
from roadwatch.streams.jt809 import messages as m


class SimClock:
    """Epoch seconds set by the simulation (the server reads it through ``clock()``)."""

    def __init__(self, t: float):
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def set(self, t: float) -> None:
        if t < self.t:
            raise ValueError(f"simulated clock cannot go back ({t} < {self.t})")
        self.t = float(t)


@dataclass
class PlatformSpec:
    center_id: int
    user_id: int
    password: str
    protocol: int = 2011
    cipher: c.Cipher | None = None
    encrypt: bool = False            # encrypt what it sends (needs cipher)
    escape: bool = True              # False: a sender that does not escape
    answer_delay_s: float = 60.0     # simulated seconds before answering an inspection
    miss_rate: float = 0.0           # share of inspections never answered
    seed: int = 1
    name: str = ""


@dataclass
class Received:
    msg_id: int
    fields: dict
    sn: int


class LowerPlatform:
    def __init__(self, spec: PlatformSpec, clock=None, auto_answer: bool = False):
        self.spec = spec
        self.auto_answer = auto_answer        # wall-clock runs: answer inspections by itself (delay in real s)
        self.answered = 0
        self.clock = clock
        self.rng = random.Random(spec.seed)              # encryption keys
        self.answer_rng = random.Random(spec.seed)       # miss decisions (platform_scenario replays them)
        self.sn = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.slave_server: asyncio.base_events.Server | None = None
        self.verify_code: int | None = None
        self.inspections: asyncio.Queue[Received] = asyncio.Queue()
        self.inspections_seen = 0
        self.slave_logins = 0
        self.slave_heartbeats = 0
        self._waiters: dict[int, list[asyncio.Future]] = {}
        self._reader_task: asyncio.Task | None = None
        self._slave_tasks: set[asyncio.Task] = set()

    # --- frames ---------------------------------------------------------------------------------------

    def frame(self, msg_id: int, body: bytes) -> bytes:
        s = self.spec
        self.sn = (self.sn + 1) & 0xFFFFFFFF
        enc = s.encrypt and s.cipher is not None
        return c.build_frame(msg_id, body, sn=self.sn, center_id=s.center_id, protocol=s.protocol,
                             cipher=s.cipher if enc else None, encrypt_key=self.rng.getrandbits(32) if enc else 0,
                             utc_time=int(self.clock()) if (self.clock and s.protocol == 2019) else None,
                             escaped=s.escape)

    def _parse(self, raw: bytes) -> Received | None:
        try:
            fr = c.parse_frame(raw, self.spec.protocol, self.spec.cipher)
            return Received(fr.header.msg_id, m.decode_body(fr.header.msg_id, fr.body, fr.header.protocol), fr.header.sn)
        except c.Jt809Error:
            return None

    def _dispatch(self, r: Received) -> None:
        if r.msg_id == m.DOWN_PLATFORM_MSG and r.fields.get("data_type") == "0x9301":
            self.inspections_seen += 1
            if self.auto_answer:
                delay = self.decide_delay()
                if delay is not None:
                    asyncio.get_running_loop().call_later(delay, self._answer_now, r)
            else:
                self.inspections.put_nowait(r)
        for fut in self._waiters.pop(r.msg_id, []):
            if not fut.done():
                fut.set_result(r)

    async def _expect(self, msg_id: int, timeout: float = 10.0) -> Received:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(msg_id, []).append(fut)
        return await asyncio.wait_for(fut, timeout)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        buf = bytearray()
        while True:
            data = await reader.read(65536)
            if not data:
                return
            buf += data
            for raw in c.split_frames(buf):
                r = self._parse(raw)
                if r is not None:
                    self._dispatch(r)

    # --- slave link (we are the server) ---------------------------------------------------------------

    async def _on_slave(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._slave_tasks.add(task)
        buf = bytearray()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                buf += data
                for raw in c.split_frames(buf):
                    r = self._parse(raw)
                    if r is None:
                        continue
                    if r.msg_id == m.SLAVE_LOGIN:
                        ok = r.fields.get("verify_code") == self.verify_code
                        self.slave_logins += ok
                        writer.write(self.frame(m.SLAVE_LOGIN_RESP, m.encode_code(0 if ok else 1)))
                    elif r.msg_id == m.SLAVE_HEARTBEAT:
                        self.slave_heartbeats += 1
                        writer.write(self.frame(m.SLAVE_HEARTBEAT_RESP, b""))
                    else:
                        self._dispatch(r)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._slave_tasks.discard(task)

    # --- main link ------------------------------------------------------------------------------------

    async def connect(self, host: str, port: int, user_id: int | None = None, password: str | None = None) -> int:
        """Open the main link and log in; → the 0x1002 result (0 = ok)."""
        if self.slave_server is None:
            self.slave_server = await asyncio.start_server(self._on_slave, "127.0.0.1", 0)
        slave_port = self.slave_server.sockets[0].getsockname()[1]
        self.reader, self.writer = await asyncio.open_connection(host, port)
        self._reader_task = asyncio.create_task(self._read_loop(self.reader))
        s = self.spec
        self.writer.write(self.frame(m.LOGIN, m.encode_login(s.user_id if user_id is None else user_id,
                                                              s.password if password is None else password,
                                                              "127.0.0.1", slave_port, s.protocol, s.center_id)))
        r = await self._expect(m.LOGIN_RESP)
        if r.fields["result"] == 0:
            self.verify_code = r.fields["verify_code"]
        return r.fields["result"]

    async def barrier(self) -> None:
        """Heartbeat round trip: the server has handled everything sent before."""
        assert self.writer is not None
        self.writer.write(self.frame(m.HEARTBEAT, b""))
        await self._expect(m.HEARTBEAT_RESP)

    def send(self, msg_id: int, body: bytes) -> None:
        assert self.writer is not None
        self.writer.write(self.frame(msg_id, body))

    def send_positions(self, pings: list[dict], reupload: bool = False) -> int:
        """0x1202 per live ping; re-uploads as 0x1203 groups of ≤ 5 (same plate). → frames written."""
        n = 0
        if not reupload:
            for p in pings:
                self.send(m.DYNAMIC, m.encode_with_vehicle(p["plate"], p["plate_color"], m.REAL_LOCATION,
                                                           m.encode_position(p, self.spec.protocol)))
                n += 1
            return n
        for i in range(0, len(pings), 5):
            group = pings[i:i + 5]
            self.send(m.DYNAMIC, m.encode_with_vehicle(group[0]["plate"], group[0]["plate_color"], m.HISTORY_LOCATION,
                                                       m.encode_history(group, self.spec.protocol)))
            n += 1
        return n

    def answer(self, req: Received, text: str = "在岗") -> None:
        f = req.fields
        body = m.encode_query_ack(f["object_type"], f["object_id"], text, self.spec.protocol, info_id=f["info_id"],
                                  source_msg_sn=req.sn, responder="值班员", responder_tel="13800000000")
        self.send(m.PLATFORM_MSG, m.encode_without_vehicle(m.POST_QUERY_ACK, body))

    def _answer_now(self, req: Received) -> None:
        if self.writer is not None:
            self.answer(req)
            self.answered += 1

    def decide_delay(self) -> float | None:
        """Answer delay for the next inspection (None = never answered)."""
        if self.answer_rng.random() < self.spec.miss_rate:
            return None
        return self.spec.answer_delay_s

    async def drop(self) -> None:
        """Lose the link abruptly (no logout)."""
        await self._close_main()

    async def logout(self) -> None:
        s = self.spec
        self.send(m.LOGOUT, m.encode_logout(s.user_id, s.password))
        await self._expect(m.LOGOUT_RESP)
        await self._close_main()

    async def _close_main(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        if self._reader_task is not None:
            self._reader_task.cancel()
        self.writer = self.reader = None
        self.verify_code = None

    async def close(self) -> None:
        await self._close_main()
        if self.slave_server is not None:
            self.slave_server.close()
        for t in list(self._slave_tasks):
            t.cancel()


# --- a timeline against a server sharing the clock -------------------------------------------------------

@dataclass(order=True)
class Event:
    t: float
    order: int
    kind: str = field(compare=False)          # login | drop | logout | pings | reupload | inspect | answer
    payload: Any = field(compare=False, default=None)
    center: int | None = field(compare=False, default=None)   # which platform (None: the only one)


async def play(server, clock: SimClock, lower: LowerPlatform, events: list[Event], host: str, port: int,
               queue_inspection) -> dict:
    """``play_many`` for one platform; ``queue_inspection(t)`` queues a 查岗 for it."""
    c = lower.spec.center_id
    evs = [Event(e.t, e.order, e.kind, e.payload, c) for e in events]
    return await play_many(server, clock, {c: lower}, evs, host, port, lambda t, _c: queue_inspection(t))


async def play_many(server, clock: SimClock, lowers: dict[int, LowerPlatform], events: list[Event], host: str,
                    port: int, queue_inspection) -> dict:
    """Run ``events`` in time order, each on the platform ``event.center``. ``queue_inspection(t, center)``
    queues a 查岗 at time t (as the console does); the server sends it at once and the platform answers
    after its delay, or never. Positions of a platform whose link is down are kept and re-uploaded
    (0x1203) after its next login, as lower platforms do. The clock only moves on once the server has
    acknowledged the previous action (see the module doc)."""
    heap = list(events)
    heapq.heapify(heap)
    order = max((e.order for e in heap), default=0) + 1
    stats = {"frames": 0, "inspections": 0, "answered": 0, "missed": 0, "logins": 0, "drops": 0}
    online: dict[int, bool] = {c: False for c in lowers}
    held: dict[int, list[dict]] = {c: [] for c in lowers}
    while heap:
        ev = heapq.heappop(heap)
        clock.set(ev.t)
        c = ev.center
        lower = lowers[c]
        if ev.kind == "login":
            if await lower.connect(host, port) != 0:
                raise ConnectionError(f"platform {c}: login refused")
            online[c] = True
            stats["logins"] += 1
            await _wait_slave(lower)
            if held[c]:
                by_plate: dict[str, list[dict]] = {}
                for p in held[c]:
                    by_plate.setdefault(p["plate"], []).append(p)
                for ps in by_plate.values():
                    stats["frames"] += lower.send_positions(ps, True)
                held[c] = []
            await lower.barrier()
        elif ev.kind in ("drop", "logout"):
            if online[c]:
                if ev.kind == "drop":
                    await lower.barrier()          # a live platform heartbeats up to the moment it is lost
                await (lower.drop() if ev.kind == "drop" else lower.logout())
                online[c] = False
                stats["drops"] += 1
                await _wait_offline(server, c)
        elif ev.kind in ("pings", "reupload"):
            if online[c]:
                stats["frames"] += lower.send_positions(ev.payload, ev.kind == "reupload")
                await lower.barrier()
            else:
                held[c].extend(ev.payload)
        elif ev.kind == "inspect":
            seen = lower.inspections_seen
            queue_inspection(ev.t, c)
            await server.dispatch_inspections()
            stats["inspections"] += 1
            if online[c]:
                await _wait_for(lambda: lower.inspections_seen > seen)
                req = lower.inspections.get_nowait()
                delay = lower.decide_delay()
                if delay is None:
                    stats["missed"] += 1
                else:
                    order += 1
                    heapq.heappush(heap, Event(ev.t + delay, order, "answer", req, c))
                await lower.barrier()
        elif ev.kind == "answer":
            if online[c]:
                lower.answer(ev.payload)
                await lower.barrier()
                stats["answered"] += 1
            else:
                stats["missed"] += 1
    return stats


async def _wait_for(cond, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError("simulated lower platform: condition not reached")
        await asyncio.sleep(0.002)


async def _wait_slave(lower: LowerPlatform) -> None:
    before = lower.slave_logins
    try:
        await _wait_for(lambda: lower.slave_logins > before, 5.0)
    except TimeoutError:
        pass                              # the server may run without a slave link (jt809.slave_link = false)


async def _wait_offline(server, center_id: int) -> None:
    await _wait_for(lambda: center_id not in server.online)


# --- forwarding a scenario's feed in real time ---------------------------------------------------------

def plan_feed(built, day_shift_s: int) -> list[tuple[int, int, str, list[dict]]]:
    """A scenario's fixes as the lower platform forwards them: ``(recv_s, vid, kind, pings)`` in receipt
    order, kind ``pings`` (live 0x1202) or ``reupload`` (0x1203); times shifted by ``day_shift_s``."""
    cols = built.pings
    vehicles = list(built.registry.vehicles.values())
    out: list[tuple[int, int, str, list[dict]]] = []
    if not cols:
        return out
    for i in range(len(cols["vid"])):
        vid = int(cols["vid"][i])
        v = vehicles[vid]
        p = {"plate": v.plate, "plate_color": v.plate_color, "lat": float(cols["lat"][i]), "lon": float(cols["lon"][i]),
             "speed_kmh": float(cols["speed_kmh"][i]), "heading": int(cols["heading"][i]) % 65536,
             "altitude_m": float(cols["altitude_m"][i]), "alarm_flags": int(cols["alarm_flags"][i]),
             "status_flags": int(cols["status_flags"][i]), "ts": (int(cols["ts"][i]) + day_shift_s) * 1000,
             "mileage_km": float(cols["mileage_km"][i])}
        kind = "reupload" if cols["reupload"][i] else "pings"
        out.append((int(cols["recv_ts"][i]) + day_shift_s, vid, kind, [p]))
    out.sort(key=lambda e: e[0])
    merged: list[tuple[int, int, str, list[dict]]] = []
    for t, vid, kind, ps in out:          # re-uploads of one vehicle received together: groups of ≤ 5
        last = merged[-1] if merged else None
        if (kind == "reupload" and last and last[2] == "reupload" and last[1] == vid and last[0] == t
                and len(last[3]) < 5):
            last[3].extend(ps)
        else:
            merged.append((t, vid, kind, list(ps)))
    return merged


async def forward_feed(built, host: str, port: int, specs: list[PlatformSpec], day_shift_s: int,
                       frames_per_barrier: int = 200) -> dict:
    """Forward every fix of ``built`` as fast as the link takes it; vehicle ``vid`` goes through platform
    ``specs[vid % len(specs)]`` (each logs in first; inspections are answered by itself)."""
    lowers = [LowerPlatform(s, auto_answer=True) for s in specs]
    for lp in lowers:
        if await lp.connect(host, port) != 0:
            raise ConnectionError(f"platform {lp.spec.center_id}: login refused")
    sent = [0] * len(lowers)
    pings = 0
    for _t, vid, kind, ps in plan_feed(built, day_shift_s):
        k = vid % len(lowers)
        sent[k] += lowers[k].send_positions(ps, kind == "reupload")
        pings += len(ps)
        if sent[k] % frames_per_barrier == 0:
            await lowers[k].barrier()
    for lp in lowers:
        await lp.barrier()
    return {"platforms": lowers, "frames": sum(sent), "pings": pings}
