"""Garbage on every input topic of the real worker: each bad record lands on ``dead-letter`` with its
original bytes and a reason code, the worker stays up, and good records sent after the garbage are processed.

Includes the inputs the bounded fuzz run (scripts/fuzz.py) found to crash ``decode_batch`` or the ping
engine (a float where the plate list belongs, non-numeric ``recv_ts``, a timestamp in the year 58828):
before the fix in streams/gps.py any of them killed the GPS agent, and with it all GPS processing.
"""
from __future__ import annotations

import base64
import time

import orjson
import pytest
from stack_support import worker_stack
from kafka import KafkaConsumer, KafkaProducer

from roadwatch.models.pingbatch import encode_batch
from roadwatch.models.records import Enterprise, Vehicle
from roadwatch.models.registry import Registry
from roadwatch.streams import topics as T
from roadwatch.streams.archive import open_archive
from roadwatch.streams.batcher import partition_for

pytestmark = pytest.mark.integration

PLATE = "苏A20002"
BASE_MS = int(time.time() * 1000) - 3_600_000        # an hour ago: a live feed, not a replay


def _pings(n: int, t0: int, plate: str = PLATE, **kw) -> list[dict]:
    return [dict({"plate": plate, "plate_color": 2, "terminal_id": "013300000002", "ts": t0 + i * 10_000,
                  "lat": 32.0 + i * 0.0005, "lon": 118.8, "speed_kmh": 40.0, "heading": 0, "altitude_m": 10.0,
                  "alarm_flags": 0, "status_flags": 3, "reupload": False}, **kw) for i in range(n)]


GOOD_BATCH = encode_batch(_pings(5, BASE_MS))
_cols = orjson.loads(GOOD_BATCH)
GPS_GARBAGE = {
    "not_json": b"\x00\xff garbage",
    "truncated": GOOD_BATCH[:40],
    "plate_is_a_number": orjson.dumps(dict(_cols, plate=1e308)),           # TypeError in decode_batch
    "recv_ts_strings": orjson.dumps(dict(_cols, recv_ts=["2026-13-45"] * 5)),  # ValueError in decode_batch
    # (recv_ts null is "not given" in the one ping schema: the receipt time falls back to the fix time)
    "ts_year_58828": orjson.dumps(dict(_cols, ts=[1_794_276_000_000_000] * 5)),  # crashed the engine
    "ts_negative": orjson.dumps(dict(_cols, ts=[-62_000_000_000_000] * 5)),
    "empty": orjson.dumps({"schema": "roadwatch.pings/1", "plate": []}),
    "single_ping_year_1": orjson.dumps(dict(_pings(1, BASE_MS)[0], ts="0001-01-01T00:00:00+08:00")),
}
READING = {"station_id": "S9", "lane": 1, "ts": "2026-11-10T10:00:00+08:00", "plate": PLATE, "plate_color": 2,
           "plate_confidence": 0.98, "vehicle_kind": "truck", "axle_count": 2, "axle_loads_kg": [7000, 14000],
           "axle_spacings_m": [4.5], "gross_kg": 21000, "speed_kmh": 55, "device_id": "D1"}
# issue 13.6: years 1 and 9999 overflowed in datetime arithmetic (internal_error); now bad_timestamp
WIM_GARBAGE = {
    "year_1": orjson.dumps(dict(READING, ts="0001-01-01T00:00:00+08:00")),
    "year_9999": orjson.dumps(dict(READING, ts="9999-12-31T23:59:59-08:00")),
    "year_1999": orjson.dumps(dict(READING, ts="1999-12-31T23:59:59+08:00")),
    "not_json": b"{{{{",
    "array": b"[1, 2, 3]",
    "bad_gross": orjson.dumps({"station_id": "S1", "gross_kg": "lots"}),
    "huge": b'{"x": "' + b"a" * 1_100_000 + b'"}',
}
DRIVER_GARBAGE = {
    "not_json": b"\xfe\xfe",
    "missing_fields": b'{"plate": "x"}',
    "bad_event": orjson.dumps({"plate": PLATE, "terminal_id": "1", "ts": "2026-11-10T10:00:00+08:00",
                               "event": "dance"}),
    "bad_ts": orjson.dumps({"plate": PLATE, "terminal_id": "1", "ts": "yesterday", "event": "login"}),
    "year_9999": orjson.dumps({"plate": PLATE, "terminal_id": "1", "ts": "9999-12-31T23:59:59+08:00",
                               "event": "login"}),
}


def _registry(path):
    reg = Registry()
    reg.enterprises["E1"] = Enterprise(enterprise_id="E1", name="甲", goods_vehicles=2)
    reg.vehicles[PLATE] = Vehicle(plate=PLATE, plate_color=2, category="普通货车", enterprise_id="E1",
                                  axle_count=2, registered_total_kg=18000.0)
    reg.dump(path)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("garbage")
    reg_path = tmp / "registry.json"
    _registry(reg_path)
    with worker_stack(tmp, reg_path) as running_stack:
        yield running_stack


def _dead_letters(bootstrap, want: int, timeout: float = 60) -> list[dict]:
    c = KafkaConsumer(T.DEAD_LETTER, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                      enable_auto_commit=False)
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=300).values():
                out += [orjson.loads(r.value) for r in recs]
    finally:
        c.close()
    return out


def _day_pings(conn, plate: str) -> int:
    return conn.execute("SELECT COALESCE(SUM(pings), 0) FROM vehicle_day WHERE plate=?", (plate,)).fetchone()[0]


def test_garbage_on_every_input_topic_is_dead_lettered_and_good_records_still_flow(running):
    st, cfg = running
    p = KafkaProducer(bootstrap_servers=st.bootstrap, max_request_size=4_000_000)
    part = partition_for(PLATE, int(cfg["stream.partitions"]))
    sent = []                      # (source, original bytes) in sending order
    for topic, garbage in ((T.GPS_PINGS, GPS_GARBAGE), (T.WIM_READINGS, WIM_GARBAGE),
                           (T.DRIVER_EVENTS, DRIVER_GARBAGE)):
        for value in garbage.values():
            md = p.send(topic, key=PLATE.encode(), value=value,
                        partition=part if topic == T.GPS_PINGS else None).get(10)
            st.note_sent(md.topic, md.partition, md.offset)
            sent.append((topic, value))
    # good records AFTER the garbage, on the same partitions
    md = p.send(T.GPS_PINGS, key=PLATE.encode(), value=GOOD_BATCH, partition=part).get(10)
    st.note_sent(md.topic, md.partition, md.offset)
    md = p.send(T.WIM_READINGS, key=PLATE.encode(), value=orjson.dumps(READING)).get(10)
    st.note_sent(md.topic, md.partition, md.offset)
    p.close()
    assert st.wait_idle(timeout=60), "worker did not consume past the garbage"
    assert st.worker.proc.poll() is None, "worker died"

    dls = _dead_letters(st.bootstrap, len(sent))
    got = sorted((d["source"], base64.b64decode(d["original_b64"])) for d in dls)
    assert got == sorted(sent)                    # every bad record, exactly once, with its original bytes
    for d in dls:
        assert d["reason"] and isinstance(d["reason"], str) and d["reason"] != "internal_error", d
    reasons = {(d["source"], base64.b64decode(d["original_b64"])): d["reason"] for d in dls}
    assert reasons[(T.GPS_PINGS, GPS_GARBAGE["not_json"])] == "bad_json"
    assert reasons[(T.GPS_PINGS, GPS_GARBAGE["ts_year_58828"])] == "bad_timestamp"
    assert reasons[(T.GPS_PINGS, GPS_GARBAGE["single_ping_year_1"])] == "bad_timestamp"
    for name in ("year_1", "year_9999", "year_1999"):
        assert reasons[(T.WIM_READINGS, WIM_GARBAGE[name])] == "bad_timestamp", name
    assert reasons[(T.DRIVER_EVENTS, DRIVER_GARBAGE["year_9999"])] == "bad_timestamp"
    assert reasons[(T.GPS_PINGS, GPS_GARBAGE["empty"])] == "empty_batch"
    assert reasons[(T.WIM_READINGS, WIM_GARBAGE["huge"])] == "oversized"
    assert reasons[(T.DRIVER_EVENTS, DRIVER_GARBAGE["bad_event"])] == "out_of_range"

    conn = open_archive(cfg.archive_path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (_day_pings(conn, PLATE) < 5 or not conn.execute(
            "SELECT 1 FROM wim_verdicts WHERE plate=?", (PLATE,)).fetchone()):
        time.sleep(0.2)
    assert _day_pings(conn, PLATE) == 5           # the good batch, and nothing from the garbage
    assert conn.execute("SELECT COUNT(*) FROM wim_verdicts WHERE plate=?", (PLATE,)).fetchone()[0] == 1


def test_one_skewed_terminal_does_not_move_the_partition_clock(running):
    """A terminal whose clock is 2 h ahead (no receipt time in the batch, as naive producers send) must not
    drag the partition's watermark forward: otherwise every other moving vehicle of the partition looks
    silent for 2 h and gets an offline alert (what happened before streams/gps.py passed the wall clock)."""
    st, cfg = running
    parts = int(cfg["stream.partitions"])
    part = partition_for(PLATE, parts)
    others = [pl for pl in (f"苏B{n:05d}" for n in range(200)) if partition_for(pl, parts) == part][:5]
    t0 = int(time.time() * 1000) - 120_000
    p = KafkaProducer(bootstrap_servers=st.bootstrap)
    for pl in others:                             # moving vehicles, on time
        md = p.send(T.GPS_PINGS, key=pl.encode(), value=encode_batch(_pings(3, t0, plate=pl)), partition=part).get(10)
    skewed = "苏C00001" if partition_for("苏C00001", parts) == part else next(
        pl for pl in (f"苏C{n:05d}" for n in range(500)) if partition_for(pl, parts) == part)
    md = p.send(T.GPS_PINGS, key=skewed.encode(), value=encode_batch(_pings(2, t0 + 7_200_000, plate=skewed)),
                partition=part).get(10)
    for pl in others:                             # the same vehicles, 30 s later
        md = p.send(T.GPS_PINGS, key=pl.encode(), value=encode_batch(_pings(1, t0 + 60_000, plate=pl)),
                    partition=part).get(10)
    st.note_sent(md.topic, md.partition, md.offset)
    p.close()
    assert st.wait_idle(timeout=60)
    conn = open_archive(cfg.archive_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(_day_pings(conn, pl) for pl in others) < 20:
        time.sleep(0.2)
    assert sum(_day_pings(conn, pl) for pl in others) == 20
    marks = ",".join("?" * len(others))
    offline = conn.execute(f"SELECT COUNT(*) FROM alerts WHERE type='offline' AND plate IN ({marks})",
                           others).fetchone()[0]
    assert offline == 0
    # summed over its day rows: its two pings, 10 s apart and two hours ahead, can fall on both sides of the day line
    row = conn.execute("SELECT SUM(pings), SUM(qualified) FROM vehicle_day WHERE plate=?", (skewed,)).fetchone()
    assert tuple(row) == (2, 0)     # counted, not qualified (future)
