"""A believable demo and province: every scripted incident fires, one clock, travel consistent with
distance and speed (a truck is weighed only where its own track is), places where their names say."""
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from roadwatch.models.config import Config
from roadwatch.models.records import BEIJING
from roadwatch.simulators.gps_terminal import haversine_km
from roadwatch.simulators.scenario import build, load_scenario, parse_scenario
from roadwatch.streams.demo import demo_scenario

UTC = ZoneInfo("UTC")


def _expected(built, kind, plate):
    return sum(e["count"] for e in built.expectations if e["kind"] == "alert" and e["type"] == kind
               and e["plate"] == plate)


@pytest.mark.parametrize("clock", ["09:00", "21:30", "23:50", "03:10"])
def test_every_scripted_demo_incident_fires_and_stays_on_today(clock):
    h, m = map(int, clock.split(":"))
    now = datetime(2026, 3, 10, h, m, 17, tzinfo=BEIJING).astimezone(UTC)
    raw = demo_scenario(now, 5.0, 40)
    start = datetime.fromisoformat(raw["scenario"]["start"])
    assert start.date() == (start + timedelta(hours=5)).date() == now.astimezone(BEIJING).date()
    assert start <= now.astimezone(BEIJING)
    b = build(parse_scenario(raw), Config())
    a = b.aliases
    assert _expected(b, "overspeed", a["dg"]) >= 1
    assert _expected(b, "geofence_enter", a["tour"]) == 1 and _expected(b, "geofence_exit", a["tour"]) == 1
    heavy = next(e for e in b.expectations if e["kind"] == "verdicts" and e["plate"] == a["heavy"])
    assert heavy["actions"][0][0] == "fine"
    if any(x["kind"] == "fatigue" for x in raw["behaviour"]):
        assert _expected(b, "fatigue", a["bus"]) == 1
    pings_ts = b.pings["ts"]
    days = {datetime.fromtimestamp(int(t), tz=BEIJING).date() for t in (pings_ts.min(), pings_ts.max())}
    assert days == {now.astimezone(BEIJING).date()}


def _travel_checks(b):
    """Each background reading of a truck with a track: a fix of that truck at the station within 60 s.
    Consecutive readings of one truck: never faster than 120 km/h between their stations."""
    cols, vl = b.pings, list(b.registry.vehicles.values())
    plate_of = np.array([vl[i].plate for i in range(len(vl))])
    stations = b.registry.stations
    by_truck: dict[str, list] = {}
    checked = 0
    for r in b.readings:
        truth = r.get("_truth")
        if truth is None or truth["duplicate"]:
            continue
        t = int(datetime.fromisoformat(r["ts"]).timestamp())
        st = stations[r["station_id"]]
        by_truck.setdefault(truth["vehicle"], []).append((t, st))
        mine = np.flatnonzero(plate_of[cols["vid"]] == truth["vehicle"])
        if len(mine) == 0:
            continue                      # no track (not in the network, or silent): nothing to contradict
        near = mine[np.abs(cols["ts"][mine] - t) <= 60]
        assert len(near), f"{truth['vehicle']} weighed at {st.station_id} {r['ts']} with no fix near that time"
        d = haversine_km(cols["lon"][near], cols["lat"][near], st.lon, st.lat)
        assert d.min() < 1.5, f"{truth['vehicle']} weighed at {st.station_id} while its track is {d.min():.0f} km away"
        checked += 1
    for plate, seen in by_truck.items():
        seen.sort(key=lambda x: x[0])
        for (t0, s0), (t1, s1) in zip(seen, seen[1:]):
            km = float(haversine_km(s0.lon, s0.lat, s1.lon, s1.lat))
            assert km <= 120.0 * max(t1 - t0, 1) / 3600.0, f"{plate}: {km:.0f} km in {t1 - t0} s"
    return checked


def test_demo_travel_is_consistent_with_distance_and_speed():
    # 14:00 Beijing: the demo's span (the 5 hours up to now) is daytime, when trucks are on the road
    b = build(parse_scenario(demo_scenario(datetime(2026, 3, 10, 6, 0, tzinfo=UTC), 5.0, 80, 30.0)), Config())
    assert _travel_checks(b) > 10


def test_province_shaped_travel_is_consistent():
    scn = load_scenario("province")
    scn.raw["fleet"] = dict(scn.raw["fleet"], vehicles=400)
    scn.hours = 72.0
    b = build(scn, Config())
    assert _travel_checks(b) > 100


@pytest.mark.parametrize("clock", ["09:00", "21:30", "23:50", "03:10"])
def test_demo_feed_never_runs_ahead_of_the_wall_clock(clock):
    """Evidence created_at and audit entered_at are wall-clock times of the act: the demo's replay at 30×
    must bring its event times up to the wall clock, never past it — except the span's tail after an
    early-morning start (kept on today), which the feed holds until due."""
    h, m = map(int, clock.split(":"))
    now = datetime(2026, 3, 10, h, m, 17, tzinfo=BEIJING).astimezone(UTC)
    speed, hours = 30.0, 5.0
    raw = demo_scenario(now, hours, 40, speed)
    start = datetime.fromisoformat(raw["scenario"]["start"])
    b = build(parse_scenario(raw), Config())
    recs = b.records
    first = recs[0].ts_ms
    ahead = []
    for r in recs:
        # the wall clock when publish() paces this record, the feed starting (at the earliest) at `now`
        wall_ms = now.timestamp() * 1000 + (r.ts_ms - first) / speed
        if r.ts_ms > wall_ms + 1000:
            ahead.append(r)
    if now.astimezone(BEIJING) - timedelta(hours=hours) >= start.replace(hour=0, minute=0):
        # the span catches up with the wall clock as the replay ends: no WIM reading (case, evidence) is ever
        # ahead of it; at most a trip's last flush of pings lands after the span's end, and waits
        assert [r for r in ahead if r.topic != "gps-pings"] == []
        assert len(ahead) <= 2 and all(r.ts_ms <= (start + timedelta(hours=hours, minutes=15)).timestamp() * 1000
                                       for r in ahead)
    else:
        assert start.hour == 0 and start.minute == 0       # clamped at midnight: the tail waits (below)
        assert ahead
    assert start.date() == (start + timedelta(hours=hours)).date() == now.astimezone(BEIJING).date()


def test_the_demo_feed_holds_records_until_due():
    """hold_until_due yields a record only once the (given) wall clock has reached its event time."""
    import threading

    from roadwatch.simulators.feed import FeedRecord
    from roadwatch.streams.demo import hold_until_due

    t = {"now": 1000.0}

    class Clocked(threading.Event):
        def wait(self, timeout=None):                # time passes only while the feed waits
            t["now"] += timeout
            return self.is_set()

    stop = Clocked()
    recs = [FeedRecord(topic="x", key=b"k", value=b"v", partition=0, ts_ms=int(s * 1000))
            for s in (990.0, 1000.0, 1003.5, 1010.0)]
    seen = []
    for r in hold_until_due(recs, stop, now=lambda: t["now"]):
        seen.append((r.ts_ms / 1000.0, t["now"]))
    assert [s for s, _ in seen] == [990.0, 1000.0, 1003.5, 1010.0]
    assert all(w >= s for s, w in seen)          # never yielded before its time
    assert seen[-1][1] - 1010.0 < 1.0             # and not held much longer
    stop.set()
    assert list(hold_until_due(recs[-1:], stop, now=lambda: 0.0)) == []


def test_generated_place_names_are_chinese_only():
    """Names shown in the console and on case forms carry no English kind word ("芙蓉区steel货运源头1")."""
    import re

    b = build(parse_scenario(demo_scenario(datetime(2026, 3, 10, 6, 0, tzinfo=UTC), 5.0, 80, 30.0)), Config())
    reg = b.registry
    names = ([s.name for s in reg.source_sites.values()] + [s.name for s in reg.stations.values()]
             + [z.name for z in reg.zones.values()] + [e.name for e in reg.enterprises.values()])
    assert reg.source_sites
    from roadwatch.simulators.fleet import SITE_KINDS, SITE_NAMES
    assert set(SITE_NAMES) == set(SITE_KINDS)        # every kind a site can have has its Chinese name
    names += list(SITE_NAMES.values())
    assert [n for n in names if re.search(r"[A-Za-z]{2,}", n)] == []


@pytest.mark.parametrize("clock", ["03:10", "09:00", "14:00"])
def test_the_demo_looks_alive_within_a_minute_at_any_hour(clock):
    """At the default 30× a minute of the demo replays the span's first 30 minutes: background trucks are
    already on the road and crossing stations then — also in the small hours, when the span starts at
    00:00 — and background traffic still raises no alert (trucks only at night: nothing else may drive)."""
    from roadwatch.geo.zones import ZoneIndex
    from roadwatch.streams.assess_gps import run_pings
    from roadwatch.streams.feed_input import ping_lines
    h, m = map(int, clock.split(":"))
    now = datetime(2026, 3, 10, h, m, 17, tzinfo=BEIJING)
    raw = demo_scenario(now, 5.0, 80, 30.0)
    raw["fleet"].update(drift_vehicle_rate=0.0, bad_value_rate=0.0)     # the scripted noise aside
    b = build(parse_scenario(raw), Config())
    t0 = int(datetime.fromisoformat(raw["scenario"]["start"]).timestamp())
    scripted = set(b.aliases.values())
    vl = list(b.registry.vehicles.values())
    cols = b.pings
    bg = np.array([vl[v].plate not in scripted for v in cols["vid"]])
    early = bg & (cols["ts"] < t0 + 30 * 60) & (cols["speed_kmh"] > 0)
    assert len(np.unique(cols["vid"][early])) >= 10
    assert any("_truth" in r and datetime.fromisoformat(r["ts"]).timestamp() < t0 + 30 * 60 for r in b.readings)
    lines = [ln for r in b.records if r.topic == "gps-pings" for ln in ping_lines(r.value)]
    alerts, _, errors = run_pings(lines, b.registry, ZoneIndex.from_registry(b.registry), Config(),
                                  now_ms=(t0 + 6 * 3600) * 1000)
    assert not errors
    assert [a for a in alerts if a["plate"] not in scripted] == []
