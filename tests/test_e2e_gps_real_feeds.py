"""Real-feed scenarios through every path (issue 14): a blind-area re-upload, a bus silent while moving, a
duplicated feed and a truck parked after one bad fix give the alerts and vehicle-day rows the rules prescribe,
identically through ``assess gps`` (any batch size) and the real Faust worker (any batching of the topic)."""
from __future__ import annotations

import time

import orjson
import pytest
from kafka import KafkaProducer
from stack_support import worker_stack

from roadwatch.models.config import Config
from roadwatch.models.registry import parse_registry
from roadwatch.streams import topics as T
from roadwatch.streams.archive import open_archive
from roadwatch.streams.assess_gps import run_pings
from test_gps_support import bj, north
from test_reliability_feed import gps_records

pytestmark = pytest.mark.integration
TRUCK, BUS, DUP, PARKED = "湘A10001", "湘A20002", "湘A30003", "湘A40004"
MIN = 60_000


def registry_dict():
    v = [(TRUCK, "危险货物运输车辆"), (BUS, "客运班车"), (DUP, "危险货物运输车辆"), (PARKED, "普通货车")]
    return {"enterprises": [{"enterprise_id": "E1", "name": "湘运"}],
            "vehicles": [{"plate": p, "plate_color": 2, "category": c, "enterprise_id": "E1"} for p, c in v]}


def _p(plate, ts, lat, speed, recv=None, **kw):
    d = {"plate": plate, "plate_color": 2, "terminal_id": "0" + plate[-5:], "ts": ts, "lat": lat, "lon": 112.9,
         "speed_kmh": speed, "heading": 0, "altitude_m": 50.0, "alarm_flags": 0, "status_flags": 3,
         "reupload": False, "recv_ts": ts if recv is None else recv}
    d.update(kw)
    return d


def _drive(plate, t0, minutes, speed, lat, step_s=30, **kw):
    out = []
    for k in range(1, int(minutes * 60 / step_s) + 1):
        out.append(_p(plate, t0 + k * step_s * 1000, north(lat, speed * k * step_s / 3600), speed, **kw))
    return out


def build_feed() -> list[dict]:
    """Pings in ARRIVAL order (by receipt time)."""
    t0 = bj(2026, 11, 10, 8, 0)
    feed = []
    # 1. hazardous goods truck: 50 km/h, 30-min blind area at 75 km/h (limit 60) re-uploaded 5 min later
    a = _drive(TRUCK, t0 + 60 * MIN, 60, 50.0, 28.0)
    blind = _drive(TRUCK, t0 + 120 * MIN, 30, 75.0, a[-1]["lat"])
    for k, p in enumerate(blind):
        p.update(reupload=True, recv_ts=t0 + 155 * MIN + k * 100)
    b = _drive(TRUCK, t0 + 150 * MIN, 60, 50.0, blind[-1]["lat"])
    feed += a + blind + b
    # 2. bus 08:00–13:00 at 60 km/h, terminal silent 11:00–11:21 while it moves 21 km (never re-uploaded)
    x = _drive(BUS, t0, 180, 60.0, 28.3, step_s=60)
    y = _drive(BUS, t0 + 201 * MIN, 99, 60.0, north(x[-1]["lat"], 21.0), step_s=60)
    feed += x + y
    # 3. every fix of this truck arrives twice (the second copy 2 min later), over the limit for 10 min
    d = _drive(DUP, t0 + 30 * MIN, 20, 70.0, 28.6)
    feed += d + [dict(p, recv_ts=p["recv_ts"] + 2 * MIN) for p in d]
    # 4. truck: drives, arrival fix unqualified (not positioned), then parked 3 km on, one fix an hour
    e = _drive(PARKED, t0, 40, 45.0, 28.9)
    feed += e + [_p(PARKED, t0 + 45 * MIN, north(e[-1]["lat"], 2.5), 30.0, status_flags=1)]
    feed += [_p(PARKED, t0 + 50 * MIN + h * 60 * MIN, north(e[-1]["lat"], 3.0), 0.0) for h in range(6)]
    feed.sort(key=lambda p: p["recv_ts"])
    return feed


def standing(alerts) -> dict:
    """Alerts that stand (not withdrawn), without offline ones (those follow receipt and the live timer)."""
    return {a["alert_id"]: (a["type"], a["plate"], a["start_ts"], a["end_ts"], bool(a["late"]),
                            a["details"].get("state"))
            for a in alerts if a["type"] != "offline" and a["details"].get("state") != "withdrawn"}


def rows_of(rows) -> dict:
    cols = ("pings", "qualified", "km_total", "km_incomplete", "drift_points", "overspeed_count", "fatigue_s",
            "curfew_events")
    return {(r["plate"], r["day"]): tuple(round(float(r[c]), 4) for c in cols) for r in rows}


def test_rules_on_real_feeds_batch_any_split_and_live_worker(tmp_path):
    reg = parse_registry(registry_dict())
    feed = build_feed()
    lines = [orjson.dumps(p) for p in feed]
    results = [run_pings(lines, reg, None, Config(), batch=b, now_ms=bj(2026, 11, 11)) for b in (1, 37, 5000)]
    alerts, rows, errors = results[0]
    assert errors == []
    st_alerts = standing(alerts)
    for other in results[1:]:
        assert standing(other[0]) == st_alerts and rows_of(other[1]) == rows_of(rows)
    # what the rules prescribe
    by = {(v[0], v[1]): v for v in st_alerts.values()}
    truck_os = by[("overspeed", TRUCK)]
    assert truck_os[2] == "2026-11-10T10:00:30+08:00" and truck_os[3] == "2026-11-10T10:30:00+08:00"
    assert truck_os[4] is True                                                     # late, true event time
    bus_f = by[("fatigue", BUS)]
    assert bus_f[2] == "2026-11-10T12:02:00+08:00"   # 4 h passed at 12:01: the silent 21 min were driving
    r = {k[0]: v for k, v in rows_of(rows).items()}
    assert r[BUS][6] == pytest.approx(59 * 60.0)                      # 08:01–13:00 driven: 4 h 59 min
    assert r[DUP][0] == 40 and r[DUP][1] == 40 and r[DUP][5] == 1    # each fix counted once, one overspeed
    assert r[PARKED][4] == 0                                          # parked after a bad fix: not drifting
    assert r[TRUCK][5] == 1
    # the same feed through the real worker (4 partitions, batched as the gateway would)
    reg_path = tmp_path / "registry.json"
    reg_path.write_bytes(orjson.dumps(registry_dict()))
    with worker_stack(tmp_path, reg_path) as (st, cfg):
        prod = KafkaProducer(bootstrap_servers=st.bootstrap, linger_ms=5)
        for p, key, value in gps_records(feed, max_pings=64, per_step=50):
            md = prod.send(T.GPS_PINGS, key=key, value=value, partition=p % cfg["stream.partitions"]).get(30)
            st.note_sent(md.topic, md.partition, md.offset)
        prod.close()
        assert st.wait_idle(120), "the worker did not consume the feed"
        conn = open_archive(cfg.archive_path)
        deadline = time.monotonic() + 30
        live_rows: list = []
        while time.monotonic() < deadline:
            live_rows = [dict(x) for x in conn.execute("SELECT * FROM vehicle_day")]
            if rows_of(live_rows) == rows_of(rows):
                break
            time.sleep(0.5)
        live_alerts = [dict(x, details=orjson.loads(x["details"])) for x in conn.execute("SELECT * FROM alerts")]
    assert rows_of(live_rows) == rows_of(rows)
    assert standing(live_alerts) == st_alerts
