"""GPS ping path: one Faust event per columnar batch, per-partition numpy state, transactional snapshots.

Exactly-once effect on the archive without broker transactions (the embedded broker has none):
- each partition's ``PingProcessor`` state is saved in the archive table ``ping_state`` together with
  ``next_offset`` (the first source offset it does NOT cover), in the SAME archive transaction as the
  vehicle-day rows, stop events, sampled track points and alerts it produced (``archive.save_partition_snapshot``, on
  SQLite or PostgreSQL — a worker on another host restores the partition from there); only on SQLite, a
  commit with more than ``stream.track_points_per_transaction`` track points stores them just before, in
  transactions of their own (a stored point is never changed: storing it again after a failure, or after a replay that
  samples it again, changes nothing);
- events are consumed with manual acks and acknowledged only after that transaction commits, so Faust's
  committed offset never passes the snapshot;
- after a restart or rebalance the state is restored from the snapshot and records below ``next_offset``
  are skipped (counted in ``roadwatch_replayed_records_skipped_total``).
The state of a commit is taken on the event loop in a few ms (the engine's arrays copied); encoding,
compression and the transaction run in one commit thread while the loop goes on (one commit at a time per
worker). The replay window's held samples — most of the state — are stored incrementally: each commit
appends the samples added since the previous one as a ``ping_state_segment`` row (same transaction), every
``stream.snapshot_full_every`` commits they are rewritten whole; restore = ``ping_state`` + its segments.
Alerts are published as soon as they are raised (latency) with deterministic ids; a replay re-publishes the
same ids, which every consumer (archive upsert, console) de-duplicates.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from pathlib import Path

import orjson

from roadwatch.models.pingbatch import decode_batch
from roadwatch.models.pingschema import concat
from roadwatch.models.ping_state import DayRows, PingProcessor
from roadwatch.models.records import InvalidRecord, plausible_years

from . import metrics as M
from . import topics as T
from . import archive
from .broker import ENV_EPOCH
from .deadletter import send_dead_letter

log = logging.getLogger("roadwatch.gps")
_ROW_KEY = itemgetter(0, 1)        # (plate, day) of a day-row tuple
# labelled metric children bound once: .labels() costs a dict lookup and a lock per call on the hot path
PINGS_OK = M.PINGS.labels(qualified="yes")
PINGS_BAD = M.PINGS.labels(qualified="no")
GPS_IN = M.MESSAGES.labels(topic=T.GPS_PINGS, direction="in")


def _window_dir(cfg, partition: int) -> Path:
    """Where a partition's engine keeps its replay window's held samples (models/held_samples.py: a cache
    on local disk; the archive's snapshot and segments restore them)."""
    return cfg.data_dir / "ping-window" / f"{T.GPS_PINGS}-{partition}"


@dataclass
class _Commit:
    """One partition's commit in flight: what ``PartitionStates.prepare`` took (state as of ``next_offset``,
    the outputs drained) and how many of the entry's queued alerts and events it covers."""
    partition: int
    entry: "PartitionEntry"
    next_offset: int
    state: object               # models.ping_state.SnapshotCapture
    table: DayRows              # the vehicle-day rows (tuples)
    points: list
    retract: list               # stop withdrawals and stops (``PingProcessor.stop_events``)
    stops: list
    alerts: list
    n_acks: int
    seq: int                    # its held-sample segment: 0 = a full snapshot (replaces the stored ones)


@dataclass
class PartitionEntry:
    proc: PingProcessor
    next_offset: int
    pending_acks: list
    dirty: bool = False
    segments: int | None = None      # held-sample segments stored since the last full snapshot (None: next is full)
    pending_alerts: list = field(default_factory=list)   # archived with the next snapshot
    unsaved_rows: list = field(default_factory=list)     # drained from the processor, kept until committed
    unsaved_points: list = field(default_factory=list)
    unsaved_retract: list = field(default_factory=list)  # stop withdrawals and stops (``stop_events``)
    unsaved_stops: list = field(default_factory=list)


class PartitionStates:
    """The ping state of every partition this worker owns."""

    def __init__(self, ctx, zones=None):
        self.ctx = ctx
        self.zones = zones
        self.entries: dict[int, PartitionEntry] = {}
        self.conn = archive.open_archive(ctx.cfg)
        self.epoch = os.environ.get(ENV_EPOCH, "")
        self.full_every = int(ctx.cfg["stream.snapshot_full_every"])
        self.points_per_tx = int(ctx.cfg["stream.track_points_per_transaction"])
        self.flush_lock = asyncio.Lock()      # one commit at a time: the timer's and a revocation's

    def get(self, partition: int) -> PartitionEntry:
        e = self.entries.get(partition)
        if e is None:
            row = archive.load_partition_snapshot(self.conn, T.GPS_PINGS, partition)
            if row is not None and row["epoch"] != self.epoch:
                log.warning("partition %d: snapshot belongs to another broker incarnation (%s); starting fresh",
                            partition, row["epoch"])
                row = None
            if row is not None:
                proc = PingProcessor.restore(self.ctx.cfg, self.ctx.registry, self.zones, row["state"],
                                             row["segments"], spill_dir=_window_dir(self.ctx.cfg, partition))
                e = PartitionEntry(proc, row["next_offset"], [], segments=len(row["segments"]) or None)
                log.info("partition %d: state restored, resuming at offset %d (snapshot saved by %s at %s)",
                         partition, row["next_offset"], row["saved_by"] or "?", row["saved_at"])
            else:
                e = PartitionEntry(PingProcessor(self.ctx.cfg, self.ctx.registry, self.zones,
                                                 spill_dir=_window_dir(self.ctx.cfg, partition)), 0, [])
            self.entries[partition] = e
        return e

    def flush(self, partition: int) -> DayRows | None:
        """Commit one partition's outputs + snapshot atomically, then ack its events. Returns the day rows
        committed (tuples, ``DayRows``), or None when there was nothing to commit. Everything on the calling
        thread (revocation, tests); the timer uses ``flush_async``."""
        c = self.prepare(partition)
        if c is None:
            return None
        try:
            self.write(c, self.conn)
        except BaseException:
            self.failed(c)
            raise
        return self.committed(c)

    async def flush_async(self, partition: int, executor) -> DayRows | None:
        """``flush`` with the heavy part — encoding and compressing the state, the archive transaction — in
        ``executor`` (one thread, its own archive connection): the event loop stays free for WIM and the
        agents meanwhile (zstd and the database release the GIL). The engine runs on during the write; the
        commit covers exactly what ``prepare`` took, and its events are acked only after it committed."""
        t0 = time.perf_counter()
        c = self.prepare(partition)
        if c is None:
            return None
        t1 = time.perf_counter()
        M.SNAPSHOT_SECONDS.labels(part="loop").observe(t1 - t0)
        cf = executor.submit(self._write_here, c)
        try:
            await asyncio.wrap_future(cf)
            M.SNAPSHOT_SECONDS.labels(part="thread").observe(time.perf_counter() - t1)
        except asyncio.CancelledError:
            # the worker stops: a transaction already running in the thread still ends, settle it before a
            # revocation commits again (an older commit must never land after a newer one)
            try:
                cf.result()
            except BaseException:  # noqa: BLE001 - failed or never started: the entry keeps everything
                self.failed(c)
            else:
                self.committed(c)
            raise
        except BaseException:
            self.failed(c)
            raise
        return self.committed(c)

    def prepare(self, partition: int) -> "_Commit | None":
        """On the loop, in a few ms: drain the partition's outputs and take its state as of ``next_offset``
        (``PingProcessor.snapshot_capture``). Outputs stay on the entry until the commit succeeds: a failed
        commit (disk full) is retried with them."""
        e = self.entries.get(partition)
        if e is None or not e.dirty:
            return None
        # kept on the entry as soon as drained: a failure below (even reading the stored rows) loses nothing
        table = e.proc.day_table(dirty_only=True)
        table.rows[:0] = e.unsaved_rows
        if e.proc.past:     # late data for days no longer in memory: recomputed on their stored rows
            table = DayRows.from_dicts(e.proc.merge_past_days(
                table.dicts(), archive.load_vehicle_days(self.conn, e.proc.past_day_keys())), table.updated_at)
        e.unsaved_rows = table.rows
        points = e.unsaved_points = e.unsaved_points + e.proc.sample_track()
        retract, stops = e.proc.stop_events()
        retract = e.unsaved_retract = e.unsaved_retract + retract
        stops = e.unsaved_stops = e.unsaved_stops + stops
        # incremental: the window's held samples (most of the state) are appended as a segment of what was
        # added since the last commit; every ``stream.snapshot_full_every`` commits they are written whole
        seq = 0 if e.segments is None or e.segments >= self.full_every else e.segments
        state = e.proc.snapshot_capture(segments="delta" if seq else "full")
        e.segments = None        # until this commit is stored: a failed one is followed by a full one
        e.dirty = False
        return _Commit(partition, e, e.next_offset, state, table, points, retract, stops,
                       list(e.pending_alerts), len(e.pending_acks), seq)

    def write(self, c: "_Commit", conn) -> None:
        """The archive transaction of one commit (any thread: it reads only the commit)."""
        blob = archive.pack_state(c.state.encode(compress=False))
        segment = archive.pack_state(c.state.segment())
        # in key order (plate, time), the order track_points is clustered by: fewer pages touched per insert
        points = sorted(c.points)
        if conn.one_writer and len(points) > self.points_per_tx:
            # many points (after a burst: tens of thousands, ~7 µs each on SQLite) go first, in transactions
            # of their own, so the snapshot's transaction holds SQLite's one write lock briefly and a WIM batch
            # waiting for it is not held up (docs/performance.md, round 12). Safe ahead of the snapshot: a
            # stored point is kept, never changed, and a retry or a replay stores the same points again.
            # (PostgreSQL has no archive-wide write lock: one transaction there, as before.)
            step = self.points_per_tx
            for i in range(0, len(points), step):
                with conn.transaction():
                    archive.insert_track_points(conn, points[i:i + step])
            points = []
        with conn.transaction():     # one transaction: outputs, state and offset (module docstring)
            archive.upsert_day_tuples(conn, c.table.rows)
            archive.save_stops(conn, c.retract, c.stops)
            archive.save_partition_snapshot(conn, T.GPS_PINGS, c.partition, c.next_offset, blob, self.epoch,
                                            track_points=points, alerts=c.alerts,
                                            segment=segment, segment_seq=c.seq)

    def _write_here(self, c: "_Commit") -> None:
        conn = archive.open_archive(self.ctx.cfg)     # the executor thread's own connection
        # no automatic checkpoint after its commits: once the log was over 1 000 pages one ran after each, and
        # its snapshot commits took 40–110 ms longer while WIM batches waited (docs/performance.md, round 11);
        # the worker's periodic checkpoint on this thread keeps the log short
        conn.defer_checkpoints()
        self.write(c, conn)

    def failed(self, c: "_Commit") -> None:
        c.entry.dirty = True          # everything is still on the entry: the next flush retries it

    def committed(self, c: "_Commit") -> DayRows:
        """After the transaction: ack the events it covers, forget the outputs it stored."""
        e = c.entry
        M.SNAPSHOTS.inc()
        if e.proc.n:
            M.STATE_BYTES.set(e.proc.live_bytes_per_vehicle())
        for ev in e.pending_acks[:c.n_acks]:
            ev.ack()
        del e.pending_acks[:c.n_acks]
        del e.pending_alerts[:len(c.alerts)]
        # nothing else drained the entry meanwhile (one commit at a time per worker: ``flush_lock``)
        e.unsaved_rows, e.unsaved_points, e.unsaved_retract, e.unsaved_stops = [], [], [], []
        e.segments = c.seq + 1
        return c.table

    def drop(self, partitions) -> None:
        for p in list(partitions):
            if p in self.entries:
                try:
                    self.flush(p)
                except Exception:  # noqa: BLE001 - unacked records go to the next owner, who replays them
                    log.exception("partition %d: snapshot failed on revocation; its records are not acked", p)
                self.entries.pop(p).proc.close()       # its window files go now, not at the next collection


# Faust hands the agent one record per loop turn (its fetcher awaits each delivery), so a record already
# fetched reaches the agent's channel only after a turn or two: the agent gives the fetcher up to this many
_TURNS = 3


class _Held:
    """One partition's batches taken from the topic and not yet applied: the agent gathers the batches that
    are already waiting (up to ``stream.gps_coalesce_pings`` pings) and applies them in one engine call,
    whose fixed cost per call is then paid once (docs/performance.md, round 9). ``entry``: the partition's
    state they were taken for — a revocation meanwhile replaces or drops it, and then they are not applied."""

    __slots__ = ("partition", "entry", "next_offset", "events", "cols", "pings")

    def __init__(self, partition: int, entry: "PartitionEntry", next_offset: int):
        self.partition = partition
        self.entry = entry
        self.next_offset = next_offset     # the first offset after the batches held
        self.events: list = []
        self.cols: list = []               # the decoded batches (a dead-lettered one has none)
        self.pings = 0

    def add(self, event, cols) -> None:
        self.events.append(event)
        self.next_offset = event.message.offset + 1
        if cols is not None:
            self.cols.append(cols)
            self.pings += len(cols)


def install(app, ctx, publish_alerts) -> PartitionStates:
    """Wire the ping agent and its timers. ``publish_alerts(alerts)`` sends to the alerts topic + live hub."""
    cfg = ctx.cfg
    states = PartitionStates(ctx, zones=None)
    ctx.gps_state = states
    topic = ctx.topics[T.GPS_PINGS]
    dlq = ctx.topics[T.DEAD_LETTER]
    stats_topic = ctx.topics[T.VEHICLE_DAY_STATS]
    max_bytes = int(cfg["stream.max_record_bytes"])
    years = plausible_years(cfg)
    coalesce = int(cfg["stream.gps_coalesce_pings"])

    @app.agent(topic, name="gps-pings-agent")
    async def gps_agent(stream):
        pings = stream.noack()
        empty = getattr(pings.channel, "empty", None)
        held: dict[int, _Held] = {}
        async for event in pings.events():
            await ctx.faults.wait_clear("gps-snapshot")   # paused while snapshots fail (streams/retry.py)
            msg = event.message
            entry = states.get(msg.partition)
            GPS_IN.inc()
            h = held.get(msg.partition)
            if h is None or h.entry is not entry:     # (an entry replaced: revoked meanwhile, see _Held)
                h = held[msg.partition] = _Held(msg.partition, entry, entry.next_offset)
            if msg.offset < h.next_offset:
                M.REPLAY_SKIPPED.labels(topic=T.GPS_PINGS).inc()
                event.ack()
            else:
                raw = event.value
                try:
                    h.add(event, decode_batch(raw, max_bytes, years=years))
                except InvalidRecord as err:
                    await send_dead_letter(dlq, T.GPS_PINGS, err.code, err.detail, raw)
                    h.add(event, None)
                except (TypeError, ValueError, OverflowError) as err:
                    # defence in depth (tests/test_fuzz_worker.py): a malformed batch must never kill the agent
                    await send_dead_letter(dlq, T.GPS_PINGS, "bad_type", repr(err)[:300], raw)
                    h.add(event, None)
            if h.pings < coalesce and empty is not None:
                for _ in range(_TURNS):
                    if not empty():
                        break
                    await asyncio.sleep(0)
                if not empty():
                    continue            # more batches have arrived already: the engine takes them together
            for p in list(held):
                await _apply(held.pop(p))

    async def _apply(h: "_Held") -> None:
        """Run one partition's held batches through its engine as one batch (``models.pingschema.concat``:
        the engine's result does not depend on how a partition's pings are split, tests/test_gps_engine.py)."""
        entry = h.entry
        if not h.events or states.entries.get(h.partition) is not entry:
            # only skipped records; or revoked while held: not applied, not acked (the next owner reads them)
            return
        out = None
        if h.cols:
            M.GPS_CALL_BATCHES.observe(len(h.cols))
            cols = h.cols[0] if len(h.cols) == 1 else concat(h.cols)
            # reliability fix (tests/test_fuzz_worker.py): the wall clock is the "now" of the future check
            # for batches without receipt times, as in `assess gps`; without it one terminal with a fast
            # clock dragged the partition's watermark ahead and every other moving vehicle went "offline".
            out = entry.proc.process(cols, now_ms=int(time.time() * 1000))
            if out.new_vehicles:
                M.STATE_BYTES.set(entry.proc.live_bytes_per_vehicle())
            PINGS_OK.inc(out.qualified)
            PINGS_BAD.inc(len(cols) - out.qualified)
            if out.alerts:
                entry.pending_alerts.extend(out.alerts)
        # the state and its offset move together, before any await: a commit (the timer's, a revocation's)
        # that runs meanwhile must never store a state that covers records its offset does not
        entry.next_offset = h.next_offset
        entry.pending_acks.extend(h.events)
        entry.dirty = True
        last = h.events[-1].message
        hw = app.consumer.highwater(last.tp) if hasattr(app.consumer, "highwater") else None
        if hw is not None:
            M.LAG.labels(topic=T.GPS_PINGS, partition=str(last.partition)).set(max(0, hw - last.offset - 1))
        if out is not None and out.alerts:
            await publish_alerts(out.alerts, recv_ms=_recv_ms(cols), persist=False)

    # The archive is the system of record; the compacted topic mirrors the newest absolute row per
    # vehicle-day for downstream consumers, throttled so a catching-up worker does not send 10 k rows/s.
    # (plate, day) → (row tuple, updated_at): the dict of a row is built only when it is published
    unpublished: dict[tuple[str, str], tuple] = {}
    last_publish = [time.monotonic()]
    publish_every = float(cfg["stream.stats_publish_interval_s"])

    interval = float(cfg["stream.snapshot_interval_s"])
    last_flush: dict[int, float] = {}
    # one thread writes the snapshots (docs/performance.md): its commit runs beside the event loop
    commit_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gps-commit")
    # the event loop's archive connection (WIM, cases, console) leaves SQLite's log checkpoints to that
    # thread: one inside a WIM commit on the loop stalled every agent (docs/performance.md); the thread's own
    # commits leave them to its periodic checkpoint below too (``_write_here``)
    states.conn.defer_checkpoints()
    last_checkpoint = [time.monotonic()]
    checkpoint_every = float(cfg["archive.checkpoint_interval_s"])

    def checkpoint_here() -> None:
        ck = archive.open_archive(cfg).checkpoint()      # the commit thread's connection
        M.ARCHIVE_LOG_UNCOPIED.set(ck.uncopied)
        M.ARCHIVE_LOG_FRAMES.set(ck.frames)

    @app.timer(min(1.0, interval))
    async def gps_flush():
        # Offline checks every tick; commits staggered: at most one partition per tick, the one waiting
        # longest, so a large commit never stalls the event loop (and WIM latency) for all partitions at once.
        online = 0
        wall_ms = int(time.time() * 1000)
        now = time.monotonic()
        for p, e in list(states.entries.items()):
            alerts = e.proc.check_offline(_offline_clock(e.proc, wall_ms))
            if alerts:
                e.pending_alerts.extend(alerts)
                await publish_alerts(alerts, recv_ms=None, persist=False)
                e.dirty = True
            online += e.proc.online_count(_offline_clock(e.proc, wall_ms))
        M.VEHICLES_ONLINE.set(online)
        due = [p for p, e in states.entries.items() if e.dirty and now - last_flush.get(p, 0.0) >= interval]
        if due:
            p = min(due, key=lambda q: last_flush.get(q, 0.0))
            last_flush[p] = now
            table = await _attempt_flush(ctx.faults, states, p, commit_thread)
            if table is not None and table.rows:
                unpublished.update(zip(map(_ROW_KEY, table.rows), zip(table.rows, repeat(table.updated_at))))
        elif "gps-snapshot" in ctx.faults.active and not any(e.dirty for e in states.entries.values()):
            ctx.faults.clear("gps-snapshot")   # the failing partitions were revoked: nothing left to retry
        if now - last_checkpoint[0] >= checkpoint_every:   # also when only WIM writes: the log must not grow
            last_checkpoint[0] = now
            try:
                await asyncio.wrap_future(commit_thread.submit(checkpoint_here))
            except Exception:  # noqa: BLE001 - a checkpoint that could not run is retried next interval
                log.warning("archive log checkpoint failed; retried in %.0f s", checkpoint_every, exc_info=True)
        if unpublished and time.monotonic() - last_publish[0] >= publish_every:
            last_publish[0] = time.monotonic()
            rows = list(unpublished.values())
            unpublished.clear()
            for i, (t, updated) in enumerate(rows, 1):
                r = DayRows.row_dict(t, updated)
                await stats_topic.send(key=f"{r['plate']}|{r['day']}".encode(), value=orjson.dumps(r))
                if i % 200 == 0:      # a send rarely suspends (buffered): thousands of rows held the loop
                    await asyncio.sleep(0)
            M.MESSAGES.labels(topic=T.VEHICLE_DAY_STATS, direction="out").inc(len(rows))

    # what a commit (or anything else) costs the event loop, seen from a 50 ms timer (bench part (c))
    probe = [time.perf_counter()]

    @app.timer(0.05)
    async def loop_lag_probe():
        now = time.perf_counter()
        M.LOOP_LAG.observe(max(0.0, now - probe[0] - 0.05))
        probe[0] = now

    @app.on_partitions_revoked.connect
    async def _revoked(sender, revoked, **kwargs):
        async with states.flush_lock:         # after the commit in flight, never beside it
            states.drop({tp.partition for tp in revoked if tp.topic == T.GPS_PINGS})

    return states


async def _attempt_flush(faults, states: PartitionStates, partition: int, executor) -> DayRows | None:
    """One non-blocking try of the partition's commit (``Faults.attempt`` for a commit that awaits its
    thread): its day rows, or none when it failed (paused, retried with back-off) or was not due."""
    if not faults.due("gps-snapshot"):
        return None
    try:
        async with states.flush_lock:
            table = await states.flush_async(partition, executor)
    except Exception as err:  # noqa: BLE001 - an internal fault: pause and retry, never drop the record
        faults.report("gps-snapshot", err)
        return None
    faults.clear("gps-snapshot")
    return table


def _recv_ms(cols):
    return int(cols.recv_ts.max()) if cols.recv_ts is not None else None


def _offline_clock(proc, wall_ms: int) -> int:
    """Live feeds use the wall clock (a silent fleet must still go offline); replays of old data use the
    data's own watermark so that accelerated replays give the same alerts as batch mode."""
    wm = proc.watermark_ms
    return wall_ms if wm and wm > wall_ms - 600_000 else wm
