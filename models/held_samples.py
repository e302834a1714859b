"""The replay window's held samples kept in files instead of the heap (``PingProcessor(spill_dir=…)``).

The engine holds, per vehicle, every sample of the last one to two ``late.replay_window_h`` so that late
data re-runs the rules exactly (models/ping_state.py, ``_replay_late``): ≈ 100 packed rows of 41 B per
vehicle on the bench feed, most of a live worker's state. Here they live on disk as an LSM-like set of
sorted runs, read through ``numpy.memmap`` (the OS page cache holds the hot pages and may drop them):

- new samples wait in memory as chunks (arrival order) until ``CHUNK_ROWS`` of them, then are written as
  one run: sorted by (vehicle, time), the first copy of a (vehicle, time) kept, samples no longer newer
  than their vehicle's checkpoint "a" left out (they can never be replayed);
- runs are ordered oldest first; when the newest ``FAN_IN`` runs are of one size tier they are merged into
  one (same rules, the older run's copy of a fix first), so a sample is written about
  1 + log8(window / ``CHUNK_ROWS``) times and a replay looks into at most ``MAX_RUNS`` runs. A run is
  written to a temporary name and renamed: no file
  ever holds a partial run; an array still mapped (a snapshot being encoded) outlives its file's removal;
- a replay reads, per run, the rows of its vehicles (through a per-run index of where each vehicle starts,
  4 B per vehicle and run, written after the run's rows in its file and mapped too: no per-run heap) plus
  the matching rows of the chunks, and sorts those stably: the same rows, in the same order, as the
  in-memory store's ``_history`` gives;
- the samples since the last "full"/"delta" snapshot capture (the next ``ping_state_segment``) are the runs
  written from chunks since then: a capture writes the chunks as a run first and takes those runs' maps
  (a merged-away run's file is removed, its map stays readable), never a copy in the heap;
- the engine's replay checkpoints (``table``: two rows of its rule state per vehicle, read only when a
  vehicle's window moves or late data re-runs its rules) are one more mapped file here, its blocks reserved
  before use and extended in place when the engine's vehicle table grows.

These files are a cache: the archive's snapshot and segments stay the source of truth, and a restored
engine rebuilds its runs from them. Each store works in its own directory under the one it is given
(``window-*``, locked while in use), removed when the store is collected or the process exits; directories
left by a process that died are removed by the next store created beside them.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

log = logging.getLogger("roadwatch.held_samples")

# one held sample of the replay window: packed, 41 B (was 7 float64 columns, 56 B); the values the rules read
# keep their full precision, so a replay sees exactly what the first pass saw
HIST = np.dtype([("v", "<i4"), ("ts", "<i8"), ("lat", "<f8"), ("lon", "<f8"), ("spd", "<f8"), ("drv", "<i4"),
                 ("late", "u1")], align=False)
_ROW = np.dtype((np.void, HIST.itemsize))
CHUNK_ROWS = 4096          # new samples held in memory before they are written as a run (164 KB)
FAN_IN = 8                 # runs of one size tier merged into one: a sample is rewritten ≈ log8(window / chunk) times
MAX_RUNS = 24              # more runs than this (after merges that dropped expired samples): all merged into one


def _tier(rows: int) -> int:
    """Size tier of a run: 0 up to ``FAN_IN`` chunks, then one more per factor ``FAN_IN``."""
    return max(0, (rows // CHUNK_ROWS).bit_length() - 1) // (FAN_IN.bit_length() - 1)


def hist_concat(parts: list) -> np.ndarray:
    """``np.concatenate`` of ``HIST`` arrays, done on their bytes: numpy copies a packed record array field by
    field, four times slower — it was most of the replay store's compaction (``_history_compact``)."""
    if all(p.dtype == HIST for p in parts):
        return np.concatenate([np.ascontiguousarray(p).view(np.uint8) for p in parts]).view(HIST)
    return np.concatenate(parts)


def take(h: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``h[idx]`` (indices or a mask) copying whole 41-byte rows: numpy copies a packed record field by field,
    5–7 times slower."""
    return h.view(_ROW)[idx].view(HIST)


def sort_dedupe(h: np.ndarray) -> np.ndarray:
    """``HIST`` rows sorted by (vehicle, time), stably (equal keys keep their order: the first copy of a fix,
    in arrival order, wins), one row per (vehicle, time)."""
    if len(h) > 1:
        v, ts = h["v"].astype(np.int64), h["ts"]
        if v.max() < (1 << 21) and ts.min() >= 0 and ts.max() < (1 << 42):
            h = take(h, np.argsort((v << 42) | ts, kind="stable"))     # one int64 key (vehicle, time)
        else:
            h = take(h, np.lexsort((ts, v)))
        same = (h["v"][1:] == h["v"][:-1]) & (h["ts"][1:] == h["ts"][:-1])
        if same.any():
            h = take(h, np.concatenate([[True], ~same]))
    return h


def unexpired(h: np.ndarray, ck_ts: np.ndarray) -> np.ndarray:
    """The rows newer than their vehicle's checkpoint "a" (``ck_ts``): the others can never be replayed."""
    keep = h["ts"] > ck_ts[h["v"]]
    return h if keep.all() else take(h, keep)


class _Run:
    """One sorted run on disk: its rows (mapped) and where each vehicle's rows start."""
    __slots__ = ("path", "rows", "start")

    def __init__(self, path: Path, rows: np.ndarray, start: np.ndarray):
        self.path, self.rows, self.start = path, rows, start


class SpilledSamples:
    """The held samples of one engine, in sorted runs on disk plus a few chunks in memory (module doc)."""

    def __init__(self, directory: str | os.PathLike):
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        _sweep(root)
        self.dir = Path(tempfile.mkdtemp(prefix="window-", dir=root))
        lock = open(self.dir / "lock", "wb")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._finalizer = weakref.finalize(self, _remove, self.dir, lock)
        self.runs: list[_Run] = []              # oldest first
        self.chunks: list[np.ndarray] = []      # arrival order
        self.chunk_n = 0
        self._seq = 0
        self._log: list[np.ndarray] | None = None   # runs written since the last segment capture (mapped)
        self._retry_at = CHUNK_ROWS             # chunk rows at which ``add`` writes them (later after a failure)
        self.table_path: Path | None = None     # the engine's checkpoint table (``table``)
        self.table_bytes = 0

    def close(self) -> None:
        """Remove the files now (a revoked partition); otherwise they go when the store is collected, which
        under the worker's ``gc.freeze`` may be only at exit."""
        self._finalizer()

    # --- writing ------------------------------------------------------------------------------------
    def add(self, h: np.ndarray, ck_ts: np.ndarray) -> None:
        """New samples (``HIST``, arrival order)."""
        self.chunks.append(h)
        self.chunk_n += len(h)
        if self.chunk_n >= self._retry_at:
            self._try_flush(ck_ts)

    def load(self, parts: list, ck_ts: np.ndarray) -> None:
        """Samples of a snapshot, in the order the engine added them (restore): written as one run."""
        parts = [p for p in parts if len(p)]
        self.chunks, self.chunk_n = parts, sum(map(len, parts))
        self._try_flush(ck_ts)

    def _try_flush(self, ck_ts: np.ndarray) -> None:
        """``flush`` from the engine's batch step: a write that fails (disk full) leaves the samples in memory
        — the same results, more heap — and is tried again when the chunks have doubled (or at the next
        snapshot capture, whose failure the worker's commit reports and retries)."""
        try:
            self.flush(ck_ts)
        except OSError as err:
            self._retry_at = 2 * self.chunk_n
            log.warning("replay window: writing held samples under %s failed (%s); %d kept in memory",
                        self.dir, err, self.chunk_n)
        else:
            self._retry_at = CHUNK_ROWS

    def flush(self, ck_ts: np.ndarray) -> None:
        """The chunks as a new run, then merges of the newest runs while sizes are close (module doc). A
        failed write (``OSError``) changes nothing that was not written."""
        if self.chunks:
            h = unexpired(sort_dedupe(hist_concat(self.chunks)), ck_ts)
            if len(h):
                run = self._write(h)
                self.runs.append(run)
                if self._log is not None:
                    self._log.append(run.rows)
            self.chunks, self.chunk_n = [], 0
        while len(self.runs) >= FAN_IN and len({_tier(len(r.rows)) for r in self.runs[-FAN_IN:]}) == 1:
            self._merge(FAN_IN, ck_ts)
        if len(self.runs) > MAX_RUNS:      # (merges that dropped expired samples left runs of mixed sizes)
            self._merge(len(self.runs), ck_ts)

    def _merge(self, k: int, ck_ts: np.ndarray) -> None:
        """The newest ``k`` runs as one (the older run's copy of a fix first)."""
        old = self.runs[-k:]
        h = unexpired(sort_dedupe(hist_concat([r.rows for r in old])), ck_ts)
        self.runs[-k:] = [self._write(h)] if len(h) else []
        for r in old:
            r.path.unlink()

    def _write(self, h: np.ndarray) -> _Run:
        self._seq += 1
        path = self.dir / f"run-{self._seq:06d}.bin"
        tmp = path.with_suffix(".tmp")
        v = h["v"]
        start = np.searchsorted(v, np.arange(int(v[-1]) + 2), "left").astype(np.int32 if len(h) < 1 << 31
                                                                               else np.int64)
        try:
            with open(tmp, "w+b") as f:      # mapped from the same descriptor: a file opened once
                f.write(np.ascontiguousarray(h).view(np.uint8))
                f.write(start.view(np.uint8))      # the vehicle index after the rows: mapped too, no heap
                f.flush()
                rows = np.memmap(f, dtype=HIST, mode="r", shape=(len(h),))
                start = np.memmap(f, dtype=start.dtype, mode="r", offset=rows.nbytes, shape=start.shape)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return _Run(path, rows, start)

    # --- the checkpoint table -----------------------------------------------------------------------
    def table(self, dtype: np.dtype, shape: tuple) -> np.ndarray:
        """A new zeroed array mapped from a file of this store (the engine's replay checkpoints, read only when a
        vehicle's window moves or late data re-runs its rules): it replaces the previous table, whose file is
        removed (its map stays readable while referenced). The file's blocks are reserved first
        (``posix_fallocate``), so a full disk fails here with ``OSError`` — never as SIGBUS on a later write."""
        self._seq += 1
        path = self.dir / f"checkpoints-{self._seq:06d}.bin"
        size = int(np.prod(shape)) * dtype.itemsize
        try:
            with open(path, "w+b") as f:
                if size:
                    os.posix_fallocate(f.fileno(), 0, size)
                arr = np.memmap(f, dtype=dtype, mode="r+", shape=shape) if size else np.zeros(shape, dtype)
        except OSError:
            path.unlink(missing_ok=True)
            raise
        self.drop_table()
        self.table_path, self.table_bytes = path, size
        return arr

    def grow_table(self, dtype: np.dtype, shape: tuple) -> np.ndarray:
        """The current table (``table``) with more rows: its file extended in place (blocks reserved first), the
        rows it had where they were — nothing copied. ``OSError`` when the disk is full (the table unchanged)."""
        size = int(np.prod(shape)) * dtype.itemsize
        with open(self.table_path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, size)
            arr = np.memmap(f, dtype=dtype, mode="r+", shape=shape)
        self.table_bytes = size
        return arr

    def drop_table(self) -> None:
        """Remove the checkpoint table's file (the engine went back to a table in its heap)."""
        if self.table_path is not None:
            self.table_path.unlink(missing_ok=True)
            self.table_path, self.table_bytes = None, 0

    # --- reading ------------------------------------------------------------------------------------
    def rows(self, vs: np.ndarray, ck_ts: np.ndarray) -> np.ndarray:
        """Held samples of the vehicles ``vs`` (sorted, distinct), sorted by vehicle then time, newer than
        each vehicle's checkpoint "a", one row per (vehicle, time): what ``_history_rows`` gives in memory."""
        parts = []
        for r in self.runs:            # oldest first: the first copy of a fix comes first
            m = len(r.start) - 1
            w = vs[vs < m]
            lo, hi = r.start[w].astype(np.int64), r.start[w + 1].astype(np.int64)
            n = hi - lo
            if n.sum():
                ends = np.cumsum(n)
                idx = np.arange(int(ends[-1])) + np.repeat(lo - (ends - n), n)
                parts.append(take(r.rows, idx))
        for c in self.chunks:
            hit = np.isin(c["v"], vs)
            if hit.any():
                parts.append(take(c, hit))
        if not parts:
            return np.zeros(0, dtype=HIST)
        return unexpired(sort_dedupe(hist_concat(parts)), ck_ts)

    def all_rows(self, ck_ts: np.ndarray) -> np.ndarray:
        """Every held sample, as ``rows`` orders them."""
        parts = [r.rows for r in self.runs] + self.chunks
        return unexpired(sort_dedupe(hist_concat(parts)), ck_ts) if parts else np.zeros(0, dtype=HIST)

    # --- snapshot segments --------------------------------------------------------------------------
    @property
    def logging(self) -> bool:
        """True once a "full" capture started logging the samples of the next delta segment."""
        return self._log is not None

    def capture_full(self, ck_ts: np.ndarray) -> list:
        """Every held sample for a "full" segment: the chunks written as a run first, then the runs oldest
        first (mapped; a run is never changed, a merge writes a new one); starts logging for deltas."""
        self.flush(ck_ts)
        self._log = []
        return [r.rows for r in self.runs]

    def capture_delta(self, ck_ts: np.ndarray) -> list:
        """The samples added since the previous capture: the chunks written as a run, and the runs written
        from chunks since then (still mapped when a merge has removed their files)."""
        self.flush(ck_ts)
        seg, self._log = self._log, []
        return seg

    def start_log(self) -> None:
        """Log for deltas from now on (a restored engine whose owner goes on with delta segments)."""
        self._log = []

    # --- accounting ---------------------------------------------------------------------------------
    def heap_bytes(self) -> int:
        """What stays in the process's memory: the chunks (a run's vehicle index is mapped from its file)."""
        return sum(c.nbytes for c in self.chunks)

    def disk_bytes(self) -> int:
        """What is in the files: the runs (rows and vehicle index), and runs merged away but still mapped for
        the next delta segment (the checkpoint table is ``table_bytes``)."""
        live = {id(r.rows) for r in self.runs}
        return sum(r.rows.nbytes + r.start.nbytes for r in self.runs) + sum(h.nbytes for h in self._log or () if id(h) not in live)


def _remove(directory: Path, lock) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    lock.close()


def _sweep(root: Path) -> None:
    """Remove the ``window-*`` directories under ``root`` that no live store holds (its process died)."""
    for d in root.glob("window-*"):
        try:
            with open(d / "lock", "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(d, ignore_errors=True)
        except OSError:      # held by a live store (or already gone)
            continue
