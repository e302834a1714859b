"""``roadwatch assess gps`` and ``run_pings``: parsing, errors, outputs."""
from __future__ import annotations

import orjson

from roadwatch.models.config import Config
from roadwatch.models.records import epoch_ms_to_iso
from roadwatch.streams.assess_gps import run_pings
from roadwatch.streams.cli import main
from test_gps_support import PLATE, T0, north, ping, registry, square

NOW = T0 + 86_400_000   # processing clock: a day after the data


def lines(pings):
    return [orjson.dumps(p, option=orjson.OPT_SERIALIZE_NUMPY) for p in pings]


def overspeed_feed():
    return [ping(T0 + k * 20_000, lat=north(22.5, 0.4 * k), speed=95.0) for k in range(4)] + \
           [ping(T0 + 80_000, lat=north(22.5, 1.6), speed=50.0)]


def test_run_pings_final_alert_versions_rows_and_no_errors():
    alerts, rows, errors = run_pings(lines(overspeed_feed()), registry([{}]), None, Config(), batch=2, now_ms=NOW)
    assert errors == []
    (a,) = alerts
    assert a["type"] == "overspeed" and a["end_ts"] == "2026-03-02T10:01:00+08:00"
    (r,) = rows
    assert (r["plate"], r["pings"], r["overspeed_count"]) == (PLATE, 5, 1)


def test_iso_and_epoch_timestamps_are_equivalent():
    feed = overspeed_feed()
    iso = [dict(p, ts=epoch_ms_to_iso(p["ts"])) for p in feed]
    utc = [dict(p, ts=epoch_ms_to_iso(p["ts"]).replace("+08:00", "").replace("T", " ") + "+08:00") for p in feed]
    outs = [run_pings(lines(f), registry([{}]), None, Config(), now_ms=NOW) for f in (feed, iso, utc)]
    assert outs[0] == outs[1] == outs[2]


def test_malformed_lines_are_reported_and_skipped():
    good = overspeed_feed()
    raw = lines(good[:2]) + [b"not json", b"[1,2]", orjson.dumps(dict(good[2], lat="north")),
                             orjson.dumps({k: v for k, v in good[2].items() if k != "plate"}),
                             orjson.dumps(dict(good[2], ts="2026-03-02 10:00:00")),
                             orjson.dumps(dict(good[2], heading=1.5)), orjson.dumps(dict(good[2], reupload="yes")),
                             b""] + lines(good[2:])
    alerts, rows, errors = run_pings(raw, registry([{}]), None, Config(), batch=3, now_ms=NOW)
    assert [(e["line"], e["reason"]) for e in errors] == [
        (3, "bad_json"), (4, "bad_json"), (5, "bad_type"), (6, "missing_field"), (7, "bad_timestamp"),
        (8, "bad_type"), (9, "bad_type")]
    assert rows[0]["pings"] == 5 and len(alerts) == 1


def test_out_of_range_values_are_unqualified_not_errors():
    # lon 200 / lat 4282.7 (a two's-complement value read unsigned) are coordinates a JT/T 808 terminal
    # can send: unqualified, counted; a speed above the wire maximum (6553.5 km/h) cannot be sent at all
    feed = [ping(T0, speed=170.0), ping(T0 + 1000, lon=200.0), ping(T0 + 2000, lat=4282.7),
            ping(T0 + 3000, speed=7000.0)]
    alerts, rows, errors = run_pings(lines(feed), None, None, Config(), now_ms=NOW)
    assert [(e["line"], e["reason"]) for e in errors] == [(4, "out_of_range")]
    assert (rows[0]["pings"], rows[0]["qualified"]) == (3, 0)


def test_offline_at_end_of_input_uses_the_data_watermark():
    feed = [ping(T0, speed=50), ping(T0 + 901_000, plate="粤B99999")]
    alerts, _, _ = run_pings(lines(feed), None, None, Config(), now_ms=NOW)
    assert [(a["type"], a["plate"], a["end_ts"]) for a in alerts] == [("offline", PLATE, None)]


def test_cli_end_to_end(tmp_path, monkeypatch, capsysbinary):
    reg = registry([{}], [{"zone_id": "Z1", "name": "禁区", "kind": "restricted", "polygon": square(113.99, 22.49, 0.02)}])
    reg_path = tmp_path / "reg.json"
    reg.dump(reg_path)
    zones_path = tmp_path / "zones.json"
    zones_path.write_bytes(orjson.dumps([{"zone_id": "Z9", "name": "其他", "kind": "restricted",
                                          "polygon": square(120.0, 30.0, 0.1)}]))
    import io
    import sys
    data = b"\n".join(lines(overspeed_feed())) + b"\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    stats = tmp_path / "stats.jsonl"
    rc = main(["assess", "gps", "--registry", str(reg_path), "--stats", str(stats), "--batch", "2"])
    out = capsysbinary.readouterr().out.splitlines()
    assert rc == 0
    assert sorted(orjson.loads(x)["type"] for x in out) == ["geofence_enter", "geofence_exit", "overspeed"]
    (row,) = [orjson.loads(x) for x in stats.read_bytes().splitlines()]
    assert row["pings"] == 5 and row["overspeed_count"] == 1
    # --zones replaces the registry's zones: no geofence alerts then
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    rc = main(["assess", "gps", "--registry", str(reg_path), "--zones", str(zones_path)])
    out = capsysbinary.readouterr().out.splitlines()
    assert rc == 0 and [orjson.loads(x)["type"] for x in out] == ["overspeed"]


def test_cli_exit_codes(tmp_path, monkeypatch, capsys):
    import io
    import sys
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{bad\n")))
    assert main(["assess", "gps"]) == 2
    err = capsys.readouterr().err
    assert '"reason":"bad_json"' in err and "1 malformed line" in err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["assess", "gps", "--registry", str(tmp_path / "missing.json")]) == 2
    bad_zones = tmp_path / "z.json"
    bad_zones.write_text('[{"zone_id": "Z", "name": "x", "polygon": [[1, 2]]}]')
    assert main(["assess", "gps", "--zones", str(bad_zones)]) == 2
    assert main(["assess", "gps", "--batch", "0"]) == 2


def test_input_grouped_by_plate_needs_sort_by_time():
    other = "粤B99999"
    a = [ping(T0 + k * 30_000, lat=north(22.5, 0.2 * k), speed=40) for k in range(60)]
    b = [dict(p, plate=other, alarm_flags=1 if k == 10 else 0) for k, p in enumerate(a)]
    interleaved = [p for pair in zip(a, b) for p in pair]
    by_plate = a + b
    want = run_pings(lines(interleaved), None, None, Config(), now_ms=NOW)
    # read in its own order, vehicle B's pings all look ~30 min late against A's watermark
    naive = run_pings(lines(by_plate), None, None, Config(), now_ms=NOW)
    assert [a["late"] for a in want[0]] == [False] and [a["late"] for a in naive[0]] == [True]
    got = run_pings(lines(by_plate), None, None, Config(), now_ms=NOW, sort_by_time=True, batch=7)
    assert got == want
