"""``roadwatch decode jt809``: public vectors decode, positions give the ping fields of `decode jt808`, the
leniency rule is shown, bad frames give error JSON and exit 2 at the end."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import orjson

from roadwatch.streams.cli import main
from roadwatch.streams.jt808 import codec as c808
from roadwatch.streams.jt809 import codec as c
from roadwatch.streams.jt809 import messages as m

VECTORS = [orjson.loads(ln) for ln in (Path(__file__).parent / "data" / "jt809-vectors.jsonl").read_text().splitlines()
           if ln and not ln.startswith("#")]
JT808_FRAME = ("7E0200002A013833501744001900000000000000C201597FA806CC01580080000000081508180721210104000002F5"
               "02020000030200009F7E")


def _run(monkeypatch, capsysbinary, text: str, cmd: str, *args: str):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))
    rc = main(["decode", cmd, *args])
    out, err = capsysbinary.readouterr()
    return rc, [orjson.loads(x) for x in out.splitlines()], err.decode()


def test_public_frames_decode_with_their_cipher(monkeypatch, capsysbinary):
    frames = [v for v in VECTORS if v["kind"] == "frame"]
    rc, rows, _ = _run(monkeypatch, capsysbinary, "".join(v["hex"] + "\n" for v in frames), "jt809",
                       "--cipher", "30000000,20000000,20000000")
    assert rc == 0
    for v, r in zip(frames, rows):
        for k, want in v["expect"].items():
            assert r[k] == want, (v["source"], k)


def test_a_2019_position_gives_the_jt808_ping_fields(monkeypatch, capsysbinary):
    rc, rows, _ = _run(monkeypatch, capsysbinary, JT808_FRAME + "\n", "jt808")
    ping808 = rows[0]["pings"][0]
    loc = c808.parse_frame(bytes.fromhex(JT808_FRAME)).fields
    body = m.encode_with_vehicle("粤B12345", 2, m.REAL_LOCATION,
                                 m.encode_position_2019({**loc, "mileage_km": loc["extras"].get("mileage_km")}))
    frame = c.build_frame(m.DYNAMIC, body, sn=3, center_id=4401, protocol=2019, utc_time=1_700_000_000, escaped=False)
    rc, rows, _ = _run(monkeypatch, capsysbinary, frame.hex() + "\n", "jt809", "--version", "2019")
    assert rc == 0
    r = rows[0]
    assert (r["msg_id"], r["data_type"], r["plate"], r["center_id"], r["utc_time"]) == ("0x1200", "0x1202", "粤B12345",
                                                                                       4401, 1_700_000_000)
    ping = r["pings"][0]
    assert set(ping) == set(ping808)
    same = {k for k in ping808 if k not in ("plate", "plate_color", "terminal_id", "jt808_version")}
    assert {k: ping[k] for k in same} == {k: ping808[k] for k in same}
    assert (ping["plate"], ping["terminal_id"], ping["jt808_version"]) == ("粤B12345", "809:4401", 2019)


def test_rules_errors_and_exit_code(monkeypatch, capsysbinary):
    raw = c.build_frame(m.HEARTBEAT, b"", sn=0x5B5D5A5E, center_id=7, escaped=False)
    bad = bytearray(c.build_frame(m.HEARTBEAT, b"", sn=1, center_id=7))
    bad[-2] ^= 1
    enc = next(v for v in VECTORS if v.get("cipher"))["hex"]
    text = f"# comment\n{raw.hex()}\nzz\n{bytes(bad).hex()}\n{enc}\n"
    rc, rows, err = _run(monkeypatch, capsysbinary, text, "jt809")
    assert rc == 2 and "3 of 4" in err
    assert rows[0]["rules"] == ["raw"] and rows[0]["sn"] == 0x5B5D5A5E
    assert [r.get("error") for r in rows] == [None, "bad_hex", "bad_crc", "encrypted"]
    assert [r["line"] for r in rows] == [2, 3, 4, 5]
    assert rows[2]["center_id"] == 7
