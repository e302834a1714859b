"""The Faust application: settings tuned for the embedded broker and for batch-per-record inputs.

Agents are thin wiring (streams/wim.py, streams/gps.py, streams/driver_events.py): they parse, call the
pure rules in models/ and geo/, and write outputs. ``WorkerContext`` carries what they share.
"""
from __future__ import annotations

import logging
import os
import types
from dataclasses import dataclass, field
from pathlib import Path

import aiokafka
import faust
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka

from roadwatch.models.config import Config
from roadwatch.models.registry import Registry

from . import faust_drain
from . import topics as T

log = logging.getLogger("roadwatch")

_FETCH_MAX_WAIT_MS = 100


class _Consumer(aiokafka.AIOKafkaConsumer):
    """Faust hard-codes ``fetch_max_wait_ms=1500``; with one broker node and uneven partitions that stalls
    fetches (740 k → 260 k pings/s, docs/performance.md). Use ``stream.fetch_max_wait_ms``."""

    def __init__(self, *args, **kwargs):
        if kwargs.get("fetch_max_wait_ms") == 1500:
            kwargs["fetch_max_wait_ms"] = _FETCH_MAX_WAIT_MS
        super().__init__(*args, **kwargs)


# Only Faust's driver module sees the patched class; the rest of the process keeps aiokafka as is.
faust_aiokafka.aiokafka = types.SimpleNamespace(**{**vars(aiokafka), "AIOKafkaConsumer": _Consumer})
# and each fetched record reaches the agents without four asyncio tasks (streams/faust_drain.py)
faust_drain.install()


@dataclass
class WorkerContext:
    cfg: Config
    registry: Registry
    registry_path: str | None
    data_dir: Path
    topics: dict = field(default_factory=dict)
    live: object | None = None          # streams.web.live.LiveHub (console push)
    gps_state: object | None = None     # streams.gps.PartitionStates
    ready: bool = False
    assigned: bool = False              # first partition assignment done
    web_up: bool = False                # console / metrics server listening
    faults: object | None = None        # streams.retry.Faults: internal faults pausing a component
    web_address: tuple | None = None    # (host, port) the console really listens on


class NoTablesManager(TableManager):
    """Faust's table manager waits a second at start for tables to be declared, in every worker start.
    roadwatch declares no Faust table (its state lives in the archive: streams/gps.py, streams/cases.py),
    so this one starts at once; with a table declared it starts as Faust's does."""

    async def on_start(self) -> None:
        if len(self):
            await super().on_start()
            return
        await self._update_channels()
        await self.recovery.start()


def create_app(cfg: Config, bootstrap: str, app_id: str = "roadwatch") -> faust.App:
    global _FETCH_MAX_WAIT_MS
    _FETCH_MAX_WAIT_MS = int(cfg["stream.fetch_max_wait_ms"])
    session = float(cfg["stream.session_timeout_s"])
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        autodiscover=False,
        web_enabled=False,                 # the console runs its own aiohttp server (streams/web_server.py)
        topic_partitions=int(cfg["stream.partitions"]),
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
        # The embedded broker holds each JoinGroup for ceil(session/2) s: short sessions → ready in seconds.
        broker_session_timeout=session,
        broker_heartbeat_interval=float(cfg["stream.heartbeat_interval_s"]),
        broker_request_timeout=max(30.0, session + 5),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        # every producer of the worker (Faust's and streams/keyed_sender.py's) batches alike
        producer_linger_ms=int(cfg["stream.producer_linger_ms"]),
        producer_max_request_size=int(cfg["stream.producer_max_request_bytes"]),
        stream_wait_empty=False,
        datadir=str(Path(cfg["paths.data_dir"]) / "faust"),
        logging_config=None,
        TableManager=NoTablesManager,
    )
    return app


def declare_topics(app: faust.App, cfg: Config) -> dict:
    n = int(cfg["stream.partitions"])
    out = {}
    for spec in T.TOPICS:
        out[spec.name] = app.topic(spec.name, key_type=bytes, value_type=bytes, key_serializer="raw",
                                   value_serializer="raw", partitions=T.partitions_for(spec, n))
    return out


def bootstrap_from_env() -> str | None:
    return os.environ.get("ROADWATCH_KAFKA")
