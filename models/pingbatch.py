"""Columnar ping batches: the wire format of the ``gps-pings`` topic.

Faust costs ~0.25 ms per event whatever its size (docs/performance.md), so producers (gateway,
simulators, replay) carry up to ``stream.batch_max_pings`` pings of ONE partition per Kafka record, as an
orjson object of parallel lists::

    {"schema": "roadwatch.pings/1",
     "plate": [...], "plate_color": [...], "terminal_id": [...],
     "ts": [epoch ms, ...],            # instant of the fix (terminals send Beijing time; converted)
     "lat": [...], "lon": [...], "speed_kmh": [...], "heading": [...], "altitude_m": [...],
     "alarm_flags": [...], "status_flags": [...], "reupload": [0|1, ...],
     "driver_id": [str|null, ...], "mileage_km": [float|null, ...],
     "recv_ts": [epoch ms, ...]}        # optional: when the gateway received it

A plain single interchange ping (``models.records.GpsPing`` JSON, ``ts`` ISO-8601) is accepted too and
becomes a batch of one, so naive producers still work (slowly).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from .records import InvalidRecord, iso_to_epoch_ms, loads_object, parse_ping, plausible_ms_range

SCHEMA = "roadwatch.pings/1"
NUMERIC = {"ts": np.int64, "lat": np.float64, "lon": np.float64, "speed_kmh": np.float64,
           "heading": np.int64, "altitude_m": np.float64, "plate_color": np.int64,
           "alarm_flags": np.int64, "status_flags": np.int64, "reupload": np.bool_}
TEXT = ("plate", "terminal_id")
OPTIONAL = ("driver_id", "mileage_km", "recv_ts")
MAX_BATCH = 100_000
INT_LIMIT = 2.0 ** 53          # larger "integers" lost precision on the way through JSON floats
TS_MIN_MS = 946_684_800_000    # 2000-01-01: GNSS fixes before that are garbage, not history
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01


@dataclass
class PingColumns:
    """Parallel arrays of one batch. ``plate``/``terminal_id``/``driver_id`` are Python lists."""
    plate: list
    terminal_id: list
    plate_color: np.ndarray
    ts: np.ndarray            # int64 epoch ms
    lat: np.ndarray
    lon: np.ndarray
    speed_kmh: np.ndarray
    heading: np.ndarray
    altitude_m: np.ndarray
    alarm_flags: np.ndarray
    status_flags: np.ndarray
    reupload: np.ndarray
    driver_id: list
    mileage_km: list
    recv_ts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.plate)


def encode_batch(pings: list[dict]) -> bytes:
    """Interchange pings (``ts`` ISO-8601 or epoch ms) → one columnar record."""
    cols: dict[str, list] = {k: [] for k in (*TEXT, *NUMERIC, "driver_id", "mileage_km")}
    for p in pings:
        for k in TEXT:
            cols[k].append(p[k])
        for k in NUMERIC:
            v = p.get(k, 0)
            if k == "ts" and isinstance(v, str):
                v = iso_to_epoch_ms(v)
            cols[k].append(int(v) if k in ("reupload",) else v)
        cols["driver_id"].append(p.get("driver_id"))
        cols["mileage_km"].append(p.get("mileage_km"))
    if any("recv_ts" in p for p in pings):
        cols["recv_ts"] = [p.get("recv_ts", p["ts"]) for p in pings]
    cols["schema"] = SCHEMA  # type: ignore[assignment]
    return orjson.dumps(cols)


def decode_batch(raw: bytes, max_bytes: int = 1_000_000, *, years: tuple[int, int] | None = None) -> PingColumns:
    """Columnar record (or one interchange ping) → ``PingColumns``; ``InvalidRecord`` if malformed.
    ``years``: the plausible years (``records.plausible_years(cfg)``; default 2000–2100)."""
    d = loads_object(raw, max_bytes)
    ts_min, ts_max = plausible_ms_range(years)
    if d.get("schema") != SCHEMA:
        if "schema" in d:
            raise InvalidRecord("bad_schema", f"unknown ping schema {d.get('schema')!r}")
        p = parse_ping(d, years=years)
        d = {k: [getattr(p, k)] for k in (*TEXT, *NUMERIC, "driver_id", "mileage_km")}
        d["ts"] = [iso_to_epoch_ms(p.ts)]
    plates = d.get("plate")
    if not isinstance(plates, list):
        raise InvalidRecord("bad_type", "plate must be a list of strings")
    n = len(plates)
    if n == 0:
        raise InvalidRecord("empty_batch", "ping batch has no pings")
    if n > MAX_BATCH:
        raise InvalidRecord("oversized", f"ping batch of {n} exceeds {MAX_BATCH}")
    out: dict = {}
    for k in TEXT:
        col = d.get(k)
        # map() over builtins runs in C: this check is on the hot path (~0.1 µs per ping instead of ~0.5)
        if (not isinstance(col, list) or len(col) != n or set(map(type, col)) != {str}
                or min(map(len, col)) == 0 or max(map(len, col)) > 20):
            raise InvalidRecord("bad_type", f"{k} must be a list of {n} non-empty strings of at most 20 characters")
        out[k] = col
    for k, dt in NUMERIC.items():
        col = d.get(k)
        if not isinstance(col, list) or len(col) != n:
            raise InvalidRecord("missing_field", f"{k} must be a list of {n} numbers")
        try:
            arr = np.asarray(col, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidRecord("bad_type", f"{k} must hold numbers only") from None
        if arr.ndim != 1 or not np.isfinite(arr).all():
            raise InvalidRecord("bad_type", f"{k} must hold finite numbers")
        if dt is not np.float64 and (np.abs(arr) > INT_LIMIT).any():
            raise InvalidRecord("out_of_range", f"{k} holds a number too large for an integer field")
        out[k] = arr.astype(dt) if dt is not np.float64 else arr
    if ((out["ts"] < ts_min) | (out["ts"] > ts_max)).any():
        raise InvalidRecord("bad_timestamp", "ts outside the plausible years (config time.min_year/max_year)")
    for k in ("driver_id", "mileage_km"):
        col = d.get(k)
        out[k] = col if isinstance(col, list) and len(col) == n else [None] * n
    out["recv_ts"] = _recv_ts(d.get("recv_ts"), n)
    return PingColumns(**out)


def _recv_ts(rt, n: int) -> np.ndarray | None:
    """Receipt times are optional: absent → None; present but malformed → rejected, never guessed."""
    if rt is None:
        return None
    if not isinstance(rt, list) or len(rt) != n:
        raise InvalidRecord("bad_type", f"recv_ts must be a list of {n} epoch-ms numbers")
    try:
        arr = np.asarray(rt, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidRecord("bad_type", "recv_ts must hold numbers only") from None
    if arr.ndim != 1 or not np.isfinite(arr).all() or ((arr < TS_MIN_MS) | (arr > TS_MAX_MS)).any():
        raise InvalidRecord("out_of_range", "recv_ts must hold epoch ms between 2000 and 2100")
    return arr.astype(np.int64)


def columns_to_pings(c: PingColumns) -> list[dict]:
    """Back to interchange dicts (``ts`` stays epoch ms) — for tests and the batch CLI."""
    rows = []
    for i in range(len(c)):
        rows.append({"plate": c.plate[i], "plate_color": int(c.plate_color[i]), "terminal_id": c.terminal_id[i],
                     "ts": int(c.ts[i]), "lat": float(c.lat[i]), "lon": float(c.lon[i]),
                     "speed_kmh": float(c.speed_kmh[i]), "heading": int(c.heading[i]),
                     "altitude_m": float(c.altitude_m[i]), "alarm_flags": int(c.alarm_flags[i]),
                     "status_flags": int(c.status_flags[i]), "reupload": bool(c.reupload[i]),
                     "driver_id": c.driver_id[i], "mileage_km": c.mileage_km[i]})
    return rows
