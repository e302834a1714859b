"""Late data for days no longer held in memory, and for months whose report has been made (issue 14).

The live path is the GPS agent's own ``PartitionStates`` (engine + flush into a real archive, SQLite and
PostgreSQL); the oracle is ``roadwatch assess gps`` (``run_pings``) over the same feed with every day held in
memory, and over the merged feed (time order) for the figures the track gives.
"""
from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.streams.archive import open_archive
from roadwatch.streams.assess_gps import run_pings
from roadwatch.streams.gps import PartitionStates
from test_gps_support import bj, cols, north, ping, registry

PLATE = "粤B12345"
COLS = ("pings", "qualified", "km_total", "km_incomplete", "drift_points", "overspeed_count", "fatigue_s",
        "curfew_events", "offline_events", "late_from_closed")


def _drive(t0: int, n: int, lat0: float, step_s: int = 60, km: float = 0.8, speed: float = 48.0, **kw):
    """``n`` fixes ``step_s`` apart, ``km`` north each step (48 km/h at 0.8 km a minute)."""
    return [ping(t0 + k * step_s * 1000, lat=north(lat0, k * km), speed=speed, **kw) for k in range(n)]


def _live(feed: list[list[dict]], cfg: Config, reg) -> dict:
    """Each batch through the GPS agent's partition state and flushed to the archive (as the timer does)."""
    states = PartitionStates(SimpleNamespace(cfg=cfg, registry=reg))
    for batch in feed:
        e = states.get(0)
        e.proc.process(cols(batch))
        e.dirty = True
        states.flush(0)
    conn = open_archive(cfg)
    rows = [dict(r) for r in conn.execute(f"SELECT plate, day, {', '.join(COLS)} FROM vehicle_day")]
    return {(r["plate"], r["day"]): {c: r[c] for c in COLS} for r in rows}


def _oracle(feed: list[list[dict]], cfg: Config, reg, sort_by_time: bool = False) -> dict:
    lines = [orjson.dumps(p) for batch in feed for p in batch]
    _, rows, errors = run_pings(lines, reg, None, cfg, batch=50, now_ms=bj(2030, 1, 1), sort_by_time=sort_by_time)
    assert errors == []
    return {(r["plate"], r["day"]): {c: r[c] for c in COLS} for r in rows}


def _same(a: dict, b: dict, cols=COLS) -> None:
    assert set(a) == set(b)
    for k in a:
        for c in cols:
            assert a[k][c] == pytest.approx(b[k][c], abs=1e-6), (k, c, a[k][c], b[k][c])


def _blind_area_feed():
    """10 March: driving 20:00–20:30, terminal silent while driving 20:30–21:30, driving 21:30–22:00; 11 and
    12 March: driving (so 10 March leaves the two in-memory day slots); on 12 March 08:30 the blind area's
    60 fixes are re-uploaded (0x0704 type 1), 35 h after the day: far behind the replay window."""
    day10 = _drive(bj(2026, 3, 10, 20, 0), 121, 22.5)                    # one fix a minute, 20:00 … 22:00
    before, blind, after = day10[:31], [dict(p, reupload=True) for p in day10[31:90]], day10[90:]
    d11 = _drive(bj(2026, 3, 11, 9, 0), 30, 23.5)
    d12 = _drive(bj(2026, 3, 12, 8, 0), 30, 23.8)
    return [before, after, d11, d12, blind[:20], blind[20:]]


def test_a_past_day_is_recomputed_on_its_stored_row_like_the_batch_oracle(archive_target):
    feed = _blind_area_feed()
    reg = registry([{"plate": PLATE}])
    cfg = Config({"paths.archive": str(archive_target)})
    assert cfg["track.day_slots"] == 2
    live = _live(feed, cfg, reg)
    day = (PLATE, "2026-03-10")
    # the re-upload arrived when 10 March was no longer in memory: its row was recomputed in the archive
    assert live[day]["pings"] == 31 + 59 + 31 and live[day]["qualified"] == 121
    assert live[day]["km_incomplete"] == pytest.approx(0.0, abs=1e-9)       # the gap is filled
    assert live[day]["km_total"] == pytest.approx(120 * 0.8, rel=1e-9)
    # = assess gps over the same feed with every day in memory, and assess gps itself (two day slots)
    _same(live, _oracle(feed, Config({"track.day_slots": 10}), reg))
    _same(live, _oracle(feed, Config(), reg))
    # = the merged feed (every fix in time order) for what the track gives
    _same(live, _oracle(feed, Config({"track.day_slots": 10}), reg, sort_by_time=True),
          ("pings", "qualified", "km_total", "km_incomplete", "drift_points"))


def test_without_the_re_upload_the_past_day_keeps_its_gap(archive_target):
    feed = [b for b in _blind_area_feed() if not any(p["reupload"] for p in b)]
    live = _live(feed, Config({"paths.archive": str(archive_target)}), registry([{"plate": PLATE}]))
    row = live[(PLATE, "2026-03-10")]
    assert row["pings"] == 62
    assert row["km_incomplete"] == pytest.approx(60 * 0.8, rel=1e-9)


def _month_end_feed():
    """31 March 22:00–23:00 and 1 April 00:00–02:00 driving; at 02:00 (after the report of March was made,
    01:00 by default) fixes of 31 March 23:10–23:19 arrive late."""
    mar = _drive(bj(2026, 3, 31, 22, 0), 61, 22.5)
    apr = _drive(bj(2026, 4, 1, 0, 0), 121, 23.5)
    late = [dict(p, reupload=True) for p in _drive(bj(2026, 3, 31, 23, 10), 10, 22.9, step_s=6, km=0.0,
                                                   speed=0.0)]
    return [mar, apr], late


@pytest.mark.parametrize("grace_h", [1.0, 3.0])
def test_late_data_after_the_month_is_closed_counts_in_the_next_month_and_is_flagged(archive_target, grace_h):
    on_time, late = _month_end_feed()
    reg = registry([{"plate": PLATE}])
    cfg = Config({"paths.archive": str(archive_target), "report.close_grace_h": grace_h})
    without = _oracle(on_time, Config({"report.close_grace_h": grace_h}), reg)
    live = _live(on_time + [late], cfg, reg)
    _same(live, _oracle(on_time + [late], Config({"report.close_grace_h": grace_h}), reg))
    mar, apr = (PLATE, "2026-03-31"), (PLATE, "2026-04-01")
    if grace_h == 1.0:       # received at 02:00, March closed at 01:00: counted on 1 April, flagged
        assert live[mar] == without[mar]
        assert live[apr]["pings"] == without[apr]["pings"] + 10
        assert live[apr]["qualified"] == without[apr]["qualified"] + 10
        assert live[apr]["late_from_closed"] == 10
        for c in ("km_total", "km_incomplete", "drift_points", "overspeed_count", "fatigue_s"):
            assert live[apr][c] == without[apr][c], c
    else:                    # March is closed at 03:00: the fixes still count on 31 March (and fill the
        assert live[mar]["pings"] == without[mar]["pings"] + 10      # track gap into 1 April)
        assert live[apr]["pings"] == without[apr]["pings"]
        assert live[apr]["late_from_closed"] == live[mar]["late_from_closed"] == 0


def test_a_recompute_horizon_shorter_than_the_month_moves_older_data_to_the_day_received(archive_target):
    feed = _blind_area_feed()
    reg = registry([{"plate": PLATE}])
    cfg = Config({"paths.archive": str(archive_target), "late.recompute_horizon_days": 1})
    live = _live(feed, cfg, reg)
    # the 59 re-uploaded fixes of 10 March arrived on 12 March, two days later: counted there, flagged
    assert live[(PLATE, "2026-03-10")]["pings"] == 62
    assert live[(PLATE, "2026-03-12")]["late_from_closed"] == 59
    _same(live, _oracle(feed, Config({"late.recompute_horizon_days": 1}), reg))


def test_the_monthly_report_states_the_flagged_pings(tmp_path):
    from roadwatch.streams.reports.build import build_monthly_report
    on_time, late = _month_end_feed()
    reg = registry([{"plate": PLATE, "category": "危险货物运输车辆"}])
    rows = list(_oracle(on_time + [late], Config(), reg).items())
    vd = [{"plate": p, "day": d, **v, "online": v["pings"] > 0} for (p, d), v in rows]
    april = build_monthly_report(vd, reg, "2026-04", Config(), snapshot_ts="2026-05-01T01:00:00+08:00")
    march = build_monthly_report(vd, reg, "2026-03", Config(), snapshot_ts="2026-04-01T01:00:00+08:00")
    assert april["trace"]["late_from_closed"] == 10
    assert march["trace"]["late_from_closed"] == 0
