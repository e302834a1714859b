"""JT/T 809 message bodies (2011 and 2019): decoders to dicts and the encoders the link and the simulator
send. Pure. Layouts are checked against public implementations' test vectors (tests/data/jt809-vectors.txt).

Strings are GBK, zero-padded to their width. Times inside bodies: the 2011 position carries a local
(Beijing) date and time; WARN_TIME and the 2019 header TIME are UTC seconds (8 bytes).
"""
from __future__ import annotations

import struct
from datetime import datetime, timezone
from typing import Any, Callable

from roadwatch.models.records import BEIJING, format_ts
from roadwatch.streams.jt808 import codec as c808

from .codec import Jt809Error

# main link (lower → upper) and slave link (upper → lower) business types
LOGIN, LOGIN_RESP, LOGOUT, LOGOUT_RESP = 0x1001, 0x1002, 0x1003, 0x1004
HEARTBEAT, HEARTBEAT_RESP = 0x1005, 0x1006
DISCONNECT_NOTICE, CLOSE_NOTICE = 0x1007, 0x1008
SLAVE_LOGIN, SLAVE_LOGIN_RESP, SLAVE_LOGOUT, SLAVE_LOGOUT_RESP = 0x9001, 0x9002, 0x9003, 0x9004
SLAVE_HEARTBEAT, SLAVE_HEARTBEAT_RESP, SLAVE_DISCONNECT_NOTICE, SLAVE_CLOSE_NOTICE = 0x9005, 0x9006, 0x9007, 0x9008
DYNAMIC, PLATFORM_MSG, WARN_MSG = 0x1200, 0x1300, 0x1400
DOWN_PLATFORM_MSG = 0x9300
# sub-business types
VEHICLE_REGISTER, REAL_LOCATION, HISTORY_LOCATION = 0x1201, 0x1202, 0x1203
POST_QUERY_ACK, POST_QUERY_REQ = 0x1301, 0x9301
WARN_ADPT_INFO = 0x1402

# 0x1002 results
LOGIN_OK, LOGIN_BAD_IP, LOGIN_BAD_CENTER, LOGIN_NO_USER, LOGIN_BAD_PASSWORD, LOGIN_BUSY, LOGIN_OTHER = 0, 1, 2, 3, 4, 5, 9

_POS_2011 = struct.Struct(">BBBHBBBIIHHIHHII")     # 36 bytes


class _R:
    __slots__ = ("d", "p", "what")

    def __init__(self, d: bytes, what: str):
        self.d, self.p, self.what = d, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.p + n > len(self.d):
            raise Jt809Error("truncated", f"{self.what}: need {n} bytes at offset {self.p}, have {len(self.d) - self.p}")
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def text(self, n: int) -> str:
        return _text(self.take(n))

    def rest(self) -> bytes:
        b = self.d[self.p:]
        self.p = len(self.d)
        return b

    def left(self) -> int:
        return len(self.d) - self.p


def _text(b: bytes) -> str:
    return b.split(b"\x00", 1)[0].decode("gbk", errors="replace").strip()


def _fixed(s: str, n: int, what: str) -> bytes:
    try:
        b = (s or "").encode("gbk")
    except UnicodeEncodeError:
        raise Jt809Error("bad_value", f"{what} {s!r} cannot be encoded in GBK") from None
    if len(b) > n:
        raise Jt809Error("bad_value", f"{what} is longer than {n} bytes")
    return b.ljust(n, b"\x00")


def _gbk(s: str, what: str) -> bytes:
    try:
        return (s or "").encode("gbk")
    except UnicodeEncodeError:
        raise Jt809Error("bad_value", f"{what} {s!r} cannot be encoded in GBK") from None


def _utc(secs: int) -> str | None:
    try:
        return format_ts(datetime.fromtimestamp(secs, tz=timezone.utc))
    except (OverflowError, OSError, ValueError):
        return None


# --- link management -----------------------------------------------------------------------------------

def decode_login(b: bytes, proto: int) -> dict:
    r = _R(b, "login")
    out: dict[str, Any] = {"user_id": r.u32(), "password": r.text(8)}
    if proto == 2019:
        out["center_id"] = r.u32()
    out["down_link_ip"] = r.text(32)
    out["down_link_port"] = r.u16()
    return out


def encode_login(user_id: int, password: str, ip: str, port: int, proto: int, center_id: int = 0) -> bytes:
    body = struct.pack(">I", user_id) + _fixed(password, 8, "password")
    if proto == 2019:
        body += struct.pack(">I", center_id)
    return body + _fixed(ip, 32, "down_link_ip") + struct.pack(">H", port)


def decode_login_resp(b: bytes, proto: int) -> dict:
    r = _R(b, "login response")
    return {"result": r.u8(), "verify_code": r.u32()}


def encode_login_resp(result: int, verify_code: int) -> bytes:
    return struct.pack(">BI", result, verify_code & 0xFFFFFFFF)


def decode_logout(b: bytes, proto: int) -> dict:
    r = _R(b, "logout")
    return {"user_id": r.u32(), "password": r.text(8)}


def encode_logout(user_id: int, password: str) -> bytes:
    return struct.pack(">I", user_id) + _fixed(password, 8, "password")


def _code(name: str) -> Callable[[bytes, int], dict]:
    def dec(b: bytes, proto: int) -> dict:
        return {name: _R(b, name).u8()}
    return dec


def encode_verify(verify_code: int) -> bytes:
    """0x9001 / 0x9003 body: the verify code the 0x1002 answer issued."""
    return struct.pack(">I", verify_code & 0xFFFFFFFF)


def encode_code(code: int) -> bytes:
    """0x1007 / 0x1008 / 0x9002 / 0x9007 / 0x9008 body: one result or reason byte."""
    return bytes([code & 0xFF])


def _verify(b: bytes, proto: int) -> dict:
    return {"verify_code": _R(b, "verify code").u32()}


def _empty(b: bytes, proto: int) -> dict:
    return {}


# --- dynamic vehicle data (0x1200) ---------------------------------------------------------------------

def decode_position_2011(b: bytes) -> dict:
    """The 36-byte 2011 position: ENCRYPT, DATE (d, m, yyyy), TIME (h, m, s) local, LON/LAT 1e-6°,
    VEC1 satellite speed km/h (integer), VEC2 recorder speed, VEC3 odometer km, DIRECTION, ALTITUDE m,
    STATE and ALARM with the JT/T 808 bit meanings (STATE bits 2/3: south/west)."""
    if len(b) < 36:
        raise Jt809Error("truncated", f"2011 position: {len(b)} bytes, needs 36")
    (enc, day, month, year, hh, mm, ss, lon, lat, v1, v2, v3, direction, alt, state, alarm) = _POS_2011.unpack_from(b)
    try:
        ts = format_ts(datetime(year, month, day, hh, mm, ss, tzinfo=BEIJING))
    except ValueError:
        raise Jt809Error("bad_time", f"position date {year:04d}-{month:02d}-{day:02d} {hh:02d}:{mm:02d}:{ss:02d} "
                                     f"is not a valid date-time") from None
    if alt >= 0x8000:                     # below sea level sent as two's complement (as in JT/T 808)
        alt -= 0x10000
    return {"encrypt": enc, "jt808_version": 2013, "ts": ts, "lat": lat / 1e6 * (-1 if state & 0x4 else 1),
            "lon": lon / 1e6 * (-1 if state & 0x8 else 1), "speed_kmh": float(v1), "recorder_speed_kmh": float(v2),
            "mileage_km": float(v3), "heading": direction, "altitude_m": alt, "status_flags": state,
            "alarm_flags": alarm}


def encode_position_2011(p: dict, encrypt: int = 0) -> bytes:
    """Interchange ping → 36-byte 2011 position (speed rounded to whole km/h, as the field holds)."""
    dt = _dt(p["ts"]).astimezone(BEIJING)
    state = int(p.get("status_flags", 0)) & ~0xC
    lat, lon = float(p["lat"]), float(p["lon"])
    if lat < 0:
        state |= 0x4
    if lon < 0:
        state |= 0x8
    alt = int(round(p.get("altitude_m") or 0))
    return _POS_2011.pack(encrypt, dt.day, dt.month, dt.year, dt.hour, dt.minute, dt.second,
                          int(round(abs(lon) * 1e6)), int(round(abs(lat) * 1e6)),
                          int(round(p.get("speed_kmh") or 0)), int(round(p.get("recorder_speed_kmh") or p.get("speed_kmh") or 0)),
                          int(round(p.get("mileage_km") or 0)), int(p.get("heading", 0)) % 65536, alt & 0xFFFF,
                          state & 0xFFFFFFFF, int(p.get("alarm_flags", 0)) & 0xFFFFFFFF)


def _dt(ts: Any) -> datetime:
    if isinstance(ts, datetime):
        return ts
    if isinstance(ts, (int, float)):
        return datetime.fromtimestamp(ts / 1000, tz=timezone.utc)
    return datetime.fromisoformat(str(ts))


def decode_position_2019(b: bytes) -> tuple[dict, list[str]]:
    """2019 position: ENCRYPT, DATA_LENGTH, GNSS_DATA (a JT/T 808 0x0200 body), then PLATFORM_ID1..3
    (11 B) with ALARM1..3. A body that does not add up but is a 36-byte 2011 position is read as one
    (rule ``position_2011_in_2019``)."""
    r = _R(b, "2019 position")
    if len(b) >= 5:
        enc = b[0]
        n = int.from_bytes(b[1:5], "big")
        if len(b) == 5 + n + 45:
            r.p = 5
            gnss = r.take(n)
            try:
                loc = c808.decode_location(gnss, 2019)
            except c808.Jt808Error as e:
                raise Jt809Error(e.code, f"GNSS_DATA: {e.detail}") from None
            out = {"encrypt": enc, "jt808_version": 2019, "ts": loc["ts"], "lat": loc["lat"], "lon": loc["lon"], "speed_kmh": loc["speed_kmh"],
                   "mileage_km": loc["extras"].get("mileage_km"), "heading": loc["heading"],
                   "altitude_m": loc["altitude_m"], "status_flags": loc["status_flags"],
                   "alarm_flags": loc["alarm_flags"], "extras": loc["extras"]}
            for i in (1, 2, 3):
                out[f"platform_id{i}"] = r.text(11)
                out[f"alarm{i}"] = r.u32()
            return out, []
    if len(b) == 36:
        return decode_position_2011(b), ["position_2011_in_2019"]
    raise Jt809Error("length_mismatch", f"2019 position of {len(b)} bytes: neither ENCRYPT + DATA_LENGTH + "
                                        f"GNSS_DATA + 3 platform/alarm pairs nor a 36-byte 2011 position")


def encode_position_2019(p: dict, encrypt: int = 0, platforms: tuple = ("", "", ""), alarms: tuple = (0, 0, 0)) -> bytes:
    gnss = c808.encode_location(p)
    body = struct.pack(">BI", encrypt, len(gnss)) + gnss
    for pid, al in zip(platforms, alarms):
        body += _fixed(pid, 11, "platform id") + struct.pack(">I", al)
    return body


def decode_position(b: bytes, proto: int) -> tuple[dict, list[str]]:
    if proto == 2019:
        return decode_position_2019(b)
    return decode_position_2011(b), []


def encode_position(p: dict, proto: int, encrypt: int = 0) -> bytes:
    return encode_position_2019(p, encrypt) if proto == 2019 else encode_position_2011(p, encrypt)


def _dec_real_location(b: bytes, proto: int) -> dict:
    pos, rules = decode_position(b, proto)
    return {"position": pos, "rules": rules}


def _dec_history(b: bytes, proto: int) -> dict:
    """0x1203: GNSS_CNT then that many positions (2011: 36 B each; 2019: each one self-delimiting)."""
    r = _R(b, "re-upload")
    cnt = r.u8()
    items, rules = [], []
    for i in range(cnt):
        if proto == 2019 and r.left() >= 5 and r.left() != 36 * (cnt - i):
            n = int.from_bytes(r.d[r.p + 1:r.p + 5], "big")
            chunk = r.take(5 + n + 45)
        else:
            chunk = r.take(36)
        pos, rr = decode_position(chunk, proto)
        items.append(pos)
        rules += [x for x in rr if x not in rules]
    if r.left():
        raise Jt809Error("length_mismatch", f"{r.left()} bytes after the {cnt} declared positions")
    return {"count": cnt, "positions": items, "rules": rules}


def encode_history(pings: list[dict], proto: int) -> bytes:
    if not 1 <= len(pings) <= 5:
        raise Jt809Error("bad_value", "a 0x1203 re-upload holds 1–5 positions")
    return bytes([len(pings)]) + b"".join(encode_position(p, proto) for p in pings)


def _dec_register(b: bytes, proto: int) -> dict:
    """0x1201 (widths [S]: 2011 11/11/20/7/12; 2019 11/11/30/15/30/13 with IMEI)."""
    r = _R(b, "vehicle registration")
    out = {"platform_id": r.text(11), "producer_id": r.text(11)}
    if proto == 2019:
        out.update(terminal_model=r.text(30), imei=r.text(15), terminal_id=r.text(30), sim=r.text(13))
    else:
        out.update(terminal_model=r.text(20), terminal_id=r.text(7), sim=r.text(12))
    return out


def encode_register(platform_id: str, producer_id: str, model: str, terminal_id: str, sim: str, proto: int,
                    imei: str = "") -> bytes:
    body = _fixed(platform_id, 11, "platform_id") + _fixed(producer_id, 11, "producer_id")
    if proto == 2019:
        return body + _fixed(model, 30, "model") + _fixed(imei, 15, "imei") + _fixed(terminal_id, 30, "terminal_id") + _fixed(sim, 13, "sim")
    return body + _fixed(model, 20, "model") + _fixed(terminal_id, 7, "terminal_id") + _fixed(sim, 12, "sim")


# --- platform inspection (查岗) ------------------------------------------------------------------------

def _dec_query_req(b: bytes, proto: int) -> dict:
    """0x9301. 2011: OBJECT_TYPE, OBJECT_ID[12], INFO_ID, INFO_LENGTH, INFO_CONTENT.
    2019: OBJECT_TYPE, OBJECT_ID[20], ANSWER_TIME (minutes), INFO_ID, INFO_LENGTH, INFO_CONTENT."""
    r = _R(b, "inspection request")
    out: dict[str, Any] = {"object_type": r.u8(), "object_id": r.text(20 if proto == 2019 else 12)}
    if proto == 2019:
        out["answer_minutes"] = r.u8()
    out["info_id"] = r.u32()
    out["question"] = _text(r.take(r.u32()))
    return out


def encode_query_req(object_type: int, object_id: str, info_id: int, question: str, proto: int,
                     answer_minutes: int = 0) -> bytes:
    q = _gbk(question, "question")
    body = bytes([object_type]) + _fixed(object_id, 20 if proto == 2019 else 12, "object_id")
    if proto == 2019:
        body += bytes([max(0, min(255, answer_minutes))])
    return body + struct.pack(">II", info_id, len(q)) + q


def _dec_query_ack(b: bytes, proto: int) -> dict:
    """0x1301. 2011: OBJECT_TYPE, OBJECT_ID[12], INFO_ID, INFO_LENGTH, INFO_CONTENT. 2019: OBJECT_TYPE,
    RESPONDER[16], RESPONDER_TEL[20], OBJECT_ID[20], SOURCE_DATA_TYPE, SOURCE_MSG_SN, INFO_LENGTH, CONTENT
    (2019 answers name the request by its MSG_SN, 2011 ones by INFO_ID)."""
    r = _R(b, "inspection answer")
    out: dict[str, Any] = {"object_type": r.u8()}
    if proto == 2019:
        out.update(responder=r.text(16), responder_tel=r.text(20), object_id=r.text(20),
                   source_data_type=r.u16(), source_msg_sn=r.u32())
    else:
        out.update(object_id=r.text(12), info_id=r.u32())
    out["answer"] = _text(r.take(r.u32()))
    return out


def encode_query_ack(object_type: int, object_id: str, answer: str, proto: int, info_id: int = 0,
                     source_msg_sn: int = 0, responder: str = "", responder_tel: str = "") -> bytes:
    a = _gbk(answer, "answer")
    body = bytes([object_type])
    if proto == 2019:
        body += (_fixed(responder, 16, "responder") + _fixed(responder_tel, 20, "responder_tel")
                 + _fixed(object_id, 20, "object_id") + struct.pack(">HI", POST_QUERY_REQ, source_msg_sn))
    else:
        body += _fixed(object_id, 12, "object_id") + struct.pack(">I", info_id)
    return body + struct.pack(">I", len(a)) + a


# --- alarms (0x1400) -------------------------------------------------------------------------------------

def _dec_warn(b: bytes, proto: int) -> dict:
    """0x1402. 2011: WARN_SRC, WARN_TYPE, WARN_TIME (UTC s), INFO_ID, INFO_LENGTH, CONTENT. 2019:
    SOURCE_PLATFORM_ID[11], WARN_TYPE, WARN_TIME, START_TIME, END_TIME, VEHICLE_NO[21], VEHICLE_COLOR,
    DESTINATION_PLATFORM_ID[11], DRV_LINE_ID, INFO_LENGTH, CONTENT."""
    r = _R(b, "alarm")
    if proto == 2019:
        out: dict[str, Any] = {"source_platform_id": r.text(11), "warn_type": r.u16(), "warn_time": _utc(r.u64()),
                               "start_time": _utc(r.u64()), "end_time": _utc(r.u64()), "plate": r.text(21),
                               "plate_color": r.u8(), "destination_platform_id": r.text(11), "drv_line_id": r.u32()}
    else:
        out = {"warn_src": r.u8(), "warn_type": r.u16(), "warn_time": _utc(r.u64()), "info_id": r.u32()}
    out["content"] = _text(r.take(r.u32()))
    return out


def encode_warn_2011(warn_src: int, warn_type: int, warn_time_s: int, info_id: int, content: str) -> bytes:
    t = _gbk(content, "content")
    return struct.pack(">BHQII", warn_src, warn_type, warn_time_s, info_id, len(t)) + t


SUB_DECODERS: dict[int, Callable[[bytes, int], dict]] = {
    VEHICLE_REGISTER: _dec_register, REAL_LOCATION: _dec_real_location, HISTORY_LOCATION: _dec_history,
    POST_QUERY_ACK: _dec_query_ack, POST_QUERY_REQ: _dec_query_req, WARN_ADPT_INFO: _dec_warn,
}


def _with_vehicle(b: bytes, proto: int) -> dict:
    """0x1200 (and 2011 0x1400): VEHICLE_NO[21], VEHICLE_COLOR, DATA_TYPE, DATA_LENGTH, data."""
    r = _R(b, "vehicle message")
    out: dict[str, Any] = {"plate": r.text(21), "plate_color": r.u8()}
    return _sub(r, out, proto)


def _without_vehicle(b: bytes, proto: int) -> dict:
    """0x1300/0x9300 (and 2019 0x1400): DATA_TYPE, DATA_LENGTH, data."""
    return _sub(_R(b, "platform message"), {}, proto)


def _warn(b: bytes, proto: int) -> dict:
    return _without_vehicle(b, proto) if proto == 2019 else _with_vehicle(b, proto)


def _sub(r: _R, out: dict, proto: int) -> dict:
    dt = r.u16()
    n = r.u32()
    data = r.take(n)
    if r.left():
        raise Jt809Error("length_mismatch", f"{r.left()} bytes after DATA_LENGTH {n}")
    out["data_type"] = f"0x{dt:04X}"
    dec = SUB_DECODERS.get(dt)
    if dec is None:
        out["data"] = data.hex()
        out["unsupported_data_type"] = True
        return out
    sub = dec(data, proto)
    out.update(sub)
    return out


def encode_with_vehicle(plate: str, color: int, data_type: int, data: bytes) -> bytes:
    return _fixed(plate, 21, "plate") + struct.pack(">BHI", color, data_type, len(data)) + data


def encode_without_vehicle(data_type: int, data: bytes) -> bytes:
    return struct.pack(">HI", data_type, len(data)) + data


DECODERS: dict[int, Callable[[bytes, int], dict]] = {
    LOGIN: decode_login, LOGIN_RESP: decode_login_resp, LOGOUT: decode_logout, LOGOUT_RESP: _empty,
    HEARTBEAT: _empty, HEARTBEAT_RESP: _empty, DISCONNECT_NOTICE: _code("error_code"),
    CLOSE_NOTICE: _code("reason_code"), SLAVE_LOGIN: _verify, SLAVE_LOGIN_RESP: _code("result"),
    SLAVE_LOGOUT: _verify, SLAVE_LOGOUT_RESP: _empty, SLAVE_HEARTBEAT: _empty, SLAVE_HEARTBEAT_RESP: _empty,
    SLAVE_DISCONNECT_NOTICE: _code("error_code"), SLAVE_CLOSE_NOTICE: _code("reason_code"),
    DYNAMIC: _with_vehicle, PLATFORM_MSG: _without_vehicle, DOWN_PLATFORM_MSG: _without_vehicle, WARN_MSG: _warn,
}


def decode_body(msg_id: int, body: bytes, proto: int) -> dict:
    dec = DECODERS.get(msg_id)
    if dec is None:
        raise Jt809Error("unsupported_msg", f"message 0x{msg_id:04X} has no decoder")
    return dec(body, proto)


def position_ping(pos: dict, plate: str, color: int, center_id: int, reupload: bool) -> dict:
    """A decoded position → interchange ping (the ``roadwatch decode jt808`` ping fields). The source
    platform travels in ``terminal_id`` as ``809:<centre id>`` (809 carries no terminal id);
    ``jt808_version`` names the alarm/status bit table: 2019 for a 2019 GNSS_DATA (a JT/T 808-2019 0x0200
    body), 2013 for the 2011 position (JT/T 808-2011/2013 bits, which the 808 codec reads as 2013)."""
    return {"plate": plate, "plate_color": color, "terminal_id": f"809:{center_id}", "ts": pos["ts"],
            "lat": pos["lat"], "lon": pos["lon"], "speed_kmh": pos["speed_kmh"], "heading": pos["heading"],
            "altitude_m": float(pos["altitude_m"]), "alarm_flags": pos["alarm_flags"],
            "status_flags": pos["status_flags"], "reupload": bool(reupload), "driver_id": None,
            "mileage_km": pos.get("mileage_km"), "jt808_version": pos["jt808_version"]}


def message_pings(msg_id: int, fields: dict, center_id: int) -> list[dict]:
    """Pings carried by a decoded 0x1200 message (0x1202 live, 0x1203 re-upload); others: []."""
    if msg_id != DYNAMIC:
        return []
    if fields.get("data_type") == "0x1202":
        return [position_ping(fields["position"], fields["plate"], fields["plate_color"], center_id, False)]
    if fields.get("data_type") == "0x1203":
        return [position_ping(p, fields["plate"], fields["plate_color"], center_id, True) for p in fields["positions"]]
    return []
