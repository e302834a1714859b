from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from roadwatch.models.pingbatch import columns_to_pings, decode_batch, encode_batch
from roadwatch.models.records import (InvalidRecord, PLATE_RE, epoch_ms_to_iso, format_ts, parse_ping,
                                      parse_wim_reading)


def wim(**over):
    d = {"station_id": "S1", "lane": 1, "ts": "2026-11-01T08:00:00+08:00", "plate": "苏A12345",
         "plate_color": 2, "plate_confidence": 0.97, "vehicle_kind": "truck", "axle_count": 2,
         "axle_loads_kg": [6000, 12000], "axle_spacings_m": [4.2], "gross_kg": 18000, "speed_kmh": 60,
         "device_id": "D1", "images": [{"kind": "front", "uri": "/x.png", "sha256": "a" * 64}]}
    d.update(over)
    return d


def test_valid_wim_reading():
    r = parse_wim_reading(orjson.dumps(wim()))
    assert r.gross_kg == 18000.0 and r.axle_loads_kg == [6000.0, 12000.0] and not r.single_drive_axle


@pytest.mark.parametrize("over,code", [
    ({"gross_kg": "heavy"}, "bad_type"),
    ({"gross_kg": -5}, "out_of_range"),
    ({"axle_loads_kg": [6000]}, "inconsistent"),
    ({"axle_loads_kg": [6000, 9000]}, "inconsistent"),        # sum ≠ gross
    ({"ts": "2026-11-01T08:00:00"}, "bad_timestamp"),         # no offset: ambiguous
    ({"plate_color": 7}, "out_of_range"),
    ({"plate_confidence": 1.2}, "out_of_range"),
    ({"vehicle_kind": "bus"}, "out_of_range"),
    ({"images": [{"kind": "f", "uri": "u", "sha256": "XYZ"}]}, "bad_type"),
])
def test_bad_wim_readings_get_reasons(over, code):
    with pytest.raises(InvalidRecord) as e:
        parse_wim_reading(wim(**over))
    assert e.value.code == code


def test_missing_field_and_bad_json():
    d = wim()
    del d["plate"]
    with pytest.raises(InvalidRecord) as e:
        parse_wim_reading(d)
    assert e.value.code == "missing_field"
    with pytest.raises(InvalidRecord) as e:
        parse_wim_reading(b"{not json")
    assert e.value.code == "bad_json"
    with pytest.raises(InvalidRecord) as e:
        parse_wim_reading(b"[1,2]")
    assert e.value.code == "bad_json"
    with pytest.raises(InvalidRecord) as e:
        parse_wim_reading(b" " * 2000, max_bytes=1000)
    assert e.value.code == "oversized"


@pytest.mark.parametrize("plate,ok", [("京A12345", True), ("粤B1234学", True), ("苏AD12345", True),
                                      ("A12345", False), ("京I12345", False), ("京A1234", False)])
def test_plate_format(plate, ok):
    assert bool(PLATE_RE.match(plate)) is ok


def ping(i=0, **over):
    d = {"plate": "京A1234%d" % (i % 10), "plate_color": 2, "terminal_id": "013800000000", "ts": 1762000000000 + i,
         "lat": 39.9, "lon": 116.4, "speed_kmh": 50.5, "heading": 90, "altitude_m": 40.0, "alarm_flags": 0,
         "status_flags": 3, "reupload": False, "driver_id": None, "mileage_km": 12.5}
    d.update(over)
    return d


def test_batch_round_trip():
    pings = [ping(i) for i in range(7)]
    cols = decode_batch(encode_batch(pings))
    assert len(cols) == 7
    assert columns_to_pings(cols) == pings


def test_single_interchange_ping_is_a_batch_of_one():
    p = ping(ts="2026-11-01T08:00:00+08:00")
    cols = decode_batch(orjson.dumps(p))
    from datetime import datetime, timezone
    expected = int(datetime(2026, 11, 1, 0, 0, tzinfo=timezone.utc).timestamp() * 1000)  # 08:00 Beijing
    assert len(cols) == 1 and cols.ts[0] == expected


@pytest.mark.parametrize("mutate,code", [
    (lambda d: d.update(lat=d["lat"][:-1]), "missing_field"),
    (lambda d: d.update(speed_kmh=["x"] * len(d["plate"])), "bad_type"),
    (lambda d: d.update(plate=[""] * len(d["plate"])), "bad_type"),
    (lambda d: d.update(schema="other/9"), "bad_schema"),
    (lambda d: [d.__setitem__(k, []) for k in list(d) if k != "schema"], "empty_batch"),
])
def test_malformed_batches_are_rejected(mutate, code):
    d = orjson.loads(encode_batch([ping(i) for i in range(3)]))
    mutate(d)
    with pytest.raises(InvalidRecord) as e:
        decode_batch(orjson.dumps(d))
    assert e.value.code == code


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash_the_parsers(data):
    for parse in (decode_batch, parse_wim_reading, parse_ping):
        try:
            parse(data)
        except InvalidRecord as e:
            assert e.code


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(list(ping().keys()) + ["x"]),
                       st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5),
                                 st.booleans(), st.lists(st.integers(), max_size=3)), max_size=16))
def test_random_objects_never_crash_ping_parser(d):
    try:
        parse_ping(d)
    except InvalidRecord as e:
        assert e.code


def test_plausible_years_are_local_years_in_every_form():
    """2000-01-01T00:30+08:00 is the year 2000 where it was written (1999 in UTC): accepted as ISO and as the
    epoch ms a gateway batch carries (found by the gateway fuzz target); year 1 / 9999 are bad_timestamp."""
    from roadwatch.models.pingbatch import decode_batch, encode_batch
    from roadwatch.models.records import InvalidRecord, check_plausible_time, parse_ts, plausible_ms_range
    ping = {"plate": "苏A12345", "plate_color": 2, "terminal_id": "013300000001", "lat": 32.0, "lon": 118.8,
            "speed_kmh": 5.0, "heading": 0, "altitude_m": 1.0, "alarm_flags": 0, "status_flags": 3,
            "reupload": False}
    first = "2000-01-01T00:30:00+08:00"
    check_plausible_time(parse_ts(first))
    assert len(decode_batch(encode_batch([dict(ping, ts=first)]))) == 1
    lo, hi = plausible_ms_range((2000, 2100))
    assert lo < parse_ts(first).timestamp() * 1000 and hi > parse_ts("2100-12-31T23:59:59-08:00").timestamp() * 1000
    for bad in ("0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00", "1999-12-31T23:59:59+08:00"):
        with pytest.raises(InvalidRecord) as e:
            check_plausible_time(parse_ts(bad))
        assert e.value.code == "bad_timestamp"
    with pytest.raises(InvalidRecord) as e:
        decode_batch(encode_batch([dict(ping, ts=int(parse_ts("1999-12-31T00:00:00+08:00").timestamp() * 1000))]))
    assert e.value.code == "bad_timestamp"



_OFFSETS = [timezone.utc, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))]


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31),
                    timezones=st.sampled_from(_OFFSETS)))
def test_output_times_are_beijing_seconds_whatever_the_input_offset(dt):
    """``format_ts`` (memoised per second) gives what converting and truncating gives; so does
    ``epoch_ms_to_iso`` from the same instant in epoch milliseconds."""
    want = dt.astimezone(timezone(timedelta(hours=8))).isoformat(timespec="seconds")
    assert format_ts(dt) == want
    assert epoch_ms_to_iso((dt - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)) == want
