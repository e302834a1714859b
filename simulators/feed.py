"""A feed: the Kafka records a scenario publishes, in publish order, each with its simulated timestamp.

Ping columns become columnar batches (models/pingbatch.py: Arrow IPC or JSON by ``stream.wire_format``) of ONE partition each, chosen with
Kafka's default partitioner (murmur2 of the raw plate bytes, like streams/batcher.py and the worker's raw
keys). A batch is flushed at ``max_pings`` pings or when it would span more than ``flush_s`` seconds of
simulated receipt time. WIM readings and driver events are one record each, keyed by plate.

The same records are the recording format (simulators/recording.py), so ``roadwatch replay`` plays a
generated feed and a captured one alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from roadwatch.models.pingarrow import encode_arrow_slices
from roadwatch.models.pingbatch import encode_columns
from roadwatch.streams.batcher import murmur2
from roadwatch.streams.topics import DRIVER_EVENTS, GPS_PINGS, WIM_READINGS


@dataclass(frozen=True)
class FeedRecord:
    topic: str
    partition: int
    key: bytes
    value: bytes
    ts_ms: int          # simulated time (receipt) — drives replay pacing
    barrier: bool = False   # publisher waits until the worker is idle before sending this record


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's DefaultPartitioner for a non-null key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def ping_columns(cols: dict, idx: np.ndarray, vehicles: list) -> dict:
    """The columns of one record (``models/pingbatch.py``) for the pings at ``idx``.
    ``vehicles[vid]`` = (plate, color, terminal, driver)."""
    vid = cols["vid"][idx]
    vs = [vehicles[i] for i in vid.tolist()]
    return {
        "plate": [v[0] for v in vs],
        "plate_color": [v[1] for v in vs],
        "terminal_id": [v[2] for v in vs],
        "ts": cols["ts"][idx] * 1000,
        "lat": cols["lat"][idx], "lon": cols["lon"][idx], "speed_kmh": cols["speed_kmh"][idx],
        "heading": cols["heading"][idx], "altitude_m": cols["altitude_m"][idx],
        "alarm_flags": cols["alarm_flags"][idx], "status_flags": cols["status_flags"][idx],
        "reupload": cols["reupload"][idx].astype(np.uint8),
        "driver_id": [v[3] for v in vs],
        "mileage_km": cols["mileage_km"][idx],
        "recv_ts": cols["recv_ts"][idx] * 1000,
    }


def encode_ping_batch(cols: dict, idx: np.ndarray, vehicles: list, wire: str = "arrow") -> bytes:
    """One columnar record for the pings at ``idx`` in the ``wire`` encoding (``stream.wire_format``)."""
    return encode_columns(ping_columns(cols, idx, vehicles), wire)


def ping_records(cols: dict, vehicles: list, partitions: int, max_pings: int = 500,
                 flush_s: float = 5.0, wire: str = "arrow") -> list[FeedRecord]:
    """Batch pings (already sorted by ``recv_ts``) per partition; returns records in flush order."""
    if not cols or len(cols["vid"]) == 0:
        return []
    vparts = np.array([partition_for(v[0].encode(), partitions) for v in vehicles], dtype=np.int64)
    part = vparts[cols["vid"]]
    recv = cols["recv_ts"]
    out: list[tuple[int, int, FeedRecord]] = []
    seq = 0
    for p in range(partitions):
        idx = np.flatnonzero(part == p)
        if len(idx) == 0:
            continue
        r = recv[idx].astype(np.int64)
        fl = int(np.floor(flush_s))
        # Greedy cut: new batch when full or when the receipt time passes batch start + flush_s.
        starts = [0]
        i, n = 0, len(idx)
        while i < n:
            j = int(np.searchsorted(r, r[i] + fl, side="right"))
            j = min(j, i + max_pings, n)
            j = max(j, i + 1)
            starts.append(j)
            i = j
        bounds = list(zip(starts[:-1], starts[1:]))
        # the partition's columns converted once, each record a slice of them; one by one (as a producer
        # would) when a value needs a record of its own (a wider type, or the JSON form)
        values = encode_arrow_slices(ping_columns(cols, idx, vehicles), bounds) if wire == "arrow" else None
        if values is None:
            values = [encode_ping_batch(cols, idx[a:b], vehicles, wire) for a, b in bounds]
        for (a, b), value in zip(bounds, values):
            first_plate = vehicles[int(cols["vid"][idx[a]])][0]
            rec = FeedRecord(GPS_PINGS, p, first_plate.encode(), value, int(r[b - 1]) * 1000)
            out.append((rec.ts_ms, seq, rec))
            seq += 1
    out.sort(key=lambda x: (x[0], x[2].partition, x[1]))
    return [x[2] for x in out]


def wim_record(reading: dict, partitions: int, ts_ms: int, barrier: bool = False) -> FeedRecord:
    key = reading["plate"].encode()
    return FeedRecord(WIM_READINGS, partition_for(key, partitions), key, orjson.dumps(reading), ts_ms, barrier)


def driver_record(event: dict, partitions: int, ts_ms: int) -> FeedRecord:
    key = event["plate"].encode()
    return FeedRecord(DRIVER_EVENTS, partition_for(key, partitions), key, orjson.dumps(event), ts_ms)


_TOPIC_ORDER = {DRIVER_EVENTS: 0, GPS_PINGS: 1, WIM_READINGS: 2}


def merge(*streams: list[FeedRecord]) -> list[FeedRecord]:
    """One publish order by simulated time; at equal times driver events, then pings, then WIM readings
    (a WIM passage's GPS track and the driver's card login precede the reading)."""
    allrec = [r for s in streams for r in s]
    return sorted(allrec, key=lambda r: (r.ts_ms, _TOPIC_ORDER.get(r.topic, 9)))
