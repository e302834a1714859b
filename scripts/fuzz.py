#!/usr/bin/env python3
"""Bounded fuzz run over every parser that sees outside input.

    .venv/bin/python scripts/fuzz.py --count 2000 [--seed 1] [--target NAME ...] [--json]
    .venv/bin/python scripts/fuzz.py --total 1000000      # the release bar: ≥ 1 000 000 inputs, 0 crashes

For each target, ``--count`` inputs are tried: mutations of valid seed inputs (bit flips, byte
insert/delete/replace, truncation, chunk duplication, splicing two seeds, and — for JSON and JT/T 808 —
structure-aware mutations that keep the framing valid so the parser gets past its first check) plus pure
random bytes. An input is *accepted* (parsed), *rejected* with the parser's documented error (an
``InvalidRecord`` reason code, ``RegistryError``, ``ConfigError``, ``ScenarioError``) or a *crash*: any
other exception. Exit code 1 if there was any crash (the first inputs of each crash kind are printed,
base64, to reproduce), else 0.

Targets (what the worker, gateway and CLIs call on untrusted bytes):
  gateway      JT/T 808 frames over a real TCP connection to a running gateway (streams.jt808.gateway), after
               registering (0x0100) and authenticating (0x0102) as a registry terminal; every reply is read,
               every batch the gateway publishes goes through the worker's decode_batch, and an exception
               logged by the gateway or a dead letter with reason internal_error counts as a crash
  jt808        streams.jt808.codec.parse_frame (+ message_pings, as the gateway does)
  pingbatch    models.pingbatch.decode_batch
  pingarrow    the Arrow IPC form of a ping batch (models/pingarrow.py) through decode_batch → the engine (the
               GPS agent's path); mutations: bytes, and Arrow-aware ones re-encoded as valid IPC (columns
               dropped, duplicated, renamed, retyped, nulled, values out of range, schema metadata changed,
               several or no record batches) so the input gets past the framing to the column checks
  engine       decode_batch → models.ping_state.PingProcessor.process (the GPS agent's path)
  wim          models.records.parse_wim_reading
  wim_assess   parse_wim_reading → models.overload.assess (the WIM agent's path)
  ping         models.records.parse_ping
  driver_event models.records.parse_driver_event (the driver-events agent)
  registry     JSON → models.registry.parse_registry (what load_registry does after reading the file)
  config       models.config.load_config on a TOML file, and ROADWATCH_SET strings
  scenario     simulators.scenario.load_scenario on a TOML file
  jt809        streams.jt809.codec.parse_frame (2011/2019 header by VERSION or forced, cipher on or off) →
               messages.decode_body → message_pings → the link's ping checks → the worker's decode_batch; seeds:
               the public vectors (tests/data/jt809-vectors.jsonl) and every decoded message built for both
               headers, clear and ciphered; mutations keep the framing and lie in DATA_LENGTH / MSG_LENGTH, swap
               2011 ↔ 2019 headers, turn the cipher on or off, plant invalid escapes, leave frames unescaped.
               Only Jt809Error (the codec's own error) may come out
  jt809_link   the same frames over real TCP to a running JT/T 809 link server (streams.jt809.link), on two
               main links logged in with 0x1001 (a 2011 and a 2019 platform with a body cipher), each input
               followed by a 0x1005 heartbeat whose 0x1006 must come back. A model of the link's rules (same
               codec) predicts the heartbeat answers and the pings; at the end every published ping must
               come from a frame that decoded (and vice versa). An error logged by the server, a dead letter
               whose reason is not an input fault, a refused login on a fresh connection or a batch the
               worker refuses counts as a crash. Inputs that do not end where they were sent (an
               unterminated frame) or that log out are sent, the connection ended, and a new one logged in
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from roadwatch.models.config import Config, ConfigError, load_config  # noqa: E402
from roadwatch.models.records import InvalidRecord  # noqa: E402
from roadwatch.simulators.fleet import full_approval  # noqa: E402

FRAMES_FILE = ROOT / "tests" / "data" / "jt808-frames.txt"      # real device frames
INTERESTING_BYTES = [0x00, 0x01, 0x7D, 0x7E, 0x7F, 0x80, 0xFF, 0x02, 0x20, 0x22, 0x5C, 0x7B, 0x7D]
INTERESTING_VALUES = [None, True, False, 0, -1, 1, 2 ** 31, 2 ** 63, -2 ** 63, 2 ** 64, 1e308, -1e308, 0.5, "",
                      "x", "2026-13-45T99:99:99+08:00", "2026-11-10T10:00:00", "NaN", "inf", "苏A12345", "\x00",
                      "a" * 5000, [], [None], [1, 2, 3], {}, {"a": 1}, [[]], ["2026-11-10T10:00:00+08:00"]]


class Target:
    def __init__(self, name: str, seeds: list[bytes], run: Callable[[bytes], object], expected: tuple,
                 json_seeds: bool = False, mutate: Callable[[random.Random, bytes], bytes] | None = None,
                 text: bool = False):
        self.name, self.seeds, self.run, self.expected = name, seeds, run, expected
        self.json_seeds, self.mutate = json_seeds, mutate
        self.text = text          # half of the inputs are repaired to valid UTF-8 to get past decoding
        self.close: Callable[[], None] | None = None
        self.finish: Callable[[], None] | None = None   # end-of-run check (raises: one more crash)


# --- generic mutators ---------------------------------------------------------------------------------

def mutate_bytes(rnd: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.choice((1, 1, 1, 2, 3, 8))):
        op = rnd.randrange(8)
        if op == 0 and b:
            i = rnd.randrange(len(b))
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:
            b.insert(rnd.randrange(len(b) + 1), rnd.choice(INTERESTING_BYTES + [rnd.randrange(256)]))
        elif op == 2 and b:
            del b[rnd.randrange(len(b))]
        elif op == 3 and b:
            b[rnd.randrange(len(b))] = rnd.choice(INTERESTING_BYTES)
        elif op == 4 and b:
            del b[rnd.randrange(len(b)):]
        elif op == 5 and b:
            i = rnd.randrange(len(b))
            j = min(len(b), i + rnd.randrange(1, 64))
            b[i:i] = b[i:j] * rnd.randrange(1, 4)
        elif op == 6:
            other = rnd.choice(seeds)
            i, j = rnd.randrange(len(b) + 1), rnd.randrange(len(other) + 1)
            b = b[:i] + bytearray(other[j:])
        else:
            b = bytearray(rnd.randbytes(rnd.randrange(0, 64))) + b
    return bytes(b)


def _mutate_value(rnd: random.Random, v, depth: int = 0):
    if isinstance(v, dict) and v and depth < 4:
        k = rnd.choice(list(v))
        v = dict(v)
        r = rnd.random()
        if r < 0.2:
            del v[k]
        elif r < 0.3:
            v[rnd.choice(["", "schema", "extra", "ts", "plate", "\u0000"])] = rnd.choice(INTERESTING_VALUES)
        else:
            v[k] = _mutate_value(rnd, v[k], depth + 1)
        return v
    if isinstance(v, list) and v and depth < 4:
        v = list(v)
        r = rnd.random()
        if r < 0.2:
            v.pop(rnd.randrange(len(v)))
        elif r < 0.3:
            v.append(rnd.choice(v))
        elif r < 0.4:
            return rnd.choice(INTERESTING_VALUES)
        else:
            i = rnd.randrange(len(v))
            v[i] = _mutate_value(rnd, v[i], depth + 1)
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e300 and rnd.random() < 0.5:
        return rnd.choice([v * -1, v * 1000, v + 1, v - 1, int(v) if isinstance(v, float) else v + 0.5, 10 ** 30])
    return rnd.choice(INTERESTING_VALUES)


def mutate_json(rnd: random.Random, data: bytes) -> bytes:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    for _ in range(rnd.choice((1, 1, 2, 3))):
        obj = _mutate_value(rnd, obj)
    try:
        return orjson.dumps(obj)
    except TypeError:          # 2**64 and friends: orjson refuses, json does not
        import json
        return json.dumps(obj).encode()


# --- targets ------------------------------------------------------------------------------------------

def _frames() -> list[bytes]:
    out = []
    if FRAMES_FILE.exists():
        for line in FRAMES_FILE.read_text(encoding="utf-8").splitlines():
            if line.startswith("hex: "):
                out.append(bytes.fromhex(line[5:].strip()))
    from roadwatch.streams.jt808 import codec as c
    loc = {"lat": 23.1, "lon": 113.3, "ts": "2026-11-10T10:00:00+08:00", "speed_kmh": 40.0, "status_flags": 3}
    out += [c.build_frame(0x0200, "013800000001", 1, c.encode_location(loc)),
            c.build_frame(0x0704, "013800000001", 2, c.encode_batch_upload([loc, loc], True), version=2019),
            c.build_frame(0x0100, "013800000001", 3, c.encode_registration("粤B12345", 2)),
            c.build_frame(0x0002, "013800000001", 4, c.encode_heartbeat())]
    return out


def jt808_target() -> Target:
    from roadwatch.models.pingbatch import decode_batch, encode_batch
    from roadwatch.streams.jt808 import codec as c

    def run(data: bytes):
        escaped = not (data[:1] == b"\x7e" and b"\x7e" in data[1:-1])
        msg = c.parse_frame(data, unescaped=not escaped)
        if msg.fields is not None:
            pings = c.message_pings(msg, "粤B12345", 2)
            if pings:                                # the gateway batches them; the worker decodes the batch
                decode_batch(encode_batch(pings))
        return msg

    def mutate(rnd: random.Random, data: bytes) -> bytes:
        # keep valid framing (length, checksum, escaping) and mutate the header fields or the body
        try:
            msg = c.parse_frame(data, unescaped=b"\x7e" in data[1:-1])
        except c.Jt808Error as e:
            msg = e.message
        if msg is None:
            return data
        body = mutate_bytes(rnd, msg.body, [msg.body]) if rnd.random() < 0.9 else msg.body
        msg_id = msg.msg_id if rnd.random() < 0.8 else rnd.choice([0x0200, 0x0704, 0x0100, 0x0102, 0x0702,
                                                                    0x0002, 0x0003, 0x0001, rnd.randrange(65536)])
        try:
            packet = (rnd.randrange(0, 4), rnd.randrange(0, 5)) if rnd.random() < 0.05 else None
            return c.build_frame(msg_id, msg.terminal_id, msg.serial, body[:1023],
                                 version=msg.version if rnd.random() < 0.9 else 2019, packet=packet)
        except c.Jt808Error:
            return data

    return Target("jt808", _frames(), run, (InvalidRecord,), mutate=mutate)


class ServerInThread:
    """A server of ours on its own event loop in a daemon thread, with every ERROR it logs (and every
    exception its loop sees) collected in ``errors``: the TCP fuzz targets count those as crashes."""

    def __init__(self, start: Callable[[], object]):
        import asyncio
        import logging
        import threading
        self.errors: list[str] = []
        errors = self.errors

        class _Catch(logging.Handler):
            def emit(self, record):
                if record.levelno >= logging.ERROR:
                    errors.append(record.getMessage() + (f" {record.exc_info[1]!r}" if record.exc_info else ""))
        self._handler = _Catch()
        logging.getLogger("roadwatch").addHandler(self._handler)
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, ctx: errors.append(str(ctx.get("message"))
                                                                        + repr(ctx.get("exception"))))
        self.started = threading.Event()
        self.server = None

        def serve_forever():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(start())
            self.started.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=serve_forever, daemon=True)
        self.thread.start()
        self.started.wait(10)

    def call(self, coro, timeout: float):
        import asyncio
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        import logging
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        logging.getLogger("roadwatch").removeHandler(self._handler)


class GatewayCrash(Exception):
    """The gateway logged an exception, dead-lettered an internal_error or published a batch the worker
    cannot decode: a crash, whatever input was being sent."""


class GatewayTarget:
    """A real gateway (streams.jt808.gateway.serve) in a thread with its own event loop, on a free port of
    127.0.0.1, and one authenticated TCP connection from this thread. Each input frame is sent, followed by
    a heartbeat; the replies up to the heartbeat's answer are the input's outcome."""

    TID = "013800000001"
    PLATE, COLOR = "粤B12345", 2

    def __init__(self):
        import socket
        from roadwatch.models.registry import parse_registry
        from roadwatch.streams.batcher import MemoryPublisher
        from roadwatch.streams.broker import free_port
        from roadwatch.streams.jt808 import codec as c
        self.c, self.socket = c, socket
        reg = parse_registry({"enterprises": [{"enterprise_id": "E1", "name": "甲运输"}],
                              "vehicles": [{"plate": self.PLATE, "plate_color": self.COLOR, "category": "普通货车",
                                            "enterprise_id": "E1", "terminal_id": self.TID}]})
        # no rate limit and generous timeouts: the fuzzer must reach the parsers, not the abuse guards; the
        # identity store (issued auth codes) lives in a temporary archive
        self.tmp = tempfile.mkdtemp(prefix="roadwatch-fuzz-gw-")
        self.cfg = Config({"gateway.max_frames_per_s": 100_000, "gateway.idle_timeout_s": 600.0,
                           "gateway.max_auth_failures": 1000, "stream.batch_max_ms": 50,
                           "paths.data_dir": self.tmp})
        self.publisher = MemoryPublisher()
        self.port = free_port()
        from roadwatch.streams.jt808.gateway import serve
        self.host = ServerInThread(lambda: serve(self.cfg, reg, self.publisher, host="127.0.0.1", port=self.port))
        self.server, self.errors = self.host.server, self.host.errors
        self.sock = None
        self.serial = 0
        self.authenticated = 0
        self.code = ""            # issued once at registration, then reused on every reconnection

    # --- the terminal side ---------------------------------------------------------------------------
    def _connect(self) -> None:
        c = self.c
        if self.sock is not None:
            self.sock.close()
        self.sock = self.socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.buf = bytearray()
        if self.code and self._authenticate():
            return
        # first connection, or the code was revoked (a fuzzed deregistration went through): register again
        reg = self._exchange(c.build_frame(0x0100, self.TID, self._next(),
                                           c.encode_registration(self.PLATE, self.COLOR)))
        self.code = ""
        for mid, body in reg:
            if mid == c.REGISTRATION_RESPONSE and len(body) >= 3 and body[2] == 0:
                self.code = body[3:].decode("ascii", "replace")
        if not self.code:
            raise GatewayCrash(f"registration refused: {reg!r}")
        if not self._authenticate():
            raise GatewayCrash("authentication refused with the code just issued")

    def _authenticate(self) -> bool:
        c = self.c
        try:
            auth = self._exchange(c.build_frame(0x0102, self.TID, self._next(), c.encode_authentication(self.code)))
        except ConnectionError:              # a refused code may close the connection: open a new one
            self.sock = self.socket.create_connection(("127.0.0.1", self.port), timeout=10)
            self.buf = bytearray()
            return False
        ok = any(mid == c.PLATFORM_RESPONSE and len(body) >= 5 and body[4] == 0 for mid, body in auth)
        self.authenticated += ok
        return ok

    def _next(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    def _exchange(self, frame: bytes, sync: bool = True) -> list[tuple[int, bytes]]:
        """Send ``frame`` (and a heartbeat); the replies up to the heartbeat's answer as (msg id, body)."""
        c = self.c
        hb_serial = self._next()
        hb = c.build_frame(0x0002, self.TID, hb_serial, c.encode_heartbeat())
        self.sock.sendall(frame + b"\x7e" + hb if sync else frame)   # a stray 7E ends an unterminated input
        replies = []
        while True:
            for f in c.split_frames(self.buf):
                try:
                    m = c.parse_frame(f)
                except c.Jt808Error:
                    continue
                if m.msg_id == c.PLATFORM_RESPONSE and m.body[:2] == hb_serial.to_bytes(2, "big") \
                        and m.body[2:4] == b"\x00\x02":
                    return replies
                replies.append((m.msg_id, m.body))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("gateway closed the connection")
            self.buf += data

    def run(self, data: bytes):
        if self.sock is None:
            self._connect()
        try:
            replies = self._exchange(data)
        except (ConnectionError, OSError):
            self.sock = None                 # closed by the gateway (e.g. an oversize frame): a rejection
            self._check()
            raise InvalidRecord("connection_closed", "the gateway closed the connection") from None
        finally:
            self._identity_frame(data)
        self._check()
        results = [b[4] for mid, b in replies if mid == self.c.PLATFORM_RESPONSE and len(b) >= 5]
        if results and all(r == 0 for r in results):
            return replies
        raise InvalidRecord(f"result_{results[0]}" if results else "no_answer", "refused by the gateway")

    def _identity_frame(self, data: bytes) -> None:
        """A fuzzed registration, authentication or deregistration may change this terminal's standing (a
        deregistration revokes its code): start the next input from a fresh, authenticated connection."""
        try:
            msg_id = self.c.parse_frame(data).msg_id
        except self.c.Jt808Error:
            return
        if msg_id in (0x0100, 0x0102, 0x0003):
            if self.sock is not None:
                self.sock.close()
            self.sock = None                 # (a deregistration may have revoked the code: _connect sees)

    def _check(self) -> None:
        from roadwatch.models.pingbatch import decode_batch
        from roadwatch.streams.topics import DEAD_LETTER, GPS_PINGS
        if self.errors:
            err, self.errors[:] = self.errors[0], []
            raise GatewayCrash(err)
        with self.publisher._lock:
            records, self.publisher.records = self.publisher.records, []
        for topic, _key, value, _part in records:
            if topic == DEAD_LETTER and orjson.loads(value).get("reason") == "internal_error":
                raise GatewayCrash(f"internal_error dead letter: {value[:200]!r}")
            if topic == GPS_PINGS:
                try:
                    decode_batch(value)
                except InvalidRecord as e:
                    raise GatewayCrash(f"the gateway published a batch the worker refuses: {e}") from None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.host.call(self.server.gateway.aclose(), 10)
        self.host.stop()
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)

    def target(self) -> Target:
        c = self.c
        base = jt808_target()

        def mutate(rnd: random.Random, data: bytes) -> bytes:
            out = base.mutate(rnd, data)
            if rnd.random() < 0.9:               # as the authenticated terminal, to reach the deep parsers
                try:
                    m = c.parse_frame(out)
                    out = c.build_frame(m.msg_id, self.TID if m.version != 2019 else "0" * 8 + self.TID,
                                        m.serial, m.body, version=m.version)
                except c.Jt808Error:
                    pass
            return out

        t = Target("gateway", base.seeds, self.run, (InvalidRecord,), mutate=mutate)
        t.close = self.close
        return t


def _ping(i: int = 0, **kw) -> dict:
    d = {"plate": "苏A12345", "plate_color": 2, "terminal_id": "013300000001",
         "ts": f"2026-11-10T10:00:{i:02d}+08:00", "lat": 32.0 + i * 1e-3, "lon": 118.8, "speed_kmh": 55.0,
         "heading": 90, "altitude_m": 12.0, "alarm_flags": 0, "status_flags": 3, "reupload": False,
         "driver_id": "D1", "mileage_km": 1234.5}
    d.update(kw)
    return d


def _batch_seeds() -> list[bytes]:
    from roadwatch.models.pingbatch import encode_batch
    pings = [_ping(i) for i in range(5)] + [_ping(9, plate="粤B54321", speed_kmh=95.0, alarm_flags=1)]
    recv = [dict(p, recv_ts=1_762_740_000_000 + i) for i, p in enumerate(pings)]
    return [encode_batch(pings), encode_batch(pings[:1]), encode_batch(recv), orjson.dumps(_ping())]


def pingbatch_target() -> Target:
    from roadwatch.models.pingbatch import decode_batch
    return Target("pingbatch", _batch_seeds(), lambda b: decode_batch(b), (InvalidRecord,), json_seeds=True)


def _arrow_seeds() -> list[bytes]:
    from roadwatch.models.pingbatch import encode_batch
    pings = [dict(_ping(i), ts=1_762_740_000_000 + i * 1000) for i in range(5)] + \
        [dict(_ping(9, plate="粤B54321", speed_kmh=95.0, alarm_flags=1), ts=1_762_740_009_000)]
    recv = [dict(p, recv_ts=p["ts"] + 800) for p in pings]
    nodrv = [dict(p, driver_id=None, mileage_km=None, jt808_version=2019) for p in pings]
    return [encode_batch(pings, "arrow"), encode_batch(pings[:1], "arrow"), encode_batch(recv, "arrow"),
            encode_batch(nodrv, "arrow")]


_ARROW_TYPES = None


def mutate_arrow(rnd: random.Random, data: bytes) -> bytes:
    """Decode the seed's record batch, change its structure or values, write it back as a valid IPC stream."""
    import numpy as np
    import pyarrow as pa
    global _ARROW_TYPES
    if _ARROW_TYPES is None:
        _ARROW_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
                        pa.uint64(), pa.float16(), pa.float32(), pa.float64(), pa.bool_(), pa.string(),
                        pa.large_string(), pa.binary(), pa.null(), pa.timestamp("ms"), pa.timestamp("s", tz="UTC"),
                        pa.timestamp("ns", tz="Asia/Shanghai"), pa.date32(), pa.list_(pa.int64()),
                        pa.dictionary(pa.int8(), pa.string())]
    try:
        batch = pa.ipc.open_stream(data).read_next_batch()
    except Exception:   # noqa: BLE001 - a seed that is not Arrow: byte mutation only
        return data
    cols, names = list(batch.columns), list(batch.schema.names)
    meta = batch.schema.metadata
    batches = 1
    for _ in range(rnd.choice((1, 1, 2, 3))):
        try:
            op = rnd.randrange(10)
            i = rnd.randrange(len(cols)) if cols else 0
            n = len(cols[0]) if cols else 0
            if op == 0 and cols:
                del cols[i], names[i]
            elif op == 1 and cols:
                cols.append(cols[i]), names.append(rnd.choice([names[i], "extra", "", "plate"]))
            elif op == 2 and cols:
                names[i] = rnd.choice(["", "x", "ts", "recv_ts", "jt808_version", names[(i + 1) % len(names)]])
            elif op == 3 and cols:
                try:
                    cols[i] = cols[i].cast(rnd.choice(_ARROW_TYPES), safe=False)
                except Exception:   # noqa: BLE001 - not every cast exists
                    cols[i] = pa.array([rnd.choice(INTERESTING_VALUES[:12])] * n, type=rnd.choice(_ARROW_TYPES[:12]),
                                       from_pandas=True) if rnd.random() < 0.5 else pa.nulls(n)
            elif op == 4 and cols:                 # nulls in place of some values
                mask = pa.array([rnd.random() < 0.5 for _ in range(n)])
                cols[i] = pa.compute.if_else(mask, pa.nulls(n, cols[i].type), cols[i])
            elif op == 5 and cols:                 # one value replaced by an extreme of a numeric type
                v = cols[i].to_pylist()
                if v:
                    v[rnd.randrange(n)] = rnd.choice([0, -1, 2 ** 31, 2 ** 53 + 1, 2 ** 63 - 1, -2 ** 63, 1e308, -1e308,
                                                     float("inf"), float("nan"), 0.5, "", "a" * 300, "\x00", None])
                    try:
                        cols[i] = pa.array(v, type=cols[i].type, from_pandas=False)
                    except Exception:   # noqa: BLE001
                        cols[i] = pa.array(v, from_pandas=False) if len({type(x) for x in v} - {type(None)}) <= 1 \
                            else cols[i]
            elif op == 6 and cols:                 # fewer or more rows (every column the same length)
                k = rnd.choice([0, 1, max(0, n - 1), n * 2])
                cols = [c.take(pa.array([j % max(1, n) for j in range(k)], type=pa.int64())) if n else c for c in cols]
            elif op == 7:
                meta = rnd.choice([None, {b"roadwatch.schema": b"roadwatch.pings/2"}, {b"x": b"y"}, meta])
            elif op == 8:
                batches = rnd.choice([0, 2, 3])
            else:                                  # a column sliced (non-zero array offset) or chunk-shifted
                if cols and n > 1:
                    cols = [c.slice(1) for c in cols]
        except Exception:   # noqa: BLE001 - this mutation does not apply to this batch: skip it
            pass
    try:
        schema = pa.schema([pa.field(nm, c.type) for nm, c in zip(names, cols)], metadata=meta)
        rb = pa.RecordBatch.from_arrays(cols, schema=schema)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as w:
            for _ in range(batches):
                w.write_batch(rb)
        return sink.getvalue().to_pybytes()
    except Exception:   # noqa: BLE001 - the mutation made no writable batch: fall back to bytes
        return mutate_bytes(rnd, data, [data])


def pingarrow_target() -> Target:
    run = engine_target().run
    return Target("pingarrow", _arrow_seeds(), run, (InvalidRecord,), mutate=mutate_arrow)


def engine_target() -> Target:
    from roadwatch.models.ping_state import PingProcessor
    from roadwatch.models.pingbatch import decode_batch
    from roadwatch.models.records import Vehicle
    from roadwatch.models.registry import Registry
    reg = Registry()
    reg.vehicles["苏A12345"] = Vehicle(plate="苏A12345", plate_color=2, category="危险货物运输车辆", enterprise_id="")
    state = {"proc": PingProcessor(Config(), reg), "n": 0}

    def run(data: bytes):
        # exactly the GPS agent's path (streams/gps.py): decode errors (times out of range included) become
        # a dead letter, the wall clock is the engine's "now"
        try:
            cols = decode_batch(data)
        except InvalidRecord:
            raise
        except (TypeError, ValueError, OverflowError) as e:
            raise InvalidRecord("bad_type", repr(e)) from None
        state["n"] += 1
        if state["n"] % 500 == 0:                     # fresh state now and then; snapshot round trip too
            blob = state["proc"].snapshot()
            state["proc"] = PingProcessor.restore(Config(), reg, None, blob)
        out = state["proc"].process(cols, now_ms=int(time.time() * 1000))
        state["proc"].check_offline()
        state["proc"].day_rows()
        return out

    return Target("engine", _batch_seeds(), run, (InvalidRecord,), json_seeds=True)


def _wim_seed(**kw) -> dict:
    d = {"station_id": "S1", "lane": 1, "ts": "2026-11-10T10:00:00+08:00", "plate": "苏A12345", "plate_color": 2,
         "plate_confidence": 0.97, "vehicle_kind": "truck", "axle_count": 3, "axle_loads_kg": [7000, 10000, 12000],
         "axle_spacings_m": [3.5, 1.3], "gross_kg": 29000, "speed_kmh": 60, "device_id": "D1", "reading_id": "R1",
         "images": [{"kind": "front", "uri": "file:///x.jpg", "sha256": "ab" * 32}]}
    d.update(kw)
    return d


def _wim_seeds() -> list[bytes]:
    return [orjson.dumps(_wim_seed()), orjson.dumps(_wim_seed(vehicle_kind="train", axle_count=2, plate="粤B54321",
                                                              axle_loads_kg=[9000, 9500], axle_spacings_m=[4.0],
                                                              gross_kg=18500, images=[]))]


def wim_target() -> Target:
    from roadwatch.models.records import parse_wim_reading
    return Target("wim", _wim_seeds(), lambda b: parse_wim_reading(b), (InvalidRecord,), json_seeds=True)


def wim_assess_target() -> Target:
    from roadwatch.models.overload import MemoryCounters, MemoryPassages, assess
    from roadwatch.models.records import parse_wim_reading
    from roadwatch.models.registry import parse_registry
    reg = parse_registry(orjson.loads(_registry_seeds()[0]))
    cfg = Config()
    counters, passages = MemoryCounters(), MemoryPassages()

    def run(data: bytes):
        v = assess(parse_wim_reading(data), reg, cfg, counters=counters, passages=passages)
        counters.record(v)
        return v

    return Target("wim_assess", _wim_seeds(), run, (InvalidRecord,), json_seeds=True)


def driver_event_target() -> Target:
    from roadwatch.models.records import parse_driver_event
    seeds = [orjson.dumps({"plate": "苏A12345", "terminal_id": "013300000001", "ts": "2026-11-10T10:00:00+08:00",
                           "event": e, "driver_id": "D1", "driver_name": "张三"}) for e in ("login", "logout")]
    return Target("driver_event", seeds, lambda b: parse_driver_event(b), (InvalidRecord,), json_seeds=True)


def ping_target() -> Target:
    from roadwatch.models.records import parse_ping
    return Target("ping", [orjson.dumps(_ping()), orjson.dumps(_ping(3, driver_id=None, mileage_km=None))],
                  lambda b: parse_ping(b), (InvalidRecord,), json_seeds=True)


def _registry_seeds() -> list[bytes]:
    reg = {"region": "江苏", "enterprises": [{"enterprise_id": "E1", "name": "甲运输", "goods_vehicles": 10}],
           "drivers": [{"driver_id": "D1", "name": "张三", "enterprise_id": "E1"}],
           "vehicles": [{"plate": "苏A12345", "plate_color": 2, "category": "普通货车", "enterprise_id": "E1",
                         "axle_count": 3, "registered_total_kg": 25000.0},
                        {"plate": "苏B12345", "plate_color": 1, "category": "客运班车", "enterprise_id": "E1",
                         "vehicle_kind": "bus", "long_distance": True, "route_km": 300.0}],
           "source_sites": [{"site_id": "X1", "name": "煤场", "polygon": [[118.0, 32.0], [118.1, 32.0], [118.1, 32.1]]}],
           "zones": [{"zone_id": "Z1", "name": "禁行区", "kind": "restricted", "categories": ["危险货物运输车辆"],
                      "polygon": [[118.0, 32.0], [118.1, 32.0], [118.1, 32.1]]}],
           "stations": [{"station_id": "S1", "name": "站", "lat": 32.0, "lon": 118.0,
                         "devices": [{"device_id": "D1", "cert_no": "C1", "valid_from": "2020-01-01T00:00:00+08:00",
                                      "valid_to": "2099-01-01T00:00:00+08:00",
                                      "approval": full_approval("2020-01-01T00:00:00+08:00", "FUZZ")}]}]}
    return [orjson.dumps(reg)]


def registry_target() -> Target:
    from roadwatch.models.registry import RegistryError, parse_registry

    def run(data: bytes):
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as e:          # load_registry's own translation
            raise RegistryError(f"not valid JSON: {e}") from None
        reg = parse_registry(obj)
        from roadwatch.geo.zones import ZoneIndex
        ZoneIndex.from_registry(reg)                 # the engine builds its zone index from it
        return reg

    return Target("registry", _registry_seeds(), run, (RegistryError,), json_seeds=True)


CONFIG_SEEDS = [b'[overlimit]\nfiling_tolerance = 0.05\ndedup_window_s = 120\n\n[stream]\npartitions = 8\n',
                b'[curfew]\nstart = "02:00"\nend = "05:00"\ncategories = ["\xe5\xae\xa2\xe8\xbf\x90\xe7\x8f\xad\xe8\xbd\xa6"]\n'
                b'[web]\nport = 7000\n[quality]\nlon_range = [73.55, 135.0833]\n']


def config_target(tmp: Path) -> Target:
    path = tmp / "fuzz-config.toml"

    def run(data: bytes):
        if data[:1] == b"@":                        # ROADWATCH_SET form
            return load_config(None, env={"ROADWATCH_SET": data[1:].decode("utf-8", "replace")})
        path.write_bytes(data)
        return load_config(path, env={})

    seeds = CONFIG_SEEDS + [b"@stream.partitions=8;web.port=7001;curfew.start=\"01:00\""]
    return Target("config", seeds, run, (ConfigError,), text=True)


def scenario_target(tmp: Path) -> Target:
    from roadwatch.simulators.behaviours import ScenarioError
    from roadwatch.simulators.scenario import load_scenario
    lib = ROOT / "simulators" / "scenarios"
    seeds = [p.read_bytes() for p in sorted(lib.glob("*.toml"))]
    path = tmp / "fuzz-scenario.toml"

    def run(data: bytes):
        path.write_bytes(data)
        return load_scenario(str(path))

    return Target("scenario", seeds, run, (ScenarioError,), text=True)


# --- JT/T 809 -------------------------------------------------------------------------------------------

VECTORS_809 = ROOT / "tests" / "data" / "jt809-vectors.jsonl"     # public vectors (hex + source)
CIPHER_809 = "30000000,20000000,20000000"                        # M1,IA1,IC1 of the public encrypted vectors
# the two lower platforms of the fuzz: the centre ids of the public 2011 and 2019 vectors
PLAT_2011 = dict(center_id=20180920, user_id=20180920, password="20180920", protocol=2011)
PLAT_2019 = dict(center_id=0x01FEC190, user_id=1001, password="pw809", protocol=2019)


def _frames_809() -> list[bytes]:
    """Seed frames: the public vectors, wrapped when they are bodies, and every message the link decodes
    built for both header layouts, in clear and ciphered, escaped and as careless senders send them."""
    from roadwatch.streams.jt809 import codec as c
    from roadwatch.streams.jt809 import messages as m
    cipher = c.Cipher.parse(CIPHER_809)
    out: list[bytes] = []
    for line in VECTORS_809.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        v = orjson.loads(line)
        if v["kind"] in ("frame", "codec"):
            out.append(bytes.fromhex(v["hex"]))
        elif v["kind"] == "body":
            proto, data = v["protocol"], bytes.fromhex(v["hex"])
            plat = PLAT_2019 if proto == 2019 else PLAT_2011
            if "data_type" in v:        # a sub-business body: wrap it as the link receives it
                dt = int(v["data_type"], 16)
                body = (m.encode_without_vehicle(dt, data) if dt >> 8 in (0x13, 0x93) or (dt >> 8 == 0x14 and proto == 2019)
                        else m.encode_with_vehicle("湘A12345", 2, dt, data))
                msg = m.PLATFORM_MSG if dt >> 8 == 0x13 else m.WARN_MSG if dt >> 8 == 0x14 else m.DYNAMIC
            else:
                body, msg = data, int(v["msg_id"], 16)
            out.append(c.build_frame(msg, body, sn=7, center_id=plat["center_id"], protocol=proto))
    pos = {"lat": 28.2, "lon": 112.9, "ts": "2026-11-10T10:00:00+08:00", "speed_kmh": 50.0, "heading": 90,
           "altitude_m": 40.0, "alarm_flags": 0, "status_flags": 3, "mileage_km": 100.0}
    for plat in (PLAT_2011, PLAT_2019):
        proto, cid = plat["protocol"], plat["center_id"]
        bodies = [(m.LOGIN, m.encode_login(plat["user_id"], plat["password"], "127.0.0.1", 809, proto, cid)),
                  (m.HEARTBEAT, b""),
                  (m.DYNAMIC, m.encode_with_vehicle("湘A12345", 2, m.REAL_LOCATION, m.encode_position(pos, proto))),
                  (m.DYNAMIC, m.encode_with_vehicle("湘A12345", 2, m.HISTORY_LOCATION, m.encode_history([pos] * 3, proto))),
                  (m.DYNAMIC, m.encode_with_vehicle("湘A12345", 2, m.VEHICLE_REGISTER,
                                                    m.encode_register("P1", "M1", "X9", "T123456", "13800000000", proto))),
                  (m.PLATFORM_MSG, m.encode_without_vehicle(m.POST_QUERY_ACK, m.encode_query_ack(1, "P1", "在岗", proto, 3)))]
        if proto == 2011:
            bodies.append((m.WARN_MSG, m.encode_with_vehicle("湘A12345", 2, m.WARN_ADPT_INFO,
                                                             m.encode_warn_2011(1, 2, 1_762_740_000, 5, "超速"))))
        for msg, body in bodies:
            out.append(c.build_frame(msg, body, sn=1, center_id=cid, protocol=proto, utc_time=1_762_740_000))
            out.append(c.build_frame(msg, body, sn=2, center_id=cid, protocol=proto, cipher=cipher,
                                     encrypt_key=256178, utc_time=1_762_740_000, escaped=msg != m.DYNAMIC))
    return out


def _mutate_809(rnd: random.Random, data: bytes, center_id: int | None = None) -> bytes:
    """Keep the framing valid (or break exactly one rule of it) and mutate the header fields or the body:
    DATA_LENGTH lies, 2011 ↔ 2019 header, cipher on/off with another key, MSG_LENGTH lies (with a CRC that
    holds over them or not), invalid escape sequences, frames not escaped. ``center_id``: write this centre
    into the header (the link target's own platform) most of the time."""
    from roadwatch.streams.jt809 import codec as c
    cipher = c.Cipher.parse(CIPHER_809)
    try:
        fr = c.parse_frame(data, cipher=cipher)
    except c.Jt809Error:
        return mutate_bytes(rnd, data, [data])
    h, body = fr.header, bytearray(fr.body)
    r = rnd.random()
    if r < 0.25 and len(body) >= 6:               # DATA_LENGTH (with vehicle at 22, without at 2) lies
        off = rnd.choice((2, 22)) if len(body) >= 26 else 2
        body[off:off + 4] = rnd.choice((0, 1, len(body), len(body) - off, 0xFFFFFFFF, rnd.randrange(1 << 32))
                                       ).to_bytes(4, "big")
    elif r < 0.85:
        body = bytearray(mutate_bytes(rnd, bytes(body), [bytes(body)]))
    msg_id = h.msg_id if rnd.random() < 0.85 else rnd.choice([0x1001, 0x1003, 0x1005, 0x1007, 0x1008, 0x1200, 0x1300,
                                                              0x1400, 0x9001, 0x9300, rnd.randrange(65536)])
    proto = h.protocol if rnd.random() < 0.85 else 2011 + 2019 - h.protocol
    ciphered = h.encrypted if rnd.random() < 0.85 else not h.encrypted
    key = h.encrypt_key if rnd.random() < 0.9 else rnd.choice((0, 1, 0xFFFFFFFF, rnd.randrange(1 << 32)))
    cid = center_id if center_id is not None and rnd.random() < 0.9 else h.center_id
    try:
        out = bytearray(c.build_frame(msg_id, bytes(body[:4096]), sn=h.sn, center_id=cid, protocol=proto,
                                      cipher=cipher if ciphered else None, encrypt_key=key,
                                      utc_time=rnd.choice((h.utc_time or 0, 0, 1 << 63, rnd.randrange(1 << 64))),
                                      escaped=rnd.random() < 0.8))
    except c.Jt809Error:
        return data
    r = rnd.random()
    if r < 0.1:                                   # MSG_LENGTH lies, CRC recomputed over the lie (or not)
        try:
            inner = bytearray(c.unescape(bytes(out[1:-1])))
        except c.Jt809Error:
            inner = bytearray(out[1:-1])
        inner[0:4] = rnd.choice((0, 26, len(inner) + 1, len(inner) + 3, 0xFFFFFFFF, rnd.randrange(1 << 16))).to_bytes(4, "big")
        if rnd.random() < 0.7:
            inner[-2:] = c.crc16(bytes(inner[:-2])).to_bytes(2, "big")
        out = bytearray(b"\x5b" + c.escape(bytes(inner)) + b"\x5d")
    elif r < 0.17 and len(out) > 2:               # an invalid escape: 5A/5E not followed by 01/02
        i = rnd.randrange(1, len(out) - 1)
        out[i:i] = bytes((rnd.choice((0x5A, 0x5E)), rnd.choice((0x00, 0x03, 0x5A, 0x5D, 0xFF))))
    elif r < 0.22:                                # a frame mutated after framing (flag, CRC, truncation)
        out = bytearray(mutate_bytes(rnd, bytes(out), [bytes(out)]))
    return bytes(out)


def jt809_target() -> Target:
    """The codec and the message-body decoders as the link server calls them (streams.jt809.link): frame
    → header (2011/2019 by VERSION, or forced) → decrypted body → decode_body → pings → the worker's batch
    decoding. Only ``Jt809Error`` may come out: the codec's own error type, not InvalidRecord in general."""
    from roadwatch.models.pingbatch import decode_batch, encode_batch
    from roadwatch.models.pingschema import dicts_getter, validate_columns
    from roadwatch.models.records import plausible_years
    from roadwatch.streams.jt809 import codec as c
    from roadwatch.streams.jt809 import messages as m
    cipher = c.Cipher.parse(CIPHER_809)
    years = plausible_years(Config())

    def run(data: bytes):
        mode = len(data) % 4                      # deterministic in the input: reproducible from base64
        proto = (None, None, 2011, 2019)[mode]
        fr = c.parse_frame(data, proto, cipher if mode != 1 else None)
        fields = m.decode_body(fr.header.msg_id, fr.body, fr.header.protocol)
        pings = [dict(p, recv_ts=1_762_740_000_000)
                 for p in m.message_pings(fr.header.msg_id, fields, fr.header.center_id)]
        # the link checks them as the worker will (a refused position is dead-lettered, not batched) …
        if pings and not validate_columns(dicts_getter(pings), len(pings), years=years)[1]:
            try:                                  # … and what passes must decode in the worker
                decode_batch(encode_batch(pings), years=years)
            except InvalidRecord as e:
                raise RuntimeError(f"checked 809 pings the worker refuses: {e}") from None
        if fr.header.msg_id == m.LOGIN:          # what the server answers
            c.build_frame(m.LOGIN_RESP, m.encode_login_resp(0, 1), sn=1, center_id=fr.header.center_id,
                          protocol=fr.header.protocol, utc_time=fr.header.utc_time)
        return fields

    return Target("jt809", _frames_809(), run, (c.Jt809Error,), mutate=lambda rnd, d: _mutate_809(rnd, d))


class LinkCrash(Exception):
    """The link server logged an error, dead-lettered anything but an input fault, stopped answering
    heartbeats, refused our login, or published pings no decodable frame carried."""


# dead-letter reasons that name a fault of the input (codec codes and the link's own rules)
# (the JT/T 808 codes come from a 2019 position's GNSS_DATA, a JT/T 808 0x0200 body; the ping-schema codes
# from the worker's checks the link applies before batching)
INPUT_FAULTS_809 = {"bad_frame", "bad_escape", "bad_crc", "length_mismatch", "truncated", "bad_value", "bad_time",
                    "encrypted", "unsupported_msg", "frame_too_large", "not_logged_in", "wrong_center",
                    "login_refused", "logout_refused", "bad_plate", "bad_checksum", "bad_bcd",
                    "bad_timestamp", "out_of_range", "bad_type", "missing_field"}


class LinkTarget:
    """A real JT/T 809 link server (streams.jt809.link.LinkServer) in a thread with its own loop on a free
    port of 127.0.0.1, and two logged-in main links from this thread (a 2011 and a 2019 platform, both
    with a body cipher). Each input goes to the link whose header layout it names, followed by a 0x1005
    heartbeat; the 0x1006 answers are awaited. A model of the link's rules (the same codec) predicts how
    many heartbeats are answered and how many pings are published; at the end every published ping must
    be accounted for by a frame that decoded."""

    MAX_FRAME = 4096

    def __init__(self):
        import socket
        from roadwatch.streams.batcher import MemoryPublisher
        from roadwatch.streams.broker import free_port
        from roadwatch.streams.jt809 import codec as c
        from roadwatch.streams.jt809 import messages as m
        from roadwatch.models.records import plausible_years
        from roadwatch.streams.jt809.platforms import Platform
        self.c, self.m, self.socket = c, m, socket
        self.cipher = c.Cipher.parse(CIPHER_809)
        self.plats = {p["center_id"]: Platform(p["center_id"], f"P{p['protocol']}", p["user_id"], p["password"],
                                               p["protocol"], self.cipher, False) for p in (PLAT_2011, PLAT_2019)}
        self.tmp = tempfile.mkdtemp(prefix="roadwatch-fuzz-809-")
        self.cfg = Config({"paths.data_dir": self.tmp, "stream.batch_max_ms": 50, "jt809.slave_link": False,
                           "jt809.max_refused_logins": 100, "jt809.idle_timeout_s": 600.0,
                           "jt809.auth_timeout_s": 600.0, "jt809.max_frame_bytes": self.MAX_FRAME})
        self.publisher = MemoryPublisher()
        self.port = free_port()
        self.expected_pings = 0
        self.published_pings = 0
        self.logins = self.reconnects = self.unmodelled = 0
        self.years = plausible_years(self.cfg)

        from roadwatch.streams.jt809.link import serve
        self.host = ServerInThread(lambda: serve(self.cfg, self.plats, self.publisher, "127.0.0.1", self.port))
        if not self.host.started.is_set():
            raise LinkCrash("the link server did not start")
        self.server, self.errors = self.host.server, self.host.errors
        self.links: dict[int, dict] = {}          # protocol → {sock, buf, plat, refused}

    # --- the lower platform's side ---------------------------------------------------------------------
    def _frame(self, plat, msg_id: int, body: bytes) -> bytes:
        return self.c.build_frame(msg_id, body, sn=1, center_id=plat.center_id, protocol=plat.protocol,
                                  utc_time=1_762_740_000)

    def _connect(self, proto: int) -> dict:
        c, m = self.c, self.m
        old = self.links.pop(proto, None)
        if old is not None:
            old["sock"].close()
            self.reconnects += 1
        plat = next(p for p in self.plats.values() if p.protocol == proto)
        link = {"sock": self.socket.create_connection(("127.0.0.1", self.port), timeout=10), "buf": bytearray(),
                "plat": plat, "refused": 0}
        link["sock"].sendall(self._frame(plat, m.LOGIN, m.encode_login(plat.user_id, plat.password, "127.0.0.1", 0,
                                                                       proto, plat.center_id)))
        replies = self._read(link, m.LOGIN_RESP, 1)
        if not replies or replies[-1].get("result") != 0:
            raise LinkCrash(f"login refused on a fresh connection: {replies!r}")
        self.logins += 1
        self.links[proto] = link
        return link

    def _read(self, link: dict, msg_id: int, n: int) -> list[dict]:
        """Read answers until ``n`` of ``msg_id``; → their decoded bodies."""
        c, m = self.c, self.m
        got: list[dict] = []
        while len(got) < n:
            for raw in c.split_frames(link["buf"]):
                try:
                    fr = c.parse_frame(raw, link["plat"].protocol, self.cipher)
                except c.Jt809Error as e:
                    raise LinkCrash(f"the link server sent a frame we cannot decode: {e}") from None
                if fr.header.msg_id == msg_id:
                    got.append(m.decode_body(fr.header.msg_id, fr.body, fr.header.protocol))
            if len(got) >= n:
                break
            data = link["sock"].recv(65536)
            if not data:
                raise ConnectionError("the link server closed the connection")
            link["buf"] += data
        return got

    def _model(self, link: dict, stream: bytes) -> tuple[list[bytes], int, int, bool] | None:
        """What the server does with ``stream`` on this logged-in link (its rules, our copy): → (frames,
        heartbeats answered, pings published, connection closed, frames refused); None when the input does not end where
        it was sent (an unterminated frame swallows what follows)."""
        from roadwatch.models.pingschema import dicts_getter, validate_columns
        c, m = self.c, self.m
        buf = bytearray(stream)
        try:
            frames = c.split_frames(buf, self.MAX_FRAME)
        except c.Jt809Error:
            return None
        if buf:
            return None
        plat, logged_in, hb, pings, closed, bad = link["plat"], True, 0, 0, False, 0
        for raw in frames:
            try:
                fr = c.parse_frame(raw, plat.protocol, plat.cipher)
                f = m.decode_body(fr.header.msg_id, fr.body, fr.header.protocol)
            except c.Jt809Error:
                bad += 1
                continue
            h = fr.header
            if h.msg_id == m.LOGIN:
                p = self.plats.get(h.center_id)
                if p is None or f.get("center_id", h.center_id) != h.center_id or f["user_id"] != p.user_id \
                        or f["password"] != p.password:
                    link["refused"] += 1
                    if link["refused"] >= 100:
                        return frames, hb, pings, True, bad
                elif not logged_in:
                    logged_in, plat = True, p
                continue
            if not logged_in or h.center_id != plat.center_id:
                continue
            if h.msg_id == m.HEARTBEAT:
                hb += 1
            elif h.msg_id == m.LOGOUT and f["user_id"] == plat.user_id and f["password"] == plat.password:
                logged_in, closed = False, True
            elif h.msg_id == m.DYNAMIC:
                plate = f.get("plate") or ""
                found = [dict(p, recv_ts=1_762_740_000_000) for p in m.message_pings(m.DYNAMIC, f, plat.center_id)]
                if plate and "\ufffd" not in plate and len(plate) <= 16 and found \
                        and not validate_columns(dicts_getter(found), len(found), years=self.years)[1]:
                    pings += len(found)
        return frames, hb, pings, closed, bad

    def run(self, data: bytes):
        c, m = self.c, self.m
        try:
            proto = c.parse_frame(data, cipher=self.cipher).header.protocol
        except c.Jt809Error as e:
            proto = e.header.protocol if e.header is not None else 2011
        link = self.links.get(proto) or self._connect(proto)
        hb_frame = self._frame(link["plat"], m.HEARTBEAT, b"")
        model = self._model(link, data + hb_frame)
        if model is None or model[3]:
            # the input does not end where it was sent, or it closes the link (a valid logout): send it,
            # end the connection, and log in again on a new one (the server must still accept us)
            link["sock"].sendall(data + hb_frame)
            link["sock"].shutdown(self.socket.SHUT_WR)
            with contextlib.suppress(OSError):
                while link["sock"].recv(65536):
                    pass
            if model is not None:
                self.expected_pings += model[2]
            else:
                self.unmodelled += 1
            self._connect(proto)
            self._check()
            raise InvalidRecord("connection_ended", "input without an end, or a logout")
        frames, hb, pings, _, bad = model
        link["sock"].sendall(data + hb_frame)
        try:
            self._read(link, m.HEARTBEAT_RESP, hb)
        except ConnectionError:
            self._check()
            raise LinkCrash("the link server closed a logged-in link that sent a heartbeat") from None
        self.expected_pings += pings
        self._check()
        if bad:
            raise InvalidRecord("dead_lettered", f"{bad} frame(s) the link refused")
        return frames

    def _check(self) -> None:
        from roadwatch.models.pingbatch import decode_batch
        from roadwatch.streams.topics import DEAD_LETTER, GPS_PINGS
        if self.errors:
            err, self.errors[:] = self.errors[0], []
            raise LinkCrash(err)
        with self.publisher._lock:
            records, self.publisher.records = self.publisher.records, []
        for topic, _key, value, _part in records:
            if topic == DEAD_LETTER:
                reason = orjson.loads(value).get("reason")
                if reason not in INPUT_FAULTS_809:
                    raise LinkCrash(f"dead letter that is not an input fault: {reason!r} {value[:200]!r}")
            elif topic == GPS_PINGS:
                try:
                    self.published_pings += len(decode_batch(value))
                except InvalidRecord as e:
                    raise LinkCrash(f"the link published a batch the worker refuses: {e}") from None

    def finish(self) -> None:
        """All pending pings out; every published ping came from a frame that decoded (and every such
        frame's pings were published)."""
        srv = self.server

        async def drain():
            srv.batcher.flush()
            await srv.outbox.drain(20.0, "fuzz")
        self.host.call(drain(), 30)
        self._check()
        if self.published_pings != self.expected_pings:
            raise LinkCrash(f"{self.published_pings} pings published, {self.expected_pings} carried by frames "
                            f"that decoded")

    def close(self) -> None:
        import shutil
        for link in self.links.values():
            link["sock"].close()
        self.host.call(self.server.aclose(), 30)
        self.host.stop()
        self.server.conn.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def target(self) -> Target:
        seeds = _frames_809()

        def mutate(rnd: random.Random, data: bytes) -> bytes:
            try:
                cid = self.c.parse_frame(data, cipher=self.cipher).header.center_id
            except self.c.Jt809Error:
                cid = None
            own = next((p.center_id for p in self.plats.values() if cid == p.center_id), PLAT_2011["center_id"])
            return _mutate_809(rnd, data, own)

        t = Target("jt809_link", seeds, self.run, (InvalidRecord,), mutate=mutate)
        t.close, t.finish = self.close, self.finish
        return t


ALL = ("gateway", "jt808", "pingbatch", "pingarrow", "engine", "wim", "wim_assess", "ping", "driver_event", "registry", "config",
       "scenario", "jt809", "jt809_link")


def make_targets(names, tmp: Path) -> list[Target]:
    out = []
    for n in names:
        if n == "gateway":
            out.append(GatewayTarget().target())
        elif n == "jt809_link":
            out.append(LinkTarget().target())
        elif n == "config":
            out.append(config_target(tmp))
        elif n == "scenario":
            out.append(scenario_target(tmp))
        else:
            out.append(globals()[f"{n}_target"]())
    return out


# --- the run ------------------------------------------------------------------------------------------

def fuzz_target(t: Target, count: int, rnd: random.Random, keep: int = 3) -> dict:
    import warnings
    outcome: Counter = Counter()
    reasons: Counter = Counter()
    crashes: dict[str, list] = {}
    t0 = time.perf_counter()
    for i in range(count):
        r = rnd.random()
        if r < 0.1:
            data = rnd.randbytes(rnd.randrange(0, 300))
        elif r < 0.15:
            data = rnd.choice(t.seeds)
        else:
            seed = rnd.choice(t.seeds)
            if t.mutate is not None and rnd.random() < 0.6:
                data = t.mutate(rnd, seed)
            elif t.json_seeds and rnd.random() < 0.6:
                data = mutate_json(rnd, seed)
            else:
                data = mutate_bytes(rnd, seed, t.seeds)
            if t.text and rnd.random() < 0.5:
                data = data.decode("utf-8", "replace").encode()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # numpy overflow warnings are not crashes
                t.run(data)
            outcome["accepted"] += 1
        except t.expected as e:
            outcome["rejected"] += 1
            reasons[getattr(e, "code", type(e).__name__)] += 1
        except Exception as e:  # noqa: BLE001 - that is what we are looking for
            outcome["crash"] += 1
            tb = traceback.extract_tb(e.__traceback__)[-1]
            kind = f"{type(e).__name__} at {Path(tb.filename).name}:{tb.lineno}"
            lst = crashes.setdefault(kind, [])
            if len(lst) < keep:
                lst.append({"input_b64": base64.b64encode(data[:4000]).decode(), "error": str(e)[:200]})
    if t.finish is not None:
        try:
            t.finish()
        except Exception as e:  # noqa: BLE001 - an end-of-run check failed: counted as a crash
            outcome["crash"] += 1
            crashes.setdefault(f"{type(e).__name__} at the end of the run", []).append(
                {"input_b64": "", "error": str(e)[:200]})
    return {"target": t.name, "tried": count, "accepted": outcome["accepted"], "rejected": outcome["rejected"],
            "crashes": outcome["crash"], "reasons": dict(reasons.most_common()), "crash_kinds": crashes,
            "seconds": round(time.perf_counter() - t0, 2)}


# share of a ``--total`` run per target: the file-based parsers (config, scenario: a temporary file per input)
# cost ~3 ms an input, the JT/T 809 link (a TCP round trip and a model of the link per input) ~3.5 ms, the
# others 0.03–1 ms
WEIGHTS = {"config": 0.2, "scenario": 0.1, "jt809_link": 0.5}


def split_total(total: int, targets) -> dict[str, int]:
    """Inputs per target so that they add up to ``total`` (at least one each)."""
    w = {t: WEIGHTS.get(t, 1.0) for t in targets}
    counts = {t: max(1, int(total * w[t] / sum(w.values()))) for t in targets}
    counts[max(counts, key=counts.get)] += total - sum(counts.values())
    return counts


def run_fuzz(count: int | dict, seed: int = 1, targets=ALL) -> list[dict]:
    """``count``: inputs per target, or a dict target → inputs (``split_total``)."""
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="roadwatch-fuzz-") as tmp:
        out = []
        for t in make_targets(targets, Path(tmp)):
            n = count[t.name] if isinstance(count, dict) else count
            try:
                out.append(fuzz_target(t, n, random.Random(rnd.random())))
            finally:
                if t.close is not None:
                    t.close()
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000, help="inputs per target (default 2000)")
    ap.add_argument("--total", type=int, help="inputs in all, shared out over the targets (overrides --count)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--target", action="append", choices=ALL, help="only these targets (repeatable)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args(argv)
    if args.count < 1 or (args.total is not None and args.total < 1):
        ap.error("--count and --total must be ≥ 1")
    targets = tuple(args.target or ALL)
    t0 = time.perf_counter()
    results = run_fuzz(split_total(args.total, targets) if args.total else args.count, args.seed, targets)
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    else:
        for r in results:
            print(f"{r['target']:<11} tried {r['tried']:>7}  accepted {r['accepted']:>7}  rejected {r['rejected']:>7}"
                  f"  crashes {r['crashes']:>4}  ({r['seconds']:.1f} s)  reasons: "
                  + ", ".join(f"{k} {v}" for k, v in list(r["reasons"].items())[:6]))
            for kind, examples in r["crash_kinds"].items():
                print(f"    CRASH {kind}: {examples[0]['error']}\n      input (base64): {examples[0]['input_b64'][:300]}")
    total = sum(r["tried"] for r in results)
    crashes = sum(r["crashes"] for r in results)
    print(f"total: {total} inputs, {crashes} crashes, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
