"""Faust's hand-over of fetched records to the agents, without four asyncio tasks per record.

Faust's consumer gives each fetched record to the conductor's callback, which decodes it and puts the event
into the channels of the agents reading its topic. It races that callback against "flow suspended" (a
rebalance), "consumer stopped" and "crashed" with mode's ``Service.wait_first``: a task for each of the four,
a wait for the first, the other three cancelled — for every record. That was half of a no-op agent's CPU per
record on the 2-core VM: 243–267 µs with it, 119–129 µs with ``deliver`` (docs/performance.md, round 15).

The callback nearly always finishes without waiting: the channels have room. ``deliver`` runs it inline up to
its first wait. If it finishes there, the record is delivered, as in Faust: there the callback's task takes
its first step in the same loop turn as the three waiters' tasks, so a callback that does not wait always runs
to its end, whatever they say. If it waits (a full channel, flow control, the producer's buffer), the rest of
it is raced exactly as Faust races it.

``_drain_messages`` is Faust's own (faust-streaming 0.15.3, ``faust/transport/consumer.py``, BSD 3-Clause:
``streams/LICENSE.faust-streaming``) with that one call changed. ``install`` puts it in place only while
Faust's source is the one it was derived from (``DERIVED_FROM_SHA256``); with another Faust, Faust's own
stays and a warning says so, and tests/test_faust_drain.py fails so that it is derived again.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import types
from typing import AsyncIterator, cast

from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service

log = logging.getLogger("roadwatch")

# sha256 of the source of faust-streaming 0.15.3's ``Consumer._drain_messages``
DERIVED_FROM_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


@types.coroutine
def _rest_of(coro, waiting_on):
    """The rest of ``coro``, which has just handed ``waiting_on`` (what it waits for) to whoever runs it: a
    task running this runs the coroutine on as it would have run it from its start — the values it waits for
    reach it, and so does a cancellation."""
    while True:
        try:
            yield waiting_on
        except BaseException as exc:        # thrown in by the task (its cancellation): on to the coroutine
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            waiting_on = coro.send(None)
        except StopIteration as done:
            return done.value


async def deliver(consumer: Service, callback, message) -> None:
    """Give ``message`` to ``callback``; if the callback waits, race the rest of it against the consumer's
    flow suspension, stop and crash (``wait_first``), as Faust does."""
    coro = callback(message)
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return                                  # delivered without waiting: nearly always
    await consumer.wait_first(asyncio.ensure_future(_rest_of(coro, waiting_on)), consumer.suspend_flow.wait())


async def _drain_messages(self, fetcher: Service) -> None:  # pragma: no cover - Faust's loop, one call changed
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator, getmany(timeout=1.0))
            await self.sleep(0)          # (Faust: getmany may otherwise loop without releasing the event loop)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset:            # a gap in the offsets received
                            if acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        await deliver(self, callback, message)      # Faust: await self.wait_first(…)
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
                unset_flag(flag_consumer_fetching)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, handing records over with ``deliver``."""

    _drain_messages = _drain_messages


def faust_source_matches() -> bool:
    """Faust's ``Consumer._drain_messages`` is the one ``_drain_messages`` was derived from."""
    src = inspect.getsource(faust_consumer.Consumer._drain_messages)
    return hashlib.sha256(src.encode()).hexdigest() == DERIVED_FROM_SHA256


def install() -> bool:
    """Make Faust's aiokafka transport create ``Consumer``; True when it does. With another Faust version,
    Faust's own consumer stays (correct, only slower) and a warning says so."""
    if not faust_source_matches():
        log.warning("Faust's Consumer._drain_messages is not the one streams/faust_drain.py was derived from: "
                    "its records are handed over the slower way (four tasks each)")
        return False
    faust_aiokafka.Transport.Consumer = Consumer
    return True
