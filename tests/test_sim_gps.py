"""GPS terminal simulator: leg expansion, injected behaviours really present in the published feed."""
import numpy as np
import orjson
import pytest
from kafka.partitioner.default import murmur2

from roadwatch.models.config import Config
from roadwatch.models.pingbatch import decode_batch
from roadwatch.simulators.gps_terminal import Track, expand_legs, haversine_km
from roadwatch.simulators.scenario import build, load_scenario


def test_expand_legs_timing_and_implied_speed():
    tr = Track(0, 1_000_000, 112.0, 27.0, interval=30, parked_interval=600)
    tr.drive_for(3600, 60.0, 90.0).stop(1800).drive_for(600, 40.0, 0.0)
    c = expand_legs(tr.legs.arrays(), np.random.default_rng(0))
    ts = c["ts"]
    assert ts[0] == 1_000_030 and np.all(np.diff(ts) > 0)
    drive = ts <= 1_000_000 + 3600
    assert drive.sum() == 120 and set(np.diff(ts[drive])) == {30}
    assert c["speed_kmh"][drive][-1] == 60.0 and ts[drive][-1] == 1_000_000 + 3600   # arrival fix
    d = haversine_km(c["lon"][:-1], c["lat"][:-1], c["lon"][1:], c["lat"][1:])
    v = d / np.diff(ts) * 3600
    assert np.allclose(v[:119], 60.0, rtol=0.01)                      # implied speed = nominal speed
    parked = (ts > 1_000_000 + 3600) & (ts <= 1_000_000 + 5400)
    # JT/T 808 terminals report at a state change: a stopped, ACC-off fix 1 s after the stop, then every 600 s
    assert list(ts[parked] - 1_000_000 - 3600) == [1, 600, 1200, 1800] and np.all(c["speed_kmh"][parked] == 0)
    assert 1_000_000 + 5401 in ts                                    # and a moving fix 1 s after starting again
    first_stop = np.flatnonzero(parked)[0]                   # stopped where the drive ended: no jump
    assert haversine_km(c["lon"][first_stop - 1], c["lat"][first_stop - 1], c["lon"][first_stop], c["lat"][first_stop]) < 1e-6
    assert np.all(c["status_flags"][parked] & 1 == 0)                # ACC off while parked
    assert np.all(c["status_flags"] & 2)                             # positioned
    assert np.all(np.diff(c["mileage_km"]) >= 0)
    assert np.all(c["recv_ts"] > c["ts"])


def _pings(built, plate):
    rows = []
    for r in built.records:
        if r.topic != "gps-pings":
            continue
        cols = decode_batch(r.value)
        for i, p in enumerate(cols.plate):
            if p == plate:
                rows.append((int(cols.ts[i]) // 1000, float(cols.speed_kmh[i]), bool(cols.reupload[i]),
                             int(cols.recv_ts[i]) // 1000, float(cols.lon[i]), float(cols.lat[i])))
    rows.sort()
    return rows


@pytest.fixture(scope="module")
def fatigue():
    return build(load_scenario("gps_fatigue"), Config())


def _longest_drive_without_rest(rows, rest_s=1200):
    """Longest span of moving fixes not interrupted by a stop of ≥ rest_s (independent re-count)."""
    best, start, stop_since, last_move = 0, None, None, None
    for t, v, *_ in rows:
        if v > 0:
            if start is None or (stop_since is not None and t - stop_since >= rest_s):
                start = t
            stop_since = None
            last_move = t
            best = max(best, last_move - start)
        elif stop_since is None:
            stop_since = t
    return best


def test_fatigue_bus_really_drives_over_4h_without_a_20_min_stop(fatigue):
    long = _pings(fatigue, fatigue.aliases["bus_day_long"])
    ok = _pings(fatigue, fatigue.aliases["bus_day_ok"])
    assert _longest_drive_without_rest(long) > 4 * 3600
    assert _longest_drive_without_rest(ok) < 4 * 3600
    cum = _pings(fatigue, fatigue.aliases["bus_cumulative"])
    assert _longest_drive_without_rest(cum) < 4 * 3600
    moving = sum(1 for t, v, *_ in cum if v > 0) * 30
    assert moving > 8 * 3600


def test_batches_decode_and_never_mix_partitions(fatigue):
    parts = Config()["stream.partitions"]
    n = 0
    for r in fatigue.records:
        if r.topic != "gps-pings":
            continue
        cols = decode_batch(r.value)
        assert {(murmur2(p.encode()) & 0x7FFFFFFF) % parts for p in cols.plate} == {r.partition}
        assert r.key == cols.plate[0].encode()
        assert cols.recv_ts is not None and int(cols.recv_ts.max()) == r.ts_ms
        n += len(cols)
    assert n == fatigue.stats["pings"]


def test_background_vehicles_stay_clean(fatigue):
    cfg = Config()
    scripted = set(fatigue.aliases.values())
    by_plate = {}
    for r in fatigue.records:
        if r.topic == "gps-pings":
            c = decode_batch(r.value)
            for i, p in enumerate(c.plate):
                if p not in scripted:
                    by_plate.setdefault(p, []).append((int(c.ts[i]), float(c.speed_kmh[i])))
    assert by_plate
    for plate, rows in by_plate.items():
        v = fatigue.registry.vehicles[plate]
        lim = {"危险货物运输车辆": cfg["speeding.dg_other_kmh"]}.get(v.category, 80.0)
        assert max(s for _, s in rows) < lim
        from datetime import datetime, timezone, timedelta
        for t, s in rows:
            if s > 0:
                h = datetime.fromtimestamp(t / 1000, tz=timezone(timedelta(hours=8))).hour
                assert 6 <= h < 22                                        # never driving at night


def test_reupload_fills_the_blind_area_and_arrives_late():
    b = build(load_scenario("gps_track"), Config())
    rows = _pings(b, b.aliases["blind"])
    re = [r for r in rows if r[2]]
    assert len(re) == 20                                                  # 600 s at 30 s
    assert all(r[3] - r[0] >= 20 for r in re)                             # received after the blind area
    moving = [r[0] for r in rows if r[1] > 0]
    assert max(np.diff(moving)) <= 30                                     # no gap left in event time
    dark = _pings(b, b.aliases["dark"])
    gaps = np.diff([r[0] for r in dark])
    assert gaps.max() > 1800                                              # the offline silence
    drifter = _pings(b, b.aliases["drifter"])
    d = [haversine_km(a[4], a[5], c[4], c[5]) / max(c[0] - a[0], 1) * 3600 for a, c in zip(drifter, drifter[1:])]
    assert sum(1 for x in d if x > 160) >= 2                              # jumps far above 160 km/h


def test_speeding_and_zone_behaviours_in_feed():
    b = build(load_scenario("gps_overspeed"), Config())
    dg = _pings(b, b.aliases["dg_long"])
    over = [t for t, v, *_ in dg if v > 60]
    assert over and over[-1] - over[0] > 30
    blip = _pings(b, b.aliases["dg_blip"])
    assert sum(1 for _, v, *_ in blip if v > 60) == 1
    g = build(load_scenario("gps_geofence"), Config())
    z = g.registry.zones["Z001"].polygon
    inside = [r for r in _pings(g, g.aliases["dg_in_z1"])
              if z[0][0] <= r[4] <= z[1][0] and z[0][1] <= r[5] <= z[2][1]]
    assert len(inside) >= 10                                              # dwell of 10 min inside


def test_receipt_in_sending_order_and_no_silence_while_moving():
    """Per terminal, fixes arrive in the order sent (re-uploads aside), and a background vehicle never falls
    silent while moving: after a moving fix the next one comes within the driving interval."""
    from roadwatch.models.config import Config
    from roadwatch.simulators.scenario import build, load_scenario
    scn = load_scenario("province_week")
    scn.raw["fleet"] = dict(scn.raw["fleet"], vehicles=150, drift_vehicle_rate=0.0, bad_value_rate=0.0)
    scn.hours = 48.0
    c = build(scn, Config()).pings
    o = np.lexsort((c["ts"], c["vid"]))
    vid, ts, recv, spd = c["vid"][o], c["ts"][o], c["recv_ts"][o], c["speed_kmh"][o]
    same = vid[1:] == vid[:-1]
    assert not np.any(same & (recv[1:] < recv[:-1]))
    moving_then = same & (spd[:-1] > 0)
    assert moving_then.sum() > 1000
    assert np.all(np.diff(ts)[moving_then] <= scn.raw["scenario"]["interval_s"])
