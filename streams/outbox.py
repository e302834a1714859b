"""Records on their way to Kafka from a TCP edge (the JT/T 808 gateway, the JT/T 809 link).

A terminal or platform is answered as soon as its message is accepted, so what it sent must not be lost if
Kafka is slow or unreachable: records stay in this outbox until the producer's ``flush`` confirmed their
delivery, and a failed send is retried with back-off instead of dropped. ``pings`` counts the positions
held, so the edge can stop reading from its clients when too many wait (back-pressure).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable


@dataclass
class Out:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    pings: int = 0


class Outbox:
    CHUNK = 512          # records per producer flush

    def __init__(self, publisher: Any, log: logging.Logger):
        self.publisher = publisher
        self.log = log
        self.records: deque[Out] = deque()
        self.pings = 0
        self.kafka_ok = True
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self.records)

    def put(self, out: Out) -> None:
        self.records.append(out)
        self.pings += out.pings
        self._wake.set()

    def _publish_chunk(self, chunk: list[Out]) -> None:
        for o in chunk:
            self.publisher.send(o.topic, o.key, o.value, o.partition)
        self.publisher.flush()

    async def run(self, submit: Callable[..., Awaitable[Any]], buffered: Callable[[], int],
                  on_delivered: Callable[[int], None], on_error: Callable[[Exception], None] = lambda e: None) -> None:
        """Deliver forever. ``submit(fn, arg)`` runs the blocking producer call off the event loop;
        ``buffered()`` is what the log reports as pending; ``on_delivered(pings)`` follows every flush."""
        backoff = 0.1
        while True:
            if not self.records:
                self._wake.clear()
                await self._wake.wait()
                continue
            chunk = [self.records[i] for i in range(min(len(self.records), self.CHUNK))]
            try:
                await submit(self._publish_chunk, chunk)
            except Exception as e:  # PublishError or anything the client library throws: keep and retry
                on_error(e)
                if self.kafka_ok:
                    self.log.error("Kafka unreachable (%s); buffering — %d pings pending", e, buffered())
                    self.kafka_ok = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if not self.kafka_ok:
                self.log.warning("Kafka reachable again; delivering %d buffered records", len(self.records))
                self.kafka_ok = True
            delivered = 0
            for _ in chunk:
                delivered += self.records.popleft().pings
            self.pings -= delivered
            on_delivered(delivered)

    async def drain(self, timeout_s: float, what: str) -> None:
        """On shutdown: wait (bounded) for what is still held, and say what was not delivered."""
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while self.records and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.records:
            self.log.error("%s stopped with %d records (%d pings) not delivered to Kafka", what,
                           len(self.records), self.pings)
