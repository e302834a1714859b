"""``roadwatch decode jt808``: JSON lines out, error lines, registry/registration plate mapping, exit codes."""
from __future__ import annotations

import io
import sys

import orjson
import pytest

from roadwatch.streams.cli import main
from roadwatch.streams.jt808 import codec as c

FRAME_1 = ("7E0200002A013833501744001900000000000000C201597FA806CC01580080000000081508180721210104000002F5"
           "02020000030200009F7E")   # jt808-frames.txt entry 1 (no escapes needed in it)


def _run(monkeypatch, capsysbinary, text: str, *args: str):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))
    rc = main(["decode", "jt808", *args])
    out, err = capsysbinary.readouterr()
    return rc, [orjson.loads(x) for x in out.splitlines()], err.decode()


def test_decode_ok_with_spaces_comments_and_hex_prefix(monkeypatch, capsysbinary):
    spaced = " ".join(FRAME_1[i:i + 2] for i in range(0, len(FRAME_1), 2))
    rc, rows, _ = _run(monkeypatch, capsysbinary, f"# comment\n\n{spaced}\nhex: {FRAME_1}\n")
    assert rc == 0 and len(rows) == 2
    r = rows[0]
    assert (r["line"], r["msg_id"], r["terminal_id"], r["serial"], r["version"]) == (3, "0x0200", "013833501744", 25, 2013)
    assert r["pings"][0]["ts"] == "2015-08-18T07:21:21+08:00"
    assert r["pings"][0]["lat"] == pytest.approx(22.6426) and r["pings"][0]["plate"] is None
    assert r["status_names"] == ["已定位"]


def test_bad_lines_give_error_json_and_exit_2(monkeypatch, capsysbinary):
    bad_sum = FRAME_1[:-4] + "00" + "7E"
    rc, rows, err = _run(monkeypatch, capsysbinary, f"zz\n{bad_sum}\n{FRAME_1}\n7E00027E\n")
    assert rc == 2
    assert [r.get("error") for r in rows] == ["bad_hex", "bad_checksum", None, "truncated"]
    assert [r["line"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["serial"] == 25 and rows[1]["msg_id"] == "0x0200"
    assert "3 of 4" in err


def test_plate_from_registration_in_input_and_from_registry(monkeypatch, capsysbinary, tmp_path):
    reg_frame = c.build_frame(0x0100, "13800000001", 1, c.encode_registration("粤B12345", 2))
    loc = {"lat": 23.1, "lon": 113.3, "ts": "2024-03-01T10:00:00+08:00", "speed_kmh": 30.0, "status_flags": 3}
    loc_a = c.build_frame(0x0200, "13800000001", 2, c.encode_location(loc))
    loc_b = c.build_frame(0x0704, "13800000002", 3, c.encode_batch_upload([loc, loc], True))
    registry = tmp_path / "reg.json"
    registry.write_bytes(orjson.dumps({"vehicles": [
        {"plate": "京A00002", "plate_color": 1, "category": "客运班车", "enterprise_id": "", "terminal_id": "13800000002"}]}))
    text = "\n".join(f.hex() for f in (reg_frame, loc_a, loc_b))
    rc, rows, _ = _run(monkeypatch, capsysbinary, text, "--registry", str(registry))
    assert rc == 0
    assert rows[0]["plate"] == "粤B12345" and rows[0]["msg_id"] == "0x0100"
    assert (rows[1]["pings"][0]["plate"], rows[1]["pings"][0]["plate_color"]) == ("粤B12345", 2)
    assert [p["plate"] for p in rows[2]["pings"]] == ["京A00002", "京A00002"]
    assert all(p["reupload"] for p in rows[2]["pings"])


def test_unescaped_option(monkeypatch, capsysbinary):
    # jt808-frames.txt entry 14 (2019 header) is an un-escaped capture containing no 7D/7E inside
    hexline = ("7e0704402d0100000866496077582164881d0001000028000000000000000701a00192091f2a470016000000022605"
               "0916422701040000258230010031010e507e")
    rc, rows, _ = _run(monkeypatch, capsysbinary, hexline + "\n", "--unescaped")
    assert rc == 0 and rows[0]["version"] == 2019 and rows[0]["protocol_version"] == 1
    assert rows[0]["pings"][0]["lat"] == pytest.approx(-27.263378)


def test_missing_registry_is_usage_error(monkeypatch, capsysbinary, tmp_path):
    rc, rows, err = _run(monkeypatch, capsysbinary, "", "--registry", str(tmp_path / "nope.json"))
    assert rc == 2 and rows == [] and "cannot read registry" in err
