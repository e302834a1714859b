"""The gateway's hot path: one well-formed 0x0200 frame → ping fields and its 0x8001 answer, in a few µs.

Nearly every frame a gateway sees is a terminal's periodic 0x0200. The general codec (``codec.py``) builds
a ``Message``, a dict of every extra, an ISO time string that the batcher parses back to epoch ms, and a
reply through the general encoder — ~40 µs per position. This module handles exactly the strict, common
case and returns None for anything else (split or encrypted messages, other ids, bad escapes, checksums,
lengths, BCD or times, a body shorter than the fixed part), which then takes the codec's path and gets its
precise error. ``tests/test_gateway_fastpath.py`` checks field by field that both paths agree.
"""
from __future__ import annotations

import struct
from datetime import datetime

from roadwatch.models.records import BEIJING

from .alarms import STATUS_SOUTH, STATUS_WEST

_FIXED = struct.Struct(">IIIIhHH")
_REPLY_TAIL = struct.Struct(">HHHB")          # our serial, replied serial, replied id, result
_DAY_MS: dict[bytes, int] = {}                # BCD YYMMDD → epoch ms of 00:00 Beijing (valid dates only)


def xor(data: bytes) -> int:
    """XOR of all bytes (the JT/T 808 check code) without a per-byte Python loop: the bytes as 64-bit words
    (zero-padded; a zero byte changes no XOR), the words XORed, the last word folded to one byte."""
    n = len(data)
    words = (n + 7) >> 3
    if not 0 < words <= len(_WORDS):
        return _fold(int.from_bytes(data, "little"), n)
    x = 0
    for w in _WORDS[words - 1].unpack(data + _PAD[-n & 7]):
        x ^= w
    x ^= x >> 32
    x ^= x >> 16
    x ^= x >> 8
    return x & 0xFF


def _fold(x: int, n: int) -> int:
    """XOR of the ``n`` bytes of ``x``: halve the width until one byte is left."""
    while n > 1:
        h = (n + 1) >> 1
        x = (x ^ (x >> (h << 3))) & ((1 << (h << 3)) - 1)
        n = h
    return x


_WORDS = tuple(struct.Struct(f"<{k}Q") for k in range(1, 161))     # frames up to 1 280 bytes
_PAD = tuple(bytes(k) for k in range(8))
# BCD byte → its two-digit value; 99 for a byte with a nibble above 9 (an hour, minute or second of 99 is
# refused like the invalid byte; the date's bytes are checked with ``_BCD_OK``)
_BCD = tuple((b >> 4) * 10 + (b & 15) if (b >> 4) < 10 and (b & 15) < 10 else 99 for b in range(256))
_BCD_OK = tuple((b >> 4) < 10 and (b & 15) < 10 for b in range(256))
_U32 = struct.Struct(">I")


def _unescape(raw: bytes) -> bytes | None:
    """7D 02 → 7E, 7D 01 → 7D; None when a 7D is followed by anything else (the codec names the error)."""
    n = raw.count(b"\x7d")
    if n == 0:
        return raw
    if raw.count(b"\x7d\x01") + raw.count(b"\x7d\x02") != n:
        return None
    # every 7D starts a pair and pairs cannot overlap, so each replacement sees real pairs only
    return raw.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")


def _day_ms(yymmdd: bytes) -> int | None:
    """Epoch ms of 00:00 Beijing on the BCD date ``yymmdd`` (3 bytes); None if it is not a date."""
    ms = _DAY_MS.get(yymmdd)
    if ms is None:
        if not all(_BCD_OK[b] for b in yymmdd):
            return None
        try:
            d = datetime(2000 + _BCD[yymmdd[0]], _BCD[yymmdd[1]], _BCD[yymmdd[2]], tzinfo=BEIJING)
        except ValueError:
            return None
        ms = int(d.timestamp()) * 1000
        if len(_DAY_MS) > 4096:
            _DAY_MS.clear()
        _DAY_MS[yymmdd] = ms
    return ms


def location(frame: bytes):
    """``frame`` (with its 7E delimiters) → ``(head, terminal_digits, serial, fix)`` or None.

    ``head`` is the raw header up to the terminal id (what the reply echoes), ``fix`` the tuple
    (ts_ms, lat, lon, speed_kmh, heading, altitude_m, alarm_flags, status_flags, mileage_km | None).
    Offsets into the one unescaped buffer, no slices of the body; the check code is verified as the XOR
    of everything including it being 0."""
    if len(frame) < 16 or frame[1] != 0x02 or frame[2] != 0x00:      # msg id 0x0200 (never escaped)
        return None
    if frame[0] != 0x7E or frame[-1] != 0x7E or frame.count(b"\x7e") != 2:
        return None
    raw = frame[1:-1]
    if b"\x7d" in raw:
        raw = _unescape(raw)
        if raw is None or len(raw) < 13:
            return None
    props = (raw[2] << 8) | raw[3]
    if props & 0x3C00:                            # encrypted or split: the codec's path
        return None
    if props & 0x4000:
        hlen, tid = 17, raw[5:15]
    else:
        hlen, tid = 12, raw[4:10]
    end = len(raw) - 1                            # the check code's offset
    body_len = end - hlen
    if body_len != props & 0x3FF or body_len < 28 or xor(raw):
        return None
    digits = tid.hex()
    if not digits.isdigit():
        return None
    alarm, status, lat_raw, lon_raw, alt, speed_raw, heading = _FIXED.unpack_from(raw, hlen)
    t = hlen + 22
    day = _day_ms(raw[t:t + 3])
    hh, mi, ss = _BCD[raw[t + 3]], _BCD[raw[t + 4]], _BCD[raw[t + 5]]
    if day is None or hh > 23 or mi > 59 or ss > 59:
        return None
    mileage = None
    pos = hlen + 28
    while end - pos >= 2:                         # the codec's extras walk, keeping only mileage (0x01)
        xid, xlen = raw[pos], raw[pos + 1]
        pos += 2
        if xlen > end - pos:
            break
        if xid == 0x01 and xlen == 4:
            mileage = _U32.unpack_from(raw, pos)[0] / 10
        pos += xlen
    lat = lat_raw / 1e6
    lon = lon_raw / 1e6
    if status & STATUS_SOUTH:
        lat = -lat
    if status & STATUS_WEST:
        lon = -lon
    fix = (day + ((hh * 60 + mi) * 60 + ss) * 1000, lat, lon, speed_raw / 10, heading, float(alt), alarm, status,
           mileage)
    return raw[:hlen - 2], digits, (raw[hlen - 2] << 8) | raw[hlen - 1], fix


def ack_prefix(head: bytes) -> tuple[bytes, int]:
    """What every 0x8001 answering frames with this header starts with — ``7E``, msg id, props[, version],
    terminal id, escaped — and the XOR of those bytes: built once per connection, not per position."""
    if len(head) == 15:                           # 2019: version byte (0 is answered as 1, like the codec)
        ident = (head[4] or 1).to_bytes(1, "big") + head[5:]
        props = 0x4005
    else:
        ident, props = head[4:], 5
    raw = b"\x80\x01" + props.to_bytes(2, "big") + ident
    return b"\x7e" + raw.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02"), xor(raw)


def ack_with(prefix: bytes, prefix_xor: int, our_serial: int, serial: int, msg_id: int, result: int) -> bytes:
    """The 0x8001 after ``ack_prefix``: serials, replied id, result, check code, closing 7E."""
    x = (prefix_xor ^ (our_serial >> 8) ^ (our_serial & 0xFF) ^ (serial >> 8) ^ (serial & 0xFF)
         ^ (msg_id >> 8) ^ (msg_id & 0xFF) ^ result)
    tail = _REPLY_TAIL.pack(our_serial, serial, msg_id, result) + bytes((x,))
    if b"\x7d" in tail or b"\x7e" in tail:
        tail = tail.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")
    return prefix + tail + b"\x7e"


def ack(head: bytes, our_serial: int, serial: int, msg_id: int, result: int) -> bytes:
    """0x8001 answering the frame whose header began with ``head`` (msg id, props[, version], terminal)."""
    return ack_with(*ack_prefix(head), our_serial, serial, msg_id, result)
