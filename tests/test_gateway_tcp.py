"""JT/T 808 gateway over real TCP on 127.0.0.1 with an in-memory publisher."""
from __future__ import annotations

import asyncio
import base64
import tempfile
import time

import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.models.pingbatch import columns_to_pings, decode_batch
from roadwatch.models.registry import parse_registry
from roadwatch.streams.batcher import MemoryPublisher, partition_for
from roadwatch.streams.jt808 import codec as c
from roadwatch.streams.jt808 import native
from roadwatch.streams.jt808.gateway import serve

PARTS = 4
BASE_CFG = {"stream.partitions": PARTS, "stream.batch_max_ms": 20, "gateway.idle_timeout_s": 5.0}
# the vehicles terminals of these tests register as (plate, colour[, terminal id bound in the registry])
VEHICLES = [("粤B12345", 2, ""), ("苏E12F34", 2, ""), ("京A00009", 1, "13900000009"), ("粤B00002", 2, ""),
            ("粤B00003", 2, ""), ("粤B00004", 2, "")]
REGISTRY = {"vehicles": [{"plate": p, "plate_color": col, "category": "危险货物运输车辆", "enterprise_id": "",
                          "terminal_id": tid} for p, col, tid in VEHICLES]}


# every test of this file (and of the files that import this fixture) runs against both front ends
_FRONT_END = ["python"]


@pytest.fixture(autouse=True, params=["python", pytest.param("native", marks=pytest.mark.skipif(
    not native.available(), reason="the native front end was not built"))])
def front_end(request):
    _FRONT_END[0] = request.param
    yield request.param
    _FRONT_END[0] = "python"


def _loc(i: int = 0, speed: float = 40.0) -> dict:
    return {"lat": 23.1 + i * 1e-4, "lon": 113.3, "ts": f"2024-03-01T10:00:{i:02d}+08:00", "speed_kmh": speed,
            "heading": 90, "altitude_m": 12.0, "status_flags": 3, "mileage_km": 100.0 + i}


class Terminal:
    def __init__(self, phone: str, version: int = 2013):
        self.phone, self.version, self.serial = phone, version, 0
        self.buf = bytearray()

    async def open(self, port: int) -> "Terminal":
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        return self

    async def send(self, msg_id: int, body: bytes) -> int:
        self.serial += 1
        await self.send_raw(c.build_frame(msg_id, self.phone, self.serial, body, version=self.version))
        return self.serial

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 2.0) -> c.Message:
        deadline = time.monotonic() + timeout
        while True:
            frames = c.split_frames(self.buf)
            if frames:
                self.buf[:0] = b"".join(frames[1:])
                return c.parse_frame(frames[0])
            data = await asyncio.wait_for(self.reader.read(4096), max(0.01, deadline - time.monotonic()))
            if not data:
                raise ConnectionResetError("closed by gateway")
            self.buf += data

    async def closed_within(self, timeout: float) -> bool:
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(4096), timeout)
                if not data:
                    return True
        except asyncio.TimeoutError:
            return False
        except ConnectionError:
            return True

    async def register(self, plate: str, color: int = 2) -> c.Message:
        s = await self.send(0x0100, c.encode_registration(plate, color, version=self.version))
        r = await self.recv()
        assert r.msg_id == 0x8100 and r.fields["reply_serial"] == s
        return r

    async def authenticate(self, code: str) -> c.Message:
        s = await self.send(0x0102, c.encode_authentication(code, version=self.version))
        a = await self.recv()
        assert a.msg_id == 0x8001 and a.fields["reply_serial"] == s and a.fields["reply_msg_id"] == 0x0102
        return a

    async def login(self, plate: str, color: int = 2) -> str:
        """Register and authenticate; returns the auth code."""
        r = await self.register(plate, color)
        assert r.fields["result"] == 0, r.fields
        assert (await self.authenticate(r.fields["auth_code"])).fields["result"] == 0
        return r.fields["auth_code"]

    def close(self) -> None:
        self.writer.close()


async def until(pred, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def run_gateway(test, cfg: dict | None = None, registry: dict | None = None, data_dir: str | None = None):
    """Start a gateway on an ephemeral port (own archive in a temporary directory unless ``data_dir``),
    run ``test(port, publisher, gateway)``, always shut down."""
    async def main(d):
        pub = MemoryPublisher()
        server = await serve(Config({**BASE_CFG, "gateway.front_end": _FRONT_END[0], "paths.data_dir": d,
                                     **(cfg or {})}),
                             parse_registry(REGISTRY if registry is None else registry), pub, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await asyncio.wait_for(test(port, pub, server.gateway), 30)
        finally:
            await server.gateway.aclose(drain_timeout_s=1)
    if data_dir is not None:
        asyncio.run(main(data_dir))
        return
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(main(d))


def pings_of(pub: MemoryPublisher) -> list[tuple[int, dict]]:
    return [(part, p) for _, v, part in pub.topic("gps-pings") for p in columns_to_pings(decode_batch(v))]


def dead_letters(pub: MemoryPublisher) -> list[dict]:
    return [orjson.loads(v) for _, v, _ in pub.topic("dead-letter")]


def test_registration_then_location_published_with_plate_and_partition():
    async def t(port, pub, gw):
        term = await Terminal("13800000001").open(port)
        s = await term.send(0x0100, c.encode_registration("粤B12345", 2))
        r = await term.recv()
        assert r.msg_id == 0x8100 and r.fields["reply_serial"] == s and r.fields["result"] == 0
        assert len(r.fields["auth_code"]) == 32                       # 128 random bits, hex
        s = await term.send(0x0102, c.encode_authentication(r.fields["auth_code"]))
        a = await term.recv()
        assert a.msg_id == 0x8001 and a.fields == {"reply_serial": s, "reply_msg_id": 0x0102, "result": 0}
        s = await term.send(0x0200, c.encode_location(_loc(1)))
        a = await term.recv()
        assert a.fields == {"reply_serial": s, "reply_msg_id": 0x0200, "result": 0}
        await until(lambda: len(pings_of(pub)) == 1)
        part, p = pings_of(pub)[0]
        assert (p["plate"], p["plate_color"], p["terminal_id"]) == ("粤B12345", 2, "013800000001")
        assert part == partition_for("粤B12345", PARTS)
        assert p["ts"] == 1709258401000          # 2024-03-01T10:00:01+08:00 in epoch ms, by hand
        assert p["mileage_km"] == 101.0 and p["speed_kmh"] == 40.0
        term.close()
    run_gateway(t)


def test_registry_mapping_batch_upload_and_2019_reply_header():
    async def t(port, pub, gw):
        term = await Terminal("13900000009", version=2019).open(port)
        await term.login("京A00009", 1)
        s = await term.send(0x0704, c.encode_batch_upload([_loc(i) for i in range(5)], reupload=True))
        a = await term.recv()
        assert a.version == 2019 and a.terminal_id == "00000000013900000009"
        assert a.fields == {"reply_serial": s, "reply_msg_id": 0x0704, "result": 0}
        await until(lambda: len(pings_of(pub)) == 5)
        assert {(p["plate"], p["reupload"], part) for part, p in pings_of(pub)} == {
            ("京A00009", True, partition_for("京A00009", PARTS))}
        term.close()
    run_gateway(t)


def test_bad_checksum_gets_result_2_and_dead_letter():
    async def t(port, pub, gw):
        term = await Terminal("13800000001").open(port)
        await term.login("粤B12345")
        term.serial = 41
        good = c.build_frame(0x0200, "13800000001", 42, c.encode_location(_loc()))
        raw = bytearray(c.unescape(good[1:-1]))
        raw[-1] ^= 0xFF                          # corrupt the checksum byte
        bad = b"\x7e" + c.escape(bytes(raw)) + b"\x7e"
        await term.send_raw(bad)
        a = await term.recv()
        assert a.fields == {"reply_serial": 42, "reply_msg_id": 0x0200, "result": 2}
        await until(lambda: len(dead_letters(pub)) == 1)
        dl = dead_letters(pub)[0]
        assert (dl["source"], dl["reason"]) == ("gateway", "bad_checksum")
        assert base64.b64decode(dl["original_b64"]) == bad
        assert pings_of(pub) == []
        term.close()
    run_gateway(t)


def test_unregistered_terminal_refused_and_unsupported_message_after_login():
    async def t(port, pub, gw):
        term = await Terminal("13800000077").open(port)
        s = await term.send(0x0200, c.encode_location(_loc()))
        a = await term.recv()
        assert a.fields == {"reply_serial": s, "reply_msg_id": 0x0200, "result": 1}
        s = await term.send(0x0100, c.encode_registration("", 0, device_id="X"))   # no plate, not in registry
        r = await term.recv()
        assert r.msg_id == 0x8100 and r.fields == {"reply_serial": s, "result": 2}
        term.close()
        await until(lambda: sorted(d["reason"] for d in dead_letters(pub)) == ["not_authenticated",
                                                                               "unknown_vehicle"])
        ok = await Terminal("13800000078").open(port)
        await ok.login("粤B00002")
        s = await ok.send(0x0900, b"\x01abc")             # data pass-through: not supported
        a = await ok.recv()
        assert a.fields == {"reply_serial": s, "reply_msg_id": 0x0900, "result": 3}
        ok.close()
    run_gateway(t)


def test_driver_card_events_and_driver_on_pings():
    async def t(port, pub, gw):
        term = await Terminal("13800000005").open(port)
        await term.login("苏E12F34")
        await term.send(0x0702, c.encode_driver_card(1, "2024-03-01T09:59:00+08:00", 0, "李四", "Q320100001",
                                                     "南京市运管处", "2029-06-30"))
        assert (await term.recv()).fields["result"] == 0
        await term.send(0x0200, c.encode_location(_loc(2)))
        await term.recv()
        await term.send(0x0702, c.encode_driver_card(2, "2024-03-01T18:00:00+08:00"))
        await term.recv()
        await until(lambda: len(pub.topic("driver-events")) == 2 and len(pings_of(pub)) == 1)
        evs = [(k, orjson.loads(v)) for k, v, _ in pub.topic("driver-events")]
        assert evs[0][0] == "苏E12F34".encode()
        assert {k: evs[0][1][k] for k in ("plate", "event", "driver_id", "driver_name", "ts")} == {
            "plate": "苏E12F34", "event": "login", "driver_id": "Q320100001", "driver_name": "李四",
            "ts": "2024-03-01T09:59:00+08:00"}
        assert (evs[1][1]["event"], evs[1][1]["driver_id"]) == ("logout", "Q320100001")
        assert pings_of(pub)[0][1]["driver_id"] == "Q320100001"
        term.close()
    run_gateway(t)


def test_oversized_frame_closes_only_that_connection():
    async def t(port, pub, gw):
        good = await Terminal("13800000001").open(port)
        await good.login("粤B12345")
        abuser = await Terminal("13800000002").open(port)
        await abuser.send_raw(b"\x7e" + b"\x01" * 300)      # never terminated, over max_frame_bytes=256
        assert await abuser.closed_within(2.0)
        s = await good.send(0x0002, b"")
        assert (await good.recv()).fields == {"reply_serial": s, "reply_msg_id": 0x0002, "result": 0}
        await good.send(0x0200, c.encode_location(_loc()))
        await good.recv()
        await until(lambda: len(pings_of(pub)) == 1)
        good.close()
    run_gateway(t, {"gateway.max_frame_bytes": 256})


def test_frame_exactly_at_size_limit_is_accepted():
    reg = c.build_frame(0x0100, "13800000001", 1, c.encode_registration("粤B12345", 2))

    async def t(port, pub, gw):
        term = await Terminal("13800000001").open(port)
        await term.send_raw(reg)
        assert (await term.recv()).fields["result"] == 0
        term.close()
    run_gateway(t, {"gateway.max_frame_bytes": len(reg)})


def test_idle_timeout_closes_connection():
    async def t(port, pub, gw):
        term = await Terminal("13800000001").open(port)
        await term.login("粤B12345")
        t0 = time.monotonic()
        await term.send(0x0002, b"")
        await term.recv()
        assert await term.closed_within(3.0)
        assert 0.3 <= time.monotonic() - t0 < 2.0
        await until(lambda: len(gw.connections) == 0)
    run_gateway(t, {"gateway.idle_timeout_s": 0.4})


def test_rate_limit_closes_abusive_terminal():
    async def t(port, pub, gw):
        term = await Terminal("13800000001").open(port)
        await term.login("粤B12345")
        await asyncio.sleep(0.5)                  # the bucket refills (5 frames/s)
        burst = b"".join(c.build_frame(0x0002, "13800000001", i, b"") for i in range(8))
        await term.send_raw(burst)                # 8 frames at once, bucket holds 5
        acks = 0
        try:
            while True:
                await term.recv(timeout=2.0)
                acks += 1
        except (ConnectionError, asyncio.TimeoutError):
            pass
        assert acks == 5
        assert await term.closed_within(1.0)
    run_gateway(t, {"gateway.max_frames_per_s": 5})


def test_max_connections():
    async def t(port, pub, gw):
        first = await Terminal("13800000001").open(port)
        await first.login("粤B12345")
        second = await Terminal("13800000002").open(port)     # waits in the listen backlog, not refused
        s2 = await second.send(0x0100, c.encode_registration("粤B00002", 2))
        with pytest.raises(asyncio.TimeoutError):
            await second.recv(timeout=0.5)
        assert gw.listener.paused == "max_connections" and gw.health()[0] == "degraded"
        await first.send(0x0002, b"")
        assert (await first.recv()).fields["result"] == 0
        first.close()                             # a slot frees: the waiting terminal is served
        r = await second.recv(timeout=5.0)
        assert r.msg_id == 0x8100 and r.fields["reply_serial"] == s2 and r.fields["result"] == 0
        second.close()
    run_gateway(t, {"gateway.max_connections": 1})


def test_kafka_down_buffers_then_back_pressure_then_recovers():
    async def t(port, pub, gw):
        pub.down = True
        term = await Terminal("13800000001").open(port)
        await term.login("粤B12345")
        for i in range(3):                        # buffered: acknowledged while Kafka is down
            await term.send(0x0200, c.encode_location(_loc(i)))
            assert (await term.recv()).fields["result"] == 0
        await until(lambda: gw.buffered_pings == 3)
        s = await term.send(0x0200, c.encode_location(_loc(3)))
        with pytest.raises(asyncio.TimeoutError):  # buffer full: the gateway stops reading
            await term.recv(timeout=0.5)
        assert pings_of(pub) == []
        pub.down = False
        a = await term.recv(timeout=5.0)
        assert a.fields == {"reply_serial": s, "reply_msg_id": 0x0200, "result": 0}
        await until(lambda: len(pings_of(pub)) == 4)
        assert sorted(p["ts"] for _, p in pings_of(pub)) == [1709258400000 + 1000 * i for i in range(4)]
        await until(lambda: gw.buffered_pings == 0)     # the outbox counts down on its next turn
        term.close()
    run_gateway(t, {"gateway.buffer_max_pings": 3, "stream.batch_max_pings": 1})


def test_a_full_buffer_holds_frames_already_read_unanswered_until_kafka_is_back():
    """Two terminals upload a batch at the same moment while Kafka is down and the buffer holds 3 pings: the
    first batch fills it, the second waits unanswered (never buffered past the limit) until Kafka is back."""
    async def t(port, pub, gw):
        pub.down = True
        a, b = Terminal("13800000001"), Terminal("13800000002")
        await a.open(port)
        await b.open(port)
        await a.login("粤B12345")
        await b.login("苏E12F34")
        batch = c.encode_batch_upload([_loc(0), _loc(1), _loc(2)], True)
        a.serial += 1
        b.serial += 1
        a.writer.write(c.build_frame(0x0704, a.phone, a.serial, batch))
        b.writer.write(c.build_frame(0x0704, b.phone, b.serial, batch))
        await asyncio.gather(a.writer.drain(), b.writer.drain())
        answered = []
        for term in (a, b):
            try:
                answered.append((await term.recv(timeout=0.7)).fields["result"])
            except asyncio.TimeoutError:
                pass
        assert answered == [0] and gw.buffered_pings == 3
        pub.down = False
        await until(lambda: len(pings_of(pub)) == 6, 5.0)
        a.close()
        b.close()
    run_gateway(t, {"gateway.buffer_max_pings": 3, "stream.batch_max_pings": 1})


def test_garbage_and_random_bytes_do_not_disturb_other_terminals():
    import random
    rnd = random.Random(7)

    async def t(port, pub, gw):
        good = await Terminal("13800000001").open(port)
        await good.login("粤B12345")
        noisy = await Terminal("13800000003").open(port)
        for _ in range(20):
            await noisy.send_raw(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 120))))
        for i in range(3):
            s = await good.send(0x0200, c.encode_location(_loc(i)))
            assert (await good.recv()).fields["reply_serial"] == s
        await until(lambda: len(pings_of(pub)) == 3)
        good.close()
        noisy.close()
    run_gateway(t, {"gateway.max_frames_per_s": 1000})
