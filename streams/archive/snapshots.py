"""The GPS path's archive writes: alerts, vehicle-day rows, sampled truck points and the per-partition ping
state snapshots that make the archive exactly-once (streams/gps.py).

``save_partition_snapshot`` commits a partition's outputs, its state and its ``next_offset`` in ONE
transaction on either backend: after a crash the archive holds either all of them or none, and the worker
that takes the partition over — on this host or another — resumes from exactly that offset.
"""
from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from itertools import repeat

import orjson

from roadwatch.models.records import format_ts

from .backend import ArchiveConnection

VEHICLE_DAY_COLS = ("plate", "day", "pings", "qualified", "km_total", "km_incomplete", "drift_points",
                    "overspeed_count", "fatigue_s", "curfew_events", "offline_events", "late_from_closed")
_DAY_DEFAULTS = {"late_from_closed": 0}      # rows made before the column existed (tests, old exports)

_ALERT_COLS = ("alert_id", "type", "plate", "start_ts", "end_ts", "severity", "lat", "lon", "late", "details", "day",
               "emitted_at")
_ALERT_UPDATE = ("end_ts", "details", "severity")     # an alert's later versions close it; the rest stays
_DAY_KEY = ("plate", "day")
_DAY_UPDATE = VEHICLE_DAY_COLS[2:] + ("updated_at",)
_TRACK_COLS = ("plate", "ts_ms", "lat", "lon", "speed_kmh")
_SNAPSHOT_SQL = ("INSERT INTO ping_state(topic, partition, next_offset, state, saved_at, epoch, saved_by) "
                 "VALUES (?,?,?,?,?,?,?) ON CONFLICT(topic, partition) DO UPDATE SET "
                 "next_offset=excluded.next_offset, state=excluded.state, saved_at=excluded.saved_at, "
                 "epoch=excluded.epoch, saved_by=excluded.saved_by")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"   # who wrote a snapshot (ping_state.saved_by)

# A state blob as the worker stores it: the engine's npz written uncompressed (PingProcessor.snapshot(
# compress=False)) and compressed whole with Zstandard (level 1, through pyarrow's codec): 2.5 × less CPU per
# snapshot than the npz's own per-entry deflate and a smaller blob (docs/performance.md). A blob without this
# header (an npz, "PK…") is returned as it is, so snapshots written before remain readable.
_ZSTD_HEADER = b"\x00rw-zstd\x00"


def pack_state(raw: bytes) -> bytes:
    """Header + uncompressed length (8 bytes, little-endian) + the Zstandard-compressed blob."""
    import pyarrow as pa
    return _ZSTD_HEADER + len(raw).to_bytes(8, "little") + pa.compress(raw, codec="zstd", asbytes=True)


def unpack_state(blob: bytes) -> bytes:
    """The engine's blob from what ``pack_state`` stored (any other blob unchanged)."""
    if not blob.startswith(_ZSTD_HEADER):
        return blob
    import pyarrow as pa
    h = len(_ZSTD_HEADER)
    size = int.from_bytes(blob[h:h + 8], "little")
    return pa.decompress(blob[h + 8:], size, codec="zstd", asbytes=True)


def _now_iso() -> str:
    return format_ts(datetime.now(timezone.utc))


def upsert_alerts(conn: ArchiveConnection, alerts: list[dict]) -> None:
    """Idempotent: the deterministic ``alert_id`` is the primary key; an update (end_ts) replaces."""
    if not alerts:
        return
    now = _now_iso()
    # many rows per statement (``bulk_upsert``: the same as one upsert per row, in order): row by row, the
    # commit thread handed the interpreter lock back and forth with the event loop once per alert
    conn.bulk_upsert("alerts", _ALERT_COLS, [
        (a["alert_id"], a["type"], a["plate"], a["start_ts"], a.get("end_ts"), a.get("severity", "medium"),
         a.get("lat"), a.get("lon"), int(bool(a.get("late"))), orjson.dumps(a.get("details", {})).decode(),
         a["start_ts"][:10], now) for a in alerts], ("alert_id",), _ALERT_UPDATE)


def upsert_vehicle_days(conn: ArchiveConnection, rows: list[dict]) -> None:
    """Absolute per-(plate, day) counters: the newest row replaces the stored one."""
    upsert_day_tuples(conn, [tuple(r[c] if c in r else _DAY_DEFAULTS[c] for c in VEHICLE_DAY_COLS) for r in rows])


def upsert_day_tuples(conn: ArchiveConnection, rows: list[tuple]) -> None:
    """``upsert_vehicle_days`` for rows already as tuples in ``VEHICLE_DAY_COLS`` order (the worker's commit,
    ``PingProcessor.day_table``): no dict per row; PostgreSQL takes them by COPY (``bulk_upsert``)."""
    if not rows:
        return
    conn.bulk_upsert("vehicle_day", VEHICLE_DAY_COLS + ("updated_at",),
                     list(map(tuple.__add__, rows, repeat((_now_iso(),), len(rows)))), _DAY_KEY, _DAY_UPDATE)


def load_vehicle_days(conn: ArchiveConnection, keys) -> list[dict]:
    """The stored rows of the (plate, day) ``keys`` (absent keys are absent): the base on which the engine
    recomputes a past day that late data changed (``PingProcessor.merge_past_days``)."""
    sql = f"SELECT {', '.join(VEHICLE_DAY_COLS)} FROM vehicle_day WHERE plate = ? AND day = ?"
    out = []
    for plate, day in keys:
        row = conn.execute(sql, (plate, day)).fetchone()
        if row is not None:
            out.append(dict(zip(VEHICLE_DAY_COLS, tuple(row))))
    return out


def insert_track_points(conn: ArchiveConnection, points) -> None:
    """Sampled (plate, ts_ms, lat, lon, speed_kmh) tuples; a point already stored is kept."""
    if points:
        conn.bulk_upsert("track_points", _TRACK_COLS, [tuple(p) for p in points], ("plate", "ts_ms"), None)


def save_partition_snapshot(conn: ArchiveConnection, topic: str, partition: int, next_offset: int, state: bytes,
                            epoch: str, *, day_rows: list[dict] = (), track_points=(),
                            alerts: list[dict] = (), segment: bytes | None = None, segment_seq: int = 0) -> None:
    """One transaction: the partition's outputs since its last snapshot, its state and ``next_offset``
    (the first source offset the state does NOT cover).

    Incremental snapshots (streams/gps.py): the replay window's held samples live in ``ping_state_segment``
    rows beside the state. ``segment_seq`` 0 (a full snapshot, or a state that holds its samples itself)
    replaces the partition's segments by ``segment``; ``segment_seq`` k > 0 appends ``segment`` as the k-th
    (the samples added since the commit of segment k − 1). Restore = the state + its segments in order."""
    with conn.transaction():
        upsert_vehicle_days(conn, list(day_rows))
        insert_track_points(conn, track_points)
        upsert_alerts(conn, list(alerts))
        if segment_seq == 0:
            conn.execute("DELETE FROM ping_state_segment WHERE topic=? AND partition=?", (topic, int(partition)))
        if segment is not None:
            conn.execute("INSERT INTO ping_state_segment(topic, partition, seq, samples) VALUES (?,?,?,?)",
                         (topic, int(partition), int(segment_seq), bytes(segment)))
        conn.execute(_SNAPSHOT_SQL, (topic, int(partition), int(next_offset), bytes(state), _now_iso(), epoch,
                                     WORKER_ID))


def _snapshot(r) -> dict:
    return {"partition": int(r["partition"]), "next_offset": int(r["next_offset"]),
            "state": unpack_state(bytes(r["state"])),
            "epoch": r["epoch"], "saved_at": r["saved_at"], "saved_by": r["saved_by"]}


def load_partition_snapshot(conn: ArchiveConnection, topic: str, partition: int) -> dict | None:
    """The stored snapshot of one partition: ``{partition, next_offset, state, epoch, saved_at, saved_by,
    segments}`` (``segments``: the held samples stored beside the state, in order — ``PingProcessor.restore``)."""
    r = conn.execute("SELECT partition, next_offset, state, epoch, saved_at, saved_by FROM ping_state "
                     "WHERE topic=? AND partition=?", (topic, int(partition))).fetchone()
    if r is None:
        return None
    out = _snapshot(r)
    out["segments"] = [unpack_state(bytes(x[0])) for x in conn.execute(
        "SELECT samples FROM ping_state_segment WHERE topic=? AND partition=? ORDER BY seq", (topic, int(partition)))]
    return out


def load_partition_snapshots(conn: ArchiveConnection, topic: str) -> dict[int, dict]:
    """Every stored snapshot of ``topic`` by partition."""
    return {int(r["partition"]): _snapshot(r) for r in conn.execute(
        "SELECT partition, next_offset, state, epoch, saved_at, saved_by FROM ping_state WHERE topic=?", (topic,))}


def snapshot_progress(conn: ArchiveConnection, topic: str) -> int:
    """Source records covered by the snapshots of ``topic`` (the sum of ``next_offset``)."""
    return int(conn.execute("SELECT COALESCE(SUM(next_offset), 0) FROM ping_state WHERE topic=?",
                            (topic,)).fetchone()[0])


def total_pings(conn: ArchiveConnection) -> int:
    """Pings counted in all vehicle-day rows (``bench`` checks every ping was counted exactly once)."""
    return int(conn.execute("SELECT COALESCE(SUM(pings), 0) FROM vehicle_day").fetchone()[0])


def vehicle_days_of(conn: ArchiveConnection, day: str) -> list[dict]:
    """Every vehicle's row of ``day`` (YYYY-MM-DD, Beijing): the console's fleet status."""
    return [dict(r) for r in conn.execute("SELECT * FROM vehicle_day WHERE day = ?", (day,))]
