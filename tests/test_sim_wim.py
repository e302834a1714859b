"""WIM station simulator: loads sum to gross, readings parse, sensor error matches the class, images."""
import hashlib
import struct
import zlib
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from hypothesis import given, settings, strategies as st

from roadwatch.models.records import BEIJING, PLATE_RE, parse_wim_reading
from roadwatch.simulators.fleet import generate_fleet
from roadwatch.simulators.wim_station import WimTraffic, measure, misread, png_bytes, public, split_gross, station_traffic


@settings(max_examples=200, deadline=None)
@given(gross=st.integers(300, 15_000).map(lambda x: x * 10), axles=st.integers(2, 6), seed=st.integers(0, 10**6))
def test_axle_loads_sum_exactly_to_gross(gross, axles, seed):
    loads = split_gross(float(gross), axles, np.random.default_rng(seed))
    assert len(loads) == axles
    assert abs(sum(loads) - gross) < 1e-6
    assert all(x >= 0 for x in loads)


def test_sensor_error_sigma_follows_accuracy_class():
    rng = np.random.default_rng(1)
    for cls, mpe in (("5", 0.05), ("2", 0.02), ("10", 0.10)):
        rel = np.array([measure(30_000.0, cls, rng) for _ in range(4000)]) / 30_000.0 - 1
        assert abs(rel.mean()) < 0.004
        assert abs(rel.std() - mpe / 2.5) < 0.1 * mpe / 2.5           # σ = MPE / 2.5 within 10 %
        assert np.mean(np.abs(rel) <= mpe) > 0.97                      # ~98.8 % within the MPE


def test_station_traffic_readings_are_valid_and_rates_hold(tmp_path):
    reg = generate_fleet(400, 2, seed=11)
    goods = [v for v in reg.vehicles.values() if v.vehicle_kind != "bus"]
    stn = reg.stations["W002"]
    start = datetime(2025, 3, 3, tzinfo=BEIJING)
    traffic = WimTraffic(per_hour=60, overload_rate=0.10, duplicate_rate=0.05, misread_rate=0.05,
                         low_conf_rate=0.05, images="suspect")
    rs = station_traffic(stn, goods, start, start + timedelta(days=2), np.random.default_rng(2), traffic, tmp_path)
    assert len(rs) > 1500
    for r in rs:
        rec = parse_wim_reading(public(r))             # the interchange validator accepts every reading
        assert PLATE_RE.match(rec.plate) and rec.ts.endswith("+08:00")
        assert abs(sum(rec.axle_loads_kg) - rec.gross_kg) < 1e-6
    states = [r["_truth"]["state"] for r in rs if not r["_truth"]["duplicate"]]
    assert 0.07 < states.count("overloaded") / len(states) < 0.13
    dups = [r for r in rs if r["_truth"]["duplicate"]]
    assert dups and all(d["reading_id"] != "" for d in dups)
    low = [r for r in rs if r["plate_confidence"] < 0.9]
    assert 0.03 < len(low) / len(rs) < 0.08
    unknown = [r for r in rs if r["plate"] not in reg.vehicles]
    assert unknown                                       # foreign plates and misreads
    with_images = [r for r in rs if r["images"]]
    assert with_images
    for im in with_images[0]["images"]:
        data = Path(im["uri"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == im["sha256"]


def test_png_is_valid_and_deterministic():
    a, b = png_bytes("x|front"), png_bytes("x|front")
    assert a == b and a != png_bytes("x|rear")
    assert a[:8] == b"\x89PNG\r\n\x1a\n"
    pos = 8
    while pos < len(a):                                  # every chunk CRC checks out
        n = struct.unpack(">I", a[pos:pos + 4])[0]
        tag, data = a[pos + 4:pos + 8], a[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", a[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(tag + data)
        pos += 12 + n
    assert tag == b"IEND"


def test_misread_changes_one_character_and_stays_a_plate():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = "湘A12345"
        m = misread(p, rng)
        assert PLATE_RE.match(m)
        assert sum(x != y for x, y in zip(p, m)) <= 1
