"""GPS ping path: one Faust event per columnar batch, per-partition numpy state, transactional snapshots.

Exactly-once effect on the archive without broker transactions (the embedded broker has none):
- each partition's ``PingProcessor`` state is saved in the archive table ``ping_state`` together with
  ``next_offset`` (the first source offset it does NOT cover), in the SAME archive transaction as the
  vehicle-day rows, stop events, sampled track points and alerts it produced (``archive.save_partition_snapshot``, on
  SQLite or PostgreSQL — a worker on another host restores the partition from there);
- events are consumed with manual acks and acknowledged only after that transaction commits, so Faust's
  committed offset never passes the snapshot;
- after a restart or rebalance the state is restored from the snapshot and records below ``next_offset``
  are skipped (counted in ``roadwatch_replayed_records_skipped_total``).
Alerts are published as soon as they are raised (latency) with deterministic ids; a replay re-publishes the
same ids, which every consumer (archive upsert, console) de-duplicates.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter

import orjson

from roadwatch.models.pingbatch import decode_batch
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


@dataclass
class PartitionEntry:
    proc: PingProcessor
    next_offset: int
    pending_acks: list
    dirty: bool = False
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

    def get(self, partition: int) -> PartitionEntry:
        e = self.entries.get(partition)
        if e is None:
            row = archive.load_partition_snapshot(self.conn, T.GPS_PINGS, partition)
            if row is not None and row["epoch"] != self.epoch:
                log.warning("partition %d: snapshot belongs to another broker incarnation (%s); starting fresh",
                            partition, row["epoch"])
                row = None
            if row is not None:
                proc = PingProcessor.restore(self.ctx.cfg, self.ctx.registry, self.zones, row["state"])
                e = PartitionEntry(proc, row["next_offset"], [])
                log.info("partition %d: state restored, resuming at offset %d (snapshot saved by %s at %s)",
                         partition, row["next_offset"], row["saved_by"] or "?", row["saved_at"])
            else:
                e = PartitionEntry(PingProcessor(self.ctx.cfg, self.ctx.registry, self.zones), 0, [])
            self.entries[partition] = e
        return e

    def flush(self, partition: int) -> DayRows | None:
        """Commit one partition's outputs + snapshot atomically, then ack its events. Returns the day rows
        committed (tuples, ``DayRows``), or None when there was nothing to commit."""
        e = self.entries.get(partition)
        if e is None or not e.dirty:
            return None
        # drained outputs stay on the entry until the commit succeeds: a failed commit (disk full) is retried
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
        blob = archive.pack_state(e.proc.snapshot(compress=False))
        with self.conn.transaction():     # one transaction: outputs, state and offset (module docstring)
            archive.upsert_day_tuples(self.conn, table.rows)
            archive.save_stops(self.conn, retract, stops)
            archive.save_partition_snapshot(self.conn, T.GPS_PINGS, partition, e.next_offset, blob, self.epoch,
                                            track_points=points, alerts=e.pending_alerts)
        M.SNAPSHOTS.inc()
        if e.proc.n:
            M.STATE_BYTES.set(e.proc.live_bytes_per_vehicle())
        for ev in e.pending_acks:
            ev.ack()
        e.pending_acks.clear()
        e.pending_alerts.clear()
        e.unsaved_rows, e.unsaved_points, e.unsaved_retract, e.unsaved_stops = [], [], [], []
        e.dirty = False
        return table

    def drop(self, partitions) -> None:
        for p in list(partitions):
            if p in self.entries:
                try:
                    self.flush(p)
                except Exception:  # noqa: BLE001 - unacked records go to the next owner, who replays them
                    log.exception("partition %d: snapshot failed on revocation; its records are not acked", p)
                del self.entries[p]


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

    @app.agent(topic, name="gps-pings-agent")
    async def gps_agent(stream):
        async for event in stream.noack().events():
            await ctx.faults.wait_clear("gps-snapshot")   # paused while snapshots fail (streams/retry.py)
            msg = event.message
            entry = states.get(msg.partition)
            GPS_IN.inc()
            if msg.offset < entry.next_offset:
                M.REPLAY_SKIPPED.labels(topic=T.GPS_PINGS).inc()
                event.ack()
                continue
            raw = event.value
            try:
                cols = decode_batch(raw, max_bytes, years=years)
            except InvalidRecord as err:
                await send_dead_letter(dlq, T.GPS_PINGS, err.code, err.detail, raw)
                cols = None
            except (TypeError, ValueError, OverflowError) as err:
                # defence in depth (tests/test_fuzz_worker.py): a malformed batch must never kill the agent
                await send_dead_letter(dlq, T.GPS_PINGS, "bad_type", repr(err)[:300], raw)
                cols = None
            if cols is not None:
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
                    await publish_alerts(out.alerts, recv_ms=_recv_ms(cols), persist=False)
            entry.next_offset = msg.offset + 1
            entry.pending_acks.append(event)
            entry.dirty = True
            hw = app.consumer.highwater(msg.tp) if hasattr(app.consumer, "highwater") else None
            if hw is not None:
                M.LAG.labels(topic=T.GPS_PINGS, partition=str(msg.partition)).set(max(0, hw - msg.offset - 1))

    # The archive is the system of record; the compacted topic mirrors the newest absolute row per
    # vehicle-day for downstream consumers, throttled so a catching-up worker does not send 10 k rows/s.
    # (plate, day) → (row tuple, updated_at): the dict of a row is built only when it is published
    unpublished: dict[tuple[str, str], tuple] = {}
    last_publish = [time.monotonic()]
    publish_every = float(cfg["stream.stats_publish_interval_s"])

    interval = float(cfg["stream.snapshot_interval_s"])
    last_flush: dict[int, float] = {}

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
            table = ctx.faults.attempt("gps-snapshot", states.flush, p, default=None)
            if table is not None and table.rows:
                unpublished.update(zip(map(_ROW_KEY, table.rows), zip(table.rows, repeat(table.updated_at))))
        elif "gps-snapshot" in ctx.faults.active and not any(e.dirty for e in states.entries.values()):
            ctx.faults.clear("gps-snapshot")   # the failing partitions were revoked: nothing left to retry
        if unpublished and time.monotonic() - last_publish[0] >= publish_every:
            last_publish[0] = time.monotonic()
            rows = list(unpublished.values())
            unpublished.clear()
            for t, updated in rows:
                r = DayRows.row_dict(t, updated)
                await stats_topic.send(key=f"{r['plate']}|{r['day']}".encode(), value=orjson.dumps(r))
            M.MESSAGES.labels(topic=T.VEHICLE_DAY_STATS, direction="out").inc(len(rows))

    @app.on_partitions_revoked.connect
    async def _revoked(sender, revoked, **kwargs):
        states.drop({tp.partition for tp in revoked if tp.topic == T.GPS_PINGS})

    return states


def _recv_ms(cols):
    return int(cols.recv_ts.max()) if cols.recv_ts is not None else None


def _offline_clock(proc, wall_ms: int) -> int:
    """Live feeds use the wall clock (a silent fleet must still go offline); replays of old data use the
    data's own watermark so that accelerated replays give the same alerts as batch mode."""
    wm = proc.watermark_ms
    return wall_ms if wm and wm > wall_ms - 600_000 else wm
