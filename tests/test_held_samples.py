"""The replay window's held samples in files (``PingProcessor(spill_dir=…)``, models/held_samples.py) give the
same outputs and the same state as the in-memory store: same feed both ways — with late, re-uploaded and
duplicated fixes and a feed longer than the window, so replays, expiry, and the runs' merges all happen —
compared batch by batch; snapshots (whole, and full + delta segments) restore the same state; a restored
engine rebuilds its files from the snapshot."""
from __future__ import annotations

import errno
import os
import shutil

import numpy as np
import pytest

from roadwatch.models import held_samples
from roadwatch.models.config import Config
from roadwatch.models.held_samples import HIST, SpilledSamples
from roadwatch.models.ping_state import PingProcessor
from roadwatch.models.pingschema import PingColumns
from roadwatch.streams.bench import synth_pings
from test_gps_support import registry

VEHICLES, PINGS, BATCH = 240, 48_000, 600      # 200 fixes per vehicle every 30 s: 100 min, the window is 1 h


def _feed(seed: int = 3):
    """The bench's live-like feed, then 4 % of the fixes moved 1–60 batches later (half of them marked
    re-uploads) and 1 % sent a second time later on."""
    f = synth_pings(PINGS, VEHICLES, seed=seed)
    rng = np.random.default_rng(seed)
    n = len(f["ts"])
    key = np.arange(n, dtype=np.float64)
    late = rng.random(n) < 0.04
    key[late] += rng.integers(BATCH, 60 * BATCH, late.sum())
    dup = np.flatnonzero(rng.random(n) < 0.01)
    idx = np.concatenate([np.arange(n), dup])
    key = np.concatenate([key, dup + rng.integers(BATCH, 20 * BATCH, len(dup))])
    order = idx[np.argsort(key, kind="stable")]
    reup = np.concatenate([late & (rng.random(n) < 0.5), np.zeros(len(dup), dtype=bool)])[
        np.argsort(key, kind="stable")]
    plates = [f["plate"][i] for i in order.tolist()]
    reg = registry([{"plate": p, "category": "危险货物运输车辆"} for p in f["plates"]])
    return f, order, reup, plates, reg


def _cols(f, order, reup, plates, lo, hi) -> PingColumns:
    o = order[lo:hi]
    m = len(o)
    return PingColumns(plate=plates[lo:hi], terminal_id=[f"T{v:011d}" for v in f["vid"][o].tolist()],
                       plate_color=np.full(m, 2, dtype=np.int64), ts=f["ts"][o], lat=f["lat"][o],
                       lon=f["lon"][o], speed_kmh=np.round(f["speed"][o], 1), heading=np.full(m, 90),
                       altitude_m=np.full(m, 20.0), alarm_flags=np.zeros(m, dtype=np.int64),
                       status_flags=np.full(m, 3, dtype=np.int64), reupload=reup[lo:hi], driver_id=[None] * m,
                       mileage_km=[None] * m)


def _same_output(a, b) -> None:
    assert a.alerts == b.alerts
    assert vars(a) == vars(b)


def _same_state(a: PingProcessor, b: PingProcessor) -> None:
    """Same held samples and the same snapshot bytes (the in-memory store sorted first, as the spilled one
    writes it)."""
    ha, hb = a._history(), b._history()
    assert ha.tobytes() == hb.tobytes()
    assert a.snapshot(compress=False) == b.snapshot(compress=False)


def test_spilled_store_gives_the_in_memory_outputs_and_state(tmp_path):
    f, order, reup, plates, reg = _feed()
    mem = PingProcessor(Config(), reg, spill_dir=None)
    disk = PingProcessor(Config(), reg, spill_dir=tmp_path / "w")
    replayed = 0
    for lo in range(0, len(order), BATCH):
        a = mem.process(_cols(f, order, reup, plates, lo, lo + BATCH))
        b = disk.process(_cols(f, order, reup, plates, lo, lo + BATCH))
        _same_output(a, b)
        replayed += a.replayed
    assert replayed > 100
    assert mem.day_rows(dirty_only=False) == disk.day_rows(dirty_only=False)
    spill = disk._spill
    assert spill.runs and len(list(spill.dir.glob("run-*.bin"))) == len(spill.runs)
    assert disk.held_bytes_on_disk() == sum(r.rows.nbytes + r.start.nbytes for r in spill.runs) > 0
    assert disk.live_bytes_per_vehicle() < mem.live_bytes_per_vehicle()
    _same_state(mem, disk)


def test_segments_restore_the_same_state_and_a_restore_rebuilds_the_files(tmp_path):
    f, order, reup, plates, reg = _feed(seed=5)
    mem = PingProcessor(Config(), reg)
    disk = PingProcessor(Config(), reg, spill_dir=tmp_path / "w")
    segs: dict[str, list[bytes]] = {"mem": [], "disk": []}
    blobs = {}
    cut = len(order) * 2 // 3
    for k, lo in enumerate(range(0, cut, BATCH)):
        _same_output(mem.process(_cols(f, order, reup, plates, lo, lo + BATCH)),
                     disk.process(_cols(f, order, reup, plates, lo, lo + BATCH)))
        if k % 5 == 4:           # a commit: every sixth one full, as streams/gps.py does
            kind = "full" if k // 5 % 6 == 0 else "delta"
            last = lo + BATCH    # the first fix after the capture
            for name, proc in (("mem", mem), ("disk", disk)):
                cap = proc.snapshot_capture(segments=kind)
                if kind == "full":
                    segs[name] = []
                segs[name].append(cap.segment())
                blobs[name] = cap.encode(compress=False)
    assert len(segs["disk"]) > 2 and blobs["mem"] == blobs["disk"]
    # each restored both ways: the same held samples and state as the engines that wrote them
    back = {name: PingProcessor.restore(Config(), reg, None, blobs[name], segs[name]) for name in segs}
    back_disk = PingProcessor.restore(Config(), reg, None, blobs["disk"], segs["disk"],
                                      spill_dir=tmp_path / "r")
    assert back_disk._spill.runs and list((tmp_path / "r").glob("window-*/run-*.bin"))
    assert back_disk.live_bytes_per_vehicle() < back["disk"].live_bytes_per_vehicle()
    _same_state(back["mem"], back["disk"])
    _same_state(back["mem"], back_disk)
    # all three go on from the snapshot's offset exactly alike, and the rebuilt store goes on with deltas
    for lo in range(last, len(order), BATCH):
        outs = [p.process(_cols(f, order, reup, plates, lo, lo + BATCH))
                for p in (back["mem"], back["disk"], back_disk)]
        _same_output(outs[0], outs[1])
        _same_output(outs[0], outs[2])
    # and their next delta segments, after the ones they were restored from, restore the state they reached
    again = []
    for name, proc in (("mem", back["mem"]), ("disk", back_disk)):
        cap = proc.snapshot_capture(segments="delta")
        assert len(cap.segment()) > 1000
        again.append(PingProcessor.restore(Config(), reg, None, cap.encode(), segs[name] + [cap.segment()]))
    _same_state(back["mem"], back_disk)
    _same_state(again[0], back["mem"])
    _same_state(again[1], back["mem"])


def test_a_delta_needs_a_full_capture_first(tmp_path):
    proc = PingProcessor(Config(), registry(), spill_dir=tmp_path)
    with pytest.raises(ValueError, match="full"):
        proc.snapshot_capture(segments="delta")


def test_a_store_removes_its_files_and_those_of_a_dead_process(tmp_path):
    ck = np.full(4, -1, dtype=np.int64)
    s = SpilledSamples(tmp_path)
    h = np.zeros(held_samples.CHUNK_ROWS, dtype=HIST)
    h["v"] = np.arange(len(h)) % 4
    h["ts"] = np.arange(len(h))
    s.add(h, ck)
    # the run and its vehicle index (5 entries of 4 B) in the file, nothing of it in the heap
    assert len(s.runs) == 1 and s.heap_bytes() == 0 and s.disk_bytes() == h.nbytes + 20
    assert isinstance(s.runs[0].start, np.memmap) and s.runs[0].path.stat().st_size == h.nbytes + 20
    mapped = s.runs[0].rows
    # the FAN_IN-th run of its size merges them into one, without the samples no longer newer than their
    # vehicle's checkpoint "a"
    fan = held_samples.FAN_IN
    ck[:] = 1000
    for k in range(1, fan - 1):
        s.add(_shifted(h, k * len(h)), ck)
    assert len(s.runs) == fan - 1
    s.add(_shifted(h, (fan - 1) * len(h)), ck)
    assert len(s.runs) == 1 and len(s.runs[0].rows) == fan * len(h) - 1001
    assert (s.runs[0].rows["ts"] > 1000).all() and len(list(s.dir.glob("run-*"))) == 1
    # a vehicle's rows from the runs and the chunks (a vehicle the runs do not know has none)
    s.add(_shifted(h[:8], (fan + 1) * len(h)), ck)
    got = s.rows(np.array([3, 9]), np.full(10, 1000))
    whole = s.all_rows(ck)
    assert got.tobytes() == whole[whole["v"] == 3].tobytes() and len(got) == fan * len(h) // 4 - 250 + 2
    kept = s.dir
    other = SpilledSamples(tmp_path)        # a second live store beside it keeps its hands off
    assert kept.exists() and other.dir != kept
    # a directory left by a process that died (no one holds its lock) is removed by the next store
    dead = tmp_path / "window-dead"
    dead.mkdir()
    (dead / "lock").touch()
    (dead / "run-000001.bin").write_bytes(b"x" * 41)
    SpilledSamples(tmp_path)
    assert not dead.exists() and kept.exists()
    s._finalizer()
    assert not kept.exists() and mapped["ts"][-1] == len(h) - 1     # a mapped run outlives its file


def _shifted(h: np.ndarray, dt: int) -> np.ndarray:
    g = h.copy()
    g["ts"] += dt
    return g


def test_a_store_that_cannot_write_keeps_the_samples_in_memory_with_the_same_results(tmp_path, caplog):
    f, order, reup, plates, reg = _feed(seed=9)
    mem = PingProcessor(Config(), reg)
    disk = PingProcessor(Config(), reg, spill_dir=tmp_path / "w")
    half = len(order) // 2 // BATCH * BATCH
    for lo in range(0, len(order), BATCH):
        if lo == half:              # its directory vanishes (disk trouble): every write fails from here
            shutil.rmtree(disk._spill.dir)
            runs = len(disk._spill.runs)
        _same_output(mem.process(_cols(f, order, reup, plates, lo, lo + BATCH)),
                     disk.process(_cols(f, order, reup, plates, lo, lo + BATCH)))
    assert len(disk._spill.runs) == runs and disk._spill.chunk_n > 4 * held_samples.CHUNK_ROWS
    assert "kept in memory" in caplog.text
    _same_state(mem, disk)
    with pytest.raises(OSError):    # a snapshot capture reports it (the worker's commit retries)
        disk.snapshot_capture(segments="full")
    disk._spill.dir.mkdir()         # the disk is back: the next capture writes them
    cap = disk.snapshot_capture(segments="full")
    assert disk._spill.chunk_n == 0 and len(disk._spill.runs) >= 1
    back = PingProcessor.restore(Config(), reg, None, cap.encode(), [cap.segment()])
    _same_state(mem, back)


def test_an_unusable_directory_keeps_the_window_in_memory(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    proc = PingProcessor(Config(), registry(), spill_dir=tmp_path / "file")
    assert proc._spill is None and "kept in memory" in caplog.text


def test_runs_of_mixed_sizes_are_merged_into_one_past_max_runs(tmp_path):
    """Runs whose sizes alternate (merges that dropped many expired samples) never leave the newest
    FAN_IN of one tier: past MAX_RUNS they are merged into one, the first copy of each fix kept."""
    ck = np.full(2, -1, dtype=np.int64)
    s = SpilledSamples(tmp_path)
    big, small = 8 * held_samples.CHUNK_ROWS, held_samples.CHUNK_ROWS
    t = 0
    for k in range(held_samples.MAX_RUNS):
        n = big if k % 2 == 0 else small
        h = np.zeros(n, dtype=HIST)
        h["ts"], h["late"] = t + np.arange(n), k % 2
        h["v"] = h["ts"] % 2
        s.add(h, ck)
        t += n - 1                 # each run's first fix repeats the previous run's last one
    assert len(s.runs) == held_samples.MAX_RUNS
    s.add(_shifted(h[:small], t + 1), ck)
    assert len(s.runs) == 1
    rows = s.runs[0].rows
    assert (np.diff(rows["ts"][rows["v"] == 0]) > 0).all() and len(rows) == t + 1 + small
    first = rows[rows["ts"] == big - 1]        # where the first two runs meet: the older run's copy kept
    assert len(first) == 1 and first["late"][0] == 0


def test_the_worker_keeps_each_partition_window_under_its_data_dir_and_a_restore_rebuilds_it(tmp_path):
    """``PartitionStates`` (streams/gps.py) gives each partition's engine its own directory under the data
    dir; a worker that takes the partition over restores the window from the archive into new files."""
    from types import SimpleNamespace

    from roadwatch.streams.archive import close_all
    from roadwatch.streams.gps import PartitionStates

    f, order, reup, plates, reg = _feed(seed=11)
    cfg = Config({"paths.archive": str(tmp_path / "archive.sqlite"), "paths.data_dir": str(tmp_path / "data")})
    states = PartitionStates(SimpleNamespace(cfg=cfg, registry=reg))
    e = states.get(0)
    mem = PingProcessor(cfg, reg, spill_dir=None)
    cut = len(order) // 2 // BATCH * BATCH
    for k, lo in enumerate(range(0, cut, BATCH)):
        _same_output(mem.process(_cols(f, order, reup, plates, lo, lo + BATCH)),
                     e.proc.process(_cols(f, order, reup, plates, lo, lo + BATCH)))
        e.next_offset, e.dirty = k + 1, True
        states.flush(0)
        mem.day_table(dirty_only=True), mem.sample_track(), mem.stop_events()     # what the commit drained
    first = e.proc._spill.dir
    assert first.parent == tmp_path / "data" / "ping-window" / "gps-pings-0" and list(first.glob("run-*.bin"))
    close_all()
    again = PartitionStates(SimpleNamespace(cfg=cfg, registry=reg)).get(0)
    rebuilt = again.proc._spill
    assert rebuilt.dir != first and rebuilt.dir.parent == first.parent and len(rebuilt.runs) == 1
    _same_state(mem, again.proc)
    for lo in range(cut, len(order), BATCH):
        _same_output(mem.process(_cols(f, order, reup, plates, lo, lo + BATCH)),
                     again.proc.process(_cols(f, order, reup, plates, lo, lo + BATCH)))
    _same_state(mem, again.proc)
    # a revoked partition's window files go at once (the worker's gc.freeze may keep the engine until exit)
    survivor = PartitionStates(SimpleNamespace(cfg=cfg, registry=reg))
    survivor.entries[0] = again
    survivor.drop({0})
    assert not rebuilt.dir.exists() and 0 not in survivor.entries
    close_all()


def test_the_checkpoint_table_in_a_file_gives_the_heap_results_and_a_full_disk_keeps_it_in_the_heap(
        tmp_path, monkeypatch, caplog):
    """The replay checkpoints (``ck_*``/``ckb_*``) of an engine with ``spill_dir`` are one table mapped from a
    file of its store: the same outputs and state as the heap's table, also after the table grew (its rows
    copied, or its file extended in place) — into the heap when no file can be made (disk full), and back into
    a file."""
    f, order, reup, plates, reg = _feed(seed=7)
    real, full = os.posix_fallocate, [True]

    def fallocate(fd, offset, size):        # the file system's answer when the disk is full
        if full[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, offset, size)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    late = PingProcessor(Config(), reg, spill_dir=tmp_path / "x")       # starts on a full disk
    full[0] = False
    mem = PingProcessor(Config(), reg)
    disk = PingProcessor(Config(), reg, spill_dir=tmp_path / "w")
    assert "replay checkpoints kept in memory" in caplog.text
    assert isinstance(disk._ck_tab, np.memmap) and not isinstance(late._ck_tab, np.memmap)
    assert disk.checkpoint_bytes_on_disk() == disk._ck_tab.nbytes > 0 == late.checkpoint_bytes_on_disk()
    assert isinstance(mem.a["ck_fix_ts"], np.ndarray) and not isinstance(mem._ck_tab, np.memmap)
    half = len(order) * 3 // 4 // BATCH * BATCH
    replayed = 0
    for lo in range(0, len(order), BATCH):
        if lo == half:      # past a window: the checkpoints hold state; the tables grow
            assert (disk.a["ck_ts"][:disk.n] > 0).sum() > 100
            full[0] = True
            disk._alloc(disk.cap + 100)          # its new table in the heap
            full[0] = False
            late._alloc(late.cap + 100)          # its new table in a file
            assert not isinstance(disk._ck_tab, np.memmap) and isinstance(late._ck_tab, np.memmap)
            assert not list(disk._spill.dir.glob("checkpoints-*"))
            table = list(late._spill.dir.glob("checkpoints-*"))
            late._alloc(late.cap + 100)          # and again: that file extended in place
            assert list(late._spill.dir.glob("checkpoints-*")) == table
            assert table[0].stat().st_size == late.checkpoint_bytes_on_disk() == late.cap * 2 * late._ck_dtype.itemsize
        outs = [p.process(_cols(f, order, reup, plates, lo, lo + BATCH)) for p in (mem, disk, late)]
        _same_output(outs[0], outs[1])
        _same_output(outs[0], outs[2])
        replayed += outs[0].replayed if lo >= half else 0
    assert replayed > 50
    assert late.live_bytes_per_vehicle() < mem.live_bytes_per_vehicle()
    _same_state(mem, disk)
    _same_state(mem, late)
