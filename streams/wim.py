"""WIM path: one reading per Kafka record (hundreds per second — Faust's per-event cost is fine here).

reading → ``models.overload.assess`` (the same function ``roadwatch assess wim`` calls) → archive
(idempotent upsert keyed by the deterministic passage/case ids) → evidence package (no-op if it exists)
→ ``overload-cases`` topic + an ``overload`` alert for operators. Counters for "一超四罚" are queries over
the archived cases, so a replay or restart can neither lose nor double-count a violation.

The agent takes the readings that are already waiting, up to ``stream.wim_batch_max``; when none are, it
waits once ``stream.wim_batch_linger_ms`` for the next ones (a lone reading is a batch of one). It stores
them in order in one archive transaction: a transaction's fixed costs (the write lock, the commit's log
pages) are paid once per batch, and a backlog is worked off in larger batches. Within it, the passages and
readings its readings could meet are fetched once and its own rows inserted together at its end
(``CaseStore.fetch_batch``, ``streams/cases.py`` ``_BatchRows``): a statement on the event loop costs
several times its SQL, so there are as few as the readings' outcomes allow. The cases' operator alerts
are archived in that transaction, and their evidence packages are written on a thread meanwhile
(``CaseStore.package_batch``). Verdicts, alerts and intercept tasks go out only after the commit; the
readings' offsets are acknowledged only after that. A fault anywhere rolls the whole batch back and repeats
it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from functools import partial

import orjson

from roadwatch.models.mobile import enforcement_points
from roadwatch.models.overload import assess, opens_case, overload_alert
from roadwatch.models.permits import PermitIndex, registry_permits
from roadwatch.models.records import InvalidRecord, parse_ts, parse_wim_reading, plausible_years

from . import metrics as M
from . import topics as T
from .archive import open_archive, upsert_alerts
from .archive.backend import rollback_quietly
from .cases import ArchiveCounters, ArchiveDrivers, ArchiveTrack, CaseStore
from .deadletter import send_dead_letter
from .archive.intercept import mark_outcomes_published, unpublished_outcomes
from .intercept import InterceptStore, beijing_month, export_metrics, month_summary

log = logging.getLogger("roadwatch.wim")

# labelled metric children bound once (as streams/gps.py): ``.labels()`` is a lock and a dict look-up a call
WIM_IN = M.MESSAGES.labels(topic=T.WIM_READINGS, direction="in")
WIM_LATENCY = M.LATENCY.labels(path="wim")
CASES_OUT = M.MESSAGES.labels(topic=T.OVERLOAD_CASES, direction="out")
_VERDICTS: dict = {}            # action → its roadwatch_cases_total child


def _verdict_counter(action: str):
    c = _VERDICTS.get(action)
    if c is None:
        c = _VERDICTS[action] = M.CASES.labels(action=action)
    return c


class WimHandler:
    """Everything one reading needs, independent of Faust (also used by tests and the bench)."""

    def __init__(self, ctx):
        self.ctx = ctx
        conn = open_archive(ctx.cfg.archive_path)
        self.store = CaseStore(conn, ctx.cfg, evidence_dir=ctx.data_dir / "evidence", data_dir=ctx.data_dir,
                               watch_late_data=True)
        self.counters = ArchiveCounters(conn)
        self.track = ArchiveTrack(conn)
        self.drivers = ArchiveDrivers(conn)
        self.evidence_dir = ctx.data_dir / "evidence"
        self.permits = PermitIndex(registry_permits(ctx.registry))
        # 布控: targets are the 超限检测站 and the mobile teams deployed at the passage's time (models/mobile.py)
        self.intercepts = InterceptStore(conn, ctx.cfg, ctx.registry, track=self.track,
                                         mobile_points=partial(enforcement_points, ctx.registry))

    def reset(self) -> None:
        """After a failed attempt: end the transaction it may have left open, so the retry starts clean."""
        self.store.forget_noted()
        rollback_quietly(self.store.conn)

    def handle(self, reading, chain_id: str) -> dict:
        return self._handle(reading, chain_id)[0]

    def _handle(self, reading, chain_id: str) -> tuple[dict, bool]:
        """The verdict, stored, and whether it created its case."""
        verdict = assess(reading, self.ctx.registry, self.ctx.cfg, counters=self.counters, track=self.track,
                         driver=self.drivers, passages=self.store, permits=self.permits)
        st = verdict.get("station") or {}      # a mobile unit's position is its deployment's (models/mobile.py)
        if st.get("lat") is not None:
            verdict.setdefault("station_lat", st["lat"])
            verdict.setdefault("station_lon", st["lon"])
        created = self.store.record(verdict, reading=reading, evidence_dir=self.evidence_dir,
                                    data_dir=self.ctx.data_dir, chain_id=chain_id)
        return verdict, created

    def intercept(self, verdict: dict, reading, new_case: bool = False) -> dict | None:
        """The intercept task this passage opened or updated (models/intercept.py), stored; None below the
        intercept threshold. A replayed passage returns its stored task (re-published, same id).
        ``new_case``: ``handle`` created the case in this transaction."""
        return self.intercepts.on_verdict(verdict, speed_kmh=float(reading.speed_kmh), new_case=new_case)

    def handle_batch(self, items: list[tuple]) -> list[tuple[dict, dict | None]]:
        """``(reading, chain_id)`` in order → ``(verdict, intercept task or None)`` each, all stored in one
        archive transaction (all or none: the caller repeats a failed batch whole, idempotently)."""
        out = []
        # each package's files are written on a thread meanwhile, and on disk before the commit; on PostgreSQL
        # the statements go out pipelined (an insert waits for no answer of its own: backend.py ``pipelined``)
        with self.store.conn.transaction(), self.store.conn.pipelined(), self.store.package_batch():
            self.store.fetch_batch([reading for reading, _ in items])
            for reading, chain_id in items:
                verdict, created = self._handle(reading, chain_id)
                task = self.intercept(verdict, reading, created) if opens_case(verdict) else None
                out.append((verdict, task))
            # the operators' alerts are archived with their cases: in the same commit, never one without the other
            upsert_alerts(self.store.conn, [overload_alert(v) for v, _ in out if opens_case(v)])
        return out


def install(app, ctx, publish_alerts) -> WimHandler:
    handler = WimHandler(ctx)
    topic = ctx.topics[T.WIM_READINGS]
    dlq = ctx.topics[T.DEAD_LETTER]
    cases_topic = ctx.topics[T.OVERLOAD_CASES]
    tasks_topic = ctx.topics[T.INTERCEPT_TASKS]
    max_bytes = int(ctx.cfg["stream.max_record_bytes"])
    years = plausible_years(ctx.cfg)
    batch_max = int(ctx.cfg["stream.wim_batch_max"])
    linger_s = float(ctx.cfg["stream.wim_batch_linger_ms"]) / 1000

    @app.agent(topic, name="wim-readings-agent")
    async def wim_agent(stream):
        # manual acks: a reading is acknowledged only after the transaction that stored its batch
        readings = stream.noack()
        empty = getattr(readings.channel, "empty", None)
        batch: list = []
        lingered = False
        async for event in readings.events():
            batch.append(event)
            if len(batch) < batch_max and empty is not None:
                if not empty():
                    continue               # more readings are here already: into this batch
                if linger_s and not lingered:
                    lingered = True        # a moment for the next readings: fewer, larger transactions
                    await asyncio.sleep(linger_s)
                    if not empty():
                        continue
            await handle_events(batch)
            for ev in batch:
                ev.ack()
            batch, lingered = [], False

    async def handle_events(events: list) -> None:
        """One batch: parse (dead-letter what is not a reading), store in one transaction, then publish."""
        items = []
        last = {}                  # partition → its last record in the batch (the lag gauge wants only that)
        for event in events:
            raw = event.value
            WIM_IN.inc()
            msg = event.message
            last[msg.partition] = msg
            try:
                items.append((parse_wim_reading(raw, max_bytes, years=years), f"p{msg.partition}"))
            except InvalidRecord as err:
                await send_dead_letter(dlq, T.WIM_READINGS, err.code, err.detail, raw)
        for partition, msg in last.items():
            hw = app.consumer.highwater(msg.tp) if hasattr(app.consumer, "highwater") else None
            if hw is not None:
                M.LAG.labels(topic=T.WIM_READINGS, partition=str(partition)).set(max(0, hw - msg.offset - 1))
        if not items:
            return
        # an internal fault (disk full, database error, a bug) pauses here and retries the same readings
        # (streams/retry.py): they are never dead-lettered and their offsets are not committed
        t0 = time.time()
        stamps = [parse_ts(reading.ts).timestamp() for reading, _ in items]
        for ts in stamps:
            M.WIM_WAIT.observe(max(0.0, t0 - ts))
        M.WIM_BATCH_READINGS.observe(len(items))
        done = await ctx.faults.retry_until_ok("wim", handler.handle_batch, items, on_error=handler.reset)
        t1 = time.time()
        M.WIM_BATCH_SECONDS.labels(part="store").observe(t1 - t0)
        alerts = []
        for ts, (verdict, task) in zip(stamps, done):
            if verdict.get("conflict"):
                # the same reading re-sent with other values: kept beside the first for review, no new outcome
                _verdict_counter("reading_conflict").inc()
                continue
            _verdict_counter(verdict["action"]).inc()
            WIM_LATENCY.observe(max(0.0, time.time() - ts))
            if not opens_case(verdict):
                continue
            await cases_topic.send(key=verdict["case_id"].encode(), value=orjson.dumps(verdict))
            CASES_OUT.inc()
            alerts.append(overload_alert(verdict))
            if ctx.live is not None:
                ctx.live.publish_case(verdict)
            if task is not None:
                await tasks_topic.send(key=task["task_id"].encode(), value=orjson.dumps(task))
                M.MESSAGES.labels(topic=T.INTERCEPT_TASKS, direction="out").inc()
                M.INTERCEPT_TASKS.labels(revision="first" if task["revision"] == 1 else "update").inc()
                if ctx.live is not None:
                    ctx.live.publish("intercept", task)
        if alerts:          # archived with their cases (handle_batch): sent here
            await ctx.faults.retry_until_ok("wim", publish_alerts, alerts, None, False)
        M.WIM_BATCH_SECONDS.labels(part="publish").observe(time.time() - t1)

    @app.timer(float(ctx.cfg["case.resolve_interval_s"]))
    async def resolve_late_data():
        """Cases waiting for GPS tracks / card events from other partitions: resolve or amend them."""
        try:
            for amended in handler.store.resolve_pending(ctx.registry):
                log.info("case %s amended from late data: %s", amended["case_id"],
                         "; ".join(ch["note"] for ch in amended["changes"]))
        except Exception as err:  # noqa: BLE001 - retried at the next tick; the pending rows stay
            log.exception("re-resolving pending cases failed; retried in %s s", ctx.cfg["case.resolve_interval_s"])
            rollback_quietly(handler.store.conn)
            ctx.faults.report("case-resolve", err)     # /healthz says why until a tick succeeds
        else:
            ctx.faults.clear("case-resolve")

    @app.timer(float(ctx.cfg["intercept.outcome_publish_s"]))
    async def publish_outcomes():
        """Outcomes recorded by officers (console, CLI: other processes) go out on intercept-tasks too, so a
        指挥调度 platform sees the task closed; marked only after the send (at least once, same task id)."""
        try:
            tasks = unpublished_outcomes(handler.store.conn)
            for task in tasks:
                sent = await tasks_topic.send(key=task["task_id"].encode(), value=orjson.dumps(task))
                await sent                                      # delivered before it is marked
                M.MESSAGES.labels(topic=T.INTERCEPT_TASKS, direction="out").inc()
            if tasks:
                mark_outcomes_published(handler.store.conn, [t["task_id"] for t in tasks])
        except Exception:  # noqa: BLE001 - retried at the next tick; nothing is marked
            log.exception("publishing intercept outcomes failed")
            rollback_quietly(handler.store.conn)

    @app.timer(float(ctx.cfg["intercept.metrics_interval_s"]))
    async def intercept_metrics():
        """This month's 拦截率 / 查处率 gauges, counted from the archive as the monthly report counts them."""
        try:
            now = datetime.now(timezone.utc)
            export_metrics(month_summary(handler.store.conn, ctx.cfg, ctx.registry, beijing_month(now), now))
        except Exception:  # noqa: BLE001 - gauges only: the next tick tries again
            log.exception("refreshing the intercept gauges failed")
            rollback_quietly(handler.store.conn)

    return handler
