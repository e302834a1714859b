"""JT/T 808 (2011/2013/2019) framing and message codec. Pure: bytes in, dicts out, no I/O.

Wire rules (JT/T 808-2019 §4): ``7E | header | body | xor | 7E``; 0x7E↔7D02 and 0x7D↔7D01 are
escaped after the checksum is computed; integers big-endian; strings GBK. Every decoding failure raises
``Jt808Error`` with a stable ``code`` — random bytes must never raise anything else. When the header could
be read, the error carries it (``err.message``) so a gateway can still answer the right serial number.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable

from roadwatch.models.records import BEIJING, InvalidRecord, format_ts, parse_ts

from .alarms import STATUS_SOUTH, STATUS_WEST

FLAG = 0x7E
ESC = 0x7D

# message ids
TERMINAL_RESPONSE = 0x0001
HEARTBEAT = 0x0002
DEREGISTRATION = 0x0003
REGISTRATION = 0x0100
AUTHENTICATION = 0x0102
LOCATION = 0x0200
BATCH_LOCATION = 0x0704
DRIVER_CARD = 0x0702
PLATFORM_RESPONSE = 0x8001
REGISTRATION_RESPONSE = 0x8100

# 0x8001 result codes
RESULT_OK, RESULT_FAILURE, RESULT_MSG_ERROR, RESULT_UNSUPPORTED, RESULT_ALARM_ACK = 0, 1, 2, 3, 4

MAX_BODY = 0x3FF   # 10-bit body length field


class Jt808Error(InvalidRecord):
    """Undecodable JT/T 808 input. Codes: bad_frame, bad_escape, bad_checksum, truncated, length_mismatch,
    bad_bcd, bad_time, bad_value, unsupported_msg, encrypted, frame_too_large."""

    def __init__(self, code: str, detail: str, message: "Message | None" = None):
        super().__init__(code, detail)
        self.message = message


@dataclass
class Message:
    msg_id: int
    terminal_id: str               # BCD digits as sent (12 for 2011/2013, 20 for 2019), leading zeros kept
    serial: int
    version: int                   # 2013 (also covers 2011: same header) or 2019
    protocol_version: int | None   # 2019 header version byte
    body: bytes
    encryption: int = 0            # body-properties bits 10–12
    packet_count: int | None = None
    packet_index: int | None = None
    fields: dict | None = None     # decoded body; None for a fragment of a split message

    @property
    def msg_id_hex(self) -> str:
        return f"0x{self.msg_id:04X}"

    @property
    def is_fragment(self) -> bool:
        return self.packet_count is not None


# --- escaping and framing -----------------------------------------------------------------------------

def escape(data: bytes) -> bytes:
    return bytes(data).replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def unescape(data: bytes) -> bytes:
    data = bytes(data)
    if ESC not in data:
        return data
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        j = data.find(b"\x7d", i)
        if j < 0:
            out += data[i:]
            break
        out += data[i:j]
        if j + 1 >= n:
            raise Jt808Error("bad_escape", f"escape byte 0x7D at the end (offset {j})")
        nxt = data[j + 1]
        if nxt == 0x01:
            out.append(0x7D)
        elif nxt == 0x02:
            out.append(0x7E)
        else:
            raise Jt808Error("bad_escape", f"0x7D followed by 0x{nxt:02X} at offset {j}")
        i = j + 2
    return bytes(out)


def checksum(data: bytes) -> int:
    c = 0
    for b in data:
        c ^= b
    return c


def split_frames(buffer: bytearray, max_frame_bytes: int | None = None) -> list[bytes]:
    """Remove every complete ``7E…7E`` frame from ``buffer`` (in place) and return them, delimiters
    included. Bytes before the first 0x7E are line noise and dropped; ``7E 7E`` is taken as the end of
    nothing followed by a start. The unfinished tail stays in ``buffer``; if it is longer than
    ``max_frame_bytes`` ``Jt808Error('frame_too_large')`` is raised (the caller closes the connection)."""
    frames: list[bytes] = []
    pos = 0
    n = len(buffer)
    while True:
        start = buffer.find(b"\x7e", pos)
        if start < 0:
            pos = n                        # no frame start: all noise
            break
        end = buffer.find(b"\x7e", start + 1)
        if end < 0:
            pos = start
            break
        if end == start + 1:               # empty frame: the second 7E starts the next one
            pos = end
            continue
        frame = bytes(buffer[start:end + 1])
        if max_frame_bytes is not None and len(frame) > max_frame_bytes:
            del buffer[:end + 1]
            raise Jt808Error("frame_too_large", f"frame of {len(frame)} bytes exceeds {max_frame_bytes}")
        frames.append(frame)
        pos = end + 1
    del buffer[:pos]
    if max_frame_bytes is not None and len(buffer) > max_frame_bytes:
        size = len(buffer)
        del buffer[:]
        raise Jt808Error("frame_too_large", f"unterminated frame of {size} bytes exceeds {max_frame_bytes}")
    return frames


# --- low-level reading --------------------------------------------------------------------------------

class _Reader:
    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str):
        self.data = data
        self.pos = 0
        self.what = what

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Jt808Error("truncated", f"{self.what}: need {n} bytes at offset {self.pos}, "
                                          f"have {len(self.data) - self.pos}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def rest(self) -> bytes:
        b = self.data[self.pos:]
        self.pos = len(self.data)
        return b


def terminal_key(terminal_id: str) -> str:
    """Lookup key for a terminal: the BCD phone without leading zeros, so a registry entry
    "13800000001", a 2013 header "013800000001" and a 2019 header "00000000013800000001" all match.
    A binary (non-BCD) id is its hex string; letters compare case-insensitively ("4eb6…" = "4EB6…")."""
    return terminal_id.upper().lstrip("0") or "0"


def terminal_digits(b: bytes) -> str:
    """Header terminal id. JT/T 808 says BCD phone digits, but real devices send 6 binary bytes (an
    IMEI-derived id; Traccar's test frames carry several): those keep their hex string (upper case) instead
    of dropping every message of the device."""
    s = b.hex()
    return s if s.isdigit() else s.upper()


def bcd_digits(b: bytes, what: str = "BCD") -> str:
    s = b.hex()
    if not s.isdigit():
        raise Jt808Error("bad_bcd", f"{what} {s.upper()} has non-decimal nibbles")
    return s


def to_bcd(digits: str, nbytes: int, what: str = "BCD") -> bytes:
    if not isinstance(digits, str) or not digits.isdigit() or not digits.isascii() or len(digits) > nbytes * 2:
        raise Jt808Error("bad_value", f"{what} must be at most {nbytes * 2} decimal digits, got {digits!r}")
    return bytes.fromhex(digits.rjust(nbytes * 2, "0"))


def _text(b: bytes) -> str:
    """GBK string field: NUL padding on either side and surrounding blanks removed (devices left-pad fixed
    fields with zero bytes as often as they right-pad them); undecodable bytes replaced. A NUL inside the
    text ends it."""
    return b.strip(b"\x00").split(b"\x00", 1)[0].decode("gbk", errors="replace").strip()


def _gbk(s: str, what: str) -> bytes:
    try:
        return (s or "").encode("gbk")
    except UnicodeEncodeError:
        raise Jt808Error("bad_value", f"{what} {s!r} cannot be encoded in GBK") from None


def _fixed(s: str, n: int, what: str) -> bytes:
    b = _gbk(s, what)
    if len(b) > n:
        raise Jt808Error("bad_value", f"{what} is longer than {n} bytes")
    return b.ljust(n, b"\x00")


def _bcd_time(b: bytes, what: str = "time") -> str:
    """BCD[6] YYMMDDhhmmss in Beijing time (terminals send GMT+8) → ISO-8601 with +08:00."""
    s = bcd_digits(b, what)
    try:
        dt = datetime(2000 + int(s[0:2]), int(s[2:4]), int(s[4:6]), int(s[6:8]), int(s[8:10]), int(s[10:12]),
                      tzinfo=BEIJING)
    except ValueError:
        raise Jt808Error("bad_time", f"{what} {s} is not a valid date-time") from None
    return format_ts(dt)


def _time_bcd(ts: Any) -> bytes:
    """ISO-8601 string, epoch ms or aware datetime → BCD[6] Beijing time."""
    try:
        if isinstance(ts, datetime):
            dt = ts
        elif isinstance(ts, (int, float)) and not isinstance(ts, bool):
            dt = datetime.fromtimestamp(ts / 1000, tz=timezone.utc)
        else:
            dt = parse_ts(ts)
    except (InvalidRecord, OverflowError, OSError, ValueError) as e:
        raise Jt808Error("bad_value", f"ts {ts!r} is not a time: {e}") from None
    if dt.tzinfo is None:
        raise Jt808Error("bad_value", "ts must carry a UTC offset")
    dt = dt.astimezone(BEIJING)
    if not 2000 <= dt.year <= 2099:
        raise Jt808Error("bad_value", f"ts {dt.isoformat()} outside 2000–2099 (two-digit BCD year)")
    return bytes.fromhex(dt.strftime("%y%m%d%H%M%S"))


# --- header -------------------------------------------------------------------------------------------

def _parse_header(data: bytes) -> tuple[Message, int, int]:
    """→ (message without body, header length, declared body length)."""
    r = _Reader(data, "header")
    msg_id = r.u16()
    props = r.u16()
    if props & 0x4000:
        version, proto = 2019, r.u8()
        terminal = terminal_digits(r.take(10))
    else:
        version, proto = 2013, None
        terminal = terminal_digits(r.take(6))
    serial = r.u16()
    count = index = None
    if props & 0x2000:
        count, index = r.u16(), r.u16()
    msg = Message(msg_id, terminal, serial, version, proto, b"", (props >> 10) & 7, count, index)
    return msg, r.pos, props & 0x3FF


def parse_frame(frame: bytes, unescaped: bool = False) -> Message:
    """Decode one frame, with or without its 0x7E delimiters. ``unescaped=True`` for captures whose
    7D01/7D02 escapes were already removed (then 0x7E may appear inside)."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise Jt808Error("bad_frame", f"expected bytes, got {type(frame).__name__}")
    data = bytes(frame)
    if data[:1] == b"\x7e" or data[-1:] == b"\x7e":
        if len(data) < 2 or data[0] != FLAG or data[-1] != FLAG:
            raise Jt808Error("bad_frame", "frame must start and end with 0x7E")
        data = data[1:-1]
    if not unescaped:
        if FLAG in data:
            raise Jt808Error("bad_frame", f"unescaped 0x7E inside the frame at offset {data.index(FLAG) + 1}")
        data = unescape(data)
    if len(data) < 13:
        raise Jt808Error("truncated", f"frame of {len(data)} bytes is shorter than the 12-byte header + checksum")
    try:
        head, hlen, declared = _parse_header(data[:-1])
    except Jt808Error as e:
        head, hlen, declared, herr = None, 0, 0, e
    else:
        herr = None
    if checksum(data[:-1]) != data[-1]:
        raise Jt808Error("bad_checksum", f"checksum 0x{data[-1]:02X}, computed 0x{checksum(data[:-1]):02X}", head)
    if herr is not None:
        raise herr
    assert head is not None
    body = data[hlen:-1]
    head.body = body
    if len(body) < declared:
        raise Jt808Error("truncated", f"body has {len(body)} bytes, header declares {declared}", head)
    if len(body) > declared:
        raise Jt808Error("length_mismatch", f"body has {len(body)} bytes, header declares {declared}", head)
    if head.encryption:
        raise Jt808Error("encrypted", f"body encryption flags {head.encryption:#x} (RSA) not supported", head)
    if head.packet_count is not None:
        if not 1 <= (head.packet_index or 0) <= head.packet_count:
            raise Jt808Error("bad_value", f"packet {head.packet_index} of {head.packet_count}", head)
        return head                      # a fragment: decoded after reassembly
    head.fields = decode_body(head.msg_id, body, head.version, head)
    return head


def decode_body(msg_id: int, body: bytes, version: int = 2013, head: Message | None = None) -> dict:
    dec = DECODERS.get(msg_id)
    if dec is None:
        raise Jt808Error("unsupported_msg", f"message 0x{msg_id:04X} has no decoder", head)
    try:
        return dec(body, version)
    except Jt808Error as e:
        if e.message is None:
            e.message = head
        raise


# --- body decoders -------------------------------------------------------------------------------------

def decode_location(body: bytes, version: int = 2013) -> dict:
    """0x0200 body → dict: alarm/status flags, signed lat/lon (status bits 2/3), altitude (read signed:
    terminals below sea level, e.g. the Turpan depression, send two's complement), speed km/h, heading,
    ``ts`` (ISO-8601 +08:00), ``extras`` (named standard items), ``extras_raw`` (``"0xNN"`` → hex),
    ``extra_ids`` (ids in order). A malformed extras tail keeps the fix and sets ``extras_error``."""
    if len(body) < 28:
        raise Jt808Error("truncated", f"location: {len(body)} bytes, the fixed part needs 28")
    alarm, status, lat_raw, lon_raw, alt, speed_raw, heading = _LOC_FIXED.unpack_from(body)
    ts = _bcd_time(body[22:28], "location time")
    r = _Reader(body, "location")
    r.pos = 28
    lat = lat_raw / 1e6 * (-1 if status & STATUS_SOUTH else 1)
    lon = lon_raw / 1e6 * (-1 if status & STATUS_WEST else 1)
    extras: dict[str, Any] = {}
    raw: dict[str, str] = {}
    ids: list[int] = []
    err = None
    while r.remaining() >= 2:
        xid, xlen = r.u8(), r.u8()
        if xlen > r.remaining():
            err = f"extra 0x{xid:02X} declares {xlen} bytes, {r.remaining()} left"
            break
        val = r.take(xlen)
        ids.append(xid)
        name_scale = _EXTRAS.get(xid)
        if name_scale and len(val) == name_scale[1]:
            name, size, scale = name_scale
            v = int.from_bytes(val, "big")
            extras[name] = v / scale if scale != 1 else v
        else:
            raw[f"0x{xid:02X}"] = val.hex()
    if r.remaining() and err is None:
        err = f"{r.remaining()} stray byte(s) after the extras"
    out = {"alarm_flags": alarm, "status_flags": status, "lat": lat, "lon": lon, "altitude_m": alt,
           "speed_kmh": speed_raw / 10, "heading": heading, "ts": ts,
           "extras": extras, "extras_raw": raw, "extra_ids": ids}
    # Range check: a latitude beyond ±90° or longitude beyond ±180° (e.g. a two's-complement value sent as
    # DWORD) is kept as sent and flagged; the ping becomes unqualified downstream (models.quality), not lost.
    bad = [k for k, v, lim in (("lat", lat, 90.0), ("lon", lon, 180.0)) if abs(v) > lim]
    if bad:
        out["range_errors"] = bad
    if err:
        out["extras_error"] = err
    return out


_LOC_FIXED = struct.Struct(">IIIIhHH")
# extra id → (name, value size, divisor)
_EXTRAS: dict[int, tuple[str, int, int]] = {
    0x01: ("mileage_km", 4, 10), 0x02: ("fuel_l", 2, 10), 0x03: ("recorder_speed_kmh", 2, 10),
    0x30: ("signal_strength", 1, 1), 0x31: ("satellites", 1, 1),
}
_EXTRA_IDS = {name: (xid, size, scale) for xid, (name, size, scale) in _EXTRAS.items()}


def decode_batch_location(body: bytes, version: int = 2013) -> dict:
    """0x0704: count WORD, type BYTE (0 normal, 1 blind-area re-upload), items (length WORD + 0x0200 body).
    An item whose own content is bad is listed in ``item_errors`` and skipped; a broken item length
    makes the whole message bad."""
    r = _Reader(body, "batch")
    count, typ = r.u16(), r.u8()
    if typ not in (0, 1):
        raise Jt808Error("bad_value", f"batch type {typ} is neither 0 (normal) nor 1 (re-upload)")
    items, errors = [], []
    for i in range(count):
        n = r.u16()
        chunk = r.take(n)
        try:
            items.append(decode_location(chunk, version))
        except Jt808Error as e:
            errors.append({"index": i, "code": e.code, "detail": e.detail})
    if r.remaining():
        raise Jt808Error("length_mismatch", f"{r.remaining()} bytes after the {count} declared items")
    return {"count": count, "type": typ, "reupload": typ == 1, "items": items, "item_errors": errors}


def decode_driver_card(body: bytes, version: int = 2013) -> dict:
    """0x0702 (2013/2019 layout): status 1 = card inserted (login), 2 = removed (logout); when inserted,
    the read result (0 ok) and, if ok, name, 从业资格证 number, issuing org, expiry [, 2019: ID number]."""
    r = _Reader(body, "driver card")
    status = r.u8()
    if status not in (1, 2):
        raise Jt808Error("bad_value", f"driver card status {status} is neither 1 (inserted) nor 2 (removed)")
    out: dict[str, Any] = {"status": status, "event": "login" if status == 1 else "logout",
                           "ts": _bcd_time(r.take(6), "card time")}
    if status == 1:
        res = r.u8()
        out["ic_result"] = res
        if res == 0:
            out["driver_name"] = _text(r.take(r.u8()))
            out["qualification_no"] = _text(r.take(20))
            out["issuing_org"] = _text(r.take(r.u8()))
            out["expiry"] = _card_expiry(r.take(4))
            if version >= 2019:
                out["id_number"] = _text(r.take(20))
    return out


def _card_expiry(b: bytes) -> str | None:
    """BCD YYYYMMDD → ISO date; all zeros, non-decimal nibbles or an impossible date (day 00) → None
    ("unknown"): the card event itself (who drives) still counts."""
    s = b.hex()
    if not s.isdigit():
        return None
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:8])).isoformat()
    except ValueError:
        return None


def decode_registration(body: bytes, version: int = 2013) -> dict:
    """0x0100. Field widths: 2019 maker 11 / model 30 / id 30; 2013 5/20/7; 2011 5/8/7 (a 2011/2013 header
    is the same, so a body shorter than the 2013 fixed part is read as 2011). Plate colour 0 → VIN."""
    if version >= 2019:
        widths = (11, 30, 30)
    elif len(body) >= 2 + 2 + 5 + 20 + 7 + 1:
        widths = (5, 20, 7)
    else:
        widths = (5, 8, 7)
    r = _Reader(body, "registration")
    out: dict[str, Any] = {"province": r.u16(), "city": r.u16(), "maker": _text(r.take(widths[0])),
                           "model": _text(r.take(widths[1])), "device_id": _text(r.take(widths[2]))}
    color = r.u8()
    ident = _text(r.rest())
    out["plate_color"] = color
    out["plate" if color else "vin"] = ident
    return out


def decode_authentication(body: bytes, version: int = 2013) -> dict:
    if version < 2019:
        return {"auth_code": _text(body)}
    r = _Reader(body, "authentication")
    code = _text(r.take(r.u8()))
    return {"auth_code": code, "imei": _text(r.take(15)), "software_version": _text(r.take(20))}


def _decode_response(body: bytes, version: int = 2013) -> dict:
    r = _Reader(body, "general response")
    return {"reply_serial": r.u16(), "reply_msg_id": r.u16(), "result": r.u8()}


def decode_registration_response(body: bytes, version: int = 2013) -> dict:
    r = _Reader(body, "registration response")
    out: dict[str, Any] = {"reply_serial": r.u16(), "result": r.u8()}
    if out["result"] == 0:
        out["auth_code"] = _text(r.rest())
    return out


def _empty(body: bytes, version: int = 2013) -> dict:
    return {}


DECODERS: dict[int, Callable[[bytes, int], dict]] = {
    TERMINAL_RESPONSE: _decode_response, HEARTBEAT: _empty, DEREGISTRATION: _empty,
    REGISTRATION: decode_registration, AUTHENTICATION: decode_authentication,
    LOCATION: decode_location, BATCH_LOCATION: decode_batch_location, DRIVER_CARD: decode_driver_card,
    PLATFORM_RESPONSE: _decode_response, REGISTRATION_RESPONSE: decode_registration_response,
}


# --- split-packet reassembly --------------------------------------------------------------------------

@dataclass
class Reassembler:
    """Joins fragments of split messages (body-properties bit 13). Fragments of one message carry
    consecutive serials, so ``serial - index`` identifies the message. Bounded: at most ``max_pending``
    messages in progress; the oldest is dropped first."""
    max_pending: int = 64
    _parts: dict = field(default_factory=dict)

    def add(self, frag: Message) -> Message | None:
        """→ the complete decoded message once the last fragment arrived, else None."""
        if not frag.is_fragment:
            return frag
        key = (frag.terminal_id, frag.msg_id, frag.packet_count, frag.serial - (frag.packet_index or 0))
        parts = self._parts.pop(key, {})
        parts[frag.packet_index] = frag.body
        if len(parts) < (frag.packet_count or 0):
            self._parts[key] = parts
            while len(self._parts) > self.max_pending:
                self._parts.pop(next(iter(self._parts)))
            return None
        body = b"".join(parts[i] for i in range(1, (frag.packet_count or 0) + 1))
        first_serial = key[3] + 1
        msg = Message(frag.msg_id, frag.terminal_id, first_serial, frag.version, frag.protocol_version, body,
                      frag.encryption)
        msg.fields = decode_body(msg.msg_id, body, msg.version, msg)
        return msg


# --- interchange --------------------------------------------------------------------------------------

def location_to_ping(loc: dict, terminal_id: str, plate: str | None, plate_color: int | None,
                     reupload: bool = False, driver_id: str | None = None, version: int = 0) -> dict:
    """A decoded 0x0200 item → interchange ping (``models.records.GpsPing`` field names and units).
    ``version``: the header's protocol (2013/2019) so alarm bits get the right names downstream."""
    return {"plate": plate, "plate_color": plate_color, "terminal_id": terminal_id, "ts": loc["ts"],
            "lat": loc["lat"], "lon": loc["lon"], "speed_kmh": loc["speed_kmh"], "heading": loc["heading"],
            "altitude_m": float(loc["altitude_m"]), "alarm_flags": loc["alarm_flags"],
            "status_flags": loc["status_flags"], "reupload": bool(reupload), "driver_id": driver_id,
            "mileage_km": loc["extras"].get("mileage_km"), "jt808_version": int(version)}


def message_pings(msg: Message, plate: str | None, plate_color: int | None,
                  driver_id: str | None = None) -> list[dict]:
    """Interchange pings carried by a decoded 0x0200 or 0x0704 message (others: empty list)."""
    f = msg.fields or {}
    if msg.msg_id == LOCATION:
        return [location_to_ping(f, msg.terminal_id, plate, plate_color, False, driver_id, msg.version)]
    if msg.msg_id == BATCH_LOCATION:
        return [location_to_ping(loc, msg.terminal_id, plate, plate_color, f["reupload"], driver_id, msg.version)
                for loc in f["items"]]
    return []


# --- encoders -----------------------------------------------------------------------------------------

def _uint(v: Any, bits: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << bits:
        raise Jt808Error("bad_value", f"{what} must be an integer in [0, {(1 << bits) - 1}], got {v!r}")
    return v


def _scaled(v: Any, scale: float, bits: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise Jt808Error("bad_value", f"{what} must be a number, got {v!r}")
    return _uint(int(round(v * scale)), bits, what)


def _terminal_bytes(terminal_id: str, nbytes: int) -> bytes:
    """Header terminal id: BCD digits, or back to the binary id a device sent as hex (``terminal_digits``)."""
    if isinstance(terminal_id, str) and terminal_id.isascii() and not terminal_id.isdigit() \
            and len(terminal_id) == nbytes * 2:
        try:
            return bytes.fromhex(terminal_id)
        except ValueError:
            pass
    return to_bcd(terminal_id, nbytes, "terminal phone")


def build_frame(msg_id: int, terminal_id: str, serial: int, body: bytes, version: int = 2013,
                protocol_version: int = 1, packet: tuple[int, int] | None = None) -> bytes:
    """Header + body + checksum, escaped, with 0x7E delimiters. ``packet`` = (count, index) for a
    fragment of a split message."""
    body = bytes(body)
    if len(body) > MAX_BODY:
        raise Jt808Error("bad_value", f"body of {len(body)} bytes exceeds {MAX_BODY}; split the message")
    props = len(body)
    if packet is not None:
        props |= 0x2000
    if version >= 2019:
        props |= 0x4000
        head = struct.pack(">HHB", _uint(msg_id, 16, "msg_id"), props, _uint(protocol_version, 8, "version"))
        head += _terminal_bytes(terminal_id, 10)
    elif version in (2011, 2013):
        head = struct.pack(">HH", _uint(msg_id, 16, "msg_id"), props) + _terminal_bytes(terminal_id, 6)
    else:
        raise Jt808Error("bad_value", f"version must be 2013 or 2019, got {version!r}")
    head += struct.pack(">H", _uint(serial, 16, "serial"))
    if packet is not None:
        head += struct.pack(">HH", _uint(packet[0], 16, "packet count"), _uint(packet[1], 16, "packet index"))
    raw = head + body
    return b"\x7e" + escape(raw + bytes([checksum(raw)])) + b"\x7e"


def encode_location(p: dict) -> bytes:
    """Interchange ping (or a decoded location) → 0x0200 body. Status bits 2/3 follow the signs of lat/lon.
    Optional extras: ``mileage_km`` (or ``extras``: mileage_km, fuel_l, recorder_speed_kmh,
    signal_strength, satellites) and ``extras_raw`` {"0xNN": hex}."""
    lat, lon = p.get("lat"), p.get("lon")
    for name, v, lim in (("lat", lat, 90), ("lon", lon, 180)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -lim <= v <= lim:
            raise Jt808Error("bad_value", f"{name} must be a number in [-{lim}, {lim}], got {v!r}")
    status = _uint(p.get("status_flags", 0), 32, "status_flags") & ~(STATUS_SOUTH | STATUS_WEST)
    lat_raw, lon_raw = int(round(abs(lat) * 1e6)), int(round(abs(lon) * 1e6))
    if lat < 0 and lat_raw:
        status |= STATUS_SOUTH
    if lon < 0 and lon_raw:
        status |= STATUS_WEST
    alt = p.get("altitude_m", 0)
    if isinstance(alt, bool) or not isinstance(alt, (int, float)) or not -32768 <= round(alt) <= 32767:
        raise Jt808Error("bad_value", f"altitude_m must be in [-32768, 32767], got {alt!r}")
    body = struct.pack(">IIIIhHH", _uint(p.get("alarm_flags", 0), 32, "alarm_flags"), status, lat_raw, lon_raw,
                       int(round(alt)), _scaled(p.get("speed_kmh", 0), 10, 16, "speed_kmh"),
                       _uint(p.get("heading", 0), 16, "heading"))
    body += _time_bcd(p.get("ts"))
    extras = dict(p.get("extras") or {})
    if p.get("mileage_km") is not None:
        extras.setdefault("mileage_km", p["mileage_km"])
    for name, v in extras.items():
        if v is None:
            continue
        if name not in _EXTRA_IDS:
            raise Jt808Error("bad_value", f"unknown extra {name!r}")
        xid, size, scale = _EXTRA_IDS[name]
        body += bytes([xid, size]) + _scaled(v, scale, size * 8, name).to_bytes(size, "big")
    for key, hexval in (p.get("extras_raw") or {}).items():
        try:
            xid, val = int(key, 16), bytes.fromhex(hexval)
        except (TypeError, ValueError):
            raise Jt808Error("bad_value", f"extras_raw {key!r}: {hexval!r} is not id → hex") from None
        if not 0 <= xid <= 255 or len(val) > 255:
            raise Jt808Error("bad_value", f"extras_raw {key!r} out of range")
        body += bytes([xid, len(val)]) + val
    return body


def encode_batch_upload(pings: list[dict], reupload: bool) -> bytes:
    """0x0704 body (keep it under 1023 bytes: ~30 plain pings per message)."""
    if not 0 < len(pings) <= 0xFFFF:
        raise Jt808Error("bad_value", "a batch holds 1–65535 locations")
    body = struct.pack(">HB", len(pings), 1 if reupload else 0)
    for p in pings:
        item = encode_location(p)
        body += struct.pack(">H", len(item)) + item
    return body


def encode_driver_card(status: int, ts: Any, ic_result: int = 0, driver_name: str = "",
                       qualification_no: str = "", issuing_org: str = "", expiry: str | date = "2030-12-31",
                       id_number: str = "", version: int = 2013) -> bytes:
    """0x0702 body. ``status`` 1 = inserted (login), 2 = removed (logout); ``expiry`` 'YYYY-MM-DD'."""
    if status not in (1, 2):
        raise Jt808Error("bad_value", "status must be 1 (inserted) or 2 (removed)")
    body = bytes([status]) + _time_bcd(ts)
    if status == 2:
        return body
    body += bytes([_uint(ic_result, 8, "ic_result")])
    if ic_result != 0:
        return body
    name, org = _gbk(driver_name, "driver_name"), _gbk(issuing_org, "issuing_org")
    if len(name) > 255 or len(org) > 255:
        raise Jt808Error("bad_value", "driver_name and issuing_org must be at most 255 GBK bytes")
    exp = expiry.isoformat() if isinstance(expiry, date) else str(expiry)
    body += bytes([len(name)]) + name + _fixed(qualification_no, 20, "qualification_no")
    body += bytes([len(org)]) + org + to_bcd(exp.replace("-", ""), 4, "expiry")
    if version >= 2019:
        body += _fixed(id_number, 20, "id_number")
    return body


def encode_registration(plate: str, plate_color: int, province: int = 0, city: int = 0, maker: str = "RDWCH",
                        model: str = "SIM-1", device_id: str = "0000001", version: int = 2013) -> bytes:
    """0x0100 body (2013 or 2019 widths). ``plate_color`` 0 means ``plate`` holds a VIN."""
    w = (11, 30, 30) if version >= 2019 else (5, 20, 7)
    return (struct.pack(">HH", _uint(province, 16, "province"), _uint(city, 16, "city"))
            + _fixed(maker, w[0], "maker") + _fixed(model, w[1], "model") + _fixed(device_id, w[2], "device_id")
            + bytes([_uint(plate_color, 8, "plate_color")]) + _gbk(plate, "plate"))


def encode_authentication(auth_code: str, imei: str = "", software_version: str = "", version: int = 2013) -> bytes:
    code = _gbk(auth_code, "auth_code")
    if version < 2019:
        return code
    if len(code) > 255:
        raise Jt808Error("bad_value", "auth_code must be at most 255 bytes")
    return bytes([len(code)]) + code + _fixed(imei, 15, "imei") + _fixed(software_version, 20, "software_version")


def encode_heartbeat() -> bytes:
    return b""


def encode_general_response(serial: int, msg_id: int, result: int) -> bytes:
    """0x8001 (platform) / 0x0001 (terminal) body: replied serial, replied msg id, result
    (0 ok, 1 failure, 2 message error, 3 unsupported, 4 alarm acknowledged)."""
    return struct.pack(">HHB", _uint(serial, 16, "serial"), _uint(msg_id, 16, "msg_id"), _uint(result, 8, "result"))


def encode_registration_response(serial: int, result: int, auth_code: str = "") -> bytes:
    """0x8100 body: replied serial, result (0 ok, 1 vehicle registered, 2 no such vehicle, 3 terminal
    registered, 4 no such terminal), auth code when result is 0."""
    body = struct.pack(">HB", _uint(serial, 16, "serial"), _uint(result, 8, "result"))
    return body + (_gbk(auth_code, "auth_code") if result == 0 else b"")
