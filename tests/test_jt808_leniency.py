"""Decoder leniency where it is safe (issue 14): every case is a real public frame or test vector from
another JT/T 808 implementation (tests/data/jt808-lenient-frames.txt names the source of each)."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from roadwatch.models.config import Config
from roadwatch.models.ping_state import PingProcessor
from roadwatch.models.pingbatch import decode_batch, encode_batch
from roadwatch.models.registry import parse_registry
from roadwatch.streams.jt808 import codec as c
from roadwatch.streams.jt808.alarms import alarm_names

DATA = Path(__file__).parent / "data" / "jt808-lenient-frames.txt"


def vectors() -> dict[str, bytes]:
    out = {}
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _src, _what, hx = (x.strip() for x in line.split("|"))
        out[name] = bytes.fromhex(hx)
    return out


V = vectors()


def test_binary_terminal_id_decodes_as_hex_and_reupload_items_survive():
    msg = c.parse_frame(V["nonbcd_0704"], unescaped=True)
    assert msg.terminal_id == "4EB6FB4AFD9E"
    f = msg.fields
    assert (f["count"], f["type"], f["reupload"], len(f["items"]), f["item_errors"]) == (6, 1, True, 6, [])
    assert f["items"][0]["ts"] == "2025-11-12T15:45:45+08:00"
    pings = c.message_pings(msg, "湘A12345", 2)
    assert all(p["reupload"] and p["terminal_id"] == "4EB6FB4AFD9E" for p in pings)
    # the interchange schema accepts the hex id: the batch the gateway would publish decodes
    assert len(decode_batch(encode_batch(pings))) == 6


def test_binary_terminal_id_keeps_its_binding_and_round_trips_in_replies():
    msg = c.parse_frame(V["nonbcd_0102"], unescaped=True)
    assert msg.terminal_id == "4F07788EF676"
    assert c.terminal_key("4f07788ef676") == c.terminal_key(msg.terminal_id)    # registry spelling may differ
    reply = c.build_frame(0x8001, msg.terminal_id, 1, c.encode_general_response(msg.serial, msg.msg_id, 0))
    assert c.parse_frame(reply).terminal_id == "4F07788EF676"


def test_zero_card_expiry_is_unknown_not_a_rejected_event():
    msg = c.parse_frame(V["card_zero_expiry_0702"], unescaped=True)
    f = msg.fields
    assert (f["event"], f["ic_result"], f["qualification_no"], f["expiry"]) == ("login", 0, "0029b885", None)


@pytest.mark.parametrize("name,version,qual,idno", [
    ("card_leftpad_2013_body", 2013, "qwe123456aaa", None),
    ("card_leftpad_2019_body", 2019, "qwe123456aaa", "12345678901234567"),
])
def test_nul_left_padded_text_fields(name, version, qual, idno):
    f = c.decode_driver_card(V[name], version)
    assert f["driver_name"] == "koike" and f["qualification_no"] == qual and f["issuing_org"] == "qwertx"
    assert f.get("id_number") == idno


@pytest.mark.parametrize("expiry,want", [(b"\x20\x25\x02\x00", None), (b"\x20\x25\x02\x28", "2025-02-28"),
                                         (b"\xff\xff\xff\xff", None)])
def test_invalid_expiry_days_are_unknown(expiry, want):
    body = bytearray(V["card_leftpad_2013_body"])
    body[-4:] = expiry
    assert c.decode_driver_card(bytes(body), 2013)["expiry"] == want


def test_alarm_names_follow_the_protocol_version_in_decoder_and_engine():
    msg = c.parse_frame(V["loc_2019_0200"], unescaped=True)
    assert msg.version == 2019
    flags = msg.fields["alarm_flags"]
    assert alarm_names(flags, 2019)[2:4] == ["疲劳驾驶报警", "危险驾驶行为报警"]
    assert alarm_names(flags, 2013)[2:4] == ["疲劳驾驶", "危险预警"]
    reg = parse_registry({"enterprises": [{"enterprise_id": "E1", "name": "E"}],
                          "vehicles": [{"plate": "湘A12345", "plate_color": 2, "category": "普通货车",
                                        "enterprise_id": "E1"}]})
    ping = c.message_pings(msg, "湘A12345", 2)[0]
    assert ping["jt808_version"] == 2019
    out = PingProcessor(Config({"quality.require_positioned": False}), reg).process(
        decode_batch(encode_batch([ping])))
    names = {a["details"]["bit"]: a["details"]["name"] for a in out.alerts if a["type"] == "terminal_alarm"}
    assert names[2] == "疲劳驾驶报警" and names[3] == "危险驾驶行为报警"


def test_out_of_range_coordinates_are_flagged_and_the_ping_stays_unqualified():
    """Derived from Traccar frame #1 of tests/data/jt808-frames.txt: its latitude DWORD replaced by the
    two's complement of itself (what a terminal with a signed-integer bug sends), checksum recomputed."""
    real = bytes.fromhex("7E0200002A013833501744001900000000000000C201597FA806CC01580080000000081508180721210104000002F502020000030200009F7E")
    raw = bytearray(c.unescape(real[1:-1])[:-1])
    lat_at = 12 + 8
    (lat_raw,) = struct.unpack_from(">I", raw, lat_at)
    struct.pack_into(">I", raw, lat_at, (-lat_raw) & 0xFFFFFFFF)
    frame = b"\x7e" + c.escape(bytes(raw) + bytes([c.checksum(bytes(raw))])) + b"\x7e"
    msg = c.parse_frame(frame)
    assert msg.fields["range_errors"] == ["lat"] and msg.fields["lat"] > 4000
    pings = c.message_pings(msg, "湘A12345", 2)
    cols = decode_batch(encode_batch(pings))                  # not dropped by the schema
    out = PingProcessor(Config()).process(cols)
    assert out.qualified == 0 and out.reasons.get("lat") == 1
