"""Publishing a feed or a recording with its relative timing, scaled by ``speed`` (or as fast as possible).

``publish(records, producer, speed)`` is shared by ``simulate`` and ``replay``. Records go out with their
stored partition (a generated feed is already partitioned the Kafka default way), and each send's
(topic, partition, offset) is reported through ``on_sent`` so the caller can wait until the worker has
consumed everything (streams/runtime.py ``Stack.note_sent``/``wait_idle``).

Fair interleaving: the worker consumes each input topic on its own, so a feed published at full speed
would be drained topic by topic (observed: nearly every WIM reading of a province month before most GPS
pings — source tracing then depends on timing). ``EventTimeGate`` keeps the publisher at most ``lead`` of
event time ahead of what the worker has taken in on *every* topic, reading the worker's own counters
(``roadwatch_messages_total{direction="in"}`` on /metrics), so WIM and GPS reach the worker in event-time
order whichever topic it would rather drain.
"""
from __future__ import annotations

import re
import sys
import time
import urllib.request
from collections import deque
from typing import Callable, Iterable

from .feed import FeedRecord


def parse_speed(text: str) -> float | None:
    """``max`` → None (no pacing); else a positive factor (1 = real time, 60 = a minute per second)."""
    if str(text).lower() in ("max", "inf", "0"):
        return None
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"--speed must be a positive number or 'max', got {text!r}") from None
    if not v > 0:
        raise ValueError(f"--speed must be a positive number or 'max', got {text!r}")
    return v


class Progress:
    """Messages, rate and ETA on stderr: a redrawn line on a TTY, a plain line every few seconds otherwise."""

    def __init__(self, total: int | None, stream=None, every_s: float = 5.0):
        self.total, self.stream = total, stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self.last = 0.0
        self.every = 0.2 if self.tty else every_s
        self.n = 0
        self.units = 0

    def update(self, n: int, units: int = 0, force: bool = False) -> None:
        self.n, self.units = n, units
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        el = max(now - self.t0, 1e-9)
        rate = n / el
        eta = (self.total - n) / rate if self.total and rate > 0 else None
        line = (f"{n}" + (f"/{self.total}" if self.total else "") + f" messages, {rate:,.0f} msg/s"
                + (f", {units:,} pings ({units / el:,.0f}/s)" if units else "")
                + (f", ETA {eta:,.0f} s" if eta is not None else ""))
        if self.tty:
            pct = n / self.total if self.total else 0
            bar = "#" * int(pct * 30)
            self.stream.write(f"\r[{bar:<30}] {line}   ")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        self.update(self.n, self.units, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


_IN_COUNTER = re.compile(r'^roadwatch_messages_total\{([^}]*)\}\s+([0-9.eE+]+)\s*$', re.M)


def worker_intake(metrics_url: str, timeout: float = 2.0) -> dict[str, float] | None:
    """Records the worker has taken in, per input topic, from its Prometheus text (None if unreachable)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout) as resp:   # noqa: S310 - loopback URL we built
            text = resp.read().decode("utf-8", "replace")
    except OSError:
        return None
    out: dict[str, float] = {}
    for labels, value in _IN_COUNTER.findall(text):
        lab = dict(x.split("=", 1) for x in labels.split(",") if "=" in x)
        if lab.get("direction", "").strip('"') == "in":
            out[lab.get("topic", "").strip('"')] = float(value)
    return out


class EventTimeGate:
    """Before a record of event time T is sent, the worker must have taken in, on every topic, each record
    published with event time ≤ T − ``lead_ms``. ``intake()`` returns the worker's cumulative per-topic
    counts (``worker_intake``); it is asked only when the cached counts do not already suffice, and once
    behind, the publisher waits until the worker is within half the lead (fewer, longer stops). If the
    worker makes no progress for ``stall_s`` (restarted, counters reset) the gate opens and says so."""

    def __init__(self, intake: Callable[[], dict | None], lead_ms: int, *, poll_s: float = 0.05,
                 stall_s: float = 120.0, sleep=time.sleep, clock=time.monotonic):
        self.intake, self.lead_ms, self.poll_s, self.stall_s = intake, int(lead_ms), poll_s, stall_s
        self.sleep, self.clock = sleep, clock
        self.sent: dict[str, int] = {}
        self.marks: dict[str, deque] = {}
        self.need: dict[str, int] = {}
        self.seen: dict[str, float] = {}
        self.open = False
        self.waited_s = 0.0

    def note(self, r: FeedRecord) -> None:
        n = self.sent[r.topic] = self.sent.get(r.topic, 0) + 1
        self.marks.setdefault(r.topic, deque()).append((r.ts_ms, n))

    def _raise_need(self, horizon: int) -> None:
        for topic, dq in self.marks.items():
            while dq and dq[0][0] <= horizon:
                self.need[topic] = dq.popleft()[1]

    def _behind(self) -> bool:
        return any(self.seen.get(t, 0) < n for t, n in self.need.items())

    def wait(self, r: FeedRecord, flush: Callable[[], object]) -> None:
        if self.open:
            return
        self._raise_need(r.ts_ms - self.lead_ms)
        if not self._behind():
            return
        # behind: let the worker catch up to half the lead, so the next records flow without a stop each
        self._raise_need(r.ts_ms - self.lead_ms // 2)
        flush()                                   # what we wait for must have left the producer
        t0 = last_progress = self.clock()
        before = dict(self.seen)
        while True:
            got = self.intake()
            if got is not None:
                self.seen = got
                if not self._behind():
                    break
                if got != before:
                    before, last_progress = dict(got), self.clock()
            if self.clock() - last_progress > self.stall_s:
                print(f"roadwatch: the worker took in nothing for {self.stall_s:g} s: publishing without "
                      "event-time gating from here", file=sys.stderr)
                self.open = True
                break
            self.sleep(self.poll_s)
        self.waited_s += self.clock() - t0


def publish(records: Iterable[FeedRecord], producer, speed: float | None, *, total: int | None = None,
            on_sent: Callable[[str, int, int], None] | None = None, progress: bool = True,
            count_units: Callable[[FeedRecord], int] | None = None, sleep=time.sleep,
            clock=time.monotonic, settle: Callable[[], object] | None = None,
            gate: EventTimeGate | None = None) -> dict:
    """Send every record (kafka-python producer API); pace by simulated time when ``speed`` is set.
    Before a record marked ``barrier`` the producer is flushed and ``settle()`` (e.g. "wait until the
    worker is idle") is called: a scenario uses it where its outcome depends on cross-topic order (a WIM
    reading whose cargo-source lookup needs the truck's GPS track already stored). ``gate`` keeps the
    topics in event-time step (``EventTimeGate``). Returns counts and the measured rates (settling time
    excluded; time spent at the gate included — it is the worker's pace)."""
    prog = Progress(total) if progress else None
    t_sim0 = None
    t_wall0 = clock()
    n = units = 0
    byts = 0
    settled = 0.0

    def cb(md):
        if on_sent:
            on_sent(md.topic, md.partition, md.offset)
    for r in records:
        if t_sim0 is None:
            t_sim0 = r.ts_ms
        if r.barrier and settle is not None:
            t_s = clock()
            producer.flush()
            settle()
            settled += clock() - t_s
        if gate is not None:
            gate.wait(r, producer.flush)
        if speed is not None:
            due = t_wall0 + settled + (r.ts_ms - t_sim0) / 1000.0 / speed
            delay = due - clock()
            if delay > 0:
                sleep(delay)
        fut = producer.send(r.topic, key=r.key, value=r.value, partition=r.partition if r.partition >= 0 else None)
        if gate is not None:
            gate.note(r)
        if on_sent:
            fut.add_callback(cb)
        n += 1
        byts += len(r.value)
        if count_units:
            units += count_units(r)
        if prog:
            prog.update(n, units)
    producer.flush()
    el = clock() - t_wall0 - settled
    if prog:
        prog.update(n, units, force=True)
        prog.done()
    return {"messages": n, "units": units, "bytes": byts, "seconds": round(el, 3),
            "msg_per_s": round(n / el, 1) if el > 0 else None, "units_per_s": round(units / el, 1) if el > 0 else None,
            "settle_s": round(settled, 3), "gate_s": round(gate.waited_s, 3) if gate is not None else None}


def ping_count(r: FeedRecord) -> int:
    """Pings in a gps-pings record without decoding it fully (count the plate list)."""
    if r.topic != "gps-pings":
        return 0
    import orjson
    from roadwatch.models.pingarrow import arrow_rows, is_arrow
    try:
        return arrow_rows(r.value) if is_arrow(r.value) else len(orjson.loads(r.value).get("plate") or [])
    except Exception:   # noqa: BLE001 - a malformed record counts as 0 pings
        return 0
