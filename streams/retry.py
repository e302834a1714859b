"""Our own faults are not bad input: pause, retry with back-off, say why, resume by ourselves.

A record that cannot be processed because of an internal failure (disk full, a database error, a bug) is
neither dead-lettered nor acknowledged: its offset is therefore never committed. The agent that holds it
waits and tries the same record again with exponential back-off until it succeeds; meanwhile ``/healthz``
answers "not ready" with the reason, ``roadwatch_internal_faults_total`` counts the failed attempts,
``roadwatch_paused`` is 1 for the paused component and a log line names the error. Only
``InvalidRecord`` (the input's own fault) passes through to the caller, which dead-letters it.

One ``Faults`` board per worker (``ctx.faults``); the WIM agent uses ``retry_until_ok`` (blocking: the
agent, and so its partitions, wait), the GPS snapshot timer uses ``attempt`` (non-blocking: the timer keeps
ticking and the GPS agent waits on ``wait_clear`` before it takes more records).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from prometheus_client import Counter, Gauge

from roadwatch.models.records import InvalidRecord

log = logging.getLogger("roadwatch.faults")

INTERNAL_FAULTS = Counter("roadwatch_internal_faults_total",
                          "Failed attempts to process a record because of an internal fault (never dead-lettered)",
                          ["component", "error"])
PAUSED = Gauge("roadwatch_paused", "1 while a component is paused by an internal fault and retrying", ["component"])


@dataclass
class Fault:
    reason: str
    since: float          # wall clock of the first failure
    attempts: int
    delay_s: float        # the back-off before the next attempt
    next_at: float        # monotonic time of the next attempt


class Faults:
    """The active internal faults of one worker, by component name (e.g. ``wim``, ``gps-snapshot``)."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0):
        self.initial_s = float(initial_s)
        self.max_s = float(max_s)
        self.active: dict[str, Fault] = {}
        self._cleared: dict[str, asyncio.Event] = {}

    @classmethod
    def from_config(cls, cfg) -> "Faults":
        return cls(cfg["faults.retry_initial_s"], cfg["faults.retry_max_s"])

    def report(self, component: str, err: BaseException) -> Fault:
        """Record a failed attempt; returns the fault with the back-off before the next attempt."""
        reason = f"{type(err).__name__}: {err}"[:300]
        f = self.active.get(component)
        if f is None:
            f = self.active[component] = Fault(reason, time.time(), 0, self.initial_s, 0.0)
            self._event(component).clear()
            log.error("%s paused by an internal fault (not the input's fault: nothing is dead-lettered or "
                      "committed; retrying with back-off): %s", component, reason)
        else:
            f.delay_s = min(f.delay_s * 2, self.max_s)
            if f.reason != reason:
                log.error("%s still paused, the fault changed: %s", component, reason)
            f.reason = reason
        f.attempts += 1
        f.next_at = time.monotonic() + f.delay_s
        INTERNAL_FAULTS.labels(component=component, error=type(err).__name__).inc()
        PAUSED.labels(component=component).set(1)
        if f.attempts % 10 == 0:
            log.error("%s still paused after %d attempts: %s", component, f.attempts, reason)
        return f

    def clear(self, component: str) -> None:
        f = self.active.pop(component, None)
        if f is not None:
            log.warning("%s resumed after %d failed attempt(s) over %.1f s (last fault: %s)", component,
                        f.attempts, time.time() - f.since, f.reason)
            PAUSED.labels(component=component).set(0)
        self._event(component).set()

    def due(self, component: str) -> bool:
        """False while a paused component waits out its back-off."""
        f = self.active.get(component)
        return f is None or time.monotonic() >= f.next_at

    def ok(self) -> bool:
        return not self.active

    def reasons(self) -> dict[str, dict]:
        return {c: {"reason": f.reason, "attempts": f.attempts, "since_s": round(time.time() - f.since, 1)}
                for c, f in self.active.items()}

    def _event(self, component: str) -> asyncio.Event:
        ev = self._cleared.get(component)
        if ev is None:
            ev = self._cleared[component] = asyncio.Event()
            ev.set()
        return ev

    async def wait_clear(self, component: str) -> None:
        """Return once ``component`` has no active fault (immediately when it has none)."""
        if component in self.active:
            await self._event(component).wait()

    def attempt(self, component: str, fn: Callable[..., Any], *args, on_error: Callable[[], None] | None = None,
                default: Any = None) -> Any:
        """One non-blocking try of ``fn`` (skipped while the back-off runs): its result, or ``default`` when it
        failed or was not due. ``InvalidRecord`` is not caught."""
        if not self.due(component):
            return default
        try:
            result = fn(*args)
        except InvalidRecord:
            raise
        except Exception as err:  # noqa: BLE001 - an internal fault: pause and retry, never drop the record
            _run_quietly(on_error)
            self.report(component, err)
            return default
        self.clear(component)
        return result

    async def retry_until_ok(self, component: str, fn: Callable[..., Any], *args,
                             on_error: Callable[[], None] | None = None) -> Any:
        """Run ``fn`` (sync or async) until it succeeds; back-off between attempts. ``InvalidRecord``
        propagates at once (the caller dead-letters it); cancellation propagates."""
        while True:
            try:
                result = fn(*args)
                if inspect.isawaitable(result):
                    result = await result
            except InvalidRecord:
                self.clear(component)
                raise
            except Exception as err:  # noqa: BLE001 - an internal fault: pause and retry, never drop the record
                _run_quietly(on_error)
                f = self.report(component, err)
                await asyncio.sleep(f.delay_s)
                continue
            self.clear(component)
            return result


def _run_quietly(hook: Callable[[], None] | None) -> None:
    if hook is None:
        return
    try:
        hook()
    except Exception:  # noqa: BLE001 - the clean-up of a failed attempt must not hide the fault itself
        log.exception("clean-up after an internal fault failed")
