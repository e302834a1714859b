"""WIM path: one reading per Kafka record (hundreds per second — Faust's per-event cost is fine here).

reading → ``models.overload.assess`` (the same function ``roadwatch assess wim`` calls) → archive
(idempotent upsert keyed by the deterministic passage/case ids) → evidence package (no-op if it exists)
→ ``overload-cases`` topic + an ``overload`` alert for operators. Counters for "一超四罚" are queries over
the archived cases, so a replay or restart can neither lose nor double-count a violation.

A reading's archive work (assess's look-ups, one transaction, the evidence package, the intercept task, the
overload alert's row) runs in one WIM thread with its own archive connection, one reading at a time in the
order the agent receives them: a wait for SQLite's write lock (the GPS commit thread holds it for one chunk
at a time) or for the disk then holds up only the WIM path, and the event loop goes on fetching, sending
and ticking meanwhile. The agent is a pipeline: it parses the next readings while the thread stores earlier
ones (at most ``stream.wim_ahead``), and their verdicts are published and their events acknowledged in
order, each only after it is stored.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import partial

import orjson

from roadwatch.models.mobile import enforcement_points
from roadwatch.models.overload import assess
from roadwatch.models.permits import PermitIndex, load_permits
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

SEVERITY = {"fine": "high", "review": "medium", "warning": "low"}


def overload_alert(verdict: dict) -> dict:
    """The operator-facing alert for a verdict that needs attention (one per case: id = case id)."""
    return {
        "alert_id": f"overload-{verdict['case_id']}", "type": "overload", "plate": verdict["plate"],
        "start_ts": verdict["ts"], "end_ts": verdict["ts"], "severity": SEVERITY.get(verdict["action"], "low"),
        "lat": verdict.get("station_lat"), "lon": verdict.get("station_lon"), "late": False,
        "details": {k: verdict.get(k) for k in ("station_id", "action", "gross_kg", "limit_kg", "excess_kg",
                                                 "excess_pct", "fine_yuan", "review_reason", "case_id")},
    }


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
        self.permits = PermitIndex(load_permits(ctx.registry_path))
        # 布控: targets are the 超限检测站 and the mobile teams deployed at the passage's time (models/mobile.py)
        self.intercepts = InterceptStore(conn, ctx.cfg, ctx.registry, track=self.track,
                                         mobile_points=partial(enforcement_points, ctx.registry))

    def reset(self) -> None:
        """After a failed attempt: end the transaction it may have left open, so the retry starts clean."""
        rollback_quietly(self.store.conn)

    def handle(self, reading, chain_id: str) -> dict:
        verdict = assess(reading, self.ctx.registry, self.ctx.cfg, counters=self.counters, track=self.track,
                         driver=self.drivers, passages=self.store, permits=self.permits)
        st = verdict.get("station") or {}      # a mobile unit's position is its deployment's (models/mobile.py)
        if st.get("lat") is not None:
            verdict.setdefault("station_lat", st["lat"])
            verdict.setdefault("station_lon", st["lon"])
        self.store.record(verdict, reading=reading, evidence_dir=self.evidence_dir, data_dir=self.ctx.data_dir,
                          chain_id=chain_id)
        return verdict

    def intercept(self, verdict: dict, reading) -> dict | None:
        """The intercept task this passage opened or updated (models/intercept.py), stored; None below the
        intercept threshold. A replayed passage returns its stored task (re-published, same id)."""
        return self.intercepts.on_verdict(verdict, speed_kmh=float(reading.speed_kmh))


def install(app, ctx, publish_alerts) -> WimHandler:
    """Wire the WIM agent and timers. Returns the event loop's handler (timers, notices, driver events); the
    agent's readings go to a second handler living in the WIM thread (module docstring)."""
    handler = WimHandler(ctx)
    wim_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wim")
    in_thread = wim_thread.submit(WimHandler, ctx).result()     # opens the thread's own archive connection
    # as the loop's: SQLite's log checkpoint inside a WIM commit copied the GPS commits' megabytes (and synced
    # them) while the readings queued; the GPS commit thread checkpoints (streams/gps.py)
    wim_thread.submit(in_thread.store.conn.defer_checkpoints).result()

    loop: list = []                    # the worker's event loop, once the agent runs
    topic = ctx.topics[T.WIM_READINGS]
    dlq = ctx.topics[T.DEAD_LETTER]
    cases_topic = ctx.topics[T.OVERLOAD_CASES]
    tasks_topic = ctx.topics[T.INTERCEPT_TASKS]
    max_bytes = int(ctx.cfg["stream.max_record_bytes"])
    years = plausible_years(ctx.cfg)
    msgs_in = M.MESSAGES.labels(topic=T.WIM_READINGS, direction="in")
    ahead = int(ctx.cfg["stream.wim_ahead"])

    def until_ok(fn, *args):
        """In the WIM thread: ``fn`` until it succeeds, as ``Faults.retry_until_ok`` (an internal fault
        pauses the WIM path and retries the same reading with back-off; ``InvalidRecord`` passes through).
        The readings behind it wait: the thread takes them in order."""
        failed = False
        while True:
            try:
                out = fn(*args)
            except InvalidRecord:
                raise
            except Exception as err:  # noqa: BLE001 - an internal fault: pause and retry, never drop the record
                in_thread.reset()
                failed = True
                try:
                    delay = asyncio.run_coroutine_threadsafe(_report(err), loop[0]).result(timeout=30)
                except Exception:  # noqa: BLE001 - the loop is stopping: the worker ends, unacked readings replay
                    delay = 1.0
                time.sleep(delay)
                continue
            if failed:
                loop[0].call_soon_threadsafe(ctx.faults.clear, "wim")
            return out

    async def _report(err) -> float:
        return ctx.faults.report("wim", err).delay_s

    def store(reading, chain_id: str):
        """In the WIM thread: the verdict stored (case, evidence), its intercept task and its alert."""
        verdict = until_ok(in_thread.handle, reading, chain_id)
        if verdict.get("conflict") or verdict["action"] == "none" or verdict.get("duplicate_of"):
            return verdict, None, None
        task = until_ok(in_thread.intercept, verdict, reading)
        alert = overload_alert(verdict)
        until_ok(upsert_alerts, in_thread.store.conn, [alert])
        return verdict, task, alert

    async def publish(event, reading, stored) -> None:
        """On the loop, in the order the readings came: the verdict's outputs, then the event's ack."""
        try:
            verdict, task, alert = await stored
        except InvalidRecord as err:
            await send_dead_letter(dlq, T.WIM_READINGS, err.code, err.detail, event.value)
            return
        if verdict.get("conflict"):
            # the same reading re-sent with other values: kept beside the first for review, no new outcome
            M.CASES.labels(action="reading_conflict").inc()
            return
        M.CASES.labels(action=verdict["action"]).inc()
        M.LATENCY.labels(path="wim").observe(max(0.0, time.time() - parse_ts(reading.ts).timestamp()))
        if alert is None:
            return
        await cases_topic.send(key=verdict["case_id"].encode(), value=orjson.dumps(verdict))
        M.MESSAGES.labels(topic=T.OVERLOAD_CASES, direction="out").inc()
        await ctx.faults.retry_until_ok("wim", publish_alerts, [alert], None, False)   # archived in the thread
        if ctx.live is not None:
            ctx.live.publish_case(verdict)
        if task is not None:
            await tasks_topic.send(key=task["task_id"].encode(), value=orjson.dumps(task))
            M.MESSAGES.labels(topic=T.INTERCEPT_TASKS, direction="out").inc()
            M.INTERCEPT_TASKS.labels(revision="first" if task["revision"] == 1 else "update").inc()
            if ctx.live is not None:
                ctx.live.publish("intercept", task)

    async def finish(queue: asyncio.Queue) -> None:
        while True:
            event, reading, stored = await queue.get()
            if stored is not None:
                await publish(event, reading, stored)
            event.ack()                    # after it is stored and published: the offset never passes it

    @app.agent(topic, name="wim-readings-agent")
    async def wim_agent(stream):
        # A pipeline, in order: the loop parses reading k+1 while the WIM thread stores reading k, and
        # ``finish`` publishes and acknowledges them in the order they came (at most ``stream.wim_ahead``
        # in flight). Events are acknowledged by hand, only after their verdict is stored and published.
        loop[:] = [asyncio.get_running_loop()]
        queue: asyncio.Queue = asyncio.Queue(maxsize=ahead)
        finisher = asyncio.ensure_future(finish(queue))
        finisher.add_done_callback(lambda f: f.cancelled() or f.exception() is None
                                   or log.error("publishing WIM verdicts failed", exc_info=f.exception()))
        try:
            async for event in stream.noack().events():
                if finisher.done():
                    finisher.result()       # it failed: the agent fails with it (unacked events replay)
                raw = event.value
                msgs_in.inc()
                msg = event.message
                hw = app.consumer.highwater(msg.tp) if hasattr(app.consumer, "highwater") else None
                if hw is not None:
                    M.LAG.labels(topic=T.WIM_READINGS, partition=str(msg.partition)).set(max(0, hw - msg.offset - 1))
                try:
                    reading = parse_wim_reading(raw, max_bytes, years=years)
                except InvalidRecord as err:
                    await send_dead_letter(dlq, T.WIM_READINGS, err.code, err.detail, raw)
                    await queue.put((event, None, None))       # acknowledged in turn
                    continue
                stored = asyncio.wrap_future(wim_thread.submit(store, reading, f"p{msg.partition}"))
                await queue.put((event, reading, stored))
        finally:
            finisher.cancel()

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
