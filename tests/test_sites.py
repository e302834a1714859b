"""Cargo-source search: the GPS engine's stop events (models/ping_state.py ``_step_stops``) searched by
geo/sites.py — stop duration, lookback, last stop, polygon membership. Every track goes through the real
engine, so these are the outcomes the worker's archived stops give."""
from datetime import timedelta

import numpy as np

from roadwatch.geo.sites import SiteIndex, excerpt, find_loading_site
from roadwatch.models.config import Config
from roadwatch.models.ping_state import PingProcessor
from roadwatch.models.pingschema import PingColumns
from roadwatch.models.records import SourceSite
from test_overload_helpers import PLATE, SQUARE, T0, ms

CFG = Config()     # lookback 12 h, min stop 15 min, stop speed ≤ 3 km/h
INSIDE = (34.61, 113.51)
OUTSIDE = (34.70, 113.60)
SITES = SiteIndex([SourceSite(site_id="Q1", name="砂石料场", kind="sand", polygon=SQUARE),
                   SourceSite(site_id="C1", name="水泥厂", kind="cement",
                              polygon=[[113.60, 34.60], [113.62, 34.60], [113.62, 34.62], [113.60, 34.62]])])


def track(*segments):
    """segments: (start offset before T0, minutes, (lat, lon), speed) — one point per minute, inclusive."""
    ts, la, lo, sp = [], [], [], []
    for start, minutes, (lat, lon), speed in segments:
        for i in range(minutes + 1):
            ts.append(ms(T0 - start + timedelta(minutes=i)))
            la.append(lat)
            lo.append(lon)
            sp.append(speed)
    return np.array(ts, dtype=np.int64), np.array(la), np.array(lo), np.array(sp, dtype=float)


def engine_stops(tr, cfg=CFG, batch=10_000):
    """The stop events the engine derives from the track (ts, lat, lon, speed): (start, end, lat, lon)."""
    ts, la, lo, sp = tr
    order = np.argsort(ts, kind="stable")
    proc = PingProcessor(cfg)
    for k in range(0, len(order), batch):
        j = order[k:k + batch]
        m = len(j)
        proc.process(PingColumns(plate=[PLATE] * m, terminal_id=[""] * m, plate_color=np.full(m, 2),
                                 ts=ts[j], lat=la[j].astype(float), lon=lo[j].astype(float),
                                 speed_kmh=sp[j].astype(float), heading=np.zeros(m, dtype=np.int64),
                                 altitude_m=np.zeros(m), alarm_flags=np.zeros(m, dtype=np.int64),
                                 status_flags=np.full(m, 3, dtype=np.int64), reupload=np.zeros(m, dtype=bool),
                                 driver_id=[None] * m, mileage_km=[None] * m))
    _, stops = proc.stop_events()
    return (np.array([s[1] for s in stops], dtype=np.int64), np.array([s[2] for s in stops], dtype=np.int64),
            np.array([s[3] for s in stops], dtype=float), np.array([s[4] for s in stops], dtype=float))


def find(tr, cfg=CFG):
    r = find_loading_site(SITES, *engine_stops(tr, cfg), ms(T0), cfg)
    r.pop("_i", None)
    return r


def drive_after(start):
    return (start, 30, OUTSIDE, 50.0)


def test_stop_of_15_min_counts_14_does_not():
    h3 = timedelta(hours=3)
    r14 = find(track((h3, 14, INSIDE, 0.0), drive_after(h3 - timedelta(minutes=20))))
    r15 = find(track((h3, 15, INSIDE, 0.0), drive_after(h3 - timedelta(minutes=20))))
    assert r14 == {"site_id": None, "reason": "no_stop_in_site"}
    assert r15["site_id"] == "Q1" and r15["stop_min"] == 15.0 and r15["name"] == "砂石料场"
    assert r15["stop_start"] == (T0 - h3).isoformat(timespec="seconds")


def test_stop_speed_edge():
    h3 = timedelta(hours=3)
    after = drive_after(h3 - timedelta(minutes=25))
    assert find(track((h3, 20, INSIDE, 3.0), after))["site_id"] == "Q1"       # ≤ 3 km/h is stopped
    assert find(track((h3, 20, INSIDE, 3.1), after))["site_id"] is None


def test_stop_outside_the_lookback_is_ignored_and_clipped_at_window_start():
    old = find(track((timedelta(hours=12, minutes=30), 20, INSIDE, 0.0)))     # ends 12 h 10 min before
    assert old == {"site_id": None, "reason": "no_stop_in_site"}
    # a stop straddling the window start only counts its part inside the window (10 min < 15)
    straddle = find(track((timedelta(hours=12, minutes=10), 20, INSIDE, 0.0), drive_after(timedelta(hours=2))))
    assert straddle["site_id"] is None
    # but 15 min inside the window do count
    ok = find(track((timedelta(hours=12, minutes=10), 25, INSIDE, 0.0), drive_after(timedelta(hours=2))))
    assert ok["site_id"] == "Q1" and ok["stop_min"] == 15.0


def test_the_last_qualifying_stop_wins():
    cement = (34.61, 113.61)
    tr = track((timedelta(hours=6), 30, INSIDE, 0.0), (timedelta(hours=5), 20, OUTSIDE, 40.0),
               (timedelta(hours=4), 20, cement, 0.0), drive_after(timedelta(hours=3)))
    assert find(tr)["site_id"] == "C1"


def test_stopped_outside_any_site_or_moving_inside_is_not_loading():
    after = drive_after(timedelta(hours=1, minutes=55))
    assert find(track((timedelta(hours=3), 60, OUTSIDE, 0.0), after)) == {"site_id": None, "reason": "no_stop_in_site"}
    assert find(track((timedelta(hours=3), 60, INSIDE, 20.0), after))["site_id"] is None
    assert find(track((timedelta(hours=3), 60, INSIDE, 0.0), after))["site_id"] == "Q1"   # the same, stopped


def test_a_moving_point_splits_the_stop():
    h3 = timedelta(hours=3)
    tr = track((h3, 10, INSIDE, 0.0), (h3 - timedelta(minutes=10, seconds=30), 0, INSIDE, 25.0),
               (h3 - timedelta(minutes=11), 10, INSIDE, 0.0))
    assert find(tr)["site_id"] is None


def test_boundary_point_counts_as_inside_and_empty_inputs():
    edge = (34.60, 113.51)                  # on the polygon's southern edge
    assert find(track((timedelta(hours=1), 20, edge, 0.0), drive_after(timedelta(minutes=30))))["site_id"] == "Q1"
    e = np.empty(0)
    assert find_loading_site(SITES, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), e, e, ms(T0),
                             CFG) == {"site_id": None, "reason": "no_stop_in_site"}
    stops = engine_stops(track((timedelta(hours=1), 20, INSIDE, 0.0), drive_after(timedelta(minutes=30))))
    assert find_loading_site(SiteIndex([]), *stops, ms(T0), CFG)["reason"] == "no_sites"


def test_a_stop_not_ended_is_no_event_and_one_ending_after_the_reading_counts_up_to_it():
    assert find(track((timedelta(hours=1), 20, INSIDE, 0.0)))["reason"] == "no_stop_in_site"   # still standing
    # stopped from 1 h before the reading until 25 min after it, then driving: counted until the reading
    r = find(track((timedelta(hours=1), 85, INSIDE, 0.0), drive_after(-timedelta(minutes=26))))
    assert r["site_id"] == "Q1" and r["stop_end"] == T0.isoformat(timespec="seconds") and r["stop_min"] == 60.0


def test_a_stop_ends_when_the_vehicle_creeps_beyond_the_stop_radius():
    # ≤ 3 km/h but 500 m away from where it stopped (source.stop_max_move_m 300): a new stop begins there
    creep = (34.61 + 0.0045, 113.51)
    h3 = timedelta(hours=3)
    r = find(track((h3, 10, INSIDE, 0.0), (h3 - timedelta(minutes=10, seconds=30), 10, creep, 2.0),
                   drive_after(h3 - timedelta(minutes=25))))
    assert r["site_id"] is None
    wide = Config({"source.stop_max_move_m": 1000.0})
    assert find(track((h3, 10, INSIDE, 0.0), (h3 - timedelta(minutes=10, seconds=30), 10, creep, 2.0),
                      drive_after(h3 - timedelta(minutes=25))), wide)["stop_min"] == 20.5


def test_long_track_finds_the_stop_and_the_excerpt_is_bounded_geojson():
    # Speed is measured by `roadwatch bench`, not here: this checks the result on a 12 h, 1 Hz track.
    n = 43_200                                              # 12 h at 1 Hz
    ts = ms(T0) - np.arange(n, 0, -1, dtype=np.int64) * 1000
    lat = np.where(np.arange(n) < 3600, INSIDE[0], OUTSIDE[0])
    lon = np.where(np.arange(n) < 3600, INSIDE[1], OUTSIDE[1])
    sp = np.where(np.arange(n) < 3600, 0.0, 50.0)
    r = find((ts, lat, lon, sp))
    assert r["site_id"] == "Q1" and r["stop_min"] == 60.0
    geo = excerpt(ts, lat, lon)
    assert geo["geometry"]["type"] == "LineString" and geo["geometry"]["coordinates"][0] == [113.51, 34.61]
    assert len(geo["geometry"]["coordinates"]) == len(geo["properties"]["ts_ms"]) <= 500
