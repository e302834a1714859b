"""``roadwatch assess wim`` end to end (subprocess, as an operator would run it)."""
import hashlib
import io
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import orjson

from roadwatch.streams.cli import main as cli_main

from test_overload_helpers import PLATE, T0, iso, registry_dict

ROOT = Path(__file__).resolve().parents[1]
ROADWATCH = [str(Path(sys.executable).parent / "roadwatch")]   # the console script, as operators run it


def line(gross, ts=T0, plate=PLATE, **kw):
    d = {"station_id": "S1", "lane": 1, "ts": iso(ts), "plate": plate, "plate_color": 2, "plate_confidence": 0.97,
         "vehicle_kind": "train", "axle_count": 6, "axle_loads_kg": [7000] + [(gross - 7000) / 5] * 5,
         "axle_spacings_m": [3.5] * 5, "gross_kg": gross, "speed_kmh": 60, "device_id": "W1"}
    d.update(kw)
    return orjson.dumps(d)


def run(tmp_path, stdin: bytes, *args):
    env = dict(os.environ, ROADWATCH_SET=f'paths.data_dir="{tmp_path / "var"}"')
    env.pop("ROADWATCH_CONFIG", None)
    env.pop("ROADWATCH_SIGNING_KEY_FILE", None)
    p = subprocess.run([*ROADWATCH, "assess", "wim", *args], input=stdin, capture_output=True, cwd=ROOT,
                       env=env, timeout=60)
    return p.returncode, [orjson.loads(x) for x in p.stdout.splitlines()], p.stderr.decode()


def test_batch_assessment_with_pings_evidence_and_bad_lines(tmp_path, monkeypatch):
    reg = tmp_path / "registry.json"
    reg.write_bytes(orjson.dumps(registry_dict()))
    pings = tmp_path / "pings.jsonl"
    rows = []
    # 19 min stopped in the quarry (positioned fixes: the GPS engine derives the stop from them), then away
    for i in range(21):
        rows.append(orjson.dumps({"plate": PLATE, "plate_color": 2, "terminal_id": "T1",
                                  "ts": iso(T0 - timedelta(hours=2) + timedelta(minutes=i)),
                                  "lat": 34.61 if i < 20 else 34.63, "lon": 113.51,
                                  "speed_kmh": 0.0 if i < 20 else 40.0,
                                  "heading": 0, "altitude_m": 100, "status_flags": 2, "driver_id": "D2"}))
    pings.write_bytes(b"\n".join(rows) + b"\n")
    img = tmp_path / "front.jpg"
    img.write_bytes(b"jpeg")
    images = [{"kind": "front", "uri": str(img), "sha256": hashlib.sha256(b"jpeg").hexdigest()}]
    stdin = b"\n".join([
        line(60000, images=images),
        line(60000, ts=T0 + timedelta(seconds=30)),          # same passage
        b"{not json",
        line(40000, ts=T0 + timedelta(hours=1)),
        orjson.dumps({"station_id": "S1"}),
    ]) + b"\n"
    ev = tmp_path / "evidence"
    code, out, err = run(tmp_path, stdin, "--registry", str(reg), "--pings", str(pings), "--evidence-dir", str(ev))
    assert code == 2, err
    assert len(out) == 5
    first, dup, bad, ok, missing = out
    assert first["action"] == "fine" and first["fine_yuan"] == 5500 and first["driver"]["source"] == "ic_card"
    assert first["driver"]["id"] == "D2" and first["source_site"]["site_id"] == "Q1"
    assert Path(first["evidence_path"]).is_dir()
    assert dup["duplicate_of"] == first["passage_id"] and dup["case_id"] is None
    assert bad == {"error": "bad_json", "detail": bad["detail"], "line": 3}
    assert ok["action"] == "none"
    assert missing["error"] == "missing_field" and missing["line"] == 5
    # the package verifies with the CLI and the default trusted-keys location
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp_path / "var"}"')
    assert cli_main(["evidence", "verify", str(ev)]) == 0


def run_inproc(monkeypatch, capsysbinary, stdin: bytes, *args):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = cli_main(["assess", "wim", *args])
    cap = capsysbinary.readouterr()
    return code, [orjson.loads(x) for x in cap.out.splitlines()], cap.err.decode()


def test_clean_input_exits_0_and_bad_registry_exits_2(tmp_path, monkeypatch, capsysbinary):
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    reg = tmp_path / "registry.json"
    reg.write_bytes(orjson.dumps(registry_dict()))
    code, out, err = run_inproc(monkeypatch, capsysbinary, line(51000) + b"\n", "--registry", str(reg))
    assert code == 0 and out[0]["action"] == "none"
    (tmp_path / "bad.json").write_text("{")
    code, out, err = run_inproc(monkeypatch, capsysbinary, line(51000) + b"\n", "--registry", str(tmp_path / "bad.json"))
    assert code == 2 and "not valid JSON" in err and out == []
    code, out, err = run_inproc(monkeypatch, capsysbinary, line(60000) + b"\n")   # no registry at all
    assert code == 0 and out[0]["action"] == "review"
    assert {"unknown_plate", "calibration_missing"} <= set(out[0]["review_reasons"])
    code, out, err = run_inproc(monkeypatch, capsysbinary, line(60000) + b"\n", "--pings", str(tmp_path / "none"))
    assert code == 2 and "cannot read pings file" in err


def test_implausible_years_are_bad_timestamp_and_the_rest_of_the_batch_is_assessed(tmp_path, monkeypatch,
                                                                                 capsysbinary):
    """Years 1 and 9999 used to raise OverflowError in `assess wim`: a traceback that dropped the rest of the
    batch. Now each is a `bad_timestamp` line and the readings after it are assessed; the range is a key."""
    reg = tmp_path / "registry.json"
    reg.write_bytes(orjson.dumps(registry_dict()))
    lines = [orjson.loads(line(60000)) for _ in range(4)]
    lines[0]["ts"] = "0001-01-01T00:00:00+08:00"
    lines[1]["ts"] = "9999-12-31T23:59:59-08:00"
    lines[2]["ts"] = "2101-01-01T00:00:00+08:00"
    stdin = b"\n".join(orjson.dumps(x) for x in lines) + b"\n"
    monkeypatch.delenv("ROADWATCH_SET", raising=False)
    code, out, err = run(tmp_path, stdin, "--registry", str(reg))
    assert code == 2 and "Traceback" not in err, err
    assert [o.get("error") for o in out] == ["bad_timestamp", "bad_timestamp", "bad_timestamp", None]
    assert out[3]["action"] == "fine"
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp_path / "var"}";time.max_year=2101')
    code, out, err = run_inproc(monkeypatch, capsysbinary, stdin, "--registry", str(reg))
    assert [o.get("error") for o in out] == ["bad_timestamp", "bad_timestamp", None, None]
