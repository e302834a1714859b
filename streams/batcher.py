"""Per-partition ping batching for the ``gps-pings`` topic, and the producer side (publishers).

Faust pays ~0.25 ms per record whatever its size (docs/performance.md), so producers send one
columnar record (``models.pingbatch``: Arrow IPC or JSON by ``stream.wire_format``) per partition holding up to ``stream.batch_max_pings`` pings, or
whatever the partition collected within ``stream.batch_max_ms``. The partition is Kafka's default
partitioner on the raw UTF-8 plate bytes, so a batch never mixes partitions and every consumer keyed by
plate agrees with it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any, Callable, Iterable, Protocol

try:        # Kafka's murmur2 in C (_kafkahash.c): ~0.1 µs a key against kafka-python's ~6 µs
    from ._kafkahash import murmur2
except ImportError:                                          # not built (no compiler when installed)
    from kafka.partitioner.default import murmur2

from roadwatch.models.config import Config
from roadwatch.models.pingarrow import encode_arrow_rows
from roadwatch.models.pingbatch import WIRE_FORMATS, encode_columns
from roadwatch.models.records import iso_to_epoch_ms

log = logging.getLogger(__name__)

SendFn = Callable[[int, bytes, bytes], Any]   # (partition, key, value)


def partition_for(plate: str, partitions: int) -> int:
    """Kafka's DefaultPartitioner for a keyed record: ``(murmur2(key) & 0x7fffffff) % n``."""
    return (murmur2(plate.encode("utf-8")) & 0x7FFFFFFF) % partitions


class PingBatcher:
    """Collects interchange pings per partition; hands ``(partition, key, value)`` to ``send`` when a
    partition holds ``max_pings`` pings (at ``add``) or its oldest ping has waited ``max_ms`` (at ``poll``).
    ``send`` may be ``lambda p, k, v: producer.send(topic, key=k, value=v, partition=p)``; if it raises,
    the batch is put back and the exception propagates (nothing is lost silently)."""

    def __init__(self, send: SendFn, partitions: int, max_pings: int = 500, max_ms: float = 200,
                 clock: Callable[[], float] = time.monotonic, wire: str = "arrow"):
        if partitions < 1 or max_pings < 1 or max_ms < 0:
            raise ValueError("partitions and max_pings must be ≥ 1, max_ms ≥ 0")
        if wire not in WIRE_FORMATS:
            raise ValueError(f"wire format {wire!r} is not one of {WIRE_FORMATS}")
        self.wire = wire
        self.send = send
        self.partitions = partitions
        self.max_pings = max_pings
        self.max_s = max_ms / 1000.0
        self.clock = clock
        self._pings: dict[int, list[dict]] = {}
        self._since: dict[int, float] = {}     # partition → arrival time of its oldest pending ping
        self._pcache: dict[str, int] = {}
        self._typed = True                     # every row queued since the last flush came through add_row
        self.pending = 0
        self.last_batch_size = 0               # pings in the record being sent (readable inside ``send``)
        self.records_sent = 0
        self.pings_sent = 0

    @classmethod
    def from_config(cls, cfg: Config, send: SendFn, clock: Callable[[], float] = time.monotonic) -> "PingBatcher":
        return cls(send, cfg["stream.partitions"], cfg["stream.batch_max_pings"], cfg["stream.batch_max_ms"], clock,
                   cfg["stream.wire_format"])

    def partition(self, plate: str) -> int:
        p = self._pcache.get(plate)
        if p is None:
            if len(self._pcache) > 200_000:
                self._pcache.clear()
            p = self._pcache[plate] = partition_for(plate, self.partitions)
        return p

    def add(self, ping: dict, now: float | None = None) -> int:
        """Queue one ping; returns the number of records sent (0 or 1)."""
        p = self.partition(ping["plate"])
        self._typed = False
        buf = self._pings.get(p)
        if buf is None:
            buf = self._pings[p] = []
            self._since[p] = self.clock() if now is None else now
        buf.append(ping)
        self.pending += 1
        if len(buf) >= self.max_pings:
            self._flush_partition(p)
            return 1
        return 0

    def add_row(self, row: tuple, now: float | None = None) -> int:
        """Queue one ping given as a tuple in ``ROW_FIELDS`` order (``ts`` epoch ms), each value of its
        column's Python type (``pingarrow._ROW_TYPES``) — the gateway's hot path: no dict per ping, the
        batch's columns are one ``zip``, and their values' types are not checked again."""
        p = self.partition(row[0])
        buf = self._pings.get(p)
        if buf is None:
            buf = self._pings[p] = []
            self._since[p] = self.clock() if now is None else now
        buf.append(row)
        self.pending += 1
        if len(buf) >= self.max_pings:
            self._flush_partition(p)
            return 1
        return 0

    def add_many(self, pings: list[dict], now: float | None = None) -> int:
        now = self.clock() if now is None else now
        return sum(self.add(p, now) for p in pings)

    def poll(self, now: float | None = None) -> int:
        """Send every partition whose oldest ping has waited at least ``max_ms``."""
        now = self.clock() if now is None else now
        limit = self.max_s - 1e-6          # tolerate float rounding of clock differences (1 µs)
        due = [p for p, t in self._since.items() if now - t >= limit]
        for p in due:
            self._flush_partition(p)
        return len(due)

    def next_due(self) -> float | None:
        """Clock time at which the next partition becomes due (None when nothing is pending)."""
        return min(self._since.values()) + self.max_s if self._since else None

    def flush(self) -> int:
        parts = list(self._pings)
        values: list[bytes] | None = None
        if self.wire == "arrow" and len(parts) > 1:
            # the columns of every partition converted to Arrow at once, then one record per partition
            values = encode_arrow_rows([[r if type(r) is tuple else _row(r) for r in self._pings[p]]
                                        for p in parts], ROW_FIELDS, typed=self._typed)
        for i, p in enumerate(parts):
            self._flush_partition(p, None if values is None else values[i])
        return len(parts)

    def _flush_partition(self, p: int, value: bytes | None = None) -> None:
        pings = self._pings.pop(p)
        since = self._since.pop(p)
        self.pending -= len(pings)
        self.last_batch_size = len(pings)
        try:
            if value is None:
                rows = [r if type(r) is tuple else _row(r) for r in pings]
                value = encode_rows(rows, self.wire, typed=self._typed)
            key = (pings[0][0] if type(pings[0]) is tuple else pings[0]["plate"]).encode("utf-8")
            self.send(p, key, value)
        except BaseException:
            self._pings[p] = pings + self._pings.get(p, [])
            self._since[p] = since
            self.pending += len(pings)
            raise
        self.records_sent += 1
        self.pings_sent += len(pings)
        if not self._pings:
            self._typed = True                 # nothing left that came through add()


# The columns of a ``gps-pings`` record (models/pingbatch.py) in the order of a row tuple.
ROW_FIELDS = ("plate", "terminal_id", "ts", "lat", "lon", "speed_kmh", "heading", "altitude_m", "plate_color",
              "alarm_flags", "status_flags", "reupload", "driver_id", "mileage_km", "recv_ts", "jt808_version")
_NUMERIC_DEFAULTS = (("lat", 0), ("lon", 0), ("speed_kmh", 0), ("heading", 0), ("altitude_m", 0), ("plate_color", 0),
                     ("alarm_flags", 0), ("status_flags", 0))


def _row(p: dict) -> tuple:
    """Interchange ping dict (``ts`` ISO-8601 or epoch ms) → row tuple."""
    ts = p.get("ts", 0)
    if isinstance(ts, str):
        ts = iso_to_epoch_ms(ts)
    return (p["plate"], p["terminal_id"], ts, *(p.get(k, d) for k, d in _NUMERIC_DEFAULTS),
            int(p.get("reupload", 0)), p.get("driver_id"), p.get("mileage_km"), p.get("recv_ts"),
            int(p.get("jt808_version") or 0))


def encode_rows(rows: list[tuple], wire: str = "arrow", typed: bool = False) -> bytes:
    """Row tuples → one columnar ``gps-pings`` record in the ``wire`` encoding (``stream.wire_format``:
    the Arrow IPC form by default, or JSON; models/pingbatch.py). ``typed``: as ``encode_arrow_rows``."""
    if wire == "arrow":
        values = encode_arrow_rows([rows], ROW_FIELDS, typed=typed)
        if values is not None:
            return values[0]
    return _encode_rows_general(rows, wire)


def _encode_rows_general(rows: list[tuple], wire: str) -> bytes:
    cols = dict(zip(ROW_FIELDS, map(list, zip(*rows))))
    recv = cols.pop("recv_ts")
    if any(r is not None for r in recv):
        cols["recv_ts"] = [r if r is not None else t for r, t in zip(recv, cols["ts"])]
    cols["reupload"] = [int(v) for v in cols["reupload"]]
    if not any(cols["jt808_version"]):            # no terminal said its protocol (as ``encode_batch``)
        del cols["jt808_version"]
    return encode_columns(cols, wire)


# --- publishers ---------------------------------------------------------------------------------------

class PublishError(Exception):
    """Records could not be delivered (broker unreachable, timeout); the caller keeps and retries them."""


class Publisher(Protocol):
    """What the gateway and simulators publish through. ``send`` may buffer; ``flush`` blocks until every
    record sent so far is acknowledged and raises ``PublishError`` if any was not."""

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> None: ...

    def flush(self) -> None: ...


def make_producer(bootstrap: str | list[str], **kw: Any):
    """kafka-python producer tuned for ping batches: raw bytes in, 20 ms linger, 256 KiB batches, no
    compression (the columnar JSON is produced and consumed on the same host; CPU matters more), acks=1,
    and a bounded ``max_block_ms`` so an unreachable broker surfaces as an error instead of a hang."""
    from kafka import KafkaProducer
    opts: dict[str, Any] = dict(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024,
                                compression_type=None, acks=1, enable_idempotence=False, max_block_ms=5000,
                                bootstrap_timeout_ms=5000, reconnect_backoff_max_ms=2000,
                                request_timeout_ms=10_000, delivery_timeout_ms=30_000, retries=5,
                                max_request_size=2 * 1024 * 1024, client_id="roadwatch-producer")
    opts.update(kw)
    return KafkaProducer(**opts)


class KafkaPublisher:
    """``Publisher`` over a kafka-python producer: ``send`` is asynchronous, ``flush`` confirms delivery.
    Given ``bootstrap`` instead of a producer, the producer is created on first use and re-created after a
    failed start, so a gateway can start (and buffer) while Kafka is still down."""

    def __init__(self, producer: Any = None, bootstrap: str | list[str] | None = None,
                 flush_timeout_s: float = 30.0, **producer_kw: Any):
        if producer is None and bootstrap is None:
            raise ValueError("KafkaPublisher needs a producer or a bootstrap address")
        self.producer = producer
        self.bootstrap = bootstrap
        self.producer_kw = producer_kw
        self.flush_timeout_s = flush_timeout_s
        self._futures: list = []
        self._lock = threading.Lock()

    def _get(self) -> Any:
        if self.producer is None:
            try:
                self.producer = make_producer(self.bootstrap, **self.producer_kw)
            except Exception as e:   # NoBrokersAvailable, DNS errors, …
                raise PublishError(f"cannot connect to Kafka at {self.bootstrap}: {e}") from e
        return self.producer

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> None:
        producer = self._get()
        try:
            fut = producer.send(topic, key=key, value=value, partition=partition)
        except Exception as e:   # KafkaTimeoutError when metadata or buffer space is unavailable
            raise PublishError(f"send to {topic} failed: {e}") from e
        with self._lock:
            self._futures.append(fut)

    def flush(self) -> None:
        with self._lock:
            futures, self._futures = self._futures, []
        try:
            self._get().flush(timeout=self.flush_timeout_s)
        except Exception as e:
            raise PublishError(f"flush failed: {e}") from e
        failed = [f for f in futures if not f.is_done or f.failed()]
        if failed:
            first = failed[0]
            raise PublishError(f"{len(failed)} of {len(futures)} records not acknowledged: "
                               f"{first.exception if first.is_done else 'timeout'}")

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close(timeout=5)


class AioKafkaPublisher:
    """Publisher for an asyncio edge (the JT/T 808 gateway) over aiokafka, inside the event loop: no thread,
    no hand-over between threads per publish cycle. ``await publish(records)`` sends records (objects with
    ``topic``, ``key``, ``value``, ``partition``, like ``outbox.Out``) and returns once Kafka acknowledged
    every one, else raises ``PublishError`` — the ``send`` + ``flush`` of ``Publisher`` in one call. The
    producer starts on first use and is started anew after a failed start, so the edge can start (and
    buffer) while Kafka is still down. Measured ~0.7 ms of CPU per cycle of four records against ~1.8 ms
    for kafka-python with its sender thread (docs/performance.md)."""

    def __init__(self, bootstrap: str | list[str], flush_timeout_s: float = 30.0, **producer_kw: Any):
        self.bootstrap = bootstrap
        self.flush_timeout_s = flush_timeout_s
        self.producer_kw = producer_kw
        self.producer: Any = None

    async def _get(self) -> Any:
        if self.producer is None:
            from aiokafka import AIOKafkaProducer
            # as ``make_producer``: raw bytes, no compression, acks=1, bounded waits
            opts: dict[str, Any] = dict(bootstrap_servers=self.bootstrap, linger_ms=0, max_batch_size=256 * 1024,
                                        compression_type=None, acks=1, enable_idempotence=False,
                                        request_timeout_ms=10_000, retry_backoff_ms=100,
                                        max_request_size=2 * 1024 * 1024, client_id="roadwatch-producer")
            opts.update(self.producer_kw)
            producer = AIOKafkaProducer(**opts)
            try:
                await asyncio.wait_for(producer.start(), 10)
            except BaseException as e:
                with contextlib.suppress(Exception):
                    await producer.stop()
                if isinstance(e, Exception):
                    raise PublishError(f"cannot connect to Kafka at {self.bootstrap}: {e}") from e
                raise
            self.producer = producer
        return self.producer

    async def publish(self, records: Iterable[Any]) -> None:
        producer = await self._get()
        futures: list[asyncio.Future] = []
        try:
            for r in records:
                futures.append(await producer.send(r.topic, r.value, key=r.key, partition=r.partition))
        except Exception as e:          # KafkaTimeoutError (no metadata), a record too large, …
            for f in futures:
                f.add_done_callback(_outcome)
            raise PublishError(f"send to Kafka failed: {e}") from e
        if not futures:
            return
        done, pending = await asyncio.wait(futures, timeout=self.flush_timeout_s)
        for f in pending:               # still in the producer's hands: the caller keeps and retries them
            f.add_done_callback(_outcome)
        failed = [e for e in map(_outcome, done) if e is not None]
        if pending or failed:
            raise PublishError(f"{len(pending) + len(failed)} of {len(futures)} records not acknowledged: "
                               f"{failed[0] if failed else f'timeout after {self.flush_timeout_s} s'}")

    async def aclose(self) -> None:
        if self.producer is not None:
            producer, self.producer = self.producer, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)


def _outcome(f: asyncio.Future) -> BaseException | None:
    """A delivery future's error (read, so a late failure is never reported as unretrieved)."""
    return asyncio.CancelledError() if f.cancelled() else f.exception()


class MemoryPublisher:
    """In-memory ``Publisher`` (tests, demos). Set ``down = True`` to behave like an unreachable broker."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes, int | None]] = []
        self._pending: list[tuple[str, bytes | None, bytes, int | None]] = []
        self.down = False
        self._lock = threading.Lock()

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> None:
        if self.down:
            raise PublishError("broker unreachable (simulated)")
        with self._lock:
            self._pending.append((topic, key, value, partition))

    def flush(self) -> None:
        with self._lock:
            if self.down:
                self._pending.clear()
                raise PublishError("broker unreachable (simulated)")
            self.records += self._pending
            self._pending = []

    def topic(self, name: str) -> list[tuple[bytes | None, bytes, int | None]]:
        with self._lock:
            return [(k, v, p) for t, k, v, p in self.records if t == name]
