"""The native front end (``gateway.front_end = "native"``, streams/jt808/_frontend.c) against the Python one:
the same frames — the public device captures, the fuzz seeds, a few thousand of the fuzzer's mutations
addressed to the authenticated terminal, heartbeats, frames split across reads with noise between them —
sent through a real gateway of each kind must give the same answer bytes, the same published positions
(all but the arrival time), the same dead letters and the same counters."""
from __future__ import annotations

import asyncio
import random
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import orjson
import pytest

from roadwatch.streams.jt808 import codec as c
from roadwatch.streams.jt808 import native
from roadwatch.streams.jt808.gateway import FRAMES, REJECTED, CLOSED

from test_gateway_tcp import pings_of, run_gateway

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import fuzz  # noqa: E402

NATIVE = pytest.mark.skipif(not native.available(), reason="the native front end was not built")
TID = "013800000001"
# no frame budget in these runs: the corpus is sent as fast as the gateway answers
CFG = {"gateway.max_frames_per_s": 100_000, "gateway.idle_timeout_s": 60.0}
SKIP_IDS = {c.REGISTRATION, c.AUTHENTICATION, c.DEREGISTRATION}    # the session's own set-up stays fixed


def _addressed(frame: bytes) -> bytes:
    """A corpus frame as the authenticated terminal would send it (as fuzz.py's gateway target does)."""
    try:
        m = c.parse_frame(frame, unescaped=b"\x7e" in frame[1:-1])
    except c.Jt808Error as e:
        if e.message is None:
            return frame
        m = e.message
    try:
        return c.build_frame(m.msg_id, TID if m.version != 2019 else "0" * 8 + TID, m.serial, m.body,
                             version=m.version, protocol_version=m.protocol_version or 1)
    except c.Jt808Error:
        return frame


def corpus(n_mutations: int, seed: int = 7) -> list[bytes]:
    seeds = fuzz._frames()
    target = fuzz.jt808_target()
    rnd = random.Random(seed)
    out = list(seeds) + [_addressed(f) for f in seeds]
    for _ in range(n_mutations):
        f = target.mutate(rnd, rnd.choice(seeds))
        if rnd.random() < 0.9:
            f = _addressed(f)
        if rnd.random() < 0.1:
            f = fuzz.mutate_bytes(rnd, f, seeds)
        out.append(f)
    heartbeat = c.build_frame(c.HEARTBEAT, TID, 9, b"")
    out += [heartbeat, c.build_frame(c.HEARTBEAT, "0" * 8 + TID, 10, b"x", version=2019),
            c.build_frame(c.HEARTBEAT, "0" * 8 + TID, 11, b"", version=2019, protocol_version=0)]
    keep = []
    for f in out:
        if f[:1] != b"\x7e" or f[-1:] != b"\x7e" or b"\x7e" in f[1:-1]:
            continue                       # one frame per item (a capture's unescaped 7E splits it)
        try:
            mid = int.from_bytes(c.unescape(f[1:3]), "big")
        except c.Jt808Error:
            mid = None
        if mid not in SKIP_IDS:
            keep.append(f)
    return keep


def _counters() -> dict:
    out = {}
    for metric in (FRAMES, REJECTED, CLOSED):
        for m in metric.collect():
            for s in m.samples:
                if s.name.endswith("_total"):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Session:
    """One terminal: registers once, authenticates on every (re)connection."""

    def __init__(self, port: int):
        self.port, self.serial, self.code = port, 100, None
        self.buf = bytearray()

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.buf.clear()
        if self.code is None:
            await self._send(c.REGISTRATION, c.encode_registration("粤B12345", 2))
            self.code = c.parse_frame((await self._frames(1))[0]).fields["auth_code"]
        await self._send(c.AUTHENTICATION, c.encode_authentication(self.code))
        r = c.parse_frame((await self._frames(1))[0])
        assert r.fields["result"] == 0, r.fields

    async def _send(self, msg_id: int, body: bytes) -> int:
        self.serial += 1
        self.writer.write(c.build_frame(msg_id, TID, self.serial, body))
        await self.writer.drain()
        return self.serial

    async def _frames(self, n: int | None = None, marker: int | None = None) -> list[bytes]:
        """Reply frames until ``n`` of them, or until the answer to heartbeat ``marker`` (not included), or
        the end of the connection (then a final b"EOF")."""
        out: list[bytes] = []
        while True:
            for f in c.split_frames(self.buf):
                if marker is not None:
                    try:
                        m = c.parse_frame(f)
                        if m.msg_id == 0x8001 and m.fields == {"reply_serial": marker, "reply_msg_id": 2,
                                                               "result": 0}:
                            return out
                    except c.Jt808Error:
                        pass
                out.append(f)
                if n is not None and len(out) >= n:
                    return out
            try:
                data = await asyncio.wait_for(self.reader.read(65536), 5)
            except ConnectionError:
                data = b""
            if not data:
                return out + [b"EOF"]
            self.buf += data

    async def exchange(self, frame: bytes) -> list[bytes]:
        """Send one frame and a heartbeat after it; the answers to the frame (and b"EOF" if it closed)."""
        self.serial += 1
        marker = self.serial
        self.writer.write(frame + c.build_frame(c.HEARTBEAT, TID, marker, b""))
        await self.writer.drain()
        return await self._frames(marker=marker)


def _published(pub) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "recv_ts"} for _, p in pings_of(pub)]


def _letters(pub) -> list[tuple]:
    return [(d["reason"], d.get("detail"), d.get("original_b64") or d.get("original")) for d in
            (orjson.loads(v) for _, v, _ in pub.topic("dead-letter"))]


def run_corpus(front_end: str, frames: list[bytes]) -> dict:
    result: dict = {}

    async def t(port, pub, gw):
        assert gw.front_end == front_end
        before = _counters()
        s = Session(port)
        await s.connect()
        answers = []
        for f in frames:
            a = await s.exchange(f)
            answers.append(a)
            if a[-1:] == [b"EOF"]:
                s.writer.close()
                await s.connect()
        s.writer.close()
        await gw.aclose(drain_timeout_s=1)
        after = _counters()
        result.update(answers=answers, pings=_published(pub), letters=_letters(pub),
                      counters={k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})
    run_gateway(t, {**CFG, "gateway.front_end": front_end})
    return result


def _same(a: dict, b: dict) -> None:
    assert len(a["answers"]) == len(b["answers"])
    for i, (x, y) in enumerate(zip(a["answers"], b["answers"])):
        assert x == y, f"frame #{i}: answers differ"
    assert a["pings"] == b["pings"]
    assert sorted(a["letters"], key=repr) == sorted(b["letters"], key=repr)
    assert a["counters"] == b["counters"]


@NATIVE
def test_native_front_end_answers_and_publishes_exactly_as_the_python_one():
    frames = corpus(600)
    py, nat = run_corpus("python", frames), run_corpus("native", frames)
    _same(py, nat)
    # the corpus reaches every branch that matters: positions and heartbeats answered natively, frames
    # passed up and answered by Python (errors, other messages), connections closed on a bad frame
    assert len(nat["pings"]) > 100
    assert any(a[-1:] == [b"EOF"] for a in nat["answers"])
    open_after = sum(1 for a in nat["answers"] if a[-1:] != [b"EOF"])      # each answered marker heartbeat
    assert nat["counters"].get(("roadwatch_gateway_frames_total", (("msg_id", "0x0002"),)), 0) >= open_after
    assert len({r for r, *_ in nat["letters"]}) >= 4


def _stream_frames(rnd: random.Random) -> list[bytes]:
    """Positions (2013 and 2019, with and without extras, some with bytes that need escaping), heartbeats,
    batch uploads and terminal answers of the authenticated terminal."""
    out = []
    for i in range(300):
        loc = {"lat": 23.1 + rnd.random(), "lon": 113.3 - rnd.random(), "ts": f"2026-11-10T10:{i // 60:02d}:{i % 60:02d}+08:00",
               "speed_kmh": round(rnd.random() * 120, 1), "heading": rnd.randrange(360),
               "altitude_m": rnd.randrange(-100, 3000), "status_flags": rnd.choice([3, 7, 11, 15, 0x7e7d]),
               "alarm_flags": rnd.choice([0, 1, 0x7e, 0x7d00]), **({"mileage_km": 1000 + i / 10} if i % 3 else {})}
        v = rnd.choice([2013, 2019])
        tid = TID if v == 2013 else "0" * 8 + TID
        k = rnd.random()
        if k < 0.7:
            out.append(c.build_frame(c.LOCATION, tid, 0x7d00 + i, c.encode_location(loc), version=v))
        elif k < 0.85:
            out.append(c.build_frame(c.HEARTBEAT, tid, 0x7e00 + i, b"", version=v))
        elif k < 0.95:
            out.append(c.build_frame(c.BATCH_LOCATION, tid, i, c.encode_batch_upload([loc, loc], False), version=v))
        else:
            out.append(c.build_frame(0x0001, tid, i, bytes(5), version=v))
    return out


async def _stream(port: int, data: bytes, rnd: random.Random, expect: int) -> bytes:
    s = Session(port)
    await s.connect()
    pos = 0
    while pos < len(data):                         # random cuts: frames split across reads, several per read
        n = rnd.choice([1, 3, 17, 40, 200, 1500])
        s.writer.write(data[pos:pos + n])
        await s.writer.drain()
        pos += n
        if rnd.random() < 0.2:
            await asyncio.sleep(0.002)
    got = bytearray()
    deadline = time.monotonic() + 10
    while got.count(b"\x7e") < 2 * expect and time.monotonic() < deadline:
        got += await asyncio.wait_for(s.reader.read(65536), 10)
    s.writer.close()
    return bytes(got)


@NATIVE
def test_frames_split_across_reads_and_noise_between_them_get_the_same_answers():
    rnd = random.Random(3)
    frames = _stream_frames(rnd)
    data = b"".join(f + (b"noise" if rnd.random() < 0.1 else b"") for f in frames)
    expect = sum(1 for f in frames if f[1:3] != b"\x00\x01")
    out = {}
    for fe in ("python", "native"):
        async def t(port, pub, gw):
            out[fe] = (await _stream(port, data, random.Random(5), expect), None)
            await gw.aclose(drain_timeout_s=1)
            out[fe] = (out[fe][0], _published(pub))
        run_gateway(t, {**CFG, "gateway.front_end": fe})
    assert out["python"][0].count(b"\x7e") == 2 * expect
    assert out["python"] == out["native"]
    assert len(out["native"][1]) > 200


def test_front_end_setting_and_fallback(monkeypatch):
    assert native.choose("python") == "python"
    assert native.choose("auto") == ("native" if native.available() else "python")
    monkeypatch.setattr(native, "_frontend", None)
    assert native.choose("auto") == "python"
    with pytest.raises(native.FrontEndUnavailable):
        native.choose("native")


def test_the_extension_is_built_where_a_compiler_is():
    """``pip install`` builds the extension when gcc/cc and the Python headers are there (CI, this VM): a
    silently missing build would leave the gateway on its slow front end and the native tests skipped."""
    has_cc = shutil.which("cc") or shutil.which("gcc")
    has_headers = (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()
    if not (has_cc and has_headers):
        pytest.skip("no C compiler or no Python headers here: the Python front end runs")
    assert native.available()
