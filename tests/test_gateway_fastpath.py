"""The gateway's 0x0200 fast path agrees with the codec field by field, and leaves everything it does not
fully understand to the codec (which then names the error)."""
from __future__ import annotations

import random

import pytest

from roadwatch.models.records import iso_to_epoch_ms
from roadwatch.streams.jt808 import codec as c
from roadwatch.streams.jt808 import fastpath as f


def _frames(rnd: random.Random, n: int):
    for i in range(n):
        version = rnd.choice((2013, 2019))
        phone = str(rnd.randrange(10**10, 10**11)) if rnd.random() < 0.9 else "0" * 11
        p = {"lat": rnd.uniform(-89.9, 89.9), "lon": rnd.uniform(-179.9, 179.9), "speed_kmh": rnd.randrange(0, 2000) / 10,
             "heading": rnd.randrange(0, 360), "altitude_m": rnd.randrange(-500, 6000), "status_flags": rnd.getrandbits(32),
             "alarm_flags": rnd.getrandbits(32), "ts": rnd.randrange(946_684_800_000, 4_070_908_800_000)}
        if rnd.random() < 0.5:
            p["mileage_km"] = rnd.randrange(0, 10**8) / 10
        if rnd.random() < 0.3:
            p["extras_raw"] = {f"0x{rnd.choice((0x25, 0x2A, 0x30, 0xE1)):02X}": rnd.randbytes(rnd.randrange(0, 6)).hex()}
        body = c.encode_location(p)
        if rnd.random() < 0.1:
            body += rnd.randbytes(rnd.randrange(1, 4))               # a broken extras tail: the codec keeps the fix
        yield c.build_frame(0x0200, phone, rnd.randrange(65536), body, version, rnd.randrange(0, 3))


def _mutate(rnd: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    for _ in range(rnd.randrange(1, 4)):
        i = rnd.randrange(1, len(b) - 1)
        b[i] = rnd.choice((0x7D, 0x7E, rnd.randrange(256)))
    return bytes(b)


def test_fast_path_matches_the_codec_on_valid_frames():
    rnd = random.Random(808)
    for frame in _frames(rnd, 3000):
        got = f.location(frame)
        msg = c.parse_frame(frame)
        assert got is not None, frame.hex()
        head, digits, serial, (ts, lat, lon, speed, heading, alt, alarm, status, mileage) = got
        loc = msg.fields
        assert (digits, serial) == (msg.terminal_id, msg.serial)
        assert (ts, lat, lon, speed, heading, alt, alarm, status) == (
            iso_to_epoch_ms(loc["ts"]), loc["lat"], loc["lon"], loc["speed_kmh"], loc["heading"],
            float(loc["altitude_m"]), loc["alarm_flags"], loc["status_flags"])
        assert mileage == loc["extras"].get("mileage_km")
        our = rnd.choice((77, 0x7D7E, 0x7E00, rnd.randrange(65536)))   # our serial may need escaping too
        ours = f.ack(head, our, serial, 0x0200, 0)
        theirs = c.build_frame(0x8001, msg.terminal_id, our, c.encode_general_response(serial, 0x0200, 0),
                               msg.version, msg.protocol_version or 1)
        assert ours == theirs


def test_fast_path_declines_what_it_does_not_fully_understand():
    rnd = random.Random(13)
    declined = accepted = 0
    for frame in _frames(rnd, 3000):
        bad = _mutate(rnd, frame)
        got = f.location(bad)
        try:
            msg = c.parse_frame(bad)
        except c.Jt808Error:
            assert got is None, bad.hex()                          # the codec's error path, never a ping
            declined += 1
            continue
        if got is not None:                                        # still valid: both must agree
            accepted += 1
            assert msg.msg_id == 0x0200 and (got[1], got[2]) == (msg.terminal_id, msg.serial)
            assert got[3][0] == iso_to_epoch_ms(msg.fields["ts"]) and got[3][1:3] == (msg.fields["lat"], msg.fields["lon"])
    assert declined > 1000 and accepted > 0


@pytest.mark.parametrize("data", [bytes(range(256)), b"", b"\x01", bytes(1000), b"\xff" * 33])
def test_xor_folds_like_the_byte_loop(data):
    assert f.xor(data) == c.checksum(data)
