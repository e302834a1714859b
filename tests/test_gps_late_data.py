"""Late data is first-class (issue 14): re-uploaded and late pings are merged into the vehicle's timeline and
the time-ordered rules are re-evaluated for the range, so arrival order inside the replay window does not
change alerts or vehicle-day rows; alerts found this way are late with their true time; alerts the late data
invalidates are withdrawn."""
from __future__ import annotations

import random

import pytest

from roadwatch.models.config import Config
from roadwatch.models.ping_state import PingProcessor
from roadwatch.models.pingschema import dicts_getter, validate_columns
from test_gps_support import PLATE, bj, north, ping, registry

MIN = 60_000


def cols(pings):
    c, errs = validate_columns(dicts_getter(pings), len(pings))
    assert not errs
    return c


def run(pings, category="危险货物运输车辆", cfg=None, batch=50):
    p = PingProcessor(cfg or Config(), registry([{"category": category}]))
    final = {}
    for i in range(0, len(pings), batch):
        for a in p.process(cols(pings[i:i + batch])).alerts:
            final[a["alert_id"]] = a
    rows = {r["day"]: r for r in p.day_rows(dirty_only=False) if r["plate"] == PLATE}
    return final, rows, p


def drive(t0, minutes, speed, lat0, step_s=30, **kw):
    n = int(minutes * 60 / step_s)
    return [ping(t0 + k * step_s * 1000, lat=north(lat0, speed * k * step_s / 3600), speed=speed, **kw)
            for k in range(1, n + 1)]


def truck_day():
    """The issue's hazardous-goods truck: 50 km/h, a 30-min blind area at 75 km/h (limit 60), 50 km/h after."""
    t0 = bj(2026, 3, 2, 9, 0)
    before = drive(t0, 60, 50.0, 22.5)
    blind = drive(t0 + 60 * MIN, 30, 75.0, before[-1]["lat"], reupload=True)
    after = drive(t0 + 90 * MIN, 60, 50.0, blind[-1]["lat"])
    return before, blind, after


def test_blind_area_reupload_raises_the_overspeed_late_with_its_true_time():
    before, blind, after = truck_day()
    # live: the re-upload arrives 5 min after coverage returned
    alerts, rows, p = run(before + after[:10] + blind + after[10:])
    os_ = [a for a in alerts.values() if a["type"] == "overspeed"]
    assert len(os_) == 1
    a = os_[0]
    assert a["late"] is True
    assert a["start_ts"] == "2026-03-02T10:00:30+08:00"           # first over-limit fix of the blind area
    assert a["end_ts"] == "2026-03-02T10:30:00+08:00" and a["details"]["state"] == "closed"
    assert rows["2026-03-02"]["overspeed_count"] == 1
    # the same day with the fixes in time order gives the same rows — except the silence itself: live, the
    # terminal WAS offline for 30 min while moving (liveness follows receipt, by design)
    _, rows_sorted, _ = run(before + blind + after)
    assert rows["2026-03-02"]["offline_events"] == 1 and rows_sorted["2026-03-02"]["offline_events"] == 0
    assert ({d: dict(r, updated_at=0, offline_events=0) for d, r in rows.items()}
            == {d: dict(r, updated_at=0, offline_events=0) for d, r in rows_sorted.items()})


def test_reupload_across_a_gap_fills_the_fatigue_run():
    """A bus's terminal stored its fixes while out of coverage (3.5 h + 40 min + 1 h of driving): before the
    re-upload the 40-min silence looks like a rest; after it the run is 5 h 9 min → one fatigue episode."""
    t0 = bj(2026, 3, 2, 7, 0)
    a = drive(t0, 210, 60.0, 22.5, step_s=60)
    hole = drive(t0 + 210 * MIN, 40, 60.0, a[-1]["lat"], step_s=60, reupload=True)
    b = drive(t0 + 250 * MIN, 60, 60.0, hole[-1]["lat"], step_s=60)
    cfg = Config({"fatigue.rest_max_move_km": 100.0})     # the silence alone would count as a rest
    alerts, rows, _ = run(a + b + hole, category="客运班车", cfg=cfg)
    # (a re-upload split over two batches first yields a shorter view of the run: that alert is withdrawn)
    fat = [x for x in alerts.values() if x["type"] == "fatigue" and x["details"]["state"] != "withdrawn"]
    assert len(fat) == 1 and fat[0]["late"] is True and fat[0]["start_ts"] == "2026-03-02T11:02:00+08:00"
    assert rows["2026-03-02"]["fatigue_s"] == pytest.approx(69 * 60)         # 07:01–12:10 driven
    _, rows_sorted, _ = run(a + hole + b, category="客运班车", cfg=cfg)
    assert rows["2026-03-02"]["fatigue_s"] == rows_sorted["2026-03-02"]["fatigue_s"]


def test_late_data_that_breaks_an_episode_withdraws_the_alert():
    """Live: over the limit at 09:00:00, 09:00:40 and 09:00:50 (50 s > 30 s → one overspeed). A late fix
    at 09:00:20 at 40 km/h breaks the run into pieces of 0 s and 10 s: no overspeed. The alert is withdrawn
    (published again with state "withdrawn"), and the day's count goes back to 0."""
    t0 = bj(2026, 3, 2, 9, 0)
    fast = [ping(t0 + s * 1000, lat=north(22.5, 0.02 * s), speed=75.0) for s in (0, 40, 50)]
    slow = ping(t0 + 20_000, lat=north(22.5, 0.4), speed=40.0, reupload=True)
    p = PingProcessor(Config(), registry([{"category": "危险货物运输车辆"}]))
    live = p.process(cols(fast)).alerts
    assert [(a["type"], a["details"]["state"]) for a in live] == [("overspeed", "open")]
    later = p.process(cols([slow])).alerts
    assert [(a["alert_id"], a["details"]["state"]) for a in later] == [(live[0]["alert_id"], "withdrawn")]
    assert later[0]["start_ts"] == live[0]["start_ts"]
    row = p.day_rows(dirty_only=False)[0]
    assert row["overspeed_count"] == 0 and row["pings"] == 4


@pytest.mark.parametrize("seed", range(6))
def test_any_arrival_order_inside_the_window_gives_the_time_ordered_result(seed):
    rnd = random.Random(seed)
    t0 = bj(2026, 3, 2, 21, 0)
    pings, lat, t = [], 22.5, t0
    for _ in range(rnd.randint(60, 160)):
        t += rnd.choice([20, 30, 60, 400, 1500]) * 1000
        v = rnd.choice([0.0, 30.0, 55.0, 70.0, 90.0])
        lat = north(lat, v * 0.5 / 60) if rnd.random() > 0.05 else north(lat, 40.0)   # some drift
        pings.append(ping(t, lat=lat, speed=v))
    arrival = list(pings)
    for _ in range(len(pings) // 8):                # move some pings later (re-upload / network delay)
        i = rnd.randrange(len(arrival))
        p = dict(arrival.pop(i), reupload=True)
        arrival.insert(min(len(arrival), i + rnd.randint(1, 40)), p)
    cfg = Config({"late.replay_window_h": 48.0})
    a_live, rows_live, _ = run(arrival, cfg=cfg, batch=rnd.choice([1, 7, 50]))
    a_sorted, rows_sorted, _ = run(pings, cfg=cfg)
    key = ("pings", "qualified", "km_total", "km_incomplete", "drift_points", "overspeed_count", "fatigue_s",
           "curfew_events")
    for d in rows_sorted:
        assert [rows_live[d][k] for k in key] == pytest.approx([rows_sorted[d][k] for k in key], abs=1e-6)
    kept = {i for i, a in a_live.items() if a["type"] != "offline" and a["details"].get("state") != "withdrawn"}
    assert kept == {i for i, a in a_sorted.items() if a["type"] != "offline"}


def test_snapshot_keeps_the_replay_window():
    before, blind, after = truck_day()
    p = PingProcessor(Config(), registry([{"category": "危险货物运输车辆"}]))
    p.process(cols(before + after[:10]))
    q = PingProcessor.restore(Config(), p.registry, None, p.snapshot())
    alerts = q.process(cols(blind)).alerts
    assert [a["type"] for a in alerts if a["late"]] == ["overspeed"]


def test_version_1_snapshot_restores_with_a_window_that_starts_now():
    """A snapshot written before the replay window existed: rule state kept, late data older than the
    restore only fills gaps (never rewinds the vehicle to an empty checkpoint)."""
    import io
    import zipfile

    import numpy as np
    import orjson
    before, blind, after = truck_day()
    p = PingProcessor(Config(), registry([{"category": "危险货物运输车辆"}]))
    p.process(cols(before + after[:10]))
    old = io.BytesIO()
    with np.load(io.BytesIO(p.snapshot()), allow_pickle=False) as z, zipfile.ZipFile(old, "w") as zf:
        for name in z.files:
            if name.startswith(("ck_", "ckb_", "rc_", "q_last", "fat_", "cum_", "recent_", "__hist__")):
                continue
            arr = z[name]
            if name == "__meta__":
                meta = orjson.loads(arr.tobytes())
                meta["version"] = 1
                for k in ("drivers", "alog"):
                    meta.pop(k)
                arr = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
            with zf.open(name + ".npy", "w") as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    q = PingProcessor.restore(Config(), p.registry, None, old.getvalue())
    row0 = q.day_rows(dirty_only=False)[0]
    q.process(cols(blind))
    row = q.day_rows(dirty_only=False)[0]
    assert row["pings"] == row0["pings"] + len(blind) and row["km_total"] >= row0["km_total"]
    more = q.process(cols(after[10:])).alerts
    assert not [a for a in more if a["details"].get("state") == "withdrawn"]
