"""Stop events of the GPS engine (models/ping_state.py ``_step_stops``) and their archive (``vehicle_stops``):
the same stops however the feed is cut into batches, late fixes re-derive them (the earlier ones withdrawn,
never duplicated), a restart from a snapshot loses none, buses have none, and the worker's commit writes
them — and the vehicle-day rows as tuples — on SQLite and PostgreSQL."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from roadwatch.models.config import Config
from roadwatch.models.ping_state import DAY_ROW_COLS, PingProcessor
from roadwatch.streams.archive import open_archive, save_stops
from roadwatch.streams.archive.snapshots import VEHICLE_DAY_COLS
from roadwatch.streams.archive.stops import stops_between
from roadwatch.streams.gps import PartitionStates
from test_gps_support import PLATE, T0, cols, north, ping, registry

MIN = 60_000
BUS = "粤B99999"


def _trip(t0: int, lat0: float = 22.5, plate: str = PLATE) -> list[dict]:
    """Drive 10 min, stand 20 min (a stop of 19 min between its first and last fix), drive 10 min, stand
    8 min (too short), drive 10 min: one fix a minute."""
    out, lat, t = [], lat0, t0
    for minutes, speed in ((10, 48.0), (20, 0.0), (10, 48.0), (8, 0.0), (10, 48.0)):
        for _ in range(minutes):
            if speed:
                lat = north(lat, 0.8)
            out.append(ping(t, lat=lat, speed=speed, plate=plate))
            t += MIN
    return out


def _stops(proc: PingProcessor) -> list[tuple]:
    return proc.stop_events()[1]


def _run(batches, cfg=None, reg=None) -> tuple[PingProcessor, list, list]:
    proc = PingProcessor(cfg or Config(), reg or registry([{"plate": PLATE}]))
    retract, stops = [], []
    for b in batches:
        proc.process(cols(b))
        r, s = proc.stop_events()
        retract += r
        stops += s
    return proc, retract, stops


def test_a_stop_is_one_event_however_the_feed_is_cut():
    feed = _trip(T0)
    _, r1, whole = _run([feed])
    assert r1 == [] and len(whole) == 1
    plate, start, end, lat, lon, closed = whole[0]
    assert (plate, start, end, closed) == (PLATE, T0 + 10 * MIN, T0 + 29 * MIN, T0 + 30 * MIN)
    assert (lat, lon) == (pytest.approx(north(22.5, 8.0), abs=1e-5), 114.0)
    assert _run([[p] for p in feed])[2] == whole
    assert _run([feed[k:k + 7] for k in range(0, len(feed), 7)])[2] == whole


def test_late_fixes_re_derive_the_stop_and_withdraw_the_one_found_before(archive_target):
    feed = _trip(T0)
    held_back = feed[10:13]                        # the first 3 stopped fixes arrive 30 min late (re-upload)
    on_time = [p for p in feed if p not in held_back]
    _, r1, s1 = _run([on_time[:30], on_time[30:], [dict(p, reupload=True) for p in held_back]])
    assert s1[0][1] == T0 + 13 * MIN                # found from the fixes on time first …
    assert r1 and s1[-1][1:3] == (T0 + 10 * MIN, T0 + 29 * MIN)          # … then re-derived with the late ones
    conn = open_archive(archive_target)
    # applied in order (as the commits do), the archive holds the stop once, as the in-order feed gives it
    save_stops(conn, [], s1[:1])
    save_stops(conn, r1, s1[1:])
    save_stops(conn, r1, s1[1:])                   # a replayed commit changes nothing
    assert [tuple(r) for r in stops_between(conn, PLATE, 0, T0 + 99 * MIN)] == [
        (T0 + 10 * MIN, T0 + 29 * MIN, pytest.approx(north(22.5, 8.0), abs=1e-5), 114.0)]


def test_a_restart_from_the_snapshot_keeps_open_and_undrained_stops():
    feed = _trip(T0)
    cfg, reg = Config(), registry([{"plate": PLATE}])
    whole = _run([feed])[2]
    for cut in (15, 31, 45):                       # inside the stop, just after it ended, in the short one
        a = PingProcessor(cfg, reg)
        a.process(cols(feed[:cut]))
        b = PingProcessor.restore(cfg, reg, None, a.snapshot())
        b.process(cols(feed[cut:]))
        assert _stops(b) == whole, cut


def test_buses_have_no_stop_events_trucks_and_unregistered_vehicles_do():
    reg = registry([{"plate": PLATE}, {"plate": BUS, "category": "客运班车", "plate_color": 1}])
    feed = sorted(_trip(T0) + _trip(T0, plate=BUS) + _trip(T0, plate="粤B00001"), key=lambda p: p["ts"])
    assert sorted(s[0] for s in _run([feed], reg=reg)[2]) == sorted([PLATE, "粤B00001"])


def test_the_commit_writes_stops_and_day_rows_as_the_engine_gives_them(archive_target):
    assert DAY_ROW_COLS == VEHICLE_DAY_COLS            # the engine's tuples are the table's columns
    cfg = Config({"paths.archive": str(archive_target)})
    reg = registry([{"plate": PLATE}])
    feed = _trip(T0) + _trip(T0 + 3 * 3_600_000, lat0=23.0)
    states = PartitionStates(SimpleNamespace(cfg=cfg, registry=reg))
    oracle = PingProcessor(cfg, reg)
    for k in range(0, len(feed), 25):
        e = states.get(0)
        e.proc.process(cols(feed[k:k + 25]))
        oracle.process(cols(feed[k:k + 25]))
        e.dirty = True
        table = states.flush(0)
        assert table.dicts() == oracle.day_rows()      # what the worker publishes = the engine's dict rows
    conn = open_archive(cfg)
    got = [tuple(r) for r in stops_between(conn, PLATE, 0, T0 + 99 * 3_600_000)]
    assert [g[:2] for g in got] == [(T0 + 10 * MIN, T0 + 29 * MIN), (T0 + 190 * MIN, T0 + 209 * MIN)]
    rows = {r["day"]: dict(r) for r in conn.execute(f"SELECT {', '.join(VEHICLE_DAY_COLS)} FROM vehicle_day")}
    (want,) = oracle.day_rows(dirty_only=False)
    assert {c: rows[want["day"]][c] for c in VEHICLE_DAY_COLS} == {c: want[c] for c in VEHICLE_DAY_COLS}
    assert want["pings"] == len(feed)
