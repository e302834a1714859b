"""Fatigue as the rule says (issue 14, docs/legal-basis.md §7): rests need a still vehicle, the night limit
applies to the night part of the run, episodes close when the rest is taken, a driver change resets."""
from __future__ import annotations

import pytest

from roadwatch.models.config import Config
from roadwatch.models.ping_state import PingProcessor
from roadwatch.models.pingschema import dicts_getter, validate_columns
from test_gps_support import PLATE, bj, north, ping, registry

MIN = 60_000


def bus(cfg=None):
    return PingProcessor(cfg or Config(), registry([{"category": "客运班车"}]))


def cols(pings):
    c, errs = validate_columns(dicts_getter(pings), len(pings))
    assert not errs
    return c


def run(p, pings):
    final = {}
    for a in p.process(cols(pings)).alerts:
        final[a["alert_id"]] = a
    return [a for a in final.values() if a["type"] == "fatigue"], {r["day"]: r for r in p.day_rows(dirty_only=False)
                                                                    if r["plate"] == PLATE}


def drive(t0, minutes, km_per_min=1.0, lat0=22.5, step_s=60, **kw):
    """60 km/h northwards, one fix per ``step_s``; returns the pings and the latitude reached."""
    n = int(minutes * 60 / step_s)
    ps = [ping(t0 + k * step_s * 1000, lat=north(lat0, km_per_min * k * step_s / 60), speed=60.0, **kw)
          for k in range(n + 1)]
    return ps, ps[-1]["lat"]


def test_silent_while_moving_gap_is_not_rest():
    """The issue's bus: 08:00–13:00, terminal silent 11:00–11:21 while it moves 21 km → 5 h continuous."""
    t0 = bj(2026, 3, 2, 8, 0)
    a, lat = drive(t0, 180)
    b, _ = drive(t0 + 201 * MIN, 99, lat0=north(lat, 21.0))
    alerts, rows = run(bus(), a + b)
    assert len(alerts) == 1 and alerts[0]["details"]["kind"] == "continuous"
    assert rows["2026-03-02"]["fatigue_s"] == pytest.approx(3600.0)       # 5 h − 4 h


def test_silence_without_movement_is_rest():
    t0 = bj(2026, 3, 2, 8, 0)
    a, lat = drive(t0, 180)
    b, _ = drive(t0 + 201 * MIN, 119, lat0=north(lat, 0.2))           # parked 21 min, GNSS wander 200 m
    alerts, rows = run(bus(), a + b)
    assert alerts == [] and rows["2026-03-02"]["fatigue_s"] == 0


@pytest.mark.parametrize("move_km,rest", [(0.9, True), (1.1, False)])
def test_rest_distance_threshold(move_km, rest):
    t0 = bj(2026, 3, 2, 8, 0)
    a, lat = drive(t0, 180)
    b, _ = drive(t0 + 201 * MIN, 119, lat0=north(lat, move_km))
    alerts, _ = run(bus(), a + b)
    assert (alerts == []) == rest


def test_short_silence_counts_as_driving_even_when_it_moved_from_a_stop():
    """Stopped fix, 10 min silence, 10 km further and moving: the silence was driving, not a stop."""
    t0 = bj(2026, 3, 2, 8, 0)
    a, lat = drive(t0, 120)
    stop = [ping(t0 + 121 * MIN, lat=lat, speed=0.0)]
    b, _ = drive(t0 + 131 * MIN, 130, lat0=north(lat, 10.0))
    alerts, rows = run(bus(), a + stop + b)
    assert len(alerts) == 1
    assert rows["2026-03-02"]["fatigue_s"] == pytest.approx((261 - 240) * 60.0)


def test_night_part_of_a_run_against_the_night_limit():
    # 19:00–22:30: 3.5 h in all, 0.5 h of it at night (22:00–06:00) — no limit passed (old rule: 3.5 h > 2 h)
    alerts, rows = run(bus(), drive(bj(2026, 3, 2, 19, 0), 210)[0])
    assert alerts == [] and rows["2026-03-02"]["fatigue_s"] == 0
    # 21:00–00:30: 3.5 h in all, 2.5 h at night → the night part is 0.5 h over the 2 h night limit
    alerts, rows = run(bus(), drive(bj(2026, 3, 3, 21, 0), 210)[0])
    assert len(alerts) == 1 and alerts[0]["details"]["config_key"] == "fatigue.night_continuous_h"
    assert rows["2026-03-04"]["fatigue_s"] == pytest.approx(1800.0)
    assert alerts[0]["start_ts"] == "2026-03-04T00:01:00+08:00"     # first fix with the night part > 2 h


def test_episode_closes_when_the_rest_is_taken():
    t0 = bj(2026, 3, 2, 8, 0)
    a, lat = drive(t0, 270)                                       # 4.5 h
    stop = [ping(t0 + (271 + k) * MIN, lat=lat, speed=0.0) for k in range(25)]
    b, _ = drive(t0 + 296 * MIN, 30, lat0=lat)
    alerts, rows = run(bus(), a + stop + b)
    assert len(alerts) == 1
    al = alerts[0]
    assert al["start_ts"] == "2026-03-02T12:01:00+08:00"          # first fix with more than 4 h driven
    assert al["end_ts"] == "2026-03-02T12:31:00+08:00"            # first stopped fix: the rest began
    assert al["details"]["state"] == "closed"
    assert al["details"]["duration_s"] == 30 * 60
    assert al["details"]["fatigue_s"] == pytest.approx(31 * 60)
    assert rows["2026-03-02"]["fatigue_s"] == pytest.approx(31 * 60)


def test_open_episode_stays_open_until_the_rest():
    a, _ = drive(bj(2026, 3, 2, 8, 0), 250)
    alerts, _ = run(bus(), a)
    assert alerts[0]["end_ts"] is None and alerts[0]["details"]["state"] == "open"


def test_driver_change_resets_the_run_and_the_driver_is_part_of_the_episode():
    t0 = bj(2026, 3, 2, 8, 0)
    a, lat = drive(t0, 180, driver_id="430100000001")
    b, _ = drive(t0 + 181 * MIN, 120, lat0=north(lat, 1.0), driver_id="430100000002")   # relay driver
    alerts, _ = run(bus(), a + b)
    assert alerts == []
    a, lat = drive(t0, 180, driver_id="430100000001")
    b, _ = drive(t0 + 181 * MIN, 120, lat0=north(lat, 1.0), driver_id="430100000001")
    alerts, _ = run(bus(), a + b)
    assert len(alerts) == 1 and alerts[0]["details"]["driver_id"] == "430100000001"


def test_a_stop_counts_as_rest_even_when_the_vehicle_drives_off_between_two_fixes():
    """25 min standing (fixes every minute), then the next fix is already 1.5 km on: the stop was a rest."""
    t0 = bj(2026, 3, 2, 8, 0)
    a, lat = drive(t0, 180)
    stop = [ping(t0 + (181 + k) * MIN, lat=lat, speed=0.0) for k in range(25)]
    b, _ = drive(t0 + 206 * MIN, 120, lat0=north(lat, 0.5))
    alerts, rows = run(bus(), a + stop + b)
    assert alerts == [] and rows["2026-03-02"]["fatigue_s"] == 0
