"""Failover across hosts on PostgreSQL: two worker processes that share nothing but Kafka and the PostgreSQL
archive (separate data directories, as on two hosts) split the partitions; one is SIGKILLed mid-feed; the
other takes its partitions over from the snapshots the first one committed to PostgreSQL; the archive then
equals the batch oracle — no alert, vehicle-day count or kilometre lost or counted twice.

Scope this round: the GPS path (alerts, vehicle-day rows, per-partition ping snapshots). The WIM/case path
is not in this test: streams/cases.py is being rewritten, and its evidence packages live in each host's
data directory (docs/operations.md, "Several hosts"). The same proof on one host and SQLite is
tests/test_reliability_restart.py.
"""
from __future__ import annotations

import re
import threading
import time

import pytest
from kafka import KafkaProducer

from roadwatch.models.config import load_config
from roadwatch.streams import archive
from roadwatch.streams import topics as T
from roadwatch.streams.broker import free_port, kafka_bootstrap
from roadwatch.streams.runtime import WorkerProcess, wait_consumed

from test_reliability_feed import (archive_state, build_gps_feed, build_registry, gps_records, oracle_config,
                                   oracle_gps, override_string, rows_equal)
from test_reliability_restart import _metric, _wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_VEHICLES = 300


class GpsFeed:
    def __init__(self, tmp):
        self.registry = build_registry(N_VEHICLES)
        self.reg_path = tmp / "registry.json"
        self.registry.dump(self.reg_path)
        self.pings = build_gps_feed(N_VEHICLES)
        self.records = gps_records(self.pings)
        self.alerts, self.rows = oracle_gps(self.pings, self.registry, oracle_config())
        self.end: dict[tuple[str, int], int] = {}
        self.sent = 0
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def start(self, bootstrap: str, pace_s: float) -> None:
        self.thread = threading.Thread(target=self._produce, args=(bootstrap, pace_s), daemon=True)
        self.thread.start()

    def _produce(self, bootstrap: str, pace_s: float) -> None:
        try:
            p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, max_request_size=4_000_000)
            for part, key, value in self.records:
                md = p.send(T.GPS_PINGS, key=key, value=value, partition=part).get(10)
                k = (md.topic, md.partition)
                self.end[k] = max(self.end.get(k, 0), md.offset + 1)
                self.sent += 1
                time.sleep(pace_s)
            p.close()
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self.error = e

    def join(self, timeout: float = 90) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "producer did not finish"
        assert self.error is None, self.error


def _host_worker(bootstrap, feed, host_dir, port, pg_url) -> WorkerProcess:
    env = {"ROADWATCH_SET": override_string({"paths.data_dir": str(host_dir), "web.port": port}),
           "ROADWATCH_ARCHIVE": pg_url}
    w = WorkerProcess(bootstrap, registry_path=str(feed.reg_path), env=env, loglevel="info")
    w.wait_ready(90)
    return w


def _gps_state(conn):
    alerts, rows, _, _, _ = archive_state(conn)
    return alerts, rows


def test_worker_on_another_host_takes_over_from_postgresql_snapshots(tmp_path, pg_url, monkeypatch, capsys):
    feed = GpsFeed(tmp_path)
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    port_a, port_b = free_port(), free_port()
    monkeypatch.setenv("ROADWATCH_SET", override_string({"paths.data_dir": str(tmp_path / "test")}))
    cfg = load_config(None)
    conn = archive.open_archive(pg_url)
    with kafka_bootstrap(cfg) as bootstrap:
        a = _host_worker(bootstrap, feed, host_a, port_a, pg_url)
        b = _host_worker(bootstrap, feed, host_b, port_b, pg_url)
        try:
            feed.start(bootstrap, pace_s=0.02)
            quarter = len(feed.records) // 4
            _wait(lambda: archive.snapshot_progress(conn, T.GPS_PINGS) >= quarter, 90, "a quarter snapshotted")
            _wait(lambda: _metric(port_a, "roadwatch_pings_total") > 0 and _metric(port_b, "roadwatch_pings_total") > 0,
                  60, "both workers processing pings", poll=0.2)
            pings_a = _metric(port_a, "roadwatch_pings_total")
            by_a = {p for p, s in archive.load_partition_snapshots(conn, T.GPS_PINGS).items()
                    if s["saved_by"].endswith(f":{a.proc.pid}")}
            a.kill()
            t_kill = time.monotonic()
            at_kill = archive.snapshot_progress(conn, T.GPS_PINGS)
            sent_at_kill = feed.sent
            assert a.proc.returncode == -9
            assert at_kill < len(feed.records) and sent_at_kill < len(feed.records), "killed too late to prove anything"
            assert by_a, "worker A had committed no snapshot before it was killed"
            feed.join()
            assert wait_consumed(bootstrap, feed.end, timeout=180), "the survivor did not take over all partitions"
            takeover_s = time.monotonic() - t_kill
            deadline = time.monotonic() + 60
            while True:              # the survivor's last snapshot may still be in flight
                alerts, rows = _gps_state(conn)
                if (alerts == feed.alerts and not rows_equal(feed.rows, rows)) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            caught_up_s = time.monotonic() - t_kill
            pings_b = _metric(port_b, "roadwatch_pings_total")
            skipped = _metric(port_b, "roadwatch_replayed_records_skipped_total")
            assert b.proc.poll() is None
        finally:
            if a.proc.poll() is None:
                a.kill()
            b.stop()
    missing, extra = feed.alerts.keys() - alerts.keys(), alerts.keys() - feed.alerts.keys()
    ended = {k for k in feed.alerts.keys() & alerts.keys() if feed.alerts[k] != alerts[k]}
    assert not missing and not extra and not ended, (len(missing), len(extra), sorted(ended)[:5])
    assert rows_equal(feed.rows, rows) == []
    assert sum(r["pings"] for r in rows.values()) == len(feed.pings)
    # B restored A's partitions from the snapshots A wrote (ping_state.saved_by names A's process)
    restored = [ln for ln in b.lines if "state restored, resuming at offset" in ln]
    from_a = [ln for ln in restored if re.search(rf"saved by \S+:{a.proc.pid}\b", ln)]
    assert from_a, restored[-5:]
    # nothing but Kafka and PostgreSQL was shared: neither host has a SQLite archive
    assert not list(host_a.rglob("*.sqlite")) and not list(host_b.rglob("*.sqlite"))
    with capsys.disabled():
        print(f"\n[failover across hosts, PostgreSQL] feed: {len(feed.pings)} pings in {len(feed.records)} batches, "
              f"4 partitions; before the kill A processed {pings_a:.0f} pings and owned partitions {sorted(by_a)}; "
              f"A SIGKILLed after {sent_at_kill}/{len(feed.records)} batches sent, {at_kill} snapshotted; "
              f"B consumed everything {takeover_s:.1f} s after the kill and the archive equalled the oracle after "
              f"{caught_up_s:.1f} s; {len(from_a)} partition(s) restored from A's snapshots, {skipped:.0f} "
              f"re-delivered batches skipped; B processed {pings_b:.0f} pings; archive = oracle: "
              f"{len(alerts)} alerts, {len(rows)} vehicle-day rows")
