"""Cargo-source search (geo/sites.py): stop duration, lookback, last stop, polygon membership."""
from datetime import timedelta

import numpy as np

from roadwatch.geo.sites import SiteIndex, find_loading_site
from roadwatch.models.config import Config
from roadwatch.models.records import SourceSite
from test_overload_helpers import SQUARE, T0, ms

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


def find(tr, cfg=CFG):
    return find_loading_site(SITES, *tr, ms(T0), cfg)


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
    assert find(track((h3, 20, INSIDE, 3.0)))["site_id"] == "Q1"       # ≤ 3 km/h is stopped
    assert find(track((h3, 20, INSIDE, 3.1)))["site_id"] is None


def test_stop_outside_the_lookback_is_ignored_and_clipped_at_window_start():
    old = find(track((timedelta(hours=12, minutes=30), 20, INSIDE, 0.0)))     # ends 12 h 10 min before
    assert old == {"site_id": None, "reason": "no_track"}
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
    assert find(track((timedelta(hours=3), 60, OUTSIDE, 0.0)))["site_id"] is None
    assert find(track((timedelta(hours=3), 60, INSIDE, 20.0)))["site_id"] is None


def test_a_moving_point_splits_the_stop():
    h3 = timedelta(hours=3)
    tr = track((h3, 10, INSIDE, 0.0), (h3 - timedelta(minutes=10, seconds=30), 0, INSIDE, 25.0),
               (h3 - timedelta(minutes=11), 10, INSIDE, 0.0))
    assert find(tr)["site_id"] is None


def test_boundary_point_counts_as_inside_and_empty_inputs():
    edge = (34.60, 113.51)                  # on the polygon's southern edge
    assert find(track((timedelta(hours=1), 20, edge, 0.0)))["site_id"] == "Q1"
    e = np.empty(0)
    assert find((np.empty(0, dtype=np.int64), e, e, e)) == {"site_id": None, "reason": "no_track"}
    assert find_loading_site(SiteIndex([]), *track((timedelta(hours=1), 20, INSIDE, 0.0)), ms(T0), CFG)["reason"] == "no_sites"


def test_points_after_the_reading_are_ignored_and_excerpt_is_geojson():
    tr = track((timedelta(hours=1), 20, INSIDE, 0.0), (-timedelta(minutes=5), 30, INSIDE, 0.0))
    r = find(tr)
    assert r["site_id"] == "Q1" and r["stop_end"] == (T0 - timedelta(minutes=40)).isoformat(timespec="seconds")
    geo = r["track"]
    assert geo["geometry"]["type"] == "LineString" and geo["geometry"]["coordinates"][0] == [113.51, 34.61]
    assert len(geo["geometry"]["coordinates"]) == len(geo["properties"]["ts_ms"])


def test_long_track_search_finds_the_stop_and_bounds_the_evidence_track():
    # Speed is measured by `roadwatch bench`, not here: this checks the result on a 12 h, 1 Hz track.
    n = 43_200                                              # 12 h at 1 Hz
    ts = ms(T0) - np.arange(n, 0, -1, dtype=np.int64) * 1000
    lat = np.where(np.arange(n) < 3600, INSIDE[0], OUTSIDE[0])
    lon = np.where(np.arange(n) < 3600, INSIDE[1], OUTSIDE[1])
    sp = np.where(np.arange(n) < 3600, 0.0, 50.0)
    r = find_loading_site(SITES, ts, lat, lon, sp, ms(T0), CFG)
    assert r["site_id"] == "Q1" and len(r["track"]["geometry"]["coordinates"]) <= 500
