"""Track metrics through the engine: distance, drift, stationary hold, gaps and gap filling, day rows."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from roadwatch.models.config import Config
from roadwatch.models.ping_state import PingProcessor
from test_gps_support import PLATE, T0, bj, cols, north, ping

R = 6371.0088
DATA = Path(__file__).resolve().parent / "data"   # jt808-frames.txt: real device frames


def hav(a, b):
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(b[1] - a[1]) / 2) ** 2
    return 2 * R * math.asin(math.sqrt(h))


def run(pings, cfg=None, batches=None):
    proc = PingProcessor(cfg or Config())
    if batches is None:
        proc.process(cols(pings))
    else:
        for b in batches:
            proc.process(cols(b))
    return proc, {(r["plate"], r["day"]): r for r in proc.day_rows()}


def only_row(pings, cfg=None):
    _, rows = run(pings, cfg)
    assert len(rows) == 1
    return next(iter(rows.values()))


# --- gaps: time > track.gap_s AND distance > track.gap_km ---------------------------------------------
@pytest.mark.parametrize("dt_s,km,incomplete", [(300, 1.01, False), (301, 1.01, True), (301, 0.999, False),
                                                (3600, 0.999, False)])
def test_gap_boundaries(dt_s, km, incomplete):
    r = only_row([ping(T0, speed=30), ping(T0 + dt_s * 1000, lat=north(22.5, km), speed=30)])
    assert r["km_total"] == pytest.approx(km, abs=1e-6)
    assert r["km_incomplete"] == (pytest.approx(km, abs=1e-6) if incomplete else 0.0)
    assert r["drift_points"] == 0


# --- drift ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kmh,drift", [(159.9, False), (160.1, True)])
def test_implied_speed_boundary(kmh, drift):
    km = kmh * 30 / 3600
    r = only_row([ping(T0, speed=60), ping(T0 + 30_000, lat=north(22.5, km), speed=60)])
    assert r["drift_points"] == int(drift)
    assert r["km_total"] == (0.0 if drift else pytest.approx(km, abs=1e-9))


@pytest.mark.parametrize("speed,km,drift", [(1.0, 0.51, True), (1.1, 0.51, False), (1.0, 0.49, False)])
def test_stationary_jump_boundary(speed, km, drift):
    r = only_row([ping(T0, speed=20), ping(T0 + 60_000, lat=north(22.5, km), speed=speed)])
    assert r["drift_points"] == int(drift)
    assert r["km_total"] == (0.0 if drift else pytest.approx(km, abs=1e-9))


@pytest.mark.parametrize("bound_s,drift", [(120, False), (0, True), (600, True)])
def test_stationary_jump_time_bound(bound_s, drift):
    """A truck parks 10 min after its last qualified fix (the arrival fix was unqualified): its parked
    position is 3 km away at speed 0. With the time bound (default 120 s) that is the trip, not drift;
    the literal rule (0 = no bound) calls it drift and, after re-anchoring, counts it three times."""
    far = north(22.5, 3.0)
    feed = [ping(T0, speed=40), ping(T0 + 300_000, lat=north(22.5, 2.9), speed=40, status_flags=1)]
    feed += [ping(T0 + 600_000 + k * 3_600_000, lat=far, speed=0.0) for k in range(4)]
    r = only_row(feed, Config({"drift.stationary_jump_max_s": bound_s}))
    assert (r["drift_points"] > 0) == drift
    if not drift:
        assert r["km_total"] == pytest.approx(3.0, abs=0.01)


def test_drift_point_is_not_the_new_fix():
    a, far, c = (22.5, 114.0), north(22.5, 20.0), north(22.5, 0.4)
    r = only_row([ping(T0, speed=40), ping(T0 + 30_000, lat=far, speed=40), ping(T0 + 60_000, lat=c, speed=40)])
    assert r["drift_points"] == 1
    assert r["km_total"] == pytest.approx(hav(a, (c, 114.0)), abs=1e-9)   # A→C, never via the drift point


def test_reanchor_after_consecutive_drift_points():
    far = [north(22.5, 50.0 + 0.2 * k) for k in range(5)]
    ps = [ping(T0, speed=40)] + [ping(T0 + (k + 1) * 30_000, lat=far[k], speed=40) for k in range(5)]
    r = only_row(ps)
    # points 1–3 are drift vs the old fix; the 3rd re-anchors (no km); 4 and 5 move 0.2 km each
    assert r["drift_points"] == 3
    assert r["km_total"] == pytest.approx(0.4, abs=1e-6)
    r0 = only_row(ps, Config({"drift.reanchor_after": 0}))
    assert r0["drift_points"] == 5 and r0["km_total"] == 0.0


def _entry11():
    text = (DATA / "jt808-frames.txt").read_text(encoding="utf-8")
    block = text.split("## 11 ")[1].split("## 12 ")[0]
    pts = []
    for m in re.finditer(r"time (\S+) (\S+)\s+lat ([\d.]+) lon ([\d.]+)\s+alt (\d+) m\s+speed ([\d.]+)", block):
        y, mo, d = map(int, m.group(1).split("-"))
        h, mi, s = map(int, m.group(2).split(":"))
        pts.append(ping(bj(y, mo, d, h, mi, s), lat=float(m.group(3)), lon=float(m.group(4)),
                        altitude_m=float(m.group(5)), speed=float(m.group(6)), reupload=True, plate="粤B77777"))
    assert len(pts) == 8
    return pts


def test_real_stationary_drift_sample_entry_11():
    pts = _entry11()
    ll = [(p["lat"], p["lon"]) for p in pts]
    wander = sum(hav(ll[i], ll[i + 1]) for i in range(7))
    assert 0.1 < wander < 0.2            # the "~110 m" of wander (path length ~0.13 km)
    # default: speed 0 everywhere, jumps < 0.5 km → no drift; the hold keeps the fix: no phantom km
    r = only_row(pts)
    assert (r["pings"], r["qualified"], r["drift_points"], r["km_total"]) == (8, 8, 0, 0.0)
    # without the hold every wander step is counted as driven distance
    r = only_row(pts, Config({"drift.stationary_hold": False}))
    assert r["km_total"] == pytest.approx(wander, abs=1e-6)
    # a 50 m stationary-jump threshold: by hand, points 3, 4, 5 lie > 50 m from point 1 …
    d1 = [hav(ll[0], q) for q in ll]
    assert [d > 0.05 for d in d1[1:5]] == [False, True, True, True]
    # … point 5 is the third drift in a row and re-anchors; 6–8 lie within 50 m of point 5
    assert all(hav(ll[4], q) <= 0.05 for q in ll[5:])
    r = only_row(pts, Config({"drift.stationary_jump_km": 0.05}))
    assert (r["drift_points"], r["km_total"]) == (3, 0.0)


def test_unqualified_pings_feed_nothing():
    ps = [ping(T0, speed=30), ping(T0 + 30_000, lat=30.0, speed=30, status_flags=1),   # not positioned
          ping(T0 + 60_000, lat=north(22.5, 0.5), speed=30), ping(T0 + 90_000, lat=north(22.5, 0.75), speed=200)]
    r = only_row(ps)
    assert (r["pings"], r["qualified"], r["drift_points"]) == (4, 2, 0)
    assert r["km_total"] == pytest.approx(0.5, abs=1e-9)


# --- gap filling by re-uploads ------------------------------------------------------------------------
def _gap_case():
    a = ping(T0, speed=30)
    b = ping(T0 + 20 * 60_000, lat=north(22.5, 10.0), speed=30)
    fills = [ping(T0 + k * 5 * 60_000, lat=north(22.5, 2.5 * k), speed=30, reupload=True) for k in (1, 2, 3)]
    return a, b, fills


def test_reuploads_fill_a_gap_stepwise():
    a, b, (f5, f10, f15) = _gap_case()
    proc = PingProcessor(Config())
    proc.process(cols([a, b]))
    r = proc.day_rows()[0]
    assert r["km_total"] == pytest.approx(10.0, abs=1e-6) and r["km_incomplete"] == pytest.approx(10.0, abs=1e-6)
    proc.process(cols([f10]))             # splits into two 10-min, 5-km segments: both still gaps
    r = proc.day_rows()[0]
    assert r["km_incomplete"] == pytest.approx(10.0, abs=1e-6)
    proc.process(cols([f5]))              # 0–5 min now 300 s (not > 300 s): complete; 10–20 min still a gap
    r = proc.day_rows()[0]
    assert r["km_incomplete"] == pytest.approx(5.0, abs=1e-6)
    proc.process(cols([f15]))
    r = proc.day_rows()[0]
    assert r["km_total"] == pytest.approx(10.0, abs=1e-6) and r["km_incomplete"] == pytest.approx(0.0, abs=1e-9)
    assert r["pings"] == 5 and r["qualified"] == 5
    assert len(proc.gaps) == 0            # closed once complete


def test_filled_gap_equals_in_order_track():
    a, b, fills = _gap_case()
    _, late = run([a, b] + fills)
    _, in_order = run([a] + fills + [b])
    (rl,), (ri,) = late.values(), in_order.values()
    for k in ("km_total", "km_incomplete", "pings", "qualified", "drift_points"):
        assert rl[k] == pytest.approx(ri[k], abs=1e-9), k


def test_fill_drift_and_points_outside_gaps():
    a, b, _ = _gap_case()
    wild = ping(T0 + 10 * 60_000, lat=north(22.5, 60.0), speed=30, reupload=True)   # 60 km in 10 min
    before = ping(T0 - 60_000, lat=north(22.5, -0.5), speed=30, reupload=True)      # outside any gap
    _, rows = run([a, b, wild, before])
    (r,) = rows.values()
    assert r["drift_points"] == 1 and r["pings"] == 4
    assert r["km_incomplete"] == pytest.approx(10.0, abs=1e-6)


def test_gap_across_midnight_books_km_on_the_later_points_day():
    t_a = bj(2026, 3, 2, 23, 50)
    a = ping(t_a, speed=30)
    b = ping(t_a + 20 * 60_000, lat=north(22.5, 10.0), speed=30)            # 00:10 next day
    f = ping(t_a + 5 * 60_000, lat=north(22.5, 2.5), speed=30, reupload=True)  # 23:55, first day
    _, rows = run([a, b, f])
    d1, d2 = rows[(PLATE, "2026-03-02")], rows[(PLATE, "2026-03-03")]
    assert d1["km_total"] == pytest.approx(2.5, abs=1e-6) and d1["km_incomplete"] == 0.0
    assert d2["km_total"] == pytest.approx(7.5, abs=1e-6) and d2["km_incomplete"] == pytest.approx(7.5, abs=1e-6)
    assert (d1["pings"], d2["pings"]) == (2, 1)


def test_day_rows_columns_and_stale_days():
    t = bj(2026, 3, 5, 23, 59, 30)
    ps = [ping(t, speed=30), ping(t + 60_000, lat=north(22.5, 1.0), speed=30)]
    proc, rows = run(ps)
    assert sorted(rows) == [(PLATE, "2026-03-05"), (PLATE, "2026-03-06")]
    r = rows[(PLATE, "2026-03-06")]
    assert r["km_total"] == pytest.approx(1.0, abs=1e-6) and r["online"] is True
    assert list(r)[:12] == ["plate", "day", "pings", "qualified", "km_total", "km_incomplete", "drift_points",
                            "overspeed_count", "fatigue_s", "curfew_events", "offline_events", "late_from_closed"]
    assert proc.day_rows() == []                      # nothing changed since
    out = proc.process(cols([ping(t - 3 * 86_400_000, speed=30, reupload=True)]))   # 3 days back, 2 slots
    # not in memory: kept for the stored row of 2 March, which the caller recomputes (merge_past_days)
    assert out.stale_day == 1 and proc.day_rows() == []
    assert proc.past_day_keys() == [(PLATE, "2026-03-02")]
    stored = [dict(r, day="2026-03-02", pings=5, qualified=4, late_from_closed=0)]
    (p,) = proc.merge_past_days([], stored)
    assert (p["day"], p["pings"], p["qualified"], p["km_total"]) == ("2026-03-02", 6, 5, r["km_total"])
    assert proc.past_day_keys() == [] and proc.merge_past_days([], stored) == []
    out = proc.process(cols([ping(t - 60_000, speed=30, reupload=True)]))            # yesterday: kept
    (r,) = proc.day_rows()
    assert r["day"] == "2026-03-05" and r["pings"] == 2


def test_day_slot_overwritten_before_day_rows_is_not_lost():
    days = [bj(2026, 3, d, 12) for d in (2, 3, 4, 5)]
    _, rows = run([ping(t, speed=0) for t in days])
    assert sorted(d for _, d in rows) == ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]
    assert all(r["pings"] == 1 for r in rows.values())
