"""Live events for the console: an in-process pub/sub between the worker and Server-Sent-Events clients.

The worker calls ``publish_alert`` / ``publish_case`` from its event loop; each call serialises the event
once (SSE wire bytes) and offers it to every subscriber's bounded queue with ``put_nowait``. A subscriber
whose queue is full is dropped (its connection is closed) — a slow browser never blocks the worker. A
ring of recent events lets a client that reconnects with ``Last-Event-ID`` resume without a gap; if the
gap is older than the ring, it gets a ``reset`` event and reloads from the archive.

Replays of the same alert carry the same ``alert_id``: the hub keeps only the newest version per id in its
"latest" index and the browser updates the row in place.

Also here: the ``FleetView`` protocol (vehicle positions, supplied by the GPS engine) and a small
in-memory implementation used by tests and the demo.
"""
from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import orjson
from prometheus_client import Counter, Gauge

SSE_CLIENTS = Gauge("roadwatch_console_sse_clients", "Console live-feed connections")
SSE_DROPPED = Counter("roadwatch_console_sse_dropped_total", "Live-feed clients dropped for falling behind")

VEHICLE_STATES = ("moving", "stopped", "offline", "alerting")


def _plain(obj: Any) -> dict:
    """Accept a dict or a faust.Record (``asdict``)."""
    if isinstance(obj, dict):
        return dict(obj)
    asdict = getattr(obj, "asdict", None)
    if asdict is None:
        raise TypeError(f"expected a dict or a record, got {type(obj).__name__}")
    return dict(asdict())


class Event:
    """One live event. The console's enrichment (enterprise, county, place names) and the SSE frame are made
    on first use and then shared by every client: a worker without a console client connected never pays
    for them (docs/performance.md), one with clients pays once per event."""

    __slots__ = ("seq", "kind", "_raw", "_enrich", "_epoch", "_data", "_wire")

    def __init__(self, seq: int, kind: str, data: dict, epoch: str = "",
                 enrich: Callable[[dict], dict] | None = None):
        self.seq = seq
        self.kind = kind            # alert | case | ack
        self._raw = data
        self._enrich = enrich
        self._epoch = epoch
        self._data: dict | None = None
        self._wire: bytes | None = None

    @property
    def data(self) -> dict:
        if self._data is None:
            d = self._raw
            if self._enrich is not None:
                try:
                    d = self._enrich(d)
                except Exception:        # enrichment is cosmetic; the event itself must still go out
                    pass
            self._data, self._raw, self._enrich = d, None, None
        return self._data

    @property
    def wire(self) -> bytes:
        """The SSE frame, serialised once for every client."""
        if self._wire is None:
            self._wire = sse_frame(f"{self._epoch}-{self.seq}", self.kind, self.data)
        return self._wire


def sse_frame(event_id: str | None, kind: str, data: Any) -> bytes:
    head = (f"id: {event_id}\n" if event_id is not None else "") + f"event: {kind}\n"
    # orjson never emits raw newlines, so one data line is always enough
    return head.encode() + b"data: " + orjson.dumps(data, default=str) + b"\n\n"


class Subscription:
    """One SSE client. ``get`` returns the next event or ``None`` once the client was dropped or its
    session ended (``ended``: logout, user deleted, role changed — the stream says so and closes)."""

    def __init__(self, queue_max: int, username: str | None = None, session_id: str | None = None):
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_max)
        self.dropped = False
        self.ended = False
        self.reset = False         # the client asked to resume from before the ring: reload, then stream
        self.username = username   # whose session this stream belongs to
        self.session_id = session_id
        self.on_drop: Callable[[], None] | None = None
        self._wake = asyncio.Event()

    def end(self) -> None:
        """The session behind this stream is over: ``get`` returns ``None`` at once (no transport abort, so
        the stream can still tell the browser why it closes)."""
        if self.dropped:
            return
        self.ended = True
        self.dropped = True
        self._wake.set()

    def offer(self, ev: Event) -> bool:
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(ev)
        except asyncio.QueueFull:
            self.drop()
            return False
        return True

    def drop(self, lagging: bool = True) -> None:
        if self.dropped:
            return
        self.dropped = True
        if lagging:
            SSE_DROPPED.inc()
        self._wake.set()
        if self.on_drop is not None:
            try:
                self.on_drop()
            except Exception:   # closing a dead transport must never reach the publisher
                pass

    async def get(self, timeout: float | None = None) -> Event | None:
        """Next event; ``None`` when dropped; raises ``TimeoutError`` after ``timeout`` seconds."""
        if self.dropped:
            return None
        if not self.queue.empty():
            return self.queue.get_nowait()
        getter = asyncio.ensure_future(self.queue.get())
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({getter, waker}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            if not getter.done():
                getter.cancel()
        if getter in done and not getter.cancelled():
            return getter.result()
        if self.dropped:
            return None
        raise TimeoutError


class LiveHub:
    """Fan-out of live alerts and case updates to console clients. Never blocks the publisher."""

    def __init__(self, *, queue_max: int = 1000, ring_size: int = 5000, latest_max: int = 5000,
                 enrich: Callable[[dict], dict] | None = None):
        self.queue_max = queue_max
        self.enrich = enrich                 # set by the console: adds enterprise, county, location names
        self._ring: deque[Event] = deque(maxlen=ring_size)
        self._latest: OrderedDict[str, dict] = OrderedDict()   # alert_id → newest alert
        self._latest_max = latest_max
        self._subs: set[Subscription] = set()
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0
        # event ids are "<epoch>-<seq>": a client resuming against a restarted worker must reload
        self.epoch = secrets.token_hex(4)

    def configure(self, cfg) -> None:
        """Take the console's settings (``web.sse_queue_max``, ``web.live_ring_size``) from the given Config."""
        self.queue_max = int(cfg["web.sse_queue_max"])
        self._ring = deque(self._ring, maxlen=int(cfg["web.live_ring_size"]))

    # --- publishing (worker side) -------------------------------------------------------------------
    def publish_alert(self, alert: Any) -> None:
        self._dispatch("alert", _plain(alert))

    def publish_case(self, case: Any) -> None:
        self._dispatch("case", _plain(case))

    def publish(self, kind: str, data: dict) -> None:
        self._dispatch(kind, _plain(data))

    def _dispatch(self, kind: str, data: dict) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:      # called from another thread: hand over to the clients' loop
                loop.call_soon_threadsafe(self._publish, kind, data)
                return
        self._publish(kind, data)

    def _publish(self, kind: str, data: dict) -> None:
        seq = next(self._seq)
        self._last_seq = seq
        ev = Event(seq, kind, data, self.epoch, self.enrich if kind == "alert" else None)
        if kind == "alert":
            aid = str(data.get("alert_id", ""))
            if aid:
                self._latest.pop(aid, None)
                self._latest[aid] = ev
                while len(self._latest) > self._latest_max:
                    self._latest.popitem(last=False)
        self._ring.append(ev)
        self.published += 1
        for sub in list(self._subs):
            sub.offer(ev)

    # --- subscribing (console side) -----------------------------------------------------------------
    @property
    def seq(self) -> int:
        """Sequence number of the newest event (0 before any); clients resume from it."""
        return self._last_seq

    @property
    def event_id(self) -> str:
        """Id of the newest event, in the form the browser sends back as ``Last-Event-ID``."""
        return f"{self.epoch}-{self._last_seq}"

    def parse_event_id(self, value: str | None) -> int | None:
        """The seq of an id this hub issued; ``None`` for no id; ``-1`` for a foreign or malformed id
        (the client must reload)."""
        if not value:
            return None
        epoch, _, seq = value.strip().partition("-")
        if epoch != self.epoch or not seq.isdigit():
            return -1
        return int(seq)

    def recent_alerts(self) -> list[dict]:
        """Newest version of each recent alert, oldest first."""
        return [ev.data for ev in self._latest.values()]

    def subscribe(self, since: int | None = None, *, username: str | None = None,
                  session_id: str | None = None) -> Subscription:
        """A new client. With ``since`` (a seq the client already has), queued events after it are
        replayed from the ring; if the ring no longer reaches back that far, ``sub.reset`` is set."""
        self._loop = asyncio.get_running_loop()
        sub = Subscription(self.queue_max, username, session_id)
        if since is not None and (since < 0 or since > self._last_seq):
            sub.reset = True
        elif since is not None and since < self._last_seq:
            first = self._ring[0].seq if self._ring else self._last_seq + 1
            if since < first - 1:
                sub.reset = True
            else:
                missed = [ev for ev in self._ring if ev.seq > since]
                if len(missed) > self.queue_max:
                    sub.reset = True
                else:
                    for ev in missed:
                        sub.queue.put_nowait(ev)
        self._subs.add(sub)
        SSE_CLIENTS.set(len(self._subs))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        SSE_CLIENTS.set(len(self._subs))

    def end_sessions(self, *, username: str | None = None, session_id: str | None = None) -> int:
        """Close the streams of one session (logout) or of every session of a user (deleted, role or
        password changed). Returns how many were closed."""
        n = 0
        for sub in list(self._subs):
            if (session_id is not None and sub.session_id == session_id) or \
                    (username is not None and sub.username == username):
                sub.end()
                n += 1
        return n

    def disconnect_all(self) -> None:
        """End every live connection (server shutdown)."""
        for sub in list(self._subs):
            sub.drop(lagging=False)

    @property
    def subscribers(self) -> int:
        return len(self._subs)


# --- vehicle positions ---------------------------------------------------------------------------------

class FleetView(Protocol):
    """What the console needs from the GPS engine."""

    def vehicles(self) -> list[dict]:
        """Every known vehicle: plate, lat, lon, state (moving|stopped|offline|alerting), ts, category,
        enterprise_id, county."""
        ...

    def track(self, plate: str) -> list[dict]:
        """Recent points of one vehicle, oldest first: ts, lat, lon, speed_kmh (optional)."""
        ...


@dataclass
class InMemoryFleet:
    """A FleetView kept in dicts: for tests, the demo, and as a reference for the worker's version."""
    track_max: int = 500
    _vehicles: dict[str, dict] = field(default_factory=dict)
    _tracks: dict[str, deque] = field(default_factory=dict)

    def update(self, plate: str, lat: float, lon: float, ts: str, state: str = "moving", *,
               speed_kmh: float | None = None, category: str = "", enterprise_id: str = "",
               county: str = "") -> None:
        if state not in VEHICLE_STATES:
            raise ValueError(f"state must be one of {VEHICLE_STATES}")
        prev = self._vehicles.get(plate, {})
        self._vehicles[plate] = {
            "plate": plate, "lat": lat, "lon": lon, "state": state, "ts": ts, "speed_kmh": speed_kmh,
            "category": category or prev.get("category", ""),
            "enterprise_id": enterprise_id or prev.get("enterprise_id", ""),
            "county": county or prev.get("county", ""),
        }
        pt = {"ts": ts, "lat": lat, "lon": lon}
        if speed_kmh is not None:
            pt["speed_kmh"] = speed_kmh
        self._tracks.setdefault(plate, deque(maxlen=self.track_max)).append(pt)

    def set_state(self, plate: str, state: str) -> None:
        if state not in VEHICLE_STATES:
            raise ValueError(f"state must be one of {VEHICLE_STATES}")
        if plate in self._vehicles:
            self._vehicles[plate]["state"] = state

    def extend(self, points: Iterable[dict]) -> None:
        for p in points:
            self.update(**p)

    def vehicles(self) -> list[dict]:
        return [dict(v) for v in self._vehicles.values()]

    def track(self, plate: str) -> list[dict]:
        return list(self._tracks.get(plate, ()))
