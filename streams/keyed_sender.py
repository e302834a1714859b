"""Many small keyed records to one topic, one Kafka record batch per partition at a time.

The worker's alerts (thousands per second while a fleet catches up) went out one ``Topic.send_soon`` each:
Faust's buffer, futures and the pure-Python murmur2 partitioner cost ≈ 50 µs per record, ≈ 10 % of a
worker's CPU on the benchmark feed (docs/performance.md). Here ``send`` only queues; a flusher task groups
the queue by partition — Kafka's default partitioner (murmur2 of the key, as Faust and the Java clients
compute it, so a plate's records land where they always did), remembered per key — and hands each group to
aiokafka as one ``BatchBuilder`` (its C record encoder): ≈ 5 µs per record.

What the caller gets is what ``send_soon`` gave: ``send`` never waits for Kafka, records keep their order per
partition. While Kafka is away the queue holds them and the flusher retries with back-off, reporting the
fault (``/healthz`` says why, ``streams/retry.py``); past ``max_queued`` records ``send`` waits for room, so
the agent pauses instead of growing without bound. A batch Kafka finally refuses is logged and counted
(``roadwatch_publish_failures_total``); the archive stays the system of record for what was raised.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka.partitioner import murmur2

from . import metrics as M

log = logging.getLogger("roadwatch.publish")
MEMO_KEYS = 1 << 18        # remembered key → partition pairs (a province's plates; cleared when full)


class KeyedBatchSender:
    """Records ``(key, value)`` (bytes) to ``topic``. ``faults``: a ``streams.retry.Faults`` the flusher
    reports to as ``component`` while it cannot deliver (None: only logged)."""

    def __init__(self, bootstrap: str, topic: str, *, linger_ms: int, max_request_size: int, max_queued: int,
                 faults, component: str):
        self.bootstrap = bootstrap
        self.topic = topic
        self.producer_kw = dict(linger_ms=linger_ms, max_request_size=max_request_size)
        self.max_queued = max_queued
        self.faults = faults
        self.component = component
        self.producer: Any = None
        self._partitions: list[int] = []
        self._partition_of: dict[bytes, int] = {}
        self._queue: list[tuple[bytes, bytes]] = []
        self._flusher: asyncio.Task | None = None
        self._room: asyncio.Event | None = None
        self._in_flight: set[asyncio.Future] = set()
        self._failures = M.PUBLISH_FAILURES.labels(topic=topic)

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def send(self, records: list[tuple[bytes, bytes]]) -> None:
        """Queue ``records`` for the flusher; waits only while ``max_queued`` records are already waiting."""
        if not records:
            return
        while len(self._queue) >= self.max_queued:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            self._wake()
            await self._room.wait()
        self._queue.extend(records)
        self._wake()

    def _wake(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_queue())

    async def _flush_queue(self) -> None:
        backoff = 0.5
        while self._queue:
            records, self._queue = self._queue, []
            handed_over, err = await self._send_batches(records)
            if err is not None:                 # Kafka away or no metadata: keep the records not handed over, retry
                self._queue[:0] = records[handed_over:]
                if self.faults is not None:
                    self.faults.report(self.component, err)
                else:
                    log.warning("%s: cannot queue records for Kafka (%s); retrying in %.1f s", self.topic, err,
                                backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            if self.faults is not None and self.component in self.faults.active:
                self.faults.clear(self.component)
            if self._room is not None and len(self._queue) < self.max_queued:
                self._room.set()
        if self._room is not None:
            self._room.set()

    async def _send_batches(self, records: list[tuple[bytes, bytes]]) -> tuple[int, Exception | None]:
        """One builder per partition, in queue order; a full builder is sent and the next one started.
        Returns how many leading records are surely handed over, and the error that stopped it (None: all)."""
        builders: dict[int, Any] = {}
        firsts: dict[int, int] = {}      # partition → index of the first record in its open builder
        try:
            producer = await self._get()
            for i, (key, value) in enumerate(records):
                p = self.partition(key)
                b = builders.get(p)
                if b is None:
                    b = builders[p] = producer.create_batch()
                    firsts[p] = i
                if b.append(timestamp=None, key=key, value=value) is None:      # full: send it, start anew
                    await self._submit(producer, b, p)
                    b = builders[p] = producer.create_batch()
                    firsts[p] = i
                    b.append(timestamp=None, key=key, value=value)               # an empty batch takes any
            for p in list(builders):
                await self._submit(producer, builders.pop(p), p)
                firsts.pop(p)
        except Exception as err:  # noqa: BLE001 - the caller keeps what was not handed over and retries
            # records of unsent builders go back; with several partitions open, everything from the oldest
            # unsent first record on (a record of a sent partition may go twice: at least once, same key)
            return min(firsts.values(), default=0), err
        return len(records), None

    async def _get(self) -> Any:
        if self.producer is None:
            from aiokafka import AIOKafkaProducer
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, client_id=f"roadwatch-{self.topic}",
                                        **self.producer_kw)
            try:
                await producer.start()
                partitions = await producer.partitions_for(self.topic)
                if not partitions:
                    raise LookupError(f"topic {self.topic} has no partitions (not created yet?)")
                self._partitions = sorted(partitions)
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self.producer = producer
        return self.producer

    def partition(self, key: bytes) -> int:
        """Kafka's default partitioner for ``key`` (aiokafka's ``DefaultPartitioner``), memoised."""
        p = self._partition_of.get(key)
        if p is None:
            if len(self._partition_of) >= MEMO_KEYS:
                self._partition_of.clear()
            p = self._partition_of[key] = self._partitions[(murmur2(key) & 0x7FFFFFFF) % len(self._partitions)]
        return p

    async def _submit(self, producer, batch, partition: int) -> None:
        fut = await producer.send_batch(batch, self.topic, partition=partition)
        self._in_flight.add(fut)
        fut.add_done_callback(self._delivered)

    def _delivered(self, fut: asyncio.Future) -> None:
        self._in_flight.discard(fut)
        err = asyncio.CancelledError() if fut.cancelled() else fut.exception()
        if err is not None:
            self._failures.inc()
            log.warning("a batch of %s records was not delivered: %s", self.topic, err)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Deliver what is queued and in flight (bounded wait), then stop the producer."""
        if self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._flusher), timeout)
            self._flusher.cancel()
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=timeout)
        if self.producer is not None:
            producer, self.producer = self.producer, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout)
        if self._queue:
            log.warning("%s: %d records not published at shutdown (they are in the archive)", self.topic,
                        len(self._queue))

