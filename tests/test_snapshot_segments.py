"""Incremental snapshots (issue 19): each commit of a partition appends the replay window's samples added since
the previous commit as a ``ping_state_segment`` row, every ``stream.snapshot_full_every`` commits they are
written whole; a worker that takes the partition over restores state + segments and re-runs the rules over
late data exactly as the worker that never stopped — on SQLite and PostgreSQL."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from roadwatch.models.config import Config
from roadwatch.streams import archive
from roadwatch.streams.archive import close_all, open_archive
from roadwatch.streams.gps import PartitionStates
from test_gps_late_data import cols, run, truck_day
from test_gps_support import PLATE, registry

REG = registry([{"category": "危险货物运输车辆"}])


def _states(target, full_every: int) -> PartitionStates:
    cfg = Config({"paths.archive": str(target), "stream.snapshot_full_every": full_every})
    return PartitionStates(SimpleNamespace(cfg=cfg, registry=REG))


def _segments(target) -> list[int]:
    return [int(r[0]) for r in open_archive(target).execute(
        "SELECT seq FROM ping_state_segment WHERE partition = 0 ORDER BY seq").fetchall()]


def _feed(states, pings, offset: int, batch: int = 10) -> int:
    """Process ``pings`` on partition 0 in batches, one commit after each; returns the next offset."""
    e = states.get(0)
    for i in range(0, len(pings), batch):
        e.proc.process(cols(pings[i:i + batch]))
        offset += 1
        e.next_offset, e.dirty = offset, True
        states.flush(0)
    return offset


@pytest.mark.parametrize("full_every", [1, 3, 100])
def test_restore_from_state_and_segments_replays_late_data_as_the_uninterrupted_worker(archive_target, full_every):
    before, blind, after = truck_day()
    expected_alerts, expected_rows, _ = run(before + after[:10] + blind + after[10:], batch=10)

    states = _states(archive_target, full_every)
    offset = _feed(states, before + after[:10], 0)
    # 13 commits: with a full snapshot every 3 commits the last full one (commit 13) stands alone; with 1
    # every commit is a full one; with 100 the window is the first full commit and 12 incremental ones
    assert _segments(archive_target) == {1: [0], 3: [0], 100: list(range(13))}[full_every]
    offset = _feed(states, after[10:12], offset, batch=1)       # two more commits
    assert _segments(archive_target) == {1: [0], 3: [0, 1, 2], 100: list(range(15))}[full_every]
    close_all()

    # another worker takes the partition over: the late blind-area fixes need the samples of the segments
    again = _states(archive_target, full_every)
    e = again.get(0)
    assert e.next_offset == offset
    final = {}
    for p in (blind, after[12:]):
        for i in range(0, len(p), 10):
            for a in e.proc.process(cols(p[i:i + 10])).alerts:
                final[a["alert_id"]] = a
    late_os = [a for a in final.values() if a["type"] == "overspeed" and a["late"]]
    assert len(late_os) == 1 and late_os[0]["start_ts"] == "2026-03-02T10:00:30+08:00"
    want = {k: a for k, a in expected_alerts.items() if a["type"] == "overspeed"}
    assert {k: a for k, a in final.items() if a["type"] == "overspeed"} == want
    rows = {r["day"]: r for r in e.proc.day_rows(dirty_only=False) if r["plate"] == PLATE}
    assert rows == expected_rows


def test_a_failed_commit_is_followed_by_a_full_snapshot(tmp_path):
    """The samples of a delta that was never stored must not be lost: after a failed commit the next one
    rewrites the window whole (segment 0), and a restore from it holds every sample the engine holds."""
    target = tmp_path / "archive.db"
    before, _blind, after = truck_day()
    states = _states(target, 100)
    offset = _feed(states, before[:40], 0)
    assert _segments(target) == [0, 1, 2, 3]
    conn = states.conn
    e = states.get(0)
    e.proc.process(cols(before[40:80]))
    e.next_offset, e.dirty = offset + 1, True
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    for k in range(80, len(before)):      # the archive is full once its free pages are used up
        e.proc.process(cols(before[k:k + 1]))
        e.dirty = True
        try:
            states.flush(0)
        except Exception as err:  # noqa: BLE001
            assert "full" in str(err)
            break
    else:
        pytest.fail("the archive never became full")
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert e.dirty and e.segments is None
    states.flush(0)
    assert _segments(target) == [0]
    held = e.proc._history().copy()
    close_all()
    back = _states(target, 100).get(0)
    assert len(held) > 80 and len(back.proc._history()) == len(held) and (back.proc._history() == held).all()


def test_a_commit_with_many_track_points_stores_them_first_in_short_transactions(tmp_path):
    """Above ``stream.track_points_per_transaction`` a commit stores its track points ahead of its snapshot,
    that many per transaction, so that the snapshot's own transaction is short (SQLite has one write lock,
    and a WIM batch waits for it); the archive ends up holding what one transaction would have stored, and
    storing the points again (a retry, or a replay after a crash between the two) changes nothing."""
    before, _blind, after = truck_day()
    stored = {}
    for per in (1000, 7):
        target = tmp_path / f"per{per}.db"
        states = PartitionStates(SimpleNamespace(cfg=Config({
            "paths.archive": str(target), "stream.track_points_per_transaction": per}), registry=REG))
        txs: list[list[str]] = []
        states.conn.raw.set_trace_callback(lambda sql: txs.append([]) if sql.startswith("BEGIN") else
                                           txs[-1].append(sql) if txs else None)
        e = states.get(0)
        e.proc.process(cols(before + after))
        e.next_offset, e.dirty = 1, True
        points = list(e.proc.track_buf)
        states.flush(0)
        states.conn.raw.set_trace_callback(None)
        n = sum(len(p) for p in points)
        inserts = [sum(s.count(PLATE) for s in tx if s.startswith("INSERT INTO track_points")) for tx in txs]
        snapshot = [k for k, tx in enumerate(txs) if any(s.startswith("INSERT INTO ping_state(") for s in tx)]
        if per == 7:
            assert n > 4 * 7
            assert inserts[:-1] == [7] * (n // 7) + ([n % 7] if n % 7 else []) and snapshot == [len(txs) - 1]
            assert inserts[-1] == 0                 # the snapshot's transaction holds no point
        else:
            assert inserts == [n] and len(txs) == 1
        stored[per] = open_archive(target).execute("SELECT * FROM track_points ORDER BY plate, ts_ms").fetchall()
        with states.conn.transaction():             # again: nothing changes
            archive.insert_track_points(states.conn, [tuple(r) for r in stored[per]])
        assert open_archive(target).execute("SELECT * FROM track_points ORDER BY plate, ts_ms").fetchall() == \
            stored[per]
        close_all()
    assert stored[7] == stored[1000] and len(stored[7]) > 28
