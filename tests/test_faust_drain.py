"""streams/faust_drain.py: records reach the agents as Faust hands them over — a callback that does not wait
runs inline (no task), one that waits is raced against the consumer's flow suspension as Faust races it —
and the override is only in place with the Faust it was derived from."""
from __future__ import annotations

import asyncio

import pytest
from mode import Service

from roadwatch.models.config import Config
from roadwatch.streams import faust_drain
from roadwatch.streams.app import create_app


class _Consumer(Service):
    """What ``deliver`` uses of Faust's consumer: a mode service (``wait_first``) with its ``suspend_flow``."""

    def __init__(self):
        super().__init__()
        self.suspend_flow = asyncio.Event()


def test_the_worker_uses_the_drain_derived_from_this_faust(tmp_path):
    assert faust_drain.faust_source_matches()
    app = create_app(Config({"paths.data_dir": str(tmp_path)}), "127.0.0.1:9")
    assert app.transport.Consumer is faust_drain.Consumer
    assert faust_drain.Consumer._drain_messages is faust_drain._drain_messages


def test_a_callback_that_does_not_wait_runs_inline():
    async def main():
        consumer, seen = _Consumer(), []

        async def callback(message):
            seen.append((message, asyncio.current_task()))

        await faust_drain.deliver(consumer, callback, "m1")
        assert seen == [("m1", asyncio.current_task())]      # in the caller's task: no task of its own
    asyncio.run(main())


def test_a_callback_that_waits_is_run_to_its_end():
    async def main():
        consumer, seen = _Consumer(), []
        later = asyncio.get_running_loop().create_future()

        async def callback(message):
            seen.append("before")
            got = await later                     # a full channel: it waits for room
            await asyncio.sleep(0)                # (a bare yield on the way)
            seen.append(got)

        asyncio.get_running_loop().call_later(0.05, later.set_result, "after")
        await faust_drain.deliver(consumer, callback, "m1")
        assert seen == ["before", "after"]
    asyncio.run(main())


def test_its_error_after_a_wait_reaches_the_caller_as_in_faust():
    async def main():
        consumer = _Consumer()

        async def callback(message):
            await asyncio.sleep(0.01)
            raise ValueError("cannot decode")

        with pytest.raises(ValueError, match="cannot decode"):
            await faust_drain.deliver(consumer, callback, "m1")
    asyncio.run(main())


def test_a_waiting_callback_is_given_up_when_the_flow_is_suspended():
    async def main():
        consumer, seen = _Consumer(), []
        never = asyncio.get_running_loop().create_future()

        async def callback(message):
            try:
                await never                       # a channel that stays full
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            seen.append("delivered")

        asyncio.get_running_loop().call_later(0.05, consumer.suspend_flow.set)     # a rebalance begins
        await asyncio.wait_for(faust_drain.deliver(consumer, callback, "m1"), 5)
        await asyncio.sleep(0.01)                 # the cancelled rest of it runs its handler
        assert seen == ["cancelled"] and never.cancelled()
    asyncio.run(main())
