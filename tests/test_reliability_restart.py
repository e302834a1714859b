"""Crash and restart: SIGKILL the worker mid-feed, restart it (or let a second worker take over), and prove
with counts that no case, verdict, alert or vehicle-day statistic is lost or duplicated.

Guarantee under test (docs/architecture.md): **exactly-once effect** on the archive, without broker
transactions (the embedded broker has none). Kafka delivery is at-least-once (records after the last
committed offset are delivered again after the crash); the effect is exactly-once because
- the GPS agent commits its per-partition state snapshot, ``next_offset`` and the vehicle-day rows in one
  SQLite transaction and acknowledges records only afterwards; records below ``next_offset`` are skipped;
- alerts, verdicts and cases have deterministic ids and are upserted, so a re-delivered record rewrites the
  same rows; 一超四罚 counters are queries over archived cases.
The archive after crash + recovery must equal the batch oracle on the same feed: same alert ids (and end
times), same verdict and case ids (and action, excess, fine), same vehicle-day rows.
"""
from __future__ import annotations

import time

import pytest

from roadwatch.models.config import load_config
from roadwatch.models.evidence import verify_tree
from roadwatch.streams import topics as T
from roadwatch.streams.archive import open_archive
from roadwatch.streams.broker import free_port, kafka_bootstrap
from roadwatch.streams.runtime import WorkerProcess, wait_consumed

from reliability_support import Feed, _compare, _metric, _wait
from test_reliability_feed import override_string

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _processed(conn) -> tuple[int, int, int]:
    """(GPS records covered by snapshots, cases archived, alerts archived) — the worker's durable progress."""
    g = conn.execute("SELECT COALESCE(SUM(next_offset), 0) FROM ping_state WHERE topic=?", (T.GPS_PINGS,)).fetchone()[0]
    c = conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
    a = conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
    return g, c, a


def _settings(tmp, port: int) -> dict:
    return {"ROADWATCH_SET": override_string({"paths.data_dir": str(tmp / "data"), "web.port": port})}


def _worker(bootstrap, feed, tmp, port, loglevel="warning") -> WorkerProcess:
    w = WorkerProcess(bootstrap, registry_path=str(feed.reg_path), env=_settings(tmp, port), loglevel=loglevel)
    w.wait_ready(60)
    return w


def _evidence_intact(tmp, n_cases: int) -> None:
    ev = tmp / "data" / "evidence"
    problems = verify_tree(ev, tmp / "data" / "keys" / "trusted")
    assert problems == {}, problems
    pkgs = [p for p in ev.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(pkgs) == n_cases           # one package per case: none lost, none written twice
    links = sum(len(f.read_bytes().splitlines()) for f in ev.glob("chain-*.jsonl"))
    assert links == n_cases               # one chain link per package


def test_sigkill_mid_feed_then_restart_loses_and_duplicates_nothing(tmp_path, monkeypatch, capsys):
    feed = Feed(tmp_path)
    port = free_port()
    monkeypatch.setenv("ROADWATCH_SET", _settings(tmp_path, port)["ROADWATCH_SET"])
    cfg = load_config(None)
    with kafka_bootstrap(cfg) as bootstrap:
        w1 = _worker(bootstrap, feed, tmp_path, port)
        conn = open_archive(cfg.archive_path)
        feed.start(bootstrap, pace_s=0.02)
        try:
            quarter = len(feed.records) // 4
            _wait(lambda: (lambda g, c, a: g >= quarter and c >= 3)(*_processed(conn)), 60, "a quarter processed")
            sent_at_kill = feed.sent
            w1.kill()
            at_kill = _processed(conn)
            t_kill = time.monotonic()
            assert w1.proc.returncode == -9
            assert at_kill[0] < len(feed.records) and sent_at_kill < feed.total, "killed too late to prove anything"
            w2 = _worker(bootstrap, feed, tmp_path, port, loglevel="info")
            restart_s = time.monotonic() - t_kill
            try:
                feed.join()
                assert wait_consumed(bootstrap, feed.end, timeout=90), "restarted worker did not catch up"
                caught_up_s = time.monotonic() - t_kill
                counts = _compare(feed, conn)
                skipped = _metric(port, "roadwatch_replayed_records_skipped_total")
                resumed = [ln for ln in w2.lines if "state restored, resuming at offset" in ln]
            finally:
                w2.stop()
        finally:
            if w1.proc.poll() is None:
                w1.kill()
    _evidence_intact(tmp_path, len(feed.cases))
    assert resumed, "the restarted worker did not restore any partition snapshot"
    with capsys.disabled():
        print(f"\n[restart] feed: {len(feed.pings)} pings in {len(feed.records)} batches + {len(feed.readings)} WIM "
              f"readings ({feed.duplicates} duplicates); killed after {sent_at_kill}/{feed.total} records sent, "
              f"{at_kill[0]}/{len(feed.records)} ping batches snapshotted, {at_kill[1]} cases, {at_kill[2]} alerts "
              f"archived; restarted worker ready after {restart_s:.1f} s, caught up after {caught_up_s:.1f} s; "
              f"{len(resumed)} partitions restored from snapshots, {skipped:.0f} re-delivered batches skipped; "
              f"archive = oracle: {counts}")


def test_two_workers_share_partitions_and_survivor_takes_over(tmp_path, monkeypatch, capsys):
    feed = Feed(tmp_path)
    port_a, port_b = free_port(), free_port()
    monkeypatch.setenv("ROADWATCH_SET", _settings(tmp_path, port_a)["ROADWATCH_SET"])
    cfg = load_config(None)
    with kafka_bootstrap(cfg) as bootstrap:
        a = _worker(bootstrap, feed, tmp_path, port_a)
        b = _worker(bootstrap, feed, tmp_path, port_b, loglevel="info")
        conn = open_archive(cfg.archive_path)
        try:
            feed.start(bootstrap, pace_s=0.02)
            quarter = len(feed.records) // 4
            _wait(lambda: _processed(conn)[0] >= quarter, 60, "a quarter processed")
            _wait(lambda: _metric(port_a, "roadwatch_messages_total") > 0 and
                  _metric(port_b, "roadwatch_messages_total") > 0, 30, "both workers consuming", poll=0.2)
            in_a = _metric(port_a, "roadwatch_messages_total")
            in_b_before = _metric(port_b, "roadwatch_messages_total")
            a.kill()
            at_kill = _processed(conn)
            t_kill = time.monotonic()
            assert at_kill[0] < len(feed.records)
            feed.join()
            assert wait_consumed(bootstrap, feed.end, timeout=120), "survivor did not take over all partitions"
            takeover_s = time.monotonic() - t_kill
            counts = _compare(feed, conn)
            in_b_after = _metric(port_b, "roadwatch_messages_total")
            assert b.proc.poll() is None
        finally:
            a.kill()
            b.stop()
    _evidence_intact(tmp_path, len(feed.cases))
    with capsys.disabled():
        print(f"\n[two workers] before the kill: A read {in_a:.0f} records, B {in_b_before:.0f}; A killed with "
              f"{at_kill[0]}/{len(feed.records)} ping batches snapshotted; B consumed everything "
              f"{takeover_s:.1f} s after the kill (B read {in_b_after:.0f} records in total); archive = oracle: "
              f"{counts}")
