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
    b = build(parse_scenario(demo_scenario(datetime(2026, 3, 10, 1, 0, tzinfo=UTC), 5.0, 80)), Config())
    assert _travel_checks(b) > 10


def test_province_shaped_travel_is_consistent():
    scn = load_scenario("province")
    scn.raw["fleet"] = dict(scn.raw["fleet"], vehicles=400)
    scn.hours = 72.0
    b = build(scn, Config())
    assert _travel_checks(b) > 100
