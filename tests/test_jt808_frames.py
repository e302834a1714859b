"""Every real device frame of tests/data/jt808-frames.txt decodes to the values listed in its ``our-decode`` lines.

The expectations are parsed from the text file (written independently of this codec), not from our output.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from roadwatch.streams.jt808 import codec as c
from roadwatch.streams.jt808.alarms import alarm_names

FRAMES_FILE = Path(__file__).resolve().parent / "data" / "jt808-frames.txt"  # real device frames

ENTRY_RE = re.compile(r"^## (\d+)\s+(0x[0-9A-Fa-f]{4})", re.M)
HEAD_RE = re.compile(r"our-decode: header (2011/2013|2019), terminal (\d+), serial (\d+)"
                     r"(?: batch count=(\d+) type=(\d+))?")
ITEM_RE = re.compile(
    r"item (\d+): time (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\s+lat (-?[\d.]+) lon (-?[\d.]+)\s+"
    r"alt (-?\d+) m\s+speed ([\d.]+) km/h\s+dir (\d+)\s+ACC (on|off)\s+fix (yes|no)\s+"
    r"alarm 0x([0-9A-Fa-f]{8}) status 0x([0-9A-Fa-f]{8})(?:; alarm bits: ([^\n]*?))?\s+extras \[([0-9A-F ]*)\]")

# The file's English alarm names → JT/T 808-2013 standard names (§6.2 table).
FILE_ALARM_NAMES = {"fatigue driving": "疲劳驾驶", "main power undervoltage": "终端主电源欠压",
                    "main power off": "终端主电源掉电", "day accumulated driving timeout": "当天累计驾驶超时",
                    "reserved17": "保留位17"}


def _entries():
    text = FRAMES_FILE.read_text(encoding="utf-8")
    starts = list(ENTRY_RE.finditer(text))
    out = []
    for i, m in enumerate(starts):
        block = text[m.start(): starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        head = HEAD_RE.search(block)
        hexline = re.search(r"^hex: (\S+)", block, re.M).group(1)
        items = ITEM_RE.findall(block)
        out.append(pytest.param(int(m.group(1)), int(m.group(2), 16), head.groups(), items, hexline,
                                id=f"entry{m.group(1)}"))
    return out


ENTRIES = _entries()


def test_file_has_all_15_entries():
    assert len(ENTRIES) == 15
    assert sum(len(p.values[3]) for p in ENTRIES) == 10 + 8 + 4 + 1 + 1 + 3   # every item line parsed


@pytest.mark.parametrize("num,msg_id,head,items,hexline", ENTRIES)
def test_real_frame_decodes_to_listed_values(num, msg_id, head, items, hexline):
    msg = c.parse_frame(bytes.fromhex(hexline), unescaped=(num != 10))
    version, terminal, serial, bcount, btype = head
    assert msg.msg_id == msg_id
    assert msg.version == (2019 if version == "2019" else 2013)
    assert msg.terminal_id == terminal
    assert msg.serial == int(serial)
    if msg_id == 0x0704:
        assert msg.fields["count"] == int(bcount)
        assert msg.fields["type"] == int(btype)
        assert msg.fields["reupload"] is (btype == "1")
        assert msg.fields["item_errors"] == []
        locs = msg.fields["items"]
    else:
        locs = [msg.fields]
    assert len(locs) == len(items)
    for loc, it in zip(locs, items):
        (_, y, mo, d, h, mi, s, lat, lon, alt, speed, heading, acc, fix, alarm, status, bits, extras) = it
        assert loc["ts"] == f"{y}-{mo}-{d}T{h}:{mi}:{s}+08:00"
        assert loc["lat"] == pytest.approx(float(lat), abs=1e-9)
        assert loc["lon"] == pytest.approx(float(lon), abs=1e-9)
        assert loc["altitude_m"] == int(alt)
        assert loc["speed_kmh"] == pytest.approx(float(speed))
        assert loc["heading"] == int(heading)
        assert bool(loc["status_flags"] & 1) is (acc == "on")
        assert bool(loc["status_flags"] & 2) is (fix == "yes")
        assert loc["alarm_flags"] == int(alarm, 16)
        assert loc["status_flags"] == int(status, 16)
        assert loc["extra_ids"] == [int(x, 16) for x in extras.split()]
        assert "extras_error" not in loc
        if bits:
            names = [FILE_ALARM_NAMES[re.sub(r"^bit\d+ ", "", b.strip())] for b in bits.split(",")]
            assert alarm_names(loc["alarm_flags"], 2013) == names


def test_entry10_raw_frame_needs_unescaping():
    hexline = next(p.values[4] for p in ENTRIES if p.values[0] == 10)
    raw = bytes.fromhex(hexline)
    assert b"\x7d\x02" in raw or b"\x7d\x01" in raw
    with pytest.raises(c.Jt808Error) as e:
        c.parse_frame(raw, unescaped=True)      # escapes left in: checksum/length cannot match
    assert e.value.code in ("bad_checksum", "length_mismatch", "truncated")


def test_unescaped_entries_also_parse_when_re_escaped():
    """Escaping an un-escaped capture gives the wire form; the normal path must decode it the same way."""
    for p in ENTRIES:
        num, hexline = p.values[0], p.values[4]
        if num == 10:
            continue
        inner = bytes.fromhex(hexline)[1:-1]
        wire = b"\x7e" + c.escape(inner) + b"\x7e"
        assert c.parse_frame(wire).fields == c.parse_frame(bytes.fromhex(hexline), unescaped=True).fields


def test_known_extras_values():
    """Spot values computed by hand from the hex: entry 13 (0x01 = 0x000036C9 → 1402.5 km, 0x31 = 0x0E
    satellites, as Traccar asserts) and entry 14 (2019 header, south latitude via status bit 2)."""
    by_num = {p.values[0]: p.values[4] for p in ENTRIES}
    e13 = c.parse_frame(bytes.fromhex(by_num[13]), unescaped=True).fields["items"][0]
    assert e13["extras"]["mileage_km"] == pytest.approx(0x36C9 / 10)
    assert e13["extras"]["satellites"] == 14
    assert e13["extras_raw"]["0x14"] == "00000000"
    e14 = c.parse_frame(bytes.fromhex(by_num[14]), unescaped=True)
    assert e14.protocol_version == 1
    assert e14.fields["items"][0]["extras"]["satellites"] == 14
    assert e14.fields["items"][0]["lat"] < 0
