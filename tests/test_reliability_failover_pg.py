"""Failover across hosts on PostgreSQL: two worker processes that share nothing but Kafka and the PostgreSQL
archive (separate data directories, as on two hosts) split the partitions; one is SIGKILLed mid-feed; the
other takes its partitions over from the snapshots the first one committed to PostgreSQL; the archive then
equals the batch oracle — no alert, vehicle-day count or kilometre lost or counted twice.

One feed: GPS ping batches (alerts, vehicle-day rows, per-partition ping snapshots) with WIM readings
interleaved (verdicts, cases, 一超四罚 counters, and each case's signed evidence package, stored in
PostgreSQL with the case: docs/evidence.md, "Evidence across hosts"). A GPS-only run of the same failover was
a second test until 2026-12-01; every assertion it made is made here on the GPS part of this feed. The same proofs on one host and SQLite:
tests/test_reliability_restart.py.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from roadwatch.models.config import load_config
from roadwatch.models.evidence import verify_tree
from roadwatch.streams import archive
from roadwatch.streams import topics as T
from roadwatch.streams.broker import kafka_bootstrap
from roadwatch.streams.cli import main
from roadwatch.streams.runtime import WorkerProcess, ready_worker, wait_consumed

from reliability_support import Feed, _compare, _metric, _wait
from test_reliability_feed import archive_state, override_string, rows_equal

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _host_worker(bootstrap, feed, host_dir, port, pg_url) -> WorkerProcess:
    env = {"ROADWATCH_SET": override_string({"paths.data_dir": str(host_dir), "web.port": port}),
           "ROADWATCH_ARCHIVE": pg_url}
    return WorkerProcess(bootstrap, registry_path=str(feed.reg_path), env=env, loglevel="info")


def _gps_state(conn):
    alerts, rows, _, _, _ = archive_state(conn)
    return alerts, rows


def _failover(tmp_path, pg_url, feed, monkeypatch) -> dict:
    """Two host-like workers on ``pg_url``; SIGKILL A once a quarter of the ping batches is snapshotted and
    both are processing; wait until B consumed everything. Returns what was measured."""
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    monkeypatch.setenv("ROADWATCH_SET", override_string({"paths.data_dir": str(tmp_path / "test")}))
    cfg = load_config(None)
    conn = archive.open_archive(pg_url)
    m: dict = {"conn": conn, "hosts": (host_a, host_b)}
    with kafka_bootstrap(cfg) as bootstrap:
        a = b = None
        try:
            # (ports chosen as each host starts: one taken meanwhile by another process is retried)
            a, port_a, _ = ready_worker(lambda p: _host_worker(bootstrap, feed, host_a, p, pg_url), 90)
            b, port_b, _ = ready_worker(lambda p: _host_worker(bootstrap, feed, host_b, p, pg_url), 90)
            feed.start(bootstrap, pace_s=0.02)
            quarter = len(feed.records) // 4
            _wait(lambda: archive.snapshot_progress(conn, T.GPS_PINGS) >= quarter, 90, "a quarter snapshotted")
            _wait(lambda: _metric(port_a, "roadwatch_pings_total") > 0 and _metric(port_b, "roadwatch_pings_total") > 0,
                  60, "both workers processing pings", poll=0.2)
            m["pings_a"] = _metric(port_a, "roadwatch_pings_total")
            m["by_a"] = {p for p, s in archive.load_partition_snapshots(conn, T.GPS_PINGS).items()
                         if s["saved_by"].endswith(f":{a.proc.pid}")}
            a.kill()
            t_kill = time.monotonic()
            m["at_kill"] = archive.snapshot_progress(conn, T.GPS_PINGS)
            m["sent_at_kill"] = feed.sent
            assert a.proc.returncode == -9
            assert m["at_kill"] < len(feed.records) and feed.sent < feed.total, "killed too late to prove anything"
            assert m["by_a"], "worker A had committed no snapshot before it was killed"
            feed.join()
            assert wait_consumed(bootstrap, feed.end, timeout=180), "the survivor did not take over all partitions"
            m["takeover_s"] = time.monotonic() - t_kill
            deadline = time.monotonic() + 60
            while True:              # the survivor's last snapshot may still be in flight
                alerts, rows = _gps_state(conn)
                if (alerts == feed.alerts and not rows_equal(feed.rows, rows)) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            m["caught_up_s"] = time.monotonic() - t_kill
            m["pings_b"] = _metric(port_b, "roadwatch_pings_total")
            m["skipped"] = _metric(port_b, "roadwatch_replayed_records_skipped_total")
            assert b.proc.poll() is None
        finally:                 # also when B never got ready: no worker outlives the test
            if a is not None and a.proc.poll() is None:
                a.kill()
            if b is not None:
                b.stop()
    # B restored A's partitions from the snapshots A wrote (ping_state.saved_by names A's process)
    restored = [ln for ln in b.lines if "state restored, resuming at offset" in ln]
    m["from_a"] = [ln for ln in restored if re.search(rf"saved by \S+:{a.proc.pid}\b", ln)]
    assert m["from_a"], restored[-5:]
    # nothing but Kafka and PostgreSQL was shared: neither host has a SQLite archive
    assert not list(host_a.rglob("*.sqlite")) and not list(host_b.rglob("*.sqlite"))
    return m


def _summary(feed, m) -> str:
    return (f"{len(feed.pings)} pings in {len(feed.records)} batches, 4 partitions; before the kill A processed "
            f"{m['pings_a']:.0f} pings and owned partitions {sorted(m['by_a'])}; A SIGKILLed after "
            f"{m['sent_at_kill']}/{feed.total} records sent, {m['at_kill']} ping batches snapshotted; B consumed "
            f"everything {m['takeover_s']:.1f} s after the kill; {len(m['from_a'])} partition(s) restored from A's "
            f"snapshots, {m['skipped']:.0f} re-delivered batches skipped; B processed {m['pings_b']:.0f} pings")


def test_failover_across_hosts_with_the_wim_path(tmp_path, pg_url, monkeypatch, capsys):
    """A worker on another host takes over from the PostgreSQL snapshots: GPS ping batches with WIM readings
    interleaved; the GPS part (alerts, vehicle-day rows, every ping counted once) equals the oracle as the
    GPS-only run did (it was a subset of this one and is merged into it). Verdicts, cases and 一超四罚 counters
    live in PostgreSQL, so the survivor's counters see the cases the killed worker opened. Each case has exactly one evidence package,
    written by whichever host archived the case first (a reading re-delivered to B after A archived its case
    writes none), and the archive holds every package with its chain: exported, they verify with the two
    hosts' public keys."""
    feed = Feed(tmp_path)
    m = _failover(tmp_path, pg_url, feed, monkeypatch)
    counts = _compare(feed, m["conn"])
    _, rows = _gps_state(m["conn"])
    assert sum(r["pings"] for r in rows.values()) == len(feed.pings)       # every ping counted once
    referenced = {r["evidence_path"] for r in m["conn"].execute("SELECT evidence_path FROM cases")}
    packages, trusted = [], tmp_path / "trusted"
    trusted.mkdir(mode=0o700)
    for host in m["hosts"]:
        ev = host / "evidence"
        if ev.is_dir():
            assert verify_tree(ev, host / "keys" / "trusted") == {}
            packages += [str(p) for p in ev.iterdir() if p.is_dir() and not p.name.startswith(".")]
            for pub in (host / "keys" / "trusted").iterdir():
                shutil.copy(pub, trusted / pub.name)
    assert all(Path(p).is_dir() for p in referenced), "an archived case points at no evidence package"
    # only the killed worker can leave a package the archive never referenced: one it wrote in the instant
    # between its package and its case's commit (that case then got B's package); B never writes a second one
    orphans = sorted(set(packages) - referenced)
    assert all(p.startswith(str(m["hosts"][0])) for p in orphans), f"B wrote a second package: {orphans[:3]}"
    by_case = {Path(p).name: p for p in referenced}
    assert all(by_case[Path(p).name].startswith(str(m["hosts"][1])) for p in orphans)   # its case has B's
    assert len(referenced) == len(feed.cases)
    out = tmp_path / "export"
    assert main(["evidence", "export", str(out), "--archive", pg_url]) == 0
    exported = {d.name: sum(1 for p in d.iterdir() if p.is_dir()) for d in out.iterdir()}
    assert sum(exported.values()) == len(feed.cases)
    for d in out.iterdir():
        assert verify_tree(d, trusted) == {}, d.name
    with capsys.disabled():
        print(f"\n[failover across hosts, PostgreSQL, GPS + WIM] {_summary(feed, m)}; archive = oracle: {counts}; "
              f"evidence: {len(packages)} packages on the two hosts for {len(referenced)} cases ({len(orphans)} left by "
              f"A's kill before its case committed); the archive's "
              f"copy exported as {len(exported)} chain folder(s), all verify")
