"""Columnar ping batches: the wire formats of the ``gps-pings`` topic.

Two encodings of the same columns (docs/formats.md), told apart by the first byte of the record:
``FF`` — an Apache Arrow IPC record batch (models/pingarrow.py; the default of our producers,
``stream.wire_format``: numeric columns are read without parsing); anything else — JSON, below (kept for
other producers and for readability).

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

from itertools import chain

import orjson

from pyarrow import ArrowException

from .pingarrow import MAGIC as ARROW_MAGIC, decode_arrow, encode_arrow
from .pingschema import FIELDS, PingColumns, validate_columns
from .records import InvalidRecord, iso_to_epoch_ms, loads_object

SCHEMA = "roadwatch.pings/1"
MAX_BATCH = 100_000
_COLUMNS = tuple(k for k in FIELDS if k != "recv_ts")


WIRE_FORMATS = ("arrow", "json")


def encode_batch(pings: list[dict], wire: str = "json") -> bytes:
    """Interchange pings (``ts`` ISO-8601 or epoch ms) → one columnar record in the ``wire`` encoding."""
    cols: dict[str, list] = {k: [] for k in _COLUMNS}
    for p in pings:
        for k in _COLUMNS:
            v = p.get(k, FIELDS[k].default)
            if k == "ts" and isinstance(v, str):
                v = iso_to_epoch_ms(v)
            cols[k].append(v)
    if not any(cols["jt808_version"]):
        del cols["jt808_version"]
    if any("recv_ts" in p for p in pings):
        cols["recv_ts"] = [p.get("recv_ts", p["ts"]) for p in pings]
    if wire == "arrow" and "recv_ts" in cols:
        cols["recv_ts"] = [iso_to_epoch_ms(v) if isinstance(v, str) else v for v in cols["recv_ts"]]
    return encode_columns(cols, wire)


def encode_columns(cols: dict, wire: str) -> bytes:
    """Column lists (``ts``/``recv_ts`` epoch ms in the Arrow form) → one record in the ``wire`` encoding.
    Columns the Arrow form cannot write at all (mixed types in one column) go out in the JSON form, which
    carries anything JSON can: the worker validates either and rejects a bad ping with the same reason."""
    if wire == "arrow":
        try:
            return encode_arrow(cols)
        except (ArrowException, TypeError, ValueError, OverflowError):
            pass
    elif wire != "json":
        raise ValueError(f"wire format {wire!r} is not one of {WIRE_FORMATS}")
    cols = {"schema": SCHEMA, **cols}
    return orjson.dumps(cols, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_batch(raw: bytes, max_bytes: int = 1_000_000, *, years: tuple[int, int] | None = None) -> PingColumns:
    """Columnar record (or one interchange ping) → ``PingColumns``; ``InvalidRecord`` if malformed.
    The batch is one record: a defect in any ping rejects it whole (the producer sends it to dead-letter
    as one unit; the schema is ``models.pingschema``). ``years``: the plausible years
    (``models.timerange.plausible_years(cfg)``; default 2000–2100)."""
    if raw[:4] == ARROW_MAGIC:
        return decode_arrow(raw, max_bytes, years=years)
    d = loads_object(raw, max_bytes)
    if d.get("schema") != SCHEMA:
        if "schema" in d:
            raise InvalidRecord("bad_schema", f"unknown ping schema {d.get('schema')!r}")
        d = {k: [v] for k, v in d.items()}      # a single interchange ping: a batch of one
    plates = d.get("plate")
    if not isinstance(plates, list):
        raise InvalidRecord("bad_type", "plate must be a list of strings")
    n = len(plates)
    if n == 0:
        raise InvalidRecord("empty_batch", "ping batch has no pings")
    if n > MAX_BATCH:
        raise InvalidRecord("oversized", f"ping batch of {n} exceeds {MAX_BATCH}")

    def get(name: str) -> list | None:
        col = d.get(name)
        if col is None:
            return None
        if not isinstance(col, list):
            raise InvalidRecord("bad_type", f"{name} must be a list of {n} values")
        if len(col) != n:
            raise InvalidRecord("missing_field", f"{name} must be a list of {n} values, got {len(col)}")
        return col

    cols, errs = validate_columns(get, n, years=years)
    if errs:
        i = min(errs)
        code, detail = errs[i]
        raise InvalidRecord(code, detail if n == 1 else f"ping {i}: {detail}")
    return cols


def decode_json_batches(raws: list[bytes], max_bytes: int = 1_000_000) -> PingColumns | None:
    """Several JSON columnar records (consecutive on the topic) validated as ONE batch — what
    ``decode_batch`` of each, concatenated, gives — or None when that cannot be told at once: a record that
    is not a plain columnar batch, records that differ in which columns they carry, or any ping with a
    defect. The caller then decodes them one by one (``decode_batch``), so a defect rejects only its own
    record. One validation per merge instead of per record: the checks cost per column, not per ping
    (a province feed's records hold ~150 pings; docs/performance.md)."""
    parts: dict[str, list] = {}
    present: tuple | None = None
    n = 0
    for raw in raws:
        try:
            d = loads_object(raw, max_bytes)
        except InvalidRecord:
            return None
        plates = d.get("plate")
        if d.get("schema") != SCHEMA or not isinstance(plates, list) or not 0 < len(plates) <= MAX_BATCH:
            return None
        k = len(plates)
        cols = {name: d.get(name) for name in FIELDS}
        have = tuple(c is not None for c in cols.values())
        if present is None:
            present = have
        elif have != present:
            return None
        for name, col in cols.items():
            if col is None:
                continue
            if type(col) is not list or len(col) != k:
                return None
            parts.setdefault(name, []).append(col)
        n += k
    if not n:
        return None
    merged = {name: list(chain.from_iterable(cs)) if len(cs) > 1 else cs[0] for name, cs in parts.items()}
    cols, errs = validate_columns(merged.get, n)
    return None if errs else cols


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
        if c.jt808_version is not None:
            rows[-1]["jt808_version"] = int(c.jt808_version[i])
    return rows
