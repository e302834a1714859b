"""JT/T 809 (2011 and 2019) framing: flags, escapes, CRC, header, body cipher. Pure: bytes in, objects out.

Wire rules (docs/jt809.md; JT/T 809-2019): ``5B | header | body | CRC | 5D``; inside the flags
``5B↔5A01``, ``5A↔5A02``, ``5D↔5E01``, ``5E↔5E02`` are escaped after the CRC is computed; the CRC is
CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection) over header + body as sent (after the body
cipher). MSG_LENGTH counts the whole un-escaped frame, both flags included. Integers are big-endian.

Header: MSG_LENGTH DWORD, MSG_SN DWORD, MSG_ID WORD, MSG_GNSSCENTERID DWORD, VERSION 3 B, ENCRYPT_FLAG BYTE,
ENCRYPT_KEY DWORD (2011: 22 bytes); 2019 adds TIME, UTC seconds as an 8-byte integer (30 bytes).

Real platforms deviate, so decoding is lenient in three recorded ways (``Frame.rules``):
``raw`` — the sender does not escape: length and CRC only hold on the bytes as received;
``length_ignored`` — MSG_LENGTH disagrees with the frame but the CRC holds (the frame was delimited by 0x5D);
``position_2011_in_2019`` — a 2019 0x1202 carrying the 36-byte 2011 position (see messages.py).
Every failure raises ``Jt809Error`` with a stable code; random bytes never raise anything else.
"""
from __future__ import annotations

import binascii
import re
import struct
from dataclasses import dataclass, field

from roadwatch.models.records import InvalidRecord

BEGIN, END = 0x5B, 0x5D
HEADER_2011, HEADER_2019 = 22, 30
MIN_FRAME = 1 + HEADER_2011 + 2 + 1
_ESC = {0x5B: b"\x5a\x01", 0x5A: b"\x5a\x02", 0x5D: b"\x5e\x01", 0x5E: b"\x5e\x02"}
_UNESC = {(0x5A, 0x01): 0x5B, (0x5A, 0x02): 0x5A, (0x5E, 0x01): 0x5D, (0x5E, 0x02): 0x5E}
_HEAD = struct.Struct(">IIHI3sBI")            # the 22-byte 2011 header


class Jt809Error(InvalidRecord):
    """Undecodable JT/T 809 input. Codes: bad_frame, bad_escape, bad_crc, length_mismatch, truncated,
    bad_value, bad_time, encrypted (a ciphered body and no key for it), unsupported_msg, frame_too_large."""

    def __init__(self, code: str, detail: str, header: "Header | None" = None):
        super().__init__(code, detail)
        self.header = header


@dataclass(frozen=True)
class Cipher:
    """Per-link body cipher parameters (JT/T 809 §5.3 / appendix): M1, IA1, IC1."""
    m1: int
    ia1: int
    ic1: int

    @classmethod
    def parse(cls, text: str) -> "Cipher":
        """``"M1,IA1,IC1"`` (decimal or 0x-hex) → Cipher."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 3:
            raise Jt809Error("bad_value", f"cipher must be M1,IA1,IC1, got {text!r}")
        try:
            vals = [int(p, 0) for p in parts]
        except ValueError:
            raise Jt809Error("bad_value", f"cipher values must be integers, got {text!r}") from None
        if any(not 0 <= v <= 0xFFFFFFFF for v in vals):
            raise Jt809Error("bad_value", "cipher values must be unsigned 32-bit integers")
        return cls(*vals)


def crypt(data: bytes, key: int, cipher: Cipher) -> bytes:
    """The JT/T 809 body cipher; the same call encrypts and decrypts. Per byte:
    ``key = IA1 × (key mod M1) + IC1`` in unsigned 32-bit arithmetic, XOR with ``(key >> 20) & 0xFF``.
    A key of 0 counts as 1, and so does an M1 of 0 (no division by zero)."""
    k = key & 0xFFFFFFFF or 1
    m1 = cipher.m1 or 1
    ia1, ic1 = cipher.ia1, cipher.ic1
    out = bytearray(data)
    for i in range(len(out)):
        k = (ia1 * (k % m1) + ic1) & 0xFFFFFFFF
        out[i] ^= (k >> 20) & 0xFF
    return bytes(out)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR ("123456789" → 0x29B1).
    ``binascii.crc_hqx`` is exactly this CRC given the 0xFFFF start value (and runs in C)."""
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def escape(data: bytes) -> bytes:
    # 0x5A and 0x5E first: the other two replacements introduce them
    return (bytes(data).replace(b"\x5a", b"\x5a\x02").replace(b"\x5e", b"\x5e\x02")
            .replace(b"\x5b", b"\x5a\x01").replace(b"\x5d", b"\x5e\x01"))


_BAD_ESC = re.compile(rb"[\x5a\x5e](?![\x01\x02])")
_PAIR = re.compile(rb"[\x5a\x5e][\x01\x02]")
_PAIRS = {bytes(k): bytes([v]) for k, v in _UNESC.items()}


def unescape(data: bytes) -> bytes:
    """Undo the escapes (one pass); a 0x5A/0x5E not followed by 01/02 is ``bad_escape``."""
    data = bytes(data)
    if 0x5A not in data and 0x5E not in data:
        return data
    bad = _BAD_ESC.search(data)
    if bad is not None:
        i = bad.start()
        nxt = f"0x{data[i + 1]:02X}" if i + 1 < len(data) else "the end"
        raise Jt809Error("bad_escape", f"0x{data[i]:02X} followed by {nxt} at offset {i}")
    return _PAIR.sub(lambda mt: _PAIRS[mt.group()], data)


# --- stream splitting ----------------------------------------------------------------------------------

def _unescaped_prefix(buf: bytes | bytearray, start: int, count: int) -> tuple[bytes, int] | None:
    """The first ``count`` un-escaped bytes after ``start`` and the raw index after them; None when the
    buffer ends first or an escape is invalid (then the caller falls back to the raw bytes)."""
    out = bytearray()
    i, n = start, len(buf)
    while len(out) < count:
        if i >= n:
            return None
        b = buf[i]
        if b in (0x5A, 0x5E):
            if i + 1 >= n:
                return None
            v = _UNESC.get((b, buf[i + 1]))
            if v is None:
                return None
            out.append(v)
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out), i


def split_frames(buffer: bytearray, max_frame_bytes: int | None = None) -> list[bytes]:
    """Remove every complete frame from ``buffer`` (in place) and return them as received (flags included).

    Frames are delimited by MSG_LENGTH (un-escaped frame size): the frame ends at the raw byte where
    MSG_LENGTH says, if that byte is 0x5D (senders that do not escape, or nothing to escape); else where
    MSG_LENGTH un-escaped bytes end, if a 0x5D follows (escaping senders); else at the next 0x5D if the
    CRC holds up to there (a wrong MSG_LENGTH), or once MSG_LENGTH bytes have arrived (a bad frame:
    ``parse_frame`` says why). Bytes before a 0x5B are line noise and dropped. An
    unfinished frame stays in ``buffer``; one longer than ``max_frame_bytes`` raises ``frame_too_large``."""
    frames: list[bytes] = []
    pos, n = 0, len(buffer)
    while True:
        s = buffer.find(BEGIN, pos)
        if s < 0:
            pos = n
            break
        head = _unescaped_prefix(buffer, s + 1, 4)
        if head is None and n - s - 1 >= 8:           # invalid escape inside MSG_LENGTH: read it raw
            head = (bytes(buffer[s + 1:s + 5]), s + 5)
        if head is None:
            pos = s
            break
        length = int.from_bytes(head[0], "big")
        end = -1
        usable = MIN_FRAME <= length <= (max_frame_bytes or 1 << 24)
        if not usable:
            length = MIN_FRAME                            # unusable MSG_LENGTH: only the next 0x5D can end it
        nxt = buffer.find(END, s + 1)
        if usable:
            if s + length <= n and buffer[s + length - 1] == END:
                end = s + length - 1                      # as received (nothing escaped, or not escaping)
            elif nxt >= 0:
                seg = buffer[s + 1:nxt]                   # an escaping sender: 0x5D only ends frames
                if len(seg) - seg.count(0x5A) - seg.count(0x5E) == length - 2:
                    end = nxt
        if end < 0:                                       # MSG_LENGTH does not delimit it: the next 0x5D …
            if nxt >= 0 and _crc_holds(bytes(buffer[s + 1:nxt])):
                end = nxt                                 # … when the CRC holds up to there
            elif s + length > n and (max_frame_bytes is None or n - s <= max_frame_bytes):
                pos = s                                   # not all there yet
                break
            elif nxt >= 0:
                end = nxt                                 # a bad frame: parse_frame will say why
            else:
                pos = s
                break
        frame = bytes(buffer[s:end + 1])
        pos = end + 1
        if max_frame_bytes is not None and len(frame) > max_frame_bytes:
            del buffer[:pos]
            raise Jt809Error("frame_too_large", f"frame of {len(frame)} bytes exceeds {max_frame_bytes}")
        frames.append(frame)
    del buffer[:pos]
    if max_frame_bytes is not None and len(buffer) > max_frame_bytes:
        size = len(buffer)
        del buffer[:]
        raise Jt809Error("frame_too_large", f"unterminated frame of {size} bytes exceeds {max_frame_bytes}")
    return frames


def _crc_holds(inner: bytes) -> bool:
    """Does the CRC of a candidate frame (between the flags) hold, un-escaped or as received?"""
    for cand in (inner, None):
        if cand is None:
            try:
                cand = unescape(inner)
            except Jt809Error:
                return False
        if len(cand) >= HEADER_2011 + 2 and crc16(cand[:-2]) == int.from_bytes(cand[-2:], "big"):
            return True
    return False


# --- header --------------------------------------------------------------------------------------------

@dataclass
class Header:
    length: int
    sn: int
    msg_id: int
    center_id: int                 # MSG_GNSSCENTERID: the lower platform's access code
    version: str                   # "1.0.0"
    encrypted: bool
    encrypt_key: int
    protocol: int                  # 2011 or 2019 (header layout)
    utc_time: int | None = None    # 2019: sending time, UTC seconds

    @property
    def msg_id_hex(self) -> str:
        return f"0x{self.msg_id:04X}"


@dataclass
class Frame:
    header: Header
    body: bytes                    # decrypted body
    rules: list[str] = field(default_factory=list)   # leniency rules this frame needed (empty: standard)


def protocol_of(version: bytes, default: int | None) -> int:
    """Header layout: the configured/asked protocol, else 2019 when VERSION ≥ 1.2 (2019 platforms send
    1.2.x; 2011 ones 1.0.0)."""
    if default in (2011, 2019):
        return default
    return 2019 if (version[0], version[1]) >= (1, 2) else 2011


def _header(data: bytes, protocol: int | None) -> tuple[Header, int]:
    if len(data) < HEADER_2011:
        raise Jt809Error("truncated", f"{len(data)} bytes is shorter than the 22-byte header")
    length, sn, msg_id, center, ver, flag, key = _HEAD.unpack_from(data)
    proto = protocol_of(ver, protocol)
    h = Header(length, sn, msg_id, center, ".".join(str(b) for b in ver), flag == 1, key, proto)
    if proto == 2019:
        if len(data) < HEADER_2019:
            raise Jt809Error("truncated", f"{len(data)} bytes is shorter than the 30-byte 2019 header", h)
        h.utc_time = int.from_bytes(data[22:30], "big")
        return h, HEADER_2019
    return h, HEADER_2011


def _check(inner: bytes) -> tuple[bool, bool]:
    """(MSG_LENGTH agrees, CRC agrees) for un-escaped bytes between the flags."""
    if len(inner) < HEADER_2011 + 2:
        return False, False
    length_ok = int.from_bytes(inner[:4], "big") == len(inner) + 2
    crc_ok = crc16(inner[:-2]) == int.from_bytes(inner[-2:], "big")
    return length_ok, crc_ok


def parse_frame(frame: bytes, protocol: int | None = None, cipher: Cipher | None = None) -> Frame:
    """One frame as received (flags included) → ``Frame`` with the decrypted body.

    Un-escaped first; if MSG_LENGTH or the CRC fails there, the raw bytes are tried (a sender that does
    not escape) and the rule is recorded. ``protocol`` forces the 2011/2019 header, else VERSION decides.
    An encrypted body needs ``cipher`` (else ``encrypted``)."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise Jt809Error("bad_frame", f"expected bytes, got {type(frame).__name__}")
    data = bytes(frame)
    if len(data) < 2 or data[0] != BEGIN or data[-1] != END:
        raise Jt809Error("bad_frame", "frame must start with 0x5B and end with 0x5D")
    raw = data[1:-1]
    rules: list[str] = []
    try:
        inner: bytes | None = unescape(raw)
        esc_err = None
    except Jt809Error as e:
        inner, esc_err = None, e
    ok_len, ok_crc = _check(inner) if inner is not None else (False, False)
    if not (ok_len and ok_crc) and inner != raw:
        raw_len, raw_crc = _check(raw)
        if raw_crc:
            inner, ok_len, ok_crc = raw, raw_len, raw_crc
            rules.append("raw")
    if inner is None:
        assert esc_err is not None
        raise esc_err
    if len(inner) < HEADER_2011 + 2:
        raise Jt809Error("truncated", f"frame of {len(inner) + 2} bytes is shorter than header + CRC + flags")
    try:
        head, hlen = _header(inner[:-2], protocol)
    except Jt809Error as e:
        head, hlen, herr = e.header, 0, e
    else:
        herr = None
    if not ok_crc:
        got = int.from_bytes(inner[-2:], "big")
        raise Jt809Error("bad_crc", f"CRC 0x{got:04X}, computed 0x{crc16(inner[:-2]):04X}", head)
    if herr is not None:
        raise herr
    assert head is not None
    if not ok_len:
        rules.append("length_ignored")
    body = inner[hlen:-2]
    if head.encrypted:
        if cipher is None:
            raise Jt809Error("encrypted", f"body is encrypted (key {head.encrypt_key}) and no M1/IA1/IC1 "
                                          f"is configured for centre {head.center_id}", head)
        body = crypt(body, head.encrypt_key, cipher)
    return Frame(head, body, rules)


def build_frame(msg_id: int, body: bytes, *, sn: int, center_id: int, protocol: int = 2011,
                version: str | None = None, cipher: Cipher | None = None, encrypt_key: int = 0,
                utc_time: int | None = None, escaped: bool = True) -> bytes:
    """Header + (encrypted) body + CRC, escaped (unless ``escaped=False``, as careless senders do), with
    flags. ``cipher`` given → the body is encrypted with ``encrypt_key`` and ENCRYPT_FLAG is 1."""
    if protocol not in (2011, 2019):
        raise Jt809Error("bad_value", f"protocol must be 2011 or 2019, got {protocol!r}")
    ver = version or ("1.2.15" if protocol == 2019 else "1.0.0")
    try:
        vb = bytes(int(x) for x in ver.split("."))
    except ValueError:
        raise Jt809Error("bad_value", f"version must be a.b.c, got {ver!r}") from None
    if len(vb) != 3:
        raise Jt809Error("bad_value", f"version must be a.b.c, got {ver!r}")
    body = bytes(body)
    if cipher is not None:
        body = crypt(body, encrypt_key, cipher)
    hlen = HEADER_2019 if protocol == 2019 else HEADER_2011
    length = 1 + hlen + len(body) + 2 + 1
    head = _HEAD.pack(length, sn & 0xFFFFFFFF, msg_id, center_id & 0xFFFFFFFF, vb,
                      1 if cipher is not None else 0, encrypt_key & 0xFFFFFFFF)
    if protocol == 2019:
        head += struct.pack(">Q", utc_time or 0)
    inner = head + body
    inner += struct.pack(">H", crc16(inner))
    return bytes([BEGIN]) + (escape(inner) if escaped else inner) + bytes([END])
