"""JT/T 809 codec: public test vectors (tests/data/jt809-vectors.jsonl, sources named per line), round trips
of every message we send, the lenient rules, stream splitting and fuzzing."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roadwatch.streams.jt809 import codec as c
from roadwatch.streams.jt809 import messages as m

VECTORS = [orjson.loads(ln) for ln in (Path(__file__).parent / "data" / "jt809-vectors.jsonl").read_text().splitlines()
           if ln and not ln.startswith("#")]
CIPHER = c.Cipher(30000000, 20000000, 20000000)


def _subset(actual: dict, expected: dict) -> None:
    for k, v in expected.items():
        if isinstance(v, dict):
            _subset(actual[k], v)
        elif isinstance(v, float):
            assert actual[k] == pytest.approx(v, abs=1e-9), k
        else:
            assert actual[k] == v, k


@pytest.mark.parametrize("vec", [v for v in VECTORS if v["kind"] == "frame"], ids=lambda v: v["source"][:60])
def test_public_frames_decode(vec):
    cipher = c.Cipher.parse(vec["cipher"]) if vec.get("cipher") else None
    fr = c.parse_frame(bytes.fromhex(vec["hex"]), vec.get("protocol"), cipher)
    fields = m.decode_body(fr.header.msg_id, fr.body, fr.header.protocol)
    h = fr.header
    actual = {"msg_id": h.msg_id_hex, "sn": h.sn, "center_id": h.center_id, "version": h.version,
              "protocol": h.protocol, "encrypted": h.encrypted, "encrypt_key": h.encrypt_key, "utc_time": h.utc_time,
              **fields}
    _subset(actual, vec["expect"])
    assert fr.rules == []


@pytest.mark.parametrize("vec", [v for v in VECTORS if v["kind"] == "codec"], ids=lambda v: v["source"][:60])
def test_public_frames_header_and_escapes(vec):
    raw = bytes.fromhex(vec["hex"])
    fr = c.parse_frame(raw, vec.get("protocol"))
    e = vec["expect"]
    assert (fr.header.length, fr.header.sn, fr.header.msg_id, fr.header.center_id) == \
           (e["length"], e["sn"], e["msg_id"], e["center_id"])
    assert len(fr.body) == e["body_len"]
    if "utc_time" in e:
        assert fr.header.utc_time == e["utc_time"]
    assert len(raw) > e["length"]            # the vector holds escapes: MSG_LENGTH counts un-escaped bytes
    assert c.split_frames(bytearray(b"\x00\x01" + raw + raw)) == [raw, raw]


def test_public_cipher_vector_and_key_rules():
    vec = next(v for v in VECTORS if v["kind"] == "cipher")
    ci = c.Cipher.parse(vec["cipher"])
    assert c.crypt(bytes.fromhex(vec["plain"]), vec["key"], ci).hex().upper() == vec["crypted"]
    assert c.crypt(bytes.fromhex(vec["crypted"]), vec["key"], ci).hex().upper() == vec["plain"]
    data = bytes(range(40))
    assert c.crypt(data, 0, ci) == c.crypt(data, 1, ci)                    # a key of 0 counts as 1
    assert c.crypt(c.crypt(data, 7, c.Cipher(0, 5, 9)), 7, c.Cipher(0, 5, 9)) == data   # M1 = 0 does not divide by 0


@pytest.mark.parametrize("vec", [v for v in VECTORS if v["kind"] == "body"], ids=lambda v: v["source"][-40:])
def test_public_body_vectors(vec):
    data = bytes.fromhex(vec["hex"])
    if "msg_id" in vec:
        got = m.decode_body(int(vec["msg_id"], 16), data, vec["protocol"])
    else:
        got = m.SUB_DECODERS[int(vec["data_type"], 16)](data, vec["protocol"])
    _subset(got, vec["expect"])


def test_crc_is_ccitt_false():
    assert c.crc16(b"123456789") == 0x29B1


def test_escape_round_trip_covers_all_four_pairs():
    data = bytes([0x5B, 0x5A, 0x5D, 0x5E, 0x01, 0x02])
    assert c.escape(data) == bytes.fromhex("5A015A025E015E020102")
    assert c.unescape(c.escape(data)) == data
    with pytest.raises(c.Jt809Error) as e:
        c.unescape(b"\x5a\x03")
    assert e.value.code == "bad_escape"


PING = {"plate": "湘A12345", "plate_color": 2, "ts": "2025-03-05T08:30:15+08:00", "lat": 28.123456, "lon": 112.654321,
        "speed_kmh": 61.0, "heading": 91, "altitude_m": -12.0, "alarm_flags": 0x100, "status_flags": 3, "mileage_km": 1234.0}


@pytest.mark.parametrize("proto", [2011, 2019])
@pytest.mark.parametrize("cipher", [None, CIPHER])
@pytest.mark.parametrize("escaped", [True, False])
def test_position_frames_round_trip(proto, cipher, escaped):
    body = m.encode_with_vehicle(PING["plate"], 2, m.REAL_LOCATION, m.encode_position(PING, proto))
    raw = c.build_frame(m.DYNAMIC, body, sn=7, center_id=11, protocol=proto, cipher=cipher, encrypt_key=0x5B5D5A5E,
                        utc_time=0x5B5D5A5E if proto == 2019 else None, escaped=escaped)
    fr = c.parse_frame(raw, proto, cipher)
    # the key and time hold 0x5B/0x5D/0x5A/0x5E, so an unescaped sender's frame needs the raw rule
    assert fr.rules == ([] if escaped else ["raw"])
    f = m.decode_body(fr.header.msg_id, fr.body, proto)
    [ping] = m.message_pings(m.DYNAMIC, f, 11)
    for k in ("plate", "plate_color", "ts", "lat", "lon", "speed_kmh", "heading", "altitude_m", "alarm_flags",
              "status_flags", "mileage_km"):
        assert ping[k] == PING[k], k
    assert ping["terminal_id"] == "809:11" and ping["reupload"] is False


def test_2019_sender_with_a_2011_position_is_accepted_and_recorded():
    body = m.encode_with_vehicle("湘A1", 1, m.REAL_LOCATION, m.encode_position_2011(PING))
    f = m.decode_body(m.DYNAMIC, body, 2019)
    assert f["rules"] == ["position_2011_in_2019"] and f["position"]["lat"] == PING["lat"]


@pytest.mark.parametrize("proto", [2011, 2019])
def test_reupload_and_inspection_messages_round_trip(proto):
    pings = [dict(PING, ts=f"2025-03-05T08:3{i}:00+08:00") for i in range(5)]
    f = m.decode_body(m.DYNAMIC, m.encode_with_vehicle("湘A1", 1, m.HISTORY_LOCATION, m.encode_history(pings, proto)), proto)
    assert [p["ts"] for p in m.message_pings(m.DYNAMIC, f, 3)] == [p["ts"] for p in pings]
    assert all(p["reupload"] for p in m.message_pings(m.DYNAMIC, f, 3))
    q = m.decode_body(m.DOWN_PLATFORM_MSG, m.encode_without_vehicle(
        m.POST_QUERY_REQ, m.encode_query_req(1, "20180920", 42, "请报告值班人员", proto, 10)), proto)
    assert (q["data_type"], q["info_id"], q["question"], q["object_id"]) == ("0x9301", 42, "请报告值班人员", "20180920")
    a = m.decode_body(m.PLATFORM_MSG, m.encode_without_vehicle(
        m.POST_QUERY_ACK, m.encode_query_ack(1, "20180920", "张三在岗", proto, info_id=42, source_msg_sn=99)), proto)
    assert a["answer"] == "张三在岗"
    assert (a.get("info_id") if proto == 2011 else a.get("source_msg_sn")) == (42 if proto == 2011 else 99)


def test_login_bodies_round_trip():
    for proto in (2011, 2019):
        f = m.decode_body(m.LOGIN, m.encode_login(5, "pw", "10.1.2.3", 9000, proto, 77), proto)
        assert (f["user_id"], f["password"], f["down_link_ip"], f["down_link_port"]) == (5, "pw", "10.1.2.3", 9000)
        assert f.get("center_id") == (77 if proto == 2019 else None)
    assert m.decode_body(m.LOGIN_RESP, m.encode_login_resp(4, 0xDEADBEEF), 2011) == {"result": 4, "verify_code": 0xDEADBEEF}


def test_wrong_msg_length_is_tolerated_when_the_crc_holds():
    raw = bytearray(c.build_frame(m.HEARTBEAT, b"", sn=1, center_id=9))
    raw[4] += 3                                   # MSG_LENGTH off by 3 …
    inner = c.unescape(bytes(raw[1:-3]))
    crc = c.crc16(inner).to_bytes(2, "big")        # … and a CRC that covers it (a sender that miscounts)
    frame = bytes(raw[:1]) + c.escape(inner + crc) + b"\x5d"
    assert c.split_frames(bytearray(frame + frame)) == [frame, frame]      # delimited by the next 0x5D
    assert c.parse_frame(frame).rules == ["length_ignored"]


def test_bad_crc_is_reported_with_the_header():
    raw = bytearray(c.build_frame(m.HEARTBEAT, b"", sn=1, center_id=9))
    raw[-2] ^= 0x01
    with pytest.raises(c.Jt809Error) as e:
        c.parse_frame(bytes(raw))
    assert e.value.code == "bad_crc" and e.value.header.center_id == 9


def test_encrypted_body_without_a_key_is_an_error_not_garbage():
    raw = c.build_frame(m.HEARTBEAT, b"\x01\x02", sn=1, center_id=9, cipher=CIPHER, encrypt_key=3)
    with pytest.raises(c.Jt809Error) as e:
        c.parse_frame(raw)
    assert e.value.code == "encrypted"


def test_split_frames_waits_for_partial_frames_and_mixes_senders():
    a = c.build_frame(m.HEARTBEAT, b"", sn=0x5B5D, center_id=0x5A5E)                 # escaped
    b = c.build_frame(m.HEARTBEAT, b"", sn=0x5B5D, center_id=0x5A5E, escaped=False)   # not escaped
    assert a != b
    stream = b"noise" + a + b + a
    buf = bytearray()
    got = []
    for i in range(0, len(stream), 3):               # three bytes at a time
        buf += stream[i:i + 3]
        got += c.split_frames(buf)
    assert got == [a, b, a] and not buf
    assert [c.parse_frame(f).rules for f in got] == [[], ["raw"], []]


def test_split_frames_bounds_an_unterminated_frame():
    buf = bytearray(b"\x5b" + b"\x00\x00\x10\x00" + b"\x11" * 300)
    with pytest.raises(c.Jt809Error) as e:
        c.split_frames(buf, max_frame_bytes=256)
    assert e.value.code == "frame_too_large" and not buf


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([None, 2011, 2019]), st.booleans())
def test_random_bytes_raise_only_codec_errors(data, proto, with_cipher):
    cipher = CIPHER if with_cipher else None
    for candidate in (data, b"\x5b" + data + b"\x5d"):
        try:
            fr = c.parse_frame(candidate, proto, cipher)
            m.decode_body(fr.header.msg_id, fr.body, fr.header.protocol)
        except c.Jt809Error:
            pass
    buf = bytearray(data)
    try:
        for f in c.split_frames(buf, 4096):
            try:
                c.parse_frame(f, proto, cipher)
            except c.Jt809Error:
                pass
    except c.Jt809Error:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([2011, 2019]))
def test_random_bodies_of_every_message_raise_only_codec_errors(body, proto):
    for msg_id in m.DECODERS:
        try:
            m.decode_body(msg_id, body, proto)
        except c.Jt809Error:
            pass
    for data_type in m.SUB_DECODERS:
        for wrap in (m.encode_with_vehicle("湘A1", 1, data_type, body), m.encode_without_vehicle(data_type, body)):
            for msg_id in (m.DYNAMIC, m.PLATFORM_MSG, m.WARN_MSG, m.DOWN_PLATFORM_MSG):
                try:
                    m.decode_body(msg_id, wrap, proto)
                except c.Jt809Error:
                    pass
