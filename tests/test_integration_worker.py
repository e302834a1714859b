"""The real Faust worker against the embedded broker: records in, alerts / cases / dead letters out."""
from __future__ import annotations

import base64
import time
from datetime import datetime, timezone

import orjson
import pytest
from stack_support import worker_stack
from kafka import KafkaConsumer, KafkaProducer

from roadwatch.models.pingbatch import encode_batch
from roadwatch.models.records import Enterprise, Station, Vehicle
from roadwatch.models.registry import Registry
from roadwatch.simulators.fleet import full_approval
from roadwatch.streams import topics as T
from roadwatch.streams.archive import open_archive

pytestmark = pytest.mark.integration


def _registry(path):
    reg = Registry()
    reg.enterprises["E1"] = Enterprise(enterprise_id="E1", name="甲危货运输", goods_vehicles=5, county="玄武区")
    reg.vehicles["苏A10001"] = Vehicle(plate="苏A10001", plate_color=2, category="普通货车", enterprise_id="E1",
                                      axle_count=2, registered_total_kg=18000.0, rated_load_kg=10000.0,
                                      curb_kg=8000.0, driver_id="D1")
    reg.vehicles["苏A20002"] = Vehicle(plate="苏A20002", plate_color=2, category="危险货物运输车辆",
                                      enterprise_id="E1", axle_count=3, registered_total_kg=25000.0)
    reg.stations["S1"] = Station(station_id="S1", name="宁连公路站", lat=32.1, lon=118.8,
                                 devices=[{"device_id": "D1", "cert_no": "JJG907-2026-001",
                                           "valid_from": "2020-01-01T00:00:00+08:00",
                                           "valid_to": "2099-01-01T00:00:00+08:00",
                                           "approval": full_approval("2020-01-01T00:00:00+08:00")}])
    # a station whose device was never announced to the public (行政处罚法 Art. 41): its readings are never fines
    unannounced = full_approval("2020-01-01T00:00:00+08:00")
    del unannounced["announcement"]
    reg.stations["S2"] = Station(station_id="S2", name="未公布站", lat=32.2, lon=118.9,
                                 devices=[{"device_id": "D2", "cert_no": "JJG907-2026-002",
                                           "valid_from": "2020-01-01T00:00:00+08:00",
                                           "valid_to": "2099-01-01T00:00:00+08:00", "approval": unannounced}])
    reg.dump(path)


def _collect(bootstrap, topics, want, timeout=60):
    c = KafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=500)
    got: dict[str, list] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not want(got):
            for recs in c.poll(timeout_ms=300).values():
                for r in recs:
                    got[r.topic].append(orjson.loads(r.value))
    finally:
        c.close()
    return got


def _day_totals(conn, plate: str) -> tuple[int, int]:
    """The vehicle's pings and qualified pings over all its day rows: a test's track of a few minutes before
    now crosses the day line (00:00 Beijing time, 16:00 UTC) when the test runs just after it."""
    row = conn.execute("SELECT COALESCE(SUM(pings), 0), COALESCE(SUM(qualified), 0) FROM vehicle_day "
                       "WHERE plate=?", (plate,)).fetchone()
    return row[0], row[1]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("worker")
    reg_path = tmp / "registry.json"
    _registry(reg_path)
    with worker_stack(tmp, reg_path) as running_stack:
        yield running_stack


def test_worker_announces_ready_and_its_health_and_metrics_answer(running):
    """Ready means serving: the ready line names the console and ``/metrics``, and both answer with
    ``/healthz`` saying ready. How fast is ``roadwatch bench``'s figure (worker ready, ≤ 5 s), not a test's."""
    import re
    import urllib.request
    st, _ = running
    line = next(ln for ln in st.worker.lines if "roadwatch worker ready" in ln)
    base = re.search(r"console (http://[^/ ]+)/", line).group(1)
    assert f"metrics {base}/metrics" in line
    health = orjson.loads(urllib.request.urlopen(f"{base}/healthz", timeout=10).read())
    assert health == {"ready": True, "faults": {}}
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    assert "roadwatch_event_loop_lag_seconds_bucket" in metrics
    assert "roadwatch_archive_log_uncopied_frames" in metrics and "roadwatch_archive_log_frames" in metrics


def test_wim_reading_becomes_case_alert_and_bad_input_dead_letter(running):
    st, cfg = running
    now = datetime.now(timezone.utc)
    reading = {"station_id": "S1", "lane": 1, "ts": now.isoformat(timespec="milliseconds"), "plate": "苏A10001",
               "plate_color": 2, "plate_confidence": 0.98, "vehicle_kind": "truck", "axle_count": 2,
               "axle_loads_kg": [7000, 14000], "axle_spacings_m": [4.5], "gross_kg": 21000, "speed_kmh": 55,
               "device_id": "D1"}
    bad = b'{"station_id": "S1", "gross_kg": "lots"'
    p = KafkaProducer(bootstrap_servers=st.bootstrap)
    p.send(T.WIM_READINGS, key="苏A10001".encode(), value=orjson.dumps(reading)).get(10)
    p.send(T.WIM_READINGS, key=b"x", value=bad).get(10)
    p.close()

    def enough(g):
        return g[T.OVERLOAD_CASES] and any(a["type"] == "overload" for a in g[T.ALERTS]) and \
            any(d["source"] == T.WIM_READINGS for d in g[T.DEAD_LETTER])
    got = _collect(st.bootstrap, [T.OVERLOAD_CASES, T.ALERTS, T.DEAD_LETTER], enough)
    assert enough(got), got
    case = got[T.OVERLOAD_CASES][0]
    # 2-axle truck: 18 000 kg limit; 21 000 > 18 900 (5 % tolerance) → 3 000 kg over → 3 × 500 yuan
    assert case["limit_kg"] == 18000 and case["excess_kg"] == 3000 and case["action"] == "fine"
    assert case["fine_yuan"] == 1500
    dl = [d for d in got[T.DEAD_LETTER] if d["source"] == T.WIM_READINGS][0]
    assert dl["reason"] == "bad_json" and base64.b64decode(dl["original_b64"]) == bad
    conn = open_archive(cfg.archive_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = conn.execute("SELECT case_id, action FROM cases WHERE plate='苏A10001'").fetchall()
        if rows:
            break
        time.sleep(0.2)
    assert [r["action"] for r in rows] == ["fine"]


def _metrics(cfg, prefix: str = "roadwatch_wim_") -> dict[str, float]:
    import re
    import urllib.request
    body = urllib.request.urlopen(f"http://127.0.0.1:{cfg['web.port']}/metrics", timeout=5).read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(rf"^({prefix}\w+(?:\{{[^}}]*\}})?) (\S+)$", body, re.M)}


def test_wim_batches_and_waits_are_measured(running):
    """What a WIM reading's latency is made of is on /metrics: every stored reading's wait before its batch,
    every batch's size, its transaction and its publication (streams/wim.py; `roadwatch bench` reads them)."""
    st, cfg = running
    before = _metrics(cfg)
    now = datetime.now(timezone.utc)
    p = KafkaProducer(bootstrap_servers=st.bootstrap)
    for i in range(3):
        reading = {"station_id": "S1", "lane": 2, "ts": now.isoformat(timespec="milliseconds"), "plate": "苏A20002",
                   "plate_color": 2, "plate_confidence": 0.98, "vehicle_kind": "truck", "axle_count": 3,
                   "axle_loads_kg": [6000, 7000, 7000], "axle_spacings_m": [3.5, 1.3], "gross_kg": 20000,
                   "speed_kmh": 50, "device_id": "D1", "reading_id": f"metrics-{i}"}
        p.send(T.WIM_READINGS, key="苏A20002".encode(), value=orjson.dumps(reading)).get(10)
    p.close()

    def grown(name):
        return _metrics(cfg).get(name, 0.0) - before.get(name, 0.0)
    deadline = time.monotonic() + 30
    while (grown('roadwatch_wim_batch_seconds_count{part="publish"}') < 1
           or grown("roadwatch_wim_batch_readings_sum") < 3):
        assert time.monotonic() < deadline, _metrics(cfg)
        time.sleep(0.2)
    after = _metrics(cfg)
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    assert d["roadwatch_wim_batch_readings_sum"] == 3 == d["roadwatch_wim_wait_seconds_count"]
    batches = d["roadwatch_wim_batch_readings_count"]
    assert 1 <= batches <= 3
    assert d['roadwatch_wim_batch_seconds_count{part="store"}'] == batches
    assert d['roadwatch_wim_batch_seconds_count{part="publish"}'] == batches
    assert d['roadwatch_wim_batch_seconds_sum{part="store"}'] > 0
    # each wait is the reading's age at its batch's start: at least the time since it was stamped, here
    assert 0 < d["roadwatch_wim_wait_seconds_sum"] < 3 * 30


def test_reading_from_an_unannounced_device_goes_to_review_never_a_fine(running):
    st, cfg = running
    now = datetime.now(timezone.utc)
    reading = {"station_id": "S2", "lane": 1, "ts": now.isoformat(timespec="milliseconds"), "plate": "苏A20002",
               "plate_color": 2, "plate_confidence": 0.99, "vehicle_kind": "truck", "axle_count": 3,
               "axle_loads_kg": [7000, 15000, 15000], "axle_spacings_m": [3.5, 1.3], "gross_kg": 37000,
               "speed_kmh": 50, "device_id": "D2"}
    p = KafkaProducer(bootstrap_servers=st.bootstrap)
    p.send(T.WIM_READINGS, key="苏A20002".encode(), value=orjson.dumps(reading)).get(10)
    p.close()
    got = _collect(st.bootstrap, [T.OVERLOAD_CASES],
                   lambda g: any(c["plate"] == "苏A20002" for c in g[T.OVERLOAD_CASES]))
    case = [c for c in got[T.OVERLOAD_CASES] if c["plate"] == "苏A20002"][0]
    assert case["over_limit"] and case["action"] == "review" and case["fine_yuan"] == 0
    assert case["review_reasons"] == ["device_announcement_missing"]
    assert case["device_approval"]["missing"] == ["announcement"]
    conn = open_archive(cfg.archive_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = conn.execute("SELECT action, fine_yuan FROM cases WHERE plate='苏A20002'").fetchall()
        if rows:
            break
        time.sleep(0.2)
    assert [(r["action"], r["fine_yuan"]) for r in rows] == [("review", 0)]


def test_gps_batch_raises_overspeed_and_counts_day_stats(running):
    st, cfg = running
    t0 = int(time.time() * 1000) - 120_000
    # a hazardous-goods truck at 75 km/h (limit 60 off expressways) for 90 s, reporting every 10 s
    pings = [{"plate": "苏A20002", "plate_color": 2, "terminal_id": "013300000002", "ts": t0 + i * 10_000,
              "lat": 32.0 + i * 0.002, "lon": 118.8, "speed_kmh": 75.0, "heading": 0, "altitude_m": 10.0,
              "alarm_flags": 0, "status_flags": 3, "reupload": False} for i in range(10)]
    p = KafkaProducer(bootstrap_servers=st.bootstrap)
    md = p.send(T.GPS_PINGS, key="苏A20002".encode(), value=encode_batch(pings)).get(10)
    p.send(T.GPS_PINGS, key=b"x", value=b'{"schema": "roadwatch.pings/1", "plate": ["x"]}', partition=md.partition).get(10)
    p.close()

    def enough(g):
        return any(a["type"] == "overspeed" and a["plate"] == "苏A20002" for a in g[T.ALERTS]) and \
            any(d["source"] == T.GPS_PINGS for d in g[T.DEAD_LETTER])
    got = _collect(st.bootstrap, [T.ALERTS, T.DEAD_LETTER], enough)
    assert enough(got), got
    a = [a for a in got[T.ALERTS] if a["type"] == "overspeed"][0]
    assert a["details"]["limit"] == 60.0
    conn = open_archive(cfg.archive_path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _day_totals(conn, "苏A20002")[0] < 10:
        time.sleep(0.2)
    assert _day_totals(conn, "苏A20002") == (10, 10)


def test_arrow_batches_are_processed_and_malformed_ones_dead_lettered(running):
    """The binary wire form (docs/formats.md): a valid Arrow batch raises the same alert as its JSON twin; a
    truncated record and one with a wrongly typed column go to dead-letter with their reason and original
    bytes, and the worker goes on with the next valid batch on the same partition."""
    import pyarrow as pa
    st, cfg = running
    t0 = int(time.time() * 1000) - 120_000
    pings = [{"plate": "苏A10001", "plate_color": 2, "terminal_id": "013300000001", "ts": t0 + i * 10_000,
              "lat": 32.0 + i * 0.002, "lon": 118.8, "speed_kmh": 130.0, "heading": 0, "altitude_m": 10.0,
              "alarm_flags": 0, "status_flags": 3, "reupload": False} for i in range(10)]
    good = encode_batch(pings[:5], "arrow")
    later = encode_batch(pings[5:], "arrow")
    assert good[:4] == b"\xff\xff\xff\xff"
    truncated = good[: len(good) // 2]
    batch = pa.ipc.open_stream(good).read_next_batch()
    i = batch.schema.get_field_index("speed_kmh")
    wrong = batch.set_column(i, pa.field("speed_kmh", pa.string()), pa.array(["fast"] * batch.num_rows))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, wrong.schema) as w:
        w.write_batch(wrong)
    retyped = sink.getvalue().to_pybytes()
    p = KafkaProducer(bootstrap_servers=st.bootstrap)
    md = p.send(T.GPS_PINGS, key="苏A10001".encode(), value=good).get(10)
    for v in (truncated, retyped, later):
        p.send(T.GPS_PINGS, key="苏A10001".encode(), value=v, partition=md.partition).get(10)
    p.close()

    def enough(g):
        dead = {base64.b64decode(d["original_b64"]) for d in g[T.DEAD_LETTER] if d["source"] == T.GPS_PINGS}
        return any(a["type"] == "overspeed" and a["plate"] == "苏A10001" for a in g[T.ALERTS]) and \
            {truncated, retyped} <= dead
    got = _collect(st.bootstrap, [T.ALERTS, T.DEAD_LETTER], enough)
    assert enough(got), got
    reasons = {base64.b64decode(d["original_b64"]): d["reason"] for d in got[T.DEAD_LETTER]}
    assert reasons[truncated] == "bad_arrow" and reasons[retyped] == "bad_type"
    conn = open_archive(cfg.archive_path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _day_totals(conn, "苏A10001")[0] < 10:
        time.sleep(0.2)
    assert _day_totals(conn, "苏A10001")[0] == 10     # both valid batches, before and after the bad ones


def test_waiting_ping_batches_are_applied_together_and_counted_once(running):
    """Batches already waiting for a partition go through the engine in one call (``stream.gps_coalesce_pings``,
    streams/gps.py): 24 batches sent in one produce request are applied in fewer than 24 calls, and the day row
    counts each of their pings once."""
    st, cfg = running
    before = _metrics(cfg, "roadwatch_gps_engine_")
    t0 = int(time.time() * 1000) - 600_000
    plate = "苏A30003"
    p = KafkaProducer(bootstrap_servers=st.bootstrap, linger_ms=500, batch_size=1 << 20)
    part = p.partitions_for(T.GPS_PINGS)
    futures = []
    for b in range(24):
        pings = [{"plate": plate, "plate_color": 2, "terminal_id": "013300000003", "ts": t0 + (b * 10 + i) * 2_000,
                  "lat": 32.0 + (b * 10 + i) * 0.0002, "lon": 118.8, "speed_kmh": 40.0, "heading": 0,
                  "altitude_m": 10.0, "alarm_flags": 0, "status_flags": 3, "reupload": False} for i in range(10)]
        futures.append(p.send(T.GPS_PINGS, key=plate.encode(), value=encode_batch(pings, "arrow"),
                              partition=min(part)))
    p.flush()
    p.close()
    assert all(f.is_done and f.succeeded() for f in futures)

    def grown(name):
        return _metrics(cfg, "roadwatch_gps_engine_").get(name, 0.0) - before.get(name, 0.0)
    deadline = time.monotonic() + 30
    while grown("roadwatch_gps_engine_call_batches_sum") < 24:
        assert time.monotonic() < deadline, _metrics(cfg, "roadwatch_gps_engine_")
        time.sleep(0.2)
    assert grown("roadwatch_gps_engine_call_batches_sum") == 24
    assert 1 <= grown("roadwatch_gps_engine_call_batches_count") < 24
    conn = open_archive(cfg.archive_path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _day_totals(conn, plate)[0] < 240:
        time.sleep(0.2)
    assert _day_totals(conn, plate) == (240, 240)
