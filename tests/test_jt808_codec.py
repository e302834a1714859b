"""JT/T 808 codec: framing, header variants, error codes, body decoders/encoders, property tests."""
from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roadwatch.streams.jt808 import codec as c
from roadwatch.streams.jt808.alarms import (ALARM_BITS_2013, ALARM_BITS_2019, ALARM_KEYS, alarm_keys, alarm_names,
                                  status_names)

# SmallChi/JT808 README vector (JT/T 808-2019 §4.4 escaping): serial 126 = 0x7E and fuel byte 0x7D are escaped.
SMALLCHI = bytes.fromhex(
    "7E0200002612345678901200 7D02 0000000100000002 00BA7F0E 07E4F11C 0028 003C 0000 181015101010"
    "01040000006402 02007D01 13 7E".replace(" ", ""))

CODES = {"bad_frame", "bad_escape", "bad_checksum", "truncated", "length_mismatch", "bad_bcd", "bad_time",
         "bad_value", "unsupported_msg", "encrypted", "frame_too_large"}


def xor(data: bytes) -> int:
    out = 0
    for b in data:
        out ^= b
    return out


def wire(raw: bytes) -> bytes:
    """Reference framing written independently of the codec: append XOR, escape by hand, delimit."""
    raw = raw + bytes([xor(raw)])
    esc = bytearray()
    for b in raw:
        esc += {0x7E: b"\x7d\x02", 0x7D: b"\x7d\x01"}.get(b, bytes([b]))
    return b"\x7e" + bytes(esc) + b"\x7e"


# --- §6.1 test vector ---------------------------------------------------------------------------------

def test_smallchi_vector():
    msg = c.parse_frame(SMALLCHI)
    f = msg.fields
    assert (msg.msg_id, msg.terminal_id, msg.serial, msg.version) == (0x0200, "123456789012", 126, 2013)
    assert len(msg.body) == 38
    assert f["alarm_flags"] == 1 and f["status_flags"] == 2
    assert f["lat"] == pytest.approx(12.222222) and f["lon"] == pytest.approx(132.444444)
    assert (f["altitude_m"], f["speed_kmh"], f["heading"]) == (40, 6.0, 0)
    assert f["ts"] == "2018-10-15T10:10:10+08:00"
    assert f["extras"] == {"mileage_km": 10.0, "fuel_l": 12.5}


def test_smallchi_vector_rebuilt_byte_for_byte():
    msg = c.parse_frame(SMALLCHI)
    assert c.build_frame(0x0200, "123456789012", 126, msg.body) == SMALLCHI
    assert c.checksum(c.unescape(SMALLCHI[1:-1])[:-1]) == 0x13


# --- escaping and framing -----------------------------------------------------------------------------

def test_escape_table():
    assert c.escape(b"\x7e") == b"\x7d\x02"
    assert c.escape(b"\x7d") == b"\x7d\x01"
    assert c.escape(b"\x7d\x02") == b"\x7d\x01\x02"      # a literal 7D 02 must not read back as 7E
    assert c.unescape(b"\x7d\x01\x02") == b"\x7d\x02"
    assert c.unescape(b"\x30\x7d\x02\x7d\x01\x31") == b"\x30\x7e\x7d\x31"


@pytest.mark.parametrize("bad", [b"\x7d", b"\x01\x7d", b"\x7d\x00", b"\x7d\x03", b"\x7d\x7d"])
def test_bad_escape(bad):
    with pytest.raises(c.Jt808Error) as e:
        c.unescape(bad)
    assert e.value.code == "bad_escape"


def test_split_frames_incremental_and_noise():
    f1 = c.build_frame(0x0002, "1", 1, b"")
    f2 = c.build_frame(0x0002, "2", 2, b"")
    buf = bytearray(b"noise" + f1 + f2[:5])
    assert c.split_frames(buf) == [f1]
    assert bytes(buf) == f2[:5]
    buf += f2[5:]
    assert c.split_frames(buf) == [f2]
    assert buf == bytearray()


def test_split_frames_back_to_back_7e7e():
    f1 = c.build_frame(0x0002, "1", 1, b"")
    buf = bytearray(f1 + f1)                      # ...7E7E...: end of one, start of the next
    assert c.split_frames(buf) == [f1, f1]


def test_split_frames_size_limit_boundary():
    f = c.build_frame(0x0002, "1", 1, b"")        # 15 bytes
    assert c.split_frames(bytearray(f), max_frame_bytes=len(f)) == [f]
    with pytest.raises(c.Jt808Error) as e:
        c.split_frames(bytearray(f), max_frame_bytes=len(f) - 1)
    assert e.value.code == "frame_too_large"
    # an unterminated frame: allowed up to the limit, rejected one byte over it
    assert c.split_frames(bytearray(b"\x7e" + b"\x01" * 9), max_frame_bytes=10) == []
    with pytest.raises(c.Jt808Error):
        c.split_frames(bytearray(b"\x7e" + b"\x01" * 10), max_frame_bytes=10)


# --- header variants ------------------------------------------------------------------------------------

def test_2019_header_by_hand():
    body = b""
    raw = struct.pack(">HHB", 0x0002, 0x4000 | len(body), 1) + bytes.fromhex("00000000013912345678") + b"\x00\x05"
    msg = c.parse_frame(wire(raw))
    assert (msg.version, msg.protocol_version, msg.terminal_id, msg.serial) == (2019, 1, "00000000013912345678", 5)
    assert c.build_frame(0x0002, "13912345678", 5, b"", version=2019) == wire(raw)


def test_split_packet_header_and_reassembly():
    body = c.encode_batch_upload([_ping(i) for i in range(3)], reupload=True)
    a, b = body[:20], body[20:]
    f1 = c.build_frame(0x0704, "13800000000", 10, a, packet=(2, 1))
    f2 = c.build_frame(0x0704, "13800000000", 11, b, packet=(2, 2))
    m1, m2 = c.parse_frame(f1), c.parse_frame(f2)
    assert (m1.packet_count, m1.packet_index, m1.fields) == (2, 1, None)
    r = c.Reassembler()
    assert r.add(m2) is None                      # order of arrival does not matter
    full = r.add(m1)
    assert full.serial == 10 and full.fields["count"] == 3 and full.fields["reupload"] is True


def test_packet_index_out_of_range():
    with pytest.raises(c.Jt808Error) as e:
        c.parse_frame(c.build_frame(0x0200, "1", 1, b"x", packet=(2, 3)))
    assert e.value.code == "bad_value"


# --- error codes --------------------------------------------------------------------------------------

def _hb_raw(props: int = 0, terminal: bytes = bytes(6)) -> bytes:
    return struct.pack(">HH", 0x0002, props) + terminal + b"\x00\x01"


@pytest.mark.parametrize("frame,code", [
    (b"\x7e\x00\x02\x00", "bad_frame"),                                  # no end delimiter
    (b"\x7e\x00\x02\x7e\x00\x7e", "bad_frame"),                          # 0x7E inside
    (b"\x7e\x00\x02\x7d\x05\x7e", "bad_escape"),
    (wire(_hb_raw()[:-1]), "truncated"),                                 # 11-byte header
    (wire(_hb_raw(props=1)), "truncated"),                              # declares 1 body byte, has 0
    (wire(_hb_raw() + b"\x00"), "length_mismatch"),                     # 1 body byte, declares 0
    # (a non-BCD terminal id is accepted as its hex string: tests/test_jt808_leniency.py)
    (wire(_hb_raw(props=0x0400)), "encrypted"),
    (wire(struct.pack(">HH", 0x0900, 0) + bytes(6) + b"\x00\x01"), "unsupported_msg"),
])
def test_error_codes(frame, code):
    with pytest.raises(c.Jt808Error) as e:
        c.parse_frame(frame)
    assert e.value.code == code


def test_bad_checksum_carries_header():
    frame = bytearray(c.build_frame(0x0200, "13800000001", 77, c.encode_location(_ping(0))))
    frame[-2] ^= 0x01 if frame[-2] not in (0x7C, 0x7F) else 0x10
    with pytest.raises(c.Jt808Error) as e:
        c.parse_frame(bytes(frame))
    assert e.value.code == "bad_checksum"
    assert (e.value.message.msg_id, e.value.message.serial) == (0x0200, 77)


@pytest.mark.parametrize("time_hex,code", [("181015101010", None), ("000000000000", "bad_time"),
                                           ("181315101010", "bad_time"), ("18101524" "0000", "bad_time"),
                                           ("1810151010A0", "bad_bcd")])
def test_location_time_validation(time_hex, code):
    body = struct.pack(">IIIIhHH", 0, 2, 1, 1, 0, 0, 0) + bytes.fromhex(time_hex)
    if code is None:
        assert c.decode_location(body)["ts"] == "2018-10-15T10:10:10+08:00"
    else:
        with pytest.raises(c.Jt808Error) as e:
            c.decode_location(body)
        assert e.value.code == code


def test_location_signs_altitude_and_speed_units():
    # lat 12.5 S, lon 120.25 W, altitude −154 m (Turpan depression), speed raw 605 → 60.5 km/h
    body = struct.pack(">IIIIhHH", 0, 0b1110, 12_500_000, 120_250_000, -154, 605, 359) + bytes.fromhex("240229235959")
    f = c.decode_location(body)
    assert (f["lat"], f["lon"], f["altitude_m"], f["speed_kmh"], f["heading"]) == (-12.5, -120.25, -154, 60.5, 359)
    assert f["ts"] == "2024-02-29T23:59:59+08:00"


def test_location_extras_tolerant_tail():
    base = struct.pack(">IIIIhHH", 0, 2, 1, 1, 0, 0, 0) + bytes.fromhex("181015101010")
    f = c.decode_location(base + b"\x01\x04\x00\x00\x01\x00" + b"\x30\x05\x01")      # second TLV runs short
    assert f["extras"] == {"mileage_km": 25.6}
    assert "extras_error" in f
    g = c.decode_location(base + b"\x01\x02\x00\x05")      # wrong length for 0x01 → kept raw, not misread
    assert g["extras"] == {} and g["extras_raw"] == {"0x01": "0005"}


def test_batch_item_errors_and_structure():
    good = c.encode_location(_ping(1))
    bad = struct.pack(">IIIIhHH", 0, 2, 1, 1, 0, 0, 0) + bytes(6)       # time 00-00-00
    body = struct.pack(">HB", 2, 0) + struct.pack(">H", len(good)) + good + struct.pack(">H", len(bad)) + bad
    f = c.decode_batch_location(body)
    assert len(f["items"]) == 1 and f["item_errors"][0]["index"] == 1 and f["item_errors"][0]["code"] == "bad_time"
    with pytest.raises(c.Jt808Error) as e:
        c.decode_batch_location(body + b"\x00")
    assert e.value.code == "length_mismatch"
    with pytest.raises(c.Jt808Error) as e:
        c.decode_batch_location(struct.pack(">HB", 3, 0) + body[3:])
    assert e.value.code == "truncated"
    with pytest.raises(c.Jt808Error) as e:
        c.decode_batch_location(struct.pack(">HB", 2, 2) + body[3:])
    assert e.value.code == "bad_value"


# --- other bodies: by-hand layouts ---------------------------------------------------------------------

def test_driver_card_2013_by_hand():
    name, org = "张三".encode("gbk"), "北京市交通委".encode("gbk")
    body = (b"\x01" + bytes.fromhex("240105083000") + b"\x00" + bytes([len(name)]) + name
            + b"110101199001011234".ljust(20, b"\x00") + bytes([len(org)]) + org + bytes.fromhex("20281231"))
    f = c.decode_driver_card(body, 2013)
    assert f == {"status": 1, "event": "login", "ts": "2024-01-05T08:30:00+08:00", "ic_result": 0,
                 "driver_name": "张三", "qualification_no": "110101199001011234", "issuing_org": "北京市交通委",
                 "expiry": "2028-12-31"}
    assert c.encode_driver_card(1, "2024-01-05T08:30:00+08:00", 0, "张三", "110101199001011234", "北京市交通委",
                                "2028-12-31") == body
    f19 = c.decode_driver_card(body + b"ID123".ljust(20, b"\x00"), 2019)
    assert f19["id_number"] == "ID123"
    with pytest.raises(c.Jt808Error):
        c.decode_driver_card(body, 2019)          # 2019 layout requires the ID number field


def test_driver_card_logout_and_failed_read():
    assert c.decode_driver_card(b"\x02" + bytes.fromhex("240105173000")) == {
        "status": 2, "event": "logout", "ts": "2024-01-05T17:30:00+08:00"}
    assert c.decode_driver_card(b"\x01" + bytes.fromhex("240105173000") + b"\x02")["ic_result"] == 2
    with pytest.raises(c.Jt808Error) as e:
        c.decode_driver_card(b"\x03" + bytes.fromhex("240105173000"))
    assert e.value.code == "bad_value"


def test_registration_2013_2019_and_2011_by_hand():
    plate = "粤B12345".encode("gbk")
    b13 = struct.pack(">HH", 44, 300) + b"MAKER" + b"MODEL".ljust(20, b"\x00") + b"T000001" + b"\x02" + plate
    assert c.decode_registration(b13, 2013) == {"province": 44, "city": 300, "maker": "MAKER", "model": "MODEL",
                                               "device_id": "T000001", "plate_color": 2, "plate": "粤B12345"}
    assert c.encode_registration("粤B12345", 2, 44, 300, "MAKER", "MODEL", "T000001") == b13
    b19 = (struct.pack(">HH", 44, 300) + b"MAKER".ljust(11, b"\x00") + b"M".ljust(30, b"\x00")
           + b"DEV".ljust(30, b"\x00") + b"\x00" + b"LSVAU2180N2183294")
    f19 = c.decode_registration(b19, 2019)
    assert f19["vin"] == "LSVAU2180N2183294" and f19["device_id"] == "DEV" and "plate" not in f19
    b11 = struct.pack(">HH", 1, 2) + b"MAKER" + b"MODEL123" + b"T000001" + b"\x01" + plate
    assert c.decode_registration(b11, 2013)["plate"] == "粤B12345"


def test_authentication_and_responses():
    assert c.decode_authentication(b"ABC123") == {"auth_code": "ABC123"}
    body19 = b"\x06ABC123" + b"860000000000001" + b"V1.0".ljust(20, b"\x00")
    assert c.decode_authentication(body19, 2019) == {"auth_code": "ABC123", "imei": "860000000000001",
                                                     "software_version": "V1.0"}
    assert c.encode_authentication("ABC123", "860000000000001", "V1.0", version=2019) == body19
    assert c.encode_general_response(0x1234, 0x0200, 4) == bytes.fromhex("1234020004")
    assert c.encode_registration_response(7, 0, "AC") == bytes.fromhex("000700") + b"AC"
    assert c.encode_registration_response(7, 2, "AC") == bytes.fromhex("000702")
    m = c.parse_frame(c.build_frame(0x8100, "1", 1, c.encode_registration_response(9, 0, "XYZ")))
    assert m.fields == {"reply_serial": 9, "result": 0, "auth_code": "XYZ"}
    m = c.parse_frame(c.build_frame(0x0001, "1", 1, bytes.fromhex("000A820100")))
    assert m.fields == {"reply_serial": 10, "reply_msg_id": 0x8201, "result": 0}


def test_heartbeat_and_deregistration_empty():
    assert c.parse_frame(c.build_frame(0x0002, "13800000000", 3, c.encode_heartbeat())).fields == {}
    assert c.parse_frame(c.build_frame(0x0003, "13800000000", 4, b"")).fields == {}


def test_body_length_limit():
    assert c.parse_frame(c.build_frame(0x0002, "1", 1, bytes(1023))).body == bytes(1023)
    with pytest.raises(c.Jt808Error):
        c.build_frame(0x0002, "1", 1, bytes(1024))


def test_location_to_ping_interchange_names():
    from roadwatch.models.records import GpsPing, parse_ping
    msg = c.parse_frame(SMALLCHI)
    p = c.location_to_ping(msg.fields, msg.terminal_id, "京A12345", 1, reupload=True, driver_id="D1")
    assert set(p) == set(GpsPing._options.fields)
    rec = parse_ping(p)
    assert (rec.plate, rec.reupload, rec.mileage_km, rec.speed_kmh, rec.altitude_m) == ("京A12345", True, 10.0, 6.0, 40.0)


# --- alarms --------------------------------------------------------------------------------------------

def test_alarm_names_versions():
    assert alarm_names(1 << 18) == ["当天累计驾驶超时"]
    assert alarm_names(1 << 31, 2013) == ["非法开门报警"] and alarm_names(1 << 31, 2019) == ["保留位31"]
    assert alarm_names(1 << 16, 2013) == ["保留位16"] and alarm_names(1 << 16, 2019) == ["胎压预警"]
    assert alarm_names(0b110) == ["超速报警", "疲劳驾驶"]
    assert alarm_names(0) == []
    assert len(ALARM_KEYS) == 32 and len(set(ALARM_KEYS.values())) == 32
    assert len(ALARM_BITS_2013) == 29 and len(ALARM_BITS_2019) == 31
    assert alarm_keys(0b11) == ["emergency", "overspeed"]


def test_status_names():
    assert status_names(0b11) == ["ACC开", "已定位"]
    assert status_names(0x300) == ["满载"] and status_names(0x100) == ["半载"]
    assert "车辆处于行驶状态" in status_names(1 << 22, 2019) and status_names(1 << 22, 2013) == []


# --- property tests ------------------------------------------------------------------------------------

def _ping(i: int) -> dict:
    ts = datetime(2024, 5, 1, 8, 0, tzinfo=timezone(timedelta(hours=8))) + timedelta(seconds=30 * i)
    return {"plate": "京A12345", "plate_color": 1, "terminal_id": "13800000000", "ts": ts.isoformat(),
            "lat": 39.9 + i * 1e-4, "lon": 116.4, "speed_kmh": 42.5, "heading": 90, "altitude_m": 50.0,
            "alarm_flags": 0, "status_flags": 3, "mileage_km": 1234.5}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.booleans(), st.booleans())
def test_random_bytes_only_raise_jt808error(data, delimit, unescaped):
    frame = b"\x7e" + data + b"\x7e" if delimit else data
    try:
        c.parse_frame(frame, unescaped=unescaped)
    except c.Jt808Error as e:
        assert e.code in CODES and e.detail


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(c.DECODERS)), st.binary(max_size=200), st.sampled_from([2013, 2019]))
def test_random_bodies_with_valid_framing_only_raise_jt808error(msg_id, body, version):
    """Valid checksum and length, random body: exercises every body decoder."""
    try:
        msg = c.parse_frame(c.build_frame(msg_id, "13800000000", 1, body, version=version))
    except c.Jt808Error as e:
        assert e.code in CODES and e.detail
    else:
        assert isinstance(msg.fields, dict)


@given(st.binary(max_size=200))
def test_escape_roundtrip(data):
    esc = c.escape(data)
    assert b"\x7e" not in esc
    assert c.unescape(esc) == data


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=60), min_size=1, max_size=5), st.data())
def test_split_frames_any_chunking(bodies, data):
    frames = [c.build_frame(0x0002, "1", i, b) for i, b in enumerate(bodies)]
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    buf, got, prev = bytearray(), [], 0
    for cut in cuts + [len(stream)]:
        buf += stream[prev:cut]
        prev = cut
        got += c.split_frames(buf)
    assert got == frames


ping_st = st.fixed_dictionaries({
    "lat": st.floats(-90, 90), "lon": st.floats(-180, 180),
    "speed_kmh": st.integers(0, 6553).map(lambda x: x / 10), "heading": st.integers(0, 359),
    "altitude_m": st.integers(-32768, 32767).map(float), "alarm_flags": st.integers(0, 2**32 - 1),
    "status_flags": st.integers(0, 2**32 - 1),
    "ts": st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31, 23, 59, 59)).map(
        lambda d: d.replace(microsecond=0, tzinfo=timezone(timedelta(hours=8))).isoformat()),
    "mileage_km": st.one_of(st.none(), st.integers(0, 2**32 - 1).map(lambda x: x / 10)),
})


@settings(max_examples=300, deadline=None)
@given(ping_st, st.sampled_from([2013, 2019]), st.integers(0, 0xFFFF),
       st.from_regex(r"[0-9]{1,12}", fullmatch=True))
def test_location_encode_decode_roundtrip(p, version, serial, phone):
    frame = c.build_frame(0x0200, phone, serial, c.encode_location(p), version=version)
    msg = c.parse_frame(frame)
    ping = c.message_pings(msg, "京A12345", 1)[0]
    assert msg.serial == serial and msg.terminal_id.lstrip("0") == phone.lstrip("0")
    lat_raw, lon_raw = round(abs(p["lat"]) * 1e6), round(abs(p["lon"]) * 1e6)
    exp_status = p["status_flags"] & ~0b1100 | (0b100 if p["lat"] < 0 and lat_raw else 0) \
        | (0b1000 if p["lon"] < 0 and lon_raw else 0)
    assert ping["status_flags"] == exp_status
    assert abs(ping["lat"] - p["lat"]) <= 5e-7 + 1e-12 and abs(ping["lon"] - p["lon"]) <= 5e-7 + 1e-12
    assert ping["ts"] == p["ts"]
    assert (ping["speed_kmh"], ping["heading"], ping["altitude_m"], ping["alarm_flags"]) == (
        p["speed_kmh"], p["heading"], p["altitude_m"], p["alarm_flags"])
    assert ping["mileage_km"] == p["mileage_km"]


@settings(max_examples=50, deadline=None)
@given(st.lists(ping_st, min_size=1, max_size=5), st.booleans())
def test_batch_encode_decode_roundtrip(pings, reupload):
    msg = c.parse_frame(c.build_frame(0x0704, "13800000000", 1, c.encode_batch_upload(pings, reupload)))
    out = c.message_pings(msg, "京A12345", 1)
    assert len(out) == len(pings) and all(p["reupload"] is reupload for p in out)
    assert [p["ts"] for p in out] == [p["ts"] for p in pings]


def test_encoder_rejects_bad_input_with_code():
    for bad in ({"lat": 91, "lon": 0, "ts": "2024-01-01T00:00:00+08:00"},
                {"lat": 0, "lon": 0, "ts": "2024-01-01T00:00:00"},          # naive time
                {"lat": 0, "lon": 0, "ts": "1999-12-31T23:59:59+08:00"},    # before BCD year 00
                {"lat": 0, "lon": 0, "ts": "2024-01-01T00:00:00+08:00", "speed_kmh": 6553.6}):
        with pytest.raises(c.Jt808Error) as e:
            c.encode_location(bad)
        assert e.value.code == "bad_value"
    # UTC input is converted to Beijing time on the wire
    body = c.encode_location({"lat": 0, "lon": 0, "ts": "2024-01-01T00:00:00+00:00"})
    assert body[22:28] == bytes.fromhex("240101080000")


def test_terminal_key_matches_across_header_versions():
    assert c.terminal_key("013800000001") == c.terminal_key("00000000013800000001") == c.terminal_key("13800000001")
    assert c.terminal_key("000000000000") == "0"
