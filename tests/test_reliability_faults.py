"""Our own faults are not bad input (streams/retry.py): a full disk under the real worker.

The worker's data directory (archive + evidence) lives on a small tmpfs that is filled up while the worker
runs. WIM readings and GPS batches that arrive meanwhile must not be dead-lettered, their offsets must not
be committed, ``/healthz`` must answer 503 with the reason and ``roadwatch_internal_faults_total`` must
count the attempts; once space is freed the worker resumes by itself and the archive equals the batch
oracle on the same feed — no reading lost, none duplicated.

Needs the right to mount a tmpfs (root / CAP_SYS_ADMIN); skipped otherwise.
"""
from __future__ import annotations

import errno
import json
import subprocess
import time
import urllib.error
import urllib.request

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from roadwatch.models.config import load_config
from roadwatch.streams import topics as T
from roadwatch.streams.archive import open_archive
from roadwatch.streams.broker import kafka_bootstrap
from roadwatch.streams.runtime import WorkerProcess, committed_offsets, ready_worker, wait_consumed

from reliability_support import _metric, _wait
from stack_support import read_to_end
from test_reliability_feed import (archive_state, build_gps_feed, build_registry, build_wim_feed, gps_records,
                                   oracle_config, oracle_gps, oracle_wim, override_string, rows_equal)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _mount_tmpfs(path, size_mb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                       capture_output=True, text=True)
    return r.returncode == 0


def _fill(path) -> int:
    """Write a filler file until the filesystem is full; returns its size."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1 << 9):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                    n += chunk
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return n


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _dead_letters(bootstrap: str, quiet: bool = True) -> list[dict]:
    """The dead-letter topic from its beginning: with ``quiet`` also what arrives until 3 s of silence (the
    test's last look); without, what is on it now (a look during a fault: the last look re-reads it all)."""
    if not quiet:
        return [orjson.loads(m.value) for m in read_to_end(bootstrap, T.DEAD_LETTER)]
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000,
                      auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(T.DEAD_LETTER, p) for p in (c.partitions_for_topic(T.DEAD_LETTER) or [])]
        if not tps:
            return []
        c.assign(tps)
        c.seek_to_beginning(*tps)
        return [orjson.loads(m.value) for m in c]
    finally:
        c.close()


def _start_worker(bootstrap, reg_path, settings: dict) -> tuple[WorkerProcess, int]:
    """A ready worker on a free web port (``runtime.ready_worker``: a port taken meanwhile is retried)."""
    w, port, _ = ready_worker(lambda p: WorkerProcess(bootstrap, registry_path=str(reg_path), env={
        "ROADWATCH_SET": override_string(dict(settings, **{"web.port": p}))}), 60)
    return w, port


def test_full_disk_loses_no_reading_and_recovers_by_itself(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    if not _mount_tmpfs(data, 24):
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        _run_full_disk(tmp_path, data, monkeypatch, capsys)
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def _run_full_disk(tmp_path, data, monkeypatch, capsys):
    registry = build_registry(30)
    reg_path = tmp_path / "registry.json"
    registry.dump(reg_path)
    pings = build_gps_feed(30)
    records = gps_records(pings)
    readings = build_wim_feed(registry)
    cfg0 = oracle_config()
    alerts_exp, rows_exp = oracle_gps(pings, registry, cfg0)
    verdicts_exp, cases_exp, _ = oracle_wim(readings, registry, cfg0)

    base = {"paths.data_dir": str(data), "faults.retry_initial_s": 0.1, "faults.retry_max_s": 1.0}
    monkeypatch.setenv("ROADWATCH_SET", override_string(base))
    cfg = load_config(None)
    with kafka_bootstrap(cfg) as bootstrap:
        # the web port is chosen after the broker took its ports
        w, port = _start_worker(bootstrap, reg_path, base)
        try:
            filler = data / "filler.bin"
            filled = _fill(filler)
            end: dict[tuple[str, int], int] = {}
            p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, max_request_size=4_000_000)
            for part, key, value in records:
                md = p.send(T.GPS_PINGS, key=key, value=value, partition=part).get(10)
                end[(md.topic, md.partition)] = max(end.get((md.topic, md.partition), 0), md.offset + 1)
            for r in readings:
                md = p.send(T.WIM_READINGS, key=r["plate"].encode(), value=orjson.dumps(r)).get(10)
                end[(md.topic, md.partition)] = max(end.get((md.topic, md.partition), 0), md.offset + 1)
            p.close()

            # the fault is visible: not ready with the reason, counted, logged — and nothing is committed
            paused: dict[str, str] = {}

            def both_paused():
                status, body = _health(port)
                if status == 503:
                    paused.update({k: v["reason"] for k, v in body["faults"].items()})
                return {"wim", "gps-snapshot"} <= paused.keys()
            _wait(both_paused, 60, "/healthz to report the WIM and GPS-snapshot faults", poll=0.2)
            assert all("No space left" in r or "full" in r for r in paused.values()), paused
            _wait(lambda: _metric(port, "roadwatch_internal_faults_total") >= 3, 30, "retries to be counted", poll=0.2)
            time.sleep(3)                                   # several back-off rounds while the disk stays full
            held = committed_offsets(bootstrap, "roadwatch", list(end))
            wim_end = sum(v for (t, _), v in end.items() if t == T.WIM_READINGS)
            wim_done = sum(v for (t, _), v in held.items() if t == T.WIM_READINGS)
            assert wim_done < wim_end, "WIM offsets were committed although nothing could be written"
            assert _dead_letters(bootstrap, quiet=False) == [], "an internal fault was dead-lettered"
            faults_during = _metric(port, "roadwatch_internal_faults_total")
            assert any("paused by an internal fault" in ln for ln in w.lines), w.lines[-20:]

            # free the space: the worker resumes without a restart
            filler.unlink()
            assert wait_consumed(bootstrap, end, timeout=120), "the worker did not resume after space was freed"
            _wait(lambda: _health(port)[0] == 200, 30, "/healthz to be ready again", poll=0.2)
            assert any("resumed after" in ln for ln in w.lines), w.lines[-20:]
            conn = open_archive(cfg.archive_path)
            deadline = time.monotonic() + 30
            while True:
                alerts, rows, verdicts, cases, overload = archive_state(conn)
                if (verdicts == verdicts_exp and cases == cases_exp and alerts == alerts_exp
                        and not rows_equal(rows_exp, rows)) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert verdicts == verdicts_exp
            assert cases == cases_exp
            assert overload == {f"overload-{c}" for c in cases_exp}
            assert alerts == alerts_exp
            assert rows_equal(rows_exp, rows) == []
            assert _dead_letters(bootstrap) == []
            assert w.proc.poll() is None, "the worker died"
        finally:
            w.stop()
    from roadwatch.models.evidence import verify_tree
    problems = verify_tree(data / "evidence", data / "keys" / "trusted")
    assert problems == {}, problems
    links = sum(len(f.read_bytes().splitlines()) for f in (data / "evidence").glob("chain-*.jsonl"))
    assert links == len(cases_exp)                    # one chain link per package, none lost to the full disk
    with capsys.disabled():
        print(f"\n[full disk] {len(readings)} WIM readings + {len(records)} ping batches sent onto a full "
              f"{filled // 1024} KiB-filled tmpfs: paused {paused}; {faults_during:.0f} failed attempts, 0 dead letters, "
              f"{wim_done}/{wim_end} WIM offsets committed while full; after freeing space: "
              f"{len(verdicts)} verdicts, {len(cases)} cases, {len(alerts)} alerts = oracle")


def test_read_only_evidence_directory_pauses_wim_and_resumes_when_writable(tmp_path, monkeypatch, capsys):
    """The evidence folder turns read-only (a remount after a disk error, a wrong mount option): cases cannot
    get their signed package, so the WIM path pauses — in order, no reading skipped — and catches up as soon
    as the folder is writable again. The archive itself stays writable throughout."""
    data = tmp_path / "data"
    ev = data / "evidence"
    ev.mkdir(parents=True)
    ro = subprocess.run(f"mount --bind {ev} {ev} && mount -o remount,bind,ro {ev}", shell=True,
                        capture_output=True, text=True)
    if ro.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {ro.stderr.strip()}")
    mounted = True
    registry = build_registry(30)
    reg_path = tmp_path / "registry.json"
    registry.dump(reg_path)
    readings = build_wim_feed(registry)
    verdicts_exp, cases_exp, _ = oracle_wim(readings, registry, oracle_config())
    base = {"paths.data_dir": str(data), "faults.retry_initial_s": 0.1, "faults.retry_max_s": 0.5}
    monkeypatch.setenv("ROADWATCH_SET", override_string(base))
    cfg = load_config(None)
    try:
        with kafka_bootstrap(cfg) as bootstrap:
            # the web port is chosen after the broker took its ports
            w, port = _start_worker(bootstrap, reg_path, base)
            try:
                end: dict[tuple[str, int], int] = {}
                p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
                for r in readings:
                    md = p.send(T.WIM_READINGS, key=r["plate"].encode(), value=orjson.dumps(r)).get(10)
                    end[(md.topic, md.partition)] = max(end.get((md.topic, md.partition), 0), md.offset + 1)
                p.close()
                _, body = _wait(lambda: (lambda s, b: (s, b) if s == 503 and "wim" in b["faults"] else None)(
                    *_health(port)), 60, "/healthz to report the WIM fault", poll=0.2)
                assert "Read-only file system" in body["faults"]["wim"]["reason"], body
                time.sleep(2)
                conn = open_archive(cfg.archive_path)
                cases_while_ro = conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
                held = committed_offsets(bootstrap, "roadwatch", list(end))
                done_while_ro = sum(held.values())
                assert cases_while_ro == 0 and done_while_ro < sum(end.values())
                assert _dead_letters(bootstrap, quiet=False) == []
                subprocess.run(["umount", str(ev)], check=True)
                mounted = False
                assert wait_consumed(bootstrap, end, timeout=90), "the worker did not resume"
                _wait(lambda: _health(port)[0] == 200, 30, "/healthz to be ready again", poll=0.2)
                _, _, verdicts, cases, overload = archive_state(conn)
                assert verdicts == verdicts_exp and cases == cases_exp
                assert overload == {f"overload-{c}" for c in cases_exp}
                assert _dead_letters(bootstrap) == []
                attempts = _metric(port, "roadwatch_internal_faults_total")
            finally:
                w.stop()
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(ev)], capture_output=True)
    from roadwatch.models.evidence import verify_tree
    assert verify_tree(ev, data / "keys" / "trusted") == {}
    with capsys.disabled():
        print(f"\n[read-only evidence] {len(readings)} WIM readings: {done_while_ro} offsets committed and "
              f"{cases_while_ro} cases while read-only, {attempts:.0f} failed attempts, 0 dead letters; after the "
              f"remount: {len(verdicts)} verdicts, {len(cases)} cases = oracle, evidence verifies")


# --- the GPS snapshot transaction on a full archive (SQLite max_page_count), without the stack --------------

def test_failed_snapshot_commit_keeps_everything_for_the_retry(tmp_path):
    """`PRAGMA max_page_count` makes the archive full for the snapshot transaction. Before: the ROLLBACK after
    SQLite's own rollback raised "cannot rollback - no transaction is active" (the worker crashed) and the
    vehicle-day rows drained from the engine were lost for good. Now the flush fails cleanly, acknowledges
    nothing, and the next flush writes exactly what a fault-free flush writes."""
    from types import SimpleNamespace

    from roadwatch.models.pingbatch import decode_batch
    from roadwatch.streams.archive import close_all
    from roadwatch.streams.gps import PartitionStates

    # 300 vehicles: the compressed state of a partition must need new pages of the archive (the Zstandard
    # blob of 30 vehicles fits in the free room of a fresh archive's pages, and nothing would fail)
    registry = build_registry(300)
    records = gps_records(build_gps_feed(300))

    def run(data_dir, fail_first: bool):
        cfg = oracle_config()
        cfg.set("paths.data_dir", str(data_dir))
        states = PartitionStates(SimpleNamespace(cfg=cfg, registry=registry))
        acked = []
        for part, _key, value in records:
            e = states.get(part)
            e.proc.process(decode_batch(value), now_ms=0)
            e.pending_acks.append(SimpleNamespace(ack=lambda p=part: acked.append(p)))
            e.dirty = True
        conn = states.conn
        if fail_first:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")
            for p in list(states.entries):
                with pytest.raises(Exception, match="full"):
                    states.flush(p)
                assert not conn.in_transaction and states.entries[p].dirty
            assert acked == []                                   # nothing acknowledged, so nothing committed
            conn.execute("PRAGMA max_page_count = 1073741823")
        for p in list(states.entries):
            states.flush(p)
        rows = {(r["plate"], r["day"]): dict(r) for r in conn.execute(
            "SELECT plate, day, pings, qualified, km_total, drift_points FROM vehicle_day")}
        points = conn.execute("SELECT COUNT(*) FROM track_points").fetchone()[0]
        return rows, points, len(acked)

    clean = run(tmp_path / "clean", False)
    faulty = run(tmp_path / "faulty", True)
    close_all()
    assert faulty == clean and clean[0] and clean[2] == len(records)
