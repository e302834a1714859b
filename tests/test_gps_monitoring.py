"""Live alerts at and around every threshold: overspeed, fatigue, curfew, offline, geofence, terminal alarms."""
from __future__ import annotations

import pytest

from roadwatch.models.config import Config
from roadwatch.models.ping_state import PingProcessor
from test_gps_support import PLATE, T0, bj, cols, north, ping, registry, square

MIN = 60_000


def proc_for(category="普通货车", cfg=None, zones=(), **veh):
    reg = registry([dict(category=category, **veh)], zones)
    return PingProcessor(cfg or Config(), reg)


def feed(proc, pings):
    return proc.process(cols(pings)).alerts


def row(proc):
    rows = proc.day_rows(dirty_only=False)
    return {r["day"]: r for r in rows if r["plate"] == PLATE}


def of_type(alerts, t):
    return [a for a in alerts if a["type"] == t]


def lat_at(k):       # 10 m per step: a plausible track (no drift) for the sample spacings used here
    return north(22.5, 0.01 * k)


def lat_s(sec):      # moving 36 km/h: position as a function of time, never drift
    return north(22.5, 0.01 * sec)


# --- overspeed ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("last_s,counted", [(30, 0), (31, 1)])
def test_overspeed_min_duration(last_s, counted):
    p = proc_for()
    alerts = feed(p, [ping(T0, speed=81, lat=lat_at(0)), ping(T0 + 15_000, speed=81, lat=lat_at(1)),
                      ping(T0 + last_s * 1000, speed=81, lat=lat_at(2)),
                      ping(T0 + 40_000, speed=70, lat=lat_at(3))])
    assert row(p)["2026-03-02"]["overspeed_count"] == counted
    os_ = of_type(alerts, "overspeed")
    assert len(os_) == 2 * counted           # raised (open) + closed update, same id
    if counted:
        assert os_[0]["alert_id"] == os_[1]["alert_id"] and os_[1]["end_ts"] is not None
        assert os_[0]["details"]["limit"] == 80.0
        assert os_[0]["details"]["config_key"] == "speeding.truck_other_kmh"


def test_speed_equal_to_limit_is_not_over():
    p = proc_for()
    feed(p, [ping(T0 + k * 20_000, speed=80.0, lat=lat_at(k)) for k in range(5)])
    assert row(p)["2026-03-02"]["overspeed_count"] == 0


def episode(start_s, n=3, step=16, speed=81.0):
    return [ping(T0 + (start_s + k * step) * 1000, speed=speed, lat=lat_s(start_s + k * step)) for k in range(n)]


@pytest.mark.parametrize("gap_s,count", [(60, 1), (61, 2)])
def test_overspeed_merge_window(gap_s, count):
    p = proc_for()
    e1 = episode(0)                        # over 0–32 s (counted), last over at 32 s
    under = [ping(T0 + 40_000, speed=60, lat=lat_s(40))]
    e2 = episode(32 + gap_s)               # next run starts gap_s after the last over sample
    tail = [ping(T0 + (32 + gap_s + 60) * 1000, speed=60, lat=lat_s(32 + gap_s + 60))]
    alerts = feed(p, e1 + under + e2 + tail)
    assert row(p)["2026-03-02"]["overspeed_count"] == count
    assert len({a["alert_id"] for a in of_type(alerts, "overspeed")}) == count


@pytest.mark.parametrize("category,hour,on_exp,limit,key", [
    ("危险货物运输车辆", 10, False, 60.0, "speeding.dg_other_kmh"),
    ("危险货物运输车辆", 10, True, 80.0, "speeding.dg_expressway_kmh"),
    ("客运班车", 10, False, 80.0, "speeding.bus_other_kmh"),
    ("客运班车", 23, False, 64.0, "speeding.bus_other_kmh × speeding.bus_night_factor"),
    ("旅游包车", 23, True, 80.0, "speeding.bus_expressway_kmh × speeding.bus_night_factor"),
    ("普通货车", 23, True, 100.0, "speeding.truck_expressway_kmh"),
])
def test_limit_by_category_road_and_night(category, hour, on_exp, limit, key):
    zones = [{"zone_id": "G4", "name": "京港澳高速", "kind": "expressway", "polygon": square(113.9, 22.4, 0.5)}]
    lon = 114.0 if on_exp else 115.0
    for speed, expect in ((limit, 0), (limit + 0.5, 1)):
        p = proc_for(category, zones=zones)
        t = bj(2026, 3, 2, hour, 0)
        alerts = feed(p, [ping(t + k * 20_000, speed=speed, lon=lon, lat=lat_at(k)) for k in range(4)])
        os_ = of_type(alerts, "overspeed")
        assert len(os_) == expect, (category, hour, on_exp, speed)
        if expect:
            assert os_[0]["details"]["limit"] == pytest.approx(limit)
            assert os_[0]["details"]["config_key"] == key


# --- fatigue ------------------------------------------------------------------------------------------
def drive(t_start, minutes, step_s=60, speed=50.0, k0=0):
    return [ping(t_start + k * step_s * 1000, speed=speed, lat=lat_at(k0 + k)) for k in range(int(minutes * 60 / step_s) + 1)]


@pytest.mark.parametrize("extra_s,alert,fatigue_s", [(0, False, 0.0), (30, True, 30.0)])
def test_day_continuous_4h(extra_s, alert, fatigue_s):
    p = proc_for("客运班车")
    ps = drive(T0, 240)
    if extra_s:
        ps.append(ping(T0 + 240 * MIN + extra_s * 1000, speed=50, lat=lat_at(241)))
    alerts = of_type(feed(p, ps), "fatigue")
    assert bool(alerts) == alert
    assert row(p)["2026-03-02"]["fatigue_s"] == pytest.approx(fatigue_s)
    if alert:
        assert alerts[0]["details"]["config_key"] == "fatigue.day_continuous_h"
        assert alerts[0]["details"]["kind"] == "continuous"


@pytest.mark.parametrize("rest_min,alert", [(19, True), (20, False)])
def test_rest_shorter_than_20_min_does_not_reset(rest_min, alert):
    # 0–120 min moving, first stopped sample at 121 min (interval 120→121 driven), moving again after
    # rest_min; then moving until 270 min. 19-min rest: 121 + (270−140) = 251 min > 240 → fatigue.
    p = proc_for("客运班车")
    ps = drive(T0, 120)
    stop0 = T0 + 121 * MIN
    ps += [ping(stop0 + k * MIN, speed=0, lat=lat_at(120)) for k in range(rest_min)]
    restart = stop0 + rest_min * MIN
    ps += drive(restart, (T0 + 270 * MIN - restart) / MIN, k0=121)
    alerts = of_type(feed(p, ps), "fatigue")
    assert bool(alerts) == alert


@pytest.mark.parametrize("extra_s,alert", [(0, False), (30, True)])
def test_night_continuous_2h(extra_s, alert):
    p = proc_for("危险货物运输车辆")
    t = bj(2026, 3, 2, 22, 0)
    ps = drive(t, 120)
    if extra_s:
        ps.append(ping(t + 120 * MIN + extra_s * 1000, speed=50, lat=lat_at(121)))
    alerts = of_type(feed(p, ps), "fatigue")
    assert bool(alerts) == alert
    if alert:
        assert alerts[0]["details"]["config_key"] == "fatigue.night_continuous_h"
        assert row(p)["2026-03-03"]["fatigue_s"] == pytest.approx(30.0)


def test_silence_of_a_rest_length_resets_the_clock():
    p = proc_for("客运班车")
    ps = drive(T0, 150) + drive(T0 + 170 * MIN, 100, k0=151)     # 20-min hole after a moving sample
    assert not of_type(feed(p, ps), "fatigue")


@pytest.mark.parametrize("extra_s,alert", [(0, False), (30, True)])
def test_cumulative_8h_in_24h(extra_s, alert):
    cfg = Config({"fatigue.day_continuous_h": 100.0, "fatigue.night_continuous_h": 100.0})
    p = proc_for(cfg=cfg)
    t = bj(2026, 3, 2, 6, 0)
    ps = drive(t, 480, step_s=120)
    if extra_s:
        ps.append(ping(t + 480 * MIN + extra_s * 1000, speed=50, lat=lat_at(241)))
    alerts = of_type(feed(p, ps), "fatigue")
    assert bool(alerts) == alert
    if alert:
        assert alerts[0]["details"]["kind"] == "cumulative_24h"
        assert alerts[0]["details"]["config_key"] == "fatigue.day_cum_h"


def test_cumulative_window_slides():
    cfg = Config({"fatigue.day_continuous_h": 100.0, "fatigue.night_continuous_h": 100.0})
    p = proc_for(cfg=cfg)
    t = bj(2026, 3, 2, 6, 0)
    ps = drive(t, 420, step_s=120) + drive(t + 26 * 60 * MIN, 120, step_s=120, k0=300)   # 7 h, then 2 h next day
    assert not of_type(feed(p, ps), "fatigue")


# --- curfew -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hh,mm,event", [(1, 59, 0), (2, 0, 1), (4, 59, 1), (5, 0, 0)])
def test_curfew_window(hh, mm, event):
    p = proc_for("客运班车", long_distance=True, route_km=300.0)
    alerts = feed(p, [ping(bj(2026, 3, 3, hh, mm), speed=40)])
    assert len(of_type(alerts, "curfew")) == event
    assert row(p)["2026-03-03"]["curfew_events"] == event


@pytest.mark.parametrize("veh,event", [
    (dict(category="客运班车", long_distance=True, route_km=100.0), 0),
    (dict(category="客运班车", long_distance=True, route_km=100.1), 1),
    (dict(category="客运班车", long_distance=False, route_km=500.0), 0),
    (dict(category="旅游包车", long_distance=True, route_km=500.0), 0),
])
def test_curfew_exemptions(veh, event):
    p = proc_for(**veh)
    alerts = feed(p, [ping(bj(2026, 3, 3, 3, 0), speed=40)])
    assert len(of_type(alerts, "curfew")) == event


def test_curfew_once_per_night_and_not_when_stopped():
    p = proc_for("客运班车", long_distance=True, route_km=300.0)
    ps = [ping(bj(2026, 3, 3, 2, 30), speed=0), ping(bj(2026, 3, 3, 3, 0), speed=40, lat=lat_at(1)),
          ping(bj(2026, 3, 3, 3, 30), speed=40, lat=lat_at(60)), ping(bj(2026, 3, 4, 3, 0), speed=40, lat=lat_at(90))]
    alerts = of_type(feed(p, ps), "curfew")
    assert [a["start_ts"] for a in alerts] == ["2026-03-03T03:00:00+08:00", "2026-03-04T03:00:00+08:00"]


# --- offline ------------------------------------------------------------------------------------------
def test_offline_at_the_timeout_by_clock_and_by_watermark():
    p = proc_for()
    feed(p, [ping(T0, speed=50)])
    assert p.check_offline(T0 + 900_000) == []
    (a,) = p.check_offline(T0 + 900_001)
    assert a["type"] == "offline" and a["end_ts"] is None and a["details"]["limit"] == 900
    assert p.check_offline(T0 + 999_999) == []             # one alert per silence
    # the vehicle comes back: same alert id, closed; counted once
    (b,) = of_type(feed(p, [ping(T0 + 1_000_000, speed=50, lat=lat_at(30))]), "offline")
    assert b["alert_id"] == a["alert_id"] and b["end_ts"] is not None
    assert row(p)["2026-03-02"]["offline_events"] == 1


def test_offline_from_other_vehicles_watermark_and_on_return():
    other = "粤B99999"
    p = proc_for()
    feed(p, [ping(T0, speed=50), ping(T0 + 900_000, plate=other)])
    assert p.check_offline() == []
    feed(p, [ping(T0 + 900_001, plate=other)])
    assert len(p.check_offline()) == 1
    # process-only: the silence is found when the vehicle returns (same result in one batch)
    q = proc_for()
    alerts = feed(q, [ping(T0, speed=50), ping(T0 + 900_001, plate=other), ping(T0 + 950_000, speed=50, lat=lat_at(20))])
    (a,) = of_type(alerts, "offline")
    assert a["end_ts"] == "2026-03-02T10:15:50+08:00" and a["start_ts"] == "2026-03-02T10:00:00+08:00"


def test_no_offline_when_parked_with_acc_off():
    p = proc_for()
    feed(p, [ping(T0, speed=0, status_flags=2)])      # positioned, ACC off, stopped
    assert p.check_offline(T0 + 10 * 3_600_000) == []
    q = proc_for()
    feed(q, [ping(T0, speed=0, status_flags=3)])      # ACC on
    assert len(q.check_offline(T0 + 900_001)) == 1


# --- geofence -----------------------------------------------------------------------------------------
def test_geofence_enter_and_exit():
    zones = [{"zone_id": "Z1", "name": "水源保护区", "kind": "restricted", "polygon": square(114.0, 22.5, 0.01)}]
    p = proc_for("危险货物运输车辆", zones=zones)
    ps = [ping(T0, lon=113.99, lat=22.505, speed=30), ping(T0 + 60_000, lon=114.005, lat=22.505, speed=30),
          ping(T0 + 120_000, lon=114.006, lat=22.505, speed=30), ping(T0 + 180_000, lon=114.02, lat=22.505, speed=30)]
    alerts = feed(p, ps)
    assert [(a["type"], a["details"]["zone_id"], a["start_ts"][11:19]) for a in alerts] == [
        ("geofence_enter", "Z1", "10:01:00"), ("geofence_exit", "Z1", "10:03:00")]


def test_geofence_category_filter():
    zones = [{"zone_id": "Z1", "name": "x", "kind": "restricted", "polygon": square(114.0, 22.5, 0.01),
              "categories": ["危险货物运输车辆"]}]
    p = proc_for("普通货车", zones=zones)
    assert feed(p, [ping(T0, lon=114.005, lat=22.505, speed=30)]) == []


# --- terminal alarms and late marking -------------------------------------------------------------------
def test_terminal_alarm_rising_edges_by_name():
    p = proc_for()
    b18 = 1 << 18
    alerts = feed(p, [ping(T0), ping(T0 + 30_000, alarm_flags=b18), ping(T0 + 60_000, alarm_flags=b18),
                      ping(T0 + 90_000), ping(T0 + 120_000, alarm_flags=b18 | 1)])
    got = [(a["details"]["bit"], a["details"]["name"], a["start_ts"][11:19]) for a in alerts]
    assert got == [(18, "当天累计驾驶超时", "10:00:30"), (0, "紧急报警", "10:02:00"), (18, "当天累计驾驶超时", "10:02:00")]
    assert {a["severity"] for a in alerts if a["details"]["bit"] == 0} == {"high"}


@pytest.mark.parametrize("flag,expect", [(True, 1), (False, 0)])
def test_terminal_alarm_from_unpositioned_ping(flag, expect):
    p = proc_for(cfg=Config({"alerts.alarm_from_unpositioned": flag}))
    alerts = feed(p, [ping(T0, status_flags=1, alarm_flags=1 << 5)])     # antenna cut, no fix
    assert len(alerts) == expect


def test_late_and_reupload_alerts_are_marked_late():
    p = proc_for()
    other = "粤B99999"
    alerts = feed(p, [ping(T0 + 1_000_000, plate=other), ping(T0, alarm_flags=1)])          # 1000 s behind
    assert alerts[0]["late"] is True
    q = proc_for()
    alerts = feed(q, [ping(T0 + 300_000, plate=other), ping(T0, alarm_flags=1)])            # exactly 300 s
    assert alerts[0]["late"] is False
    r = proc_for()
    alerts = feed(r, [ping(T0, alarm_flags=1, reupload=True)])
    assert alerts[0]["late"] is True


def test_alert_ids_are_deterministic():
    a1 = feed(proc_for(), [ping(T0, alarm_flags=1)])
    a2 = feed(proc_for(), [ping(T0, alarm_flags=1)])
    assert a1 == a2 and len(a1[0]["alert_id"]) == 24


def test_blind_area_backlog_after_a_silence_is_one_offline_event():
    other = "粤B99999"
    p = proc_for()
    feed(p, [ping(T0, speed=50)] + [ping(T0 + k * 60_000, plate=other) for k in range(1, 41)])
    backlog = [ping(T0 + k * 60_000, speed=50, lat=lat_at(k), reupload=True) for k in range(1, 40)]
    alerts = feed(p, backlog + [ping(T0 + 40 * 60_000, speed=50, lat=lat_at(40))])
    (a,) = of_type(alerts, "offline")
    assert a["start_ts"] == "2026-03-02T10:00:00+08:00" and a["end_ts"] == "2026-03-02T10:40:00+08:00"
    assert row(p)["2026-03-02"]["offline_events"] == 1


def test_alert_times_are_format_ts_of_the_instant():
    """Alert times are built without a datetime per alert (``beijing_iso``): the same text as
    ``format_ts`` for any instant, across day, month, year and leap-day boundaries and before 1970."""
    import random
    from datetime import datetime, timezone

    from roadwatch.models.monitoring import beijing_iso
    from roadwatch.models.records import format_ts
    rng = random.Random(19)
    edges = [0, -1, -999, -1000, -1001, 999, 57_599_999, 57_600_000, 951_753_599_999, 951_753_600_000,
             1_767_196_799_999, 1_767_196_800_000, 4_102_415_999_999]
    for ms in edges + [rng.randrange(-10**12, 5 * 10**12) for _ in range(20_000)]:
        assert beijing_iso(ms) == format_ts(datetime.fromtimestamp(ms / 1000, tz=timezone.utc)), ms
