"""Assemble the worker: Faust app + agents + console/metrics web server + monthly report timer."""
from __future__ import annotations

import gc
import logging
import sys
import time
from pathlib import Path

import orjson

from roadwatch.models.config import Config
from roadwatch.models.records import InvalidRecord, parse_driver_event, plausible_years
from roadwatch.models.registry import Registry, load_registry

from . import gps, metrics as M, topics as T, wim
from .app import WorkerContext, create_app, declare_topics
from . import archive
from .deadletter import send_dead_letter
from .keyed_sender import KeyedBatchSender
from .retry import Faults

log = logging.getLogger("roadwatch.worker")
ALERTS_OUT = M.MESSAGES.labels(topic=T.ALERTS, direction="out")
READY_LINE = "roadwatch worker ready"


def build_worker(cfg: Config, bootstrap: str, registry_path: str | None, app_id: str = "roadwatch", *,
                 registry: Registry | None = None):
    """``registry``: the file at ``registry_path`` loaded already (``roadwatch worker`` checks it before anything
    starts, and a province's fleet takes seconds to load); None loads it here."""
    if registry is None:
        registry = load_registry(registry_path)
    data_dir = Path(cfg["paths.data_dir"])
    data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(cfg, bootstrap, app_id)
    ctx = WorkerContext(cfg=cfg, registry=registry, registry_path=registry_path, data_dir=data_dir)
    ctx.topics = declare_topics(app, cfg)
    ctx.faults = Faults.from_config(cfg)
    conn = archive.open_archive(cfg)
    log.info("archive: %s %s (schema version %d)", conn.backend, conn.target, archive.current_version(conn))
    # alerts leave in one record batch per partition per call (streams/keyed_sender.py), same keys and
    # partitions as a per-record send, at a tenth of its CPU
    alert_sender = KeyedBatchSender(
        bootstrap, T.ALERTS, linger_ms=int(cfg["stream.producer_linger_ms"]),
        max_request_size=int(cfg["stream.producer_max_request_bytes"]),
        max_queued=int(cfg["stream.alerts_queued_max"]), faults=ctx.faults, component="alerts-publish")

    async def publish_alerts(alerts: list[dict], recv_ms: int | None, persist: bool = True) -> None:
        """To the alerts topic and the console now; to the archive now, or (``persist=False``) where the
        caller keeps them: the GPS path in the partition's next snapshot transaction (a crash before it
        replays the same alert ids), the WIM path in its batch's transaction, with their cases."""
        if persist:
            archive.upsert_alerts(conn, alerts)
        now = time.time()
        live = ctx.live
        await alert_sender.send([(a["plate"].encode(), orjson.dumps(a)) for a in alerts])
        by_type: dict[str, int] = {}
        for a in alerts:
            by_type[a["type"]] = by_type.get(a["type"], 0) + 1
            if live is not None:
                live.publish_alert(a)
        for type_, count in by_type.items():       # metric children: one lookup per type and batch
            M.ALERTS.labels(type=type_).inc(count)
        ALERTS_OUT.inc(len(alerts))
        if recv_ms:
            M.LATENCY.labels(path="gps").observe(max(0.0, now - recv_ms / 1000))

    gps.install(app, ctx, publish_alerts)
    wim_handler = wim.install(app, ctx, publish_alerts)
    from .notices import install as install_notices
    install_notices(app, ctx, wim_handler.store)
    _install_driver_events(app, ctx, wim_handler)
    _install_track_pruning(app, ctx, wim_handler)
    _install_web(app, ctx)
    _install_reports(app, ctx)
    _install_broker_watch(app, bootstrap)   # reliability fix: a frozen broker was silent in the logs
    _install_gc_freeze(app, float(cfg["stream.gc_freeze_s"]))

    @app.on_before_shutdown.connect
    async def _stop_senders(sender, **kwargs):
        await alert_sender.aclose()

    @app.on_partitions_assigned.connect
    async def _ready(sender, assigned, **kwargs):
        ctx.assigned = True
        announce_ready(ctx)

    return app, ctx


def announce_ready(ctx) -> None:
    """Print the ready line once both the first partition assignment and the web server are up."""
    if ctx.ready or not (ctx.assigned and ctx.web_up):
        return
    ctx.ready = True
    host, port = ctx.web_address or (ctx.cfg["web.host"], ctx.cfg["web.port"])
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"{READY_LINE}: console http://{host}:{port}/ , metrics http://{host}:{port}/metrics", flush=True)


def _install_driver_events(app, ctx, wim_handler) -> None:
    topic = ctx.topics[T.DRIVER_EVENTS]
    dlq = ctx.topics[T.DEAD_LETTER]

    @app.agent(topic, name="driver-events-agent")
    async def driver_events(stream):
        async for event in stream.events():
            raw = event.value
            M.MESSAGES.labels(topic=T.DRIVER_EVENTS, direction="in").inc()
            try:
                ev = parse_driver_event(raw, years=plausible_years(ctx.cfg))
            except InvalidRecord as err:
                await send_dead_letter(dlq, T.DRIVER_EVENTS, err.code, err.detail, raw)
                continue
            # an internal fault pauses and retries this event (streams/retry.py), never drops it
            await ctx.faults.retry_until_ok("driver-events", wim_handler.drivers.record_driver_event,
                                            ev.plate, ev.ts, ev.event, ev.driver_id)


def _install_gc_freeze(app, every_s: float) -> None:
    """Keep the long-lived objects out of the cyclic collector's full scans: they held the event loop (and
    WIM verdicts) 55-125 ms per full collection. Frozen objects are still freed when their last reference
    goes; only cycles among them wait for ``gc.unfreeze``. Same technique as the gateway's."""

    @app.task
    async def gc_freeze_after_start():
        gc.collect()
        gc.freeze()

    if every_s > 0:
        @app.timer(every_s)
        async def gc_freeze():
            gc.freeze()


def _install_web(app, ctx) -> None:
    from .web_server import start_web

    @app.task
    async def web():
        await start_web(app, ctx)
        ctx.web_up = True
        announce_ready(ctx)


def _install_track_pruning(app, ctx, wim_handler) -> None:
    """Stop events serve the source-site look-back, track samples the console's playback: keep
    ``track.keep_h`` (at least twice the look-back) of both, by data time."""
    keep_ms = int(max(2 * float(ctx.cfg["source.lookback_h"]), float(ctx.cfg["track.keep_h"])) * 3_600_000)

    @app.timer(600.0)
    async def prune_tracks():
        states = ctx.gps_state
        marks = [e.proc.watermark_ms for e in states.entries.values()] if states else []
        if marks and max(marks):
            wim_handler.track.prune_track_points(max(marks) - keep_ms)


def _install_reports(app, ctx) -> None:
    from .monthly import close_months

    @app.timer(60.0)
    async def monthly():
        try:
            await close_months(ctx)
        except Exception as err:  # noqa: BLE001 - never stops the stream; retried on the next tick
            log.exception("monthly report failed")
            ctx.faults.report("month-close", err)      # /healthz says why until a run succeeds
        else:
            ctx.faults.clear("month-close")


# --- broker watch (reliability fix, tests/test_reliability_outage.py) ----------------------------------
# A broker that hangs (SIGSTOP, GC pause, network black hole) leaves the Kafka clients waiting on open
# connections without a single log line, so operators saw a silent, idle worker. Probe the broker with a
# Kafka ApiVersions request of our own and say when it stops answering and when it answers again.
BROKER_PROBE_S = 2.0          # probe interval and answer timeout (operations, not a legal value)


async def broker_answers(bootstrap: str, timeout: float = BROKER_PROBE_S) -> bool:
    """True when any bootstrap server answers a Kafka ApiVersions v0 request within ``timeout``."""
    import asyncio
    import struct
    client = b"roadwatch-watch"
    req = struct.pack(">hhih", 18, 0, 0x7277, len(client)) + client
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        except (OSError, ValueError, asyncio.TimeoutError):
            continue
        try:
            writer.write(struct.pack(">i", len(req)) + req)
            await writer.drain()
            head = await asyncio.wait_for(reader.readexactly(8), timeout)
            if struct.unpack(">ii", head)[1] == 0x7277:
                return True
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
    return False


def _install_broker_watch(app, bootstrap: str) -> None:
    state = {"down_since": None}

    @app.task
    async def broker_watch():
        import asyncio
        while True:
            await asyncio.sleep(BROKER_PROBE_S)
            ok = await broker_answers(bootstrap)
            now = time.monotonic()
            if not ok and state["down_since"] is None:
                state["down_since"] = now
                log.warning("Kafka broker %s is not answering (no ApiVersions reply within %.0f s): consumption "
                            "is paused; the worker keeps running and resumes where it stopped", bootstrap,
                            BROKER_PROBE_S)
            elif ok and state["down_since"] is not None:
                log.warning("Kafka broker %s is answering again after %.1f s without replies: catching up",
                            bootstrap, now - state["down_since"])
                state["down_since"] = None


def run_worker(cfg: Config, bootstrap: str, registry_path: str | None, loglevel: str = "warning", *,
               registry: Registry | None = None) -> int:
    import faust
    app, _ctx = build_worker(cfg, bootstrap, registry_path, registry=registry)
    # print() stays plain stdout (faust would log it as a WARNING); no colours or cursor codes off a TTY
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, stdout=sys.stdout, stderr=sys.stderr,
                          redirect_stdouts=False)
    if not sys.stdout.isatty():
        worker.spinner = None          # its cursor-hiding escape codes would land in logs and pipes
    try:
        worker.execute_from_commandline()
    except SystemExit as e:
        return int(e.code or 0)
    return 0
