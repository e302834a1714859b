"""An event loop that wakes at most once per ``gateway.coalesce_ms``: reads that arrive meanwhile wait in
the kernel and are then handled in one loop iteration.

At a few hundred positions per second every position wakes the process on its own. Sleeping before a
*blocking* poll — never while callbacks are ready — bounds the wake-ups to 1000 / coalesce_ms per second;
a reply waits at most that long. Off by default: on the shared 2-core VM 10 ms saved 7 % of the CPU per
position at 333 positions/s but added 5 ms to the median reply (docs/performance.md); it may pay on hosts
where wake-ups are dearer (many gateways per host, power-saving CPUs).
"""
from __future__ import annotations

import asyncio
import selectors
import time


class CoalescingSelector(selectors.EpollSelector if hasattr(selectors, "EpollSelector")
                         else selectors.DefaultSelector):  # type: ignore[misc]
    def __init__(self, gap_s: float):
        super().__init__()
        self.gap_s = gap_s
        self._last = time.monotonic()

    def select(self, timeout=None):
        if timeout is None or timeout > 0:
            wait = self.gap_s - (time.monotonic() - self._last)
            if wait > 0:
                if timeout is not None:
                    wait = min(wait, timeout)
                    timeout -= wait
                time.sleep(wait)
        events = super().select(timeout)
        self._last = time.monotonic()
        return events


def loop_factory(coalesce_ms: float):
    """``asyncio.Runner(loop_factory=…)`` argument: a selector loop that coalesces wake-ups."""
    def make() -> asyncio.AbstractEventLoop:
        if coalesce_ms <= 0:
            return asyncio.new_event_loop()
        return asyncio.SelectorEventLoop(CoalescingSelector(coalesce_ms / 1000.0))
    return make
