"""Publishing a feed or a recording with its relative timing, scaled by ``speed`` (or as fast as possible).

``publish(records, producer, speed)`` is shared by ``simulate`` and ``replay``. Records go out with their
stored partition (a generated feed is already partitioned the Kafka default way), and each send's
(topic, partition, offset) is reported through ``on_sent`` so the caller can wait until the worker has
consumed everything (streams/runtime.py ``Stack.note_sent``/``wait_idle``).
"""
from __future__ import annotations

import sys
import time
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


def publish(records: Iterable[FeedRecord], producer, speed: float | None, *, total: int | None = None,
            on_sent: Callable[[str, int, int], None] | None = None, progress: bool = True,
            count_units: Callable[[FeedRecord], int] | None = None, sleep=time.sleep,
            clock=time.monotonic, settle: Callable[[], object] | None = None) -> dict:
    """Send every record (kafka-python producer API); pace by simulated time when ``speed`` is set.
    Before a record marked ``barrier`` the producer is flushed and ``settle()`` (e.g. "wait until the
    worker is idle") is called: a scenario uses it where its outcome depends on cross-topic order (a WIM
    reading whose cargo-source lookup needs the truck's GPS track already stored). Returns counts and
    the measured rates (settling time excluded)."""
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
        if speed is not None:
            due = t_wall0 + settled + (r.ts_ms - t_sim0) / 1000.0 / speed
            delay = due - clock()
            if delay > 0:
                sleep(delay)
        fut = producer.send(r.topic, key=r.key, value=r.value, partition=r.partition if r.partition >= 0 else None)
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
            "settle_s": round(settled, 3)}


def ping_count(r: FeedRecord) -> int:
    """Pings in a gps-pings record without decoding it fully (count the plate list)."""
    if r.topic != "gps-pings":
        return 0
    import orjson
    try:
        return len(orjson.loads(r.value).get("plate") or [])
    except Exception:   # noqa: BLE001 - a malformed record counts as 0 pings
        return 0
