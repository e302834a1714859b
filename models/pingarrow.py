"""The binary form of a ``gps-pings`` record: one Apache Arrow IPC record batch (docs/formats.md).

The same columns as the JSON columnar form (models/pingbatch.py), with types on the wire, so the worker
reads the numeric columns straight out of the record's bytes into numpy (no per-value parsing): an Arrow
IPC *stream* (schema message, exactly one record batch, end-of-stream marker), uncompressed. It starts
with the IPC continuation marker ``FF FF FF FF``, which no JSON text can (``0xFF`` is never UTF-8): that
first byte is how ``decode_batch`` tells the two forms apart, in Kafka and in feed files alike.

Writers use the types of ``ARROW_SCHEMA``; readers (``decode_arrow``) accept any integer or floating type
for a numeric column (analysts' tools write what they have), ``int64`` epoch ms or an Arrow timestamp with
a time zone for the times, and check every value with the bounds of the one ping schema
(models/pingschema.py). A record that cannot be read raises ``InvalidRecord`` — never anything else.
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .pingschema import FIELDS, INT_LIMIT, PingColumns
from .records import InvalidRecord
from .timerange import plausible_ms_range

MAGIC = b"\xff\xff\xff\xff"          # Arrow IPC continuation marker: first bytes of every IPC stream message
SCHEMA_KEY = b"roadwatch.schema"
SCHEMA_NAME = b"roadwatch.pings/1"   # same columns and meaning as the JSON form; the encoding differs

_TS = pa.timestamp("ms", tz="UTC")
ARROW_SCHEMA = pa.schema([
    pa.field("plate", pa.string(), nullable=False),
    pa.field("terminal_id", pa.string(), nullable=False),
    pa.field("plate_color", pa.uint8(), nullable=False),
    pa.field("ts", _TS, nullable=False),
    pa.field("lat", pa.float64(), nullable=False),
    pa.field("lon", pa.float64(), nullable=False),
    pa.field("speed_kmh", pa.float64(), nullable=False),
    pa.field("heading", pa.uint16(), nullable=False),
    pa.field("altitude_m", pa.float64(), nullable=False),
    pa.field("alarm_flags", pa.uint32(), nullable=False),
    pa.field("status_flags", pa.uint32(), nullable=False),
    pa.field("reupload", pa.bool_(), nullable=False),
    pa.field("driver_id", pa.string()),
    pa.field("mileage_km", pa.float64()),
    pa.field("jt808_version", pa.uint16()),          # optional column: absent = not known (0)
    pa.field("recv_ts", _TS),                        # optional column: absent or null = the fix time
], metadata={SCHEMA_KEY: SCHEMA_NAME})
_OPTIONAL_COLUMNS = ("jt808_version", "recv_ts")


def is_arrow(raw: bytes | bytearray | memoryview) -> bool:
    return raw[:4] == MAGIC


def encode_arrow(cols: Mapping[str, Any]) -> bytes:
    """Columns (lists or numpy arrays; ``ts``/``recv_ts`` epoch ms) → one Arrow IPC record. ``jt808_version``
    and ``recv_ts`` may be absent (or None); every other column of ``ARROW_SCHEMA`` is required.

    Values are never changed on the way: a column that does not fit its ``ARROW_SCHEMA`` type without loss
    (a heading of 1.5, a flag word above 2³²) keeps a wider type, so the reader rejects the record with the
    same reason the JSON form gets. ``ArrowException`` / ``TypeError`` / ``ValueError`` when a column cannot
    be written at all (mixed types): the caller sends the JSON form then (``pingbatch.encode_columns``)."""
    fields, arrays = _arrow_columns(cols)
    key = tuple(fields)
    schema = _SCHEMAS.get(key)
    if schema is None:
        if len(_SCHEMAS) > 64:
            _SCHEMAS.clear()
        schema = _SCHEMAS[key] = pa.schema(fields, metadata=ARROW_SCHEMA.metadata)
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema, options=_WRITE_OPTIONS) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _arrow_columns(cols: Mapping[str, Any]) -> tuple[list, list]:
    """``cols`` as Arrow arrays in ``ARROW_SCHEMA``'s order, with their fields: the schema's own field where
    the array took its type, a field of the wider type it kept otherwise (absent optional columns left out)."""
    fields, arrays = [], []
    for f in ARROW_SCHEMA:
        v = cols.get(f.name)
        if v is None and f.name in _OPTIONAL_COLUMNS:
            continue
        arr = _to_arrow(v, f.type)
        fields.append(f if arr.type == f.type else pa.field(f.name, arr.type))
        arrays.append(arr)
    return fields, arrays


def encode_arrow_slices(cols: Mapping[str, Any], bounds: Sequence[tuple[int, int]]) -> list[bytes] | None:
    """``encode_arrow`` of the rows ``a:b`` of ``cols`` for each ``(a, b)`` in ``bounds``, with the columns
    converted once for all of them: a simulated feed is thousands of records of a few pings each, and
    ``encode_arrow``'s fixed cost (~0.4 ms a record) was most of building one.

    None when a column does not take its ``ARROW_SCHEMA`` type as a whole (a value it cannot hold without
    loss), or cannot be converted at all: the caller then encodes each slice on its own, so that only the
    records holding such a value keep the wider type (``encode_arrow``) or go out as JSON."""
    try:
        fields, arrays = _arrow_columns(cols)
        if any(f.type != ARROW_SCHEMA.field(f.name).type for f in fields):   # a wider type kept
            return None
        return _ipc_records([f.name for f in fields], arrays, bounds)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return None


def _ipc_records(names: Sequence[str], arrays: list, bounds: Sequence[tuple[int, int]]) -> list[bytes]:
    """One IPC stream (schema message, record batch, end of stream) for the rows ``a:b`` of ``arrays`` for
    each ``(a, b)`` in ``bounds``; the columns ``names`` with their ``ARROW_SCHEMA`` fields, whose schema
    message is serialised once per set of names."""
    key = tuple(names)
    cached = _ROW_SCHEMAS.get(key)
    if cached is None:
        schema = pa.schema([ARROW_SCHEMA.field(n) for n in key], metadata=ARROW_SCHEMA.metadata)
        cached = _ROW_SCHEMAS[key] = (schema, schema.serialize().to_pybytes())
    schema, head = cached
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    if len(bounds) == 1 and bounds[0] == (0, batch.num_rows):
        return [head + batch.serialize().to_pybytes() + _EOS]
    return [head + batch.slice(a, b - a).serialize().to_pybytes() + _EOS for a, b in bounds]


def encode_arrow_rows(groups: Sequence[Sequence[tuple]], fields: Sequence[str], *,
                      typed: bool = False) -> list[bytes] | None:
    """The fast encoder: row tuples (values in the order ``fields`` names, ``ts``/``recv_ts`` epoch ms,
    ``reupload`` 0/1) of one or more records → one Arrow IPC record per group, the columns converted once
    for all groups (~10 µs per column whatever the rows; writing each group's slice ~5 µs).

    Each record reads back exactly as what ``encode_arrow`` writes for that group's columns, in the layout
    of docs/formats.md: an Arrow IPC stream of the schema message (the schema's bytes cached per set of
    columns), one record batch message and the end-of-stream marker. The optional columns follow their
    meaning there: ``jt808_version`` is left out when every row says 0 (absent = not known), ``recv_ts``
    when every row says None, and a None ``recv_ts`` beside others is written as the fix time (a null
    reads as ``ts``). Groups that differ in those optional columns are converted one by one.

    None when a value is not of its column's usual Python type or does not fit its column (a float
    heading, a flag word above 2³², a bool latitude, a ``reupload`` of 2): the caller then builds columns
    for ``encode_arrow``, which keeps such a value so the reader rejects it with its reason. ``typed``: the
    caller built every value with its column's Python type (the gateway's front ends do), so that check,
    ~10 µs a column, is skipped; a value that does not fit its column still returns None."""
    plan = _ROW_PLANS.get(tuple(fields))
    if plan is None:
        index = {f: i for i, f in enumerate(fields)}
        plan = _ROW_PLANS[tuple(fields)] = ([(index[f.name], f.name, f) for f in ARROW_SCHEMA],
                                            index["jt808_version"], index["recv_ts"], index["ts"])
    steps, v, t, ts = plan
    if len(groups) > 1:
        if len({(any(r[v] for r in g), any(r[t] is not None for r in g)) for g in groups}) > 1:
            # the groups differ in their optional columns: each written on its own, as it would be alone
            out = [encode_arrow_rows([g], fields, typed=typed) for g in groups]
            return None if None in out else [o[0] for o in out]     # type: ignore[index]
    rows = groups[0] if len(groups) == 1 else [r for g in groups for r in g]
    if not rows:
        return None
    cols = list(zip(*rows))
    version, recv = cols[v], cols[t]
    names, arrays = [], []
    try:                                # Arrow's own errors: the general path decides (and names them)
        for i, name, field in steps:
            col = cols[i]
            if name == "jt808_version" and not any(version):
                continue
            if name == "recv_ts":
                if all(r is None for r in recv):
                    continue
                if None in recv:
                    col = [r if r is not None else x for r, x in zip(recv, cols[ts])]
            if not typed and not set(map(type, col)) <= _ROW_TYPES[name]:
                return None
            if name == "reupload":
                if not set(col) <= {0, 1}:
                    return None
                col = [x == 1 for x in col]
            names.append(name)
            # NaN is null (pandas' reading) only in a float column: typed rows have no NaN-like value elsewhere
            arrays.append(pa.array(col, type=field.type, from_pandas=not typed or name in _FLOAT_COLUMNS))
        ends = list(itertools.accumulate(map(len, groups)))
        return _ipc_records(names, arrays, list(zip([0] + ends[:-1], ends)))
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return None


# the Python value types each column takes in ``encode_arrow_rows`` without any change of value
_INT, _FLOAT, _STR = frozenset({int}), frozenset({int, float, type(None)}), frozenset({str})
_ROW_TYPES = {"plate": _STR, "terminal_id": _STR, "ts": _INT, "lat": _FLOAT, "lon": _FLOAT, "speed_kmh": _FLOAT,
              "heading": _INT, "altitude_m": _FLOAT, "plate_color": _INT, "alarm_flags": _INT,
              "status_flags": _INT, "reupload": _INT, "driver_id": frozenset({str, type(None)}),
              "mileage_km": _FLOAT, "recv_ts": frozenset({int, type(None)}), "jt808_version": _INT}
_FLOAT_COLUMNS = frozenset(f.name for f in ARROW_SCHEMA if pa.types.is_floating(f.type))
_ROW_PLANS: dict[tuple[str, ...], tuple] = {}       # row layout → (steps in ARROW_SCHEMA order, indexes)
_ROW_SCHEMAS: dict[tuple[str, ...], tuple] = {}     # column names → (schema, its IPC schema message)
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"         # IPC end-of-stream: continuation marker, length 0


_SCHEMAS: dict = {}
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions()     # (built once: the default reads the environment per writer)
_NP_INT = {pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32}


def _to_arrow(v, typ: pa.DataType) -> pa.Array:
    if typ == pa.string():
        return pa.array(v, type=typ)
    fast = _from_numpy(v, typ) if isinstance(v, np.ndarray) else _from_list(v, typ)
    if fast is not None:
        return fast
    if typ == pa.bool_() and not isinstance(v, np.ndarray):
        v = [bool(x) if type(x) is int and 0 <= x <= 1 else x for x in v]   # flags as 0/1 (the JSON form's)
    # mixed or null values: the type Arrow infers. NaN becomes null, as in the JSON form
    arr = pa.array(v, from_pandas=True)
    if arr.type == typ:
        return arr
    try:
        if typ == pa.bool_() and pa.types.is_integer(arr.type):
            lo, hi = pc.min_max(arr).values()
            if lo.as_py() is not None and (lo.as_py() < 0 or hi.as_py() > 1):
                return arr               # not a flag: the reader says so
        if typ == _TS:                  # epoch ms → timestamp[ms, UTC] (same 64-bit storage)
            if not (pa.types.is_integer(arr.type) or pa.types.is_null(arr.type)):
                return arr
            return arr.cast(pa.int64()).cast(typ)
        return arr.cast(typ)            # safe cast: raises on overflow and on truncation
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return arr


_NONE = type(None)


def _from_list(v: list, typ: pa.DataType) -> pa.Array | None:
    """The common case of a producer's list (the gateway's rows): every value already of the column's
    Python type — one conversion call, which raises (→ None, the general path) on a value out of range."""
    types = set(map(type, v))
    try:
        if typ == pa.float64():
            return pa.array(v, type=typ, from_pandas=True) if types <= {int, float, _NONE} else None
        if typ == pa.bool_():
            if types <= {bool}:
                return pa.array(v, type=typ)
            if types <= {int} and (not v or (min(v) >= 0 and max(v) <= 1)):
                return pa.array([x == 1 for x in v], type=typ)
            return None
        if types <= {int}:              # integer columns and epoch-ms times
            return pa.array(v, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    return None


def _from_numpy(a: np.ndarray, typ: pa.DataType) -> pa.Array | None:
    """A typed numpy column → its Arrow column without per-value Python work; a value the wire type cannot
    hold exactly keeps a wider type (the reader refuses it). None: not a numeric array."""
    k = a.dtype.kind
    if k not in "iufb":
        return None
    if typ == pa.float64():
        return pa.array(a if k == "f" else a.astype(np.float64), from_pandas=True) if k != "b" else pa.array(a)
    if typ == pa.bool_():
        if k == "b":
            return pa.array(a)
        if k in "iu" and (len(a) == 0 or (a.min() >= 0 and a.max() <= 1)):
            return pa.array(a.astype(bool))
        return pa.array(a, from_pandas=True)
    if typ == _TS:
        if k not in "iu":
            return pa.array(a, from_pandas=True)
        return pa.array(a.astype(np.int64, copy=False).view("datetime64[ms]"), type=typ)
    np_t = _NP_INT.get(typ)
    if np_t is None:
        return None
    if k == "b":
        return pa.array(a)
    if len(a) == 0:
        return pa.array(a.astype(np_t))
    if k == "f" and not (np.isfinite(a).all() and (a == np.floor(a)).all()):
        return pa.array(a, from_pandas=True)
    info = np.iinfo(np_t)
    if a.min() < info.min or a.max() > info.max:
        return pa.array(a, from_pandas=True)
    return pa.array(a.astype(np_t))


def read_arrow(raw: bytes, max_bytes: int = 1_000_000) -> pa.RecordBatch:
    """The one record batch of an Arrow IPC record, fully validated (offsets, UTF-8) so that nothing
    downstream reads outside its buffers; ``InvalidRecord("bad_arrow", …)`` if it is not one."""
    if len(raw) > max_bytes:
        raise InvalidRecord("oversized", f"record of {len(raw)} bytes exceeds {max_bytes}")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(raw))
        meta = reader.schema.metadata or {}
        if meta.get(SCHEMA_KEY, SCHEMA_NAME) != SCHEMA_NAME:
            raise InvalidRecord("bad_schema", f"unknown ping schema {meta[SCHEMA_KEY][:40]!r}")
        batch = reader.read_next_batch()
        try:
            reader.read_next_batch()
        except StopIteration:
            pass
        else:
            raise InvalidRecord("bad_arrow", "an Arrow ping record holds exactly one record batch")
        batch.validate(full=True)
    except StopIteration:
        raise InvalidRecord("bad_arrow", "Arrow stream without a record batch") from None
    except InvalidRecord:
        raise
    except Exception as e:   # noqa: BLE001 - ArrowInvalid, ArrowIOError, OSError…: malformed input, not our fault
        raise InvalidRecord("bad_arrow", f"not an Arrow IPC record batch: {type(e).__name__}: {str(e)[:160]}") from None
    return batch


def arrow_rows(raw: bytes) -> int:
    """Pings in an Arrow ping record, from its message header (replay counts without decoding)."""
    try:
        return pa.ipc.open_stream(pa.py_buffer(raw)).read_next_batch().num_rows
    except Exception as e:   # noqa: BLE001 - malformed input
        raise InvalidRecord("bad_arrow", f"not an Arrow IPC record batch: {type(e).__name__}") from None


def arrow_lists(raw: bytes, max_bytes: int = 1_000_000) -> dict:
    """The columns of an Arrow ping record as lists of plain values, times as epoch ms, in the shape of the
    JSON form (``{"schema": …, column: [...]}``), unvalidated — for tools that re-emit pings as JSON lines."""
    batch = read_arrow(raw, max_bytes)
    out: dict[str, Any] = {"schema": SCHEMA_NAME.decode()}
    for name, col in zip(batch.schema.names, batch.columns):
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("ms", tz=col.type.tz)).view(pa.int64())
        out[name] = col.to_pylist()
    return out


def decode_arrow(raw: bytes, max_bytes: int = 1_000_000, *,
                 years: tuple[int, int] | None = None) -> PingColumns:
    """Arrow IPC record → ``PingColumns`` with the same types and checks as the JSON form's decoder; a
    defect in any ping rejects the record whole (``InvalidRecord``, the same codes)."""
    return batch_columns(read_arrow(raw, max_bytes), years=years)


def batch_columns(batch: pa.RecordBatch, *, years: tuple[int, int] | None = None) -> PingColumns:
    """One validated record batch (``read_arrow``, or a batch of an Arrow IPC file) → ``PingColumns``."""
    meta = batch.schema.metadata or {}
    if meta.get(SCHEMA_KEY, SCHEMA_NAME) != SCHEMA_NAME:
        raise InvalidRecord("bad_schema", f"unknown ping schema {meta[SCHEMA_KEY][:40]!r}")
    n = batch.num_rows
    if n == 0:
        raise InvalidRecord("empty_batch", "ping batch has no pings")
    from .pingbatch import MAX_BATCH
    if n > MAX_BATCH:
        raise InvalidRecord("oversized", f"ping batch of {n} exceeds {MAX_BATCH}")
    names = batch.schema.names
    if len(set(names)) != len(names):
        raise InvalidRecord("bad_type", "duplicate column names")
    out: dict[str, Any] = {}
    lists: dict[str, Any] = {}     # deferred Python lists (PingColumns.deferred): made only when read
    arrow: dict[str, Any] = {}
    for name, f in FIELDS.items():
        col = batch.column(name) if name in names else None
        if col is not None and col.null_count == n and name in _OPTIONAL_COLUMNS:
            col = None
        if col is None:
            if f.required:
                raise InvalidRecord("missing_field", f"ping 0: {name} is required")
            if name in _LIST_COLUMNS:
                lists[name] = _nones(n)
            else:
                out[name] = None if name in _OPTIONAL_COLUMNS else _default(name, f, n)
            continue
        if f.required and col.null_count:
            raise InvalidRecord("missing_field", f"ping {_first_null(col)}: {name} is required")
        try:
            if f.kind == "text":
                col = _text(name, f, col, n)
                arrow[name] = col
                lists[name] = _nones(n) if col.null_count == n else col.to_pylist
            elif name == "mileage_km":
                lists[name] = _mileage(name, f, col, n)
            else:
                out[name] = (_time(name, f, col, n, years, out) if f.kind == "time"
                             else _COLUMN[f.kind](name, f, col, n, years))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
            if isinstance(e, InvalidRecord):
                raise
            raise InvalidRecord("bad_type", f"{name}: {type(e).__name__}: {str(e)[:120]}") from None
    if out["recv_ts"] is not None:
        null = out.pop("_recv_null", None)
        if null is not None:
            out["recv_ts"] = np.where(null, out["ts"], out["recv_ts"])
    out.pop("_recv_null", None)
    return PingColumns.deferred(lists, arrow, **out)


_LIST_COLUMNS = ("plate", "terminal_id", "driver_id", "mileage_km")


def _nones(n: int):
    return lambda: [None] * n


def _default(name: str, f, n: int):
    if f.kind == "bool":
        return np.zeros(n, dtype=bool)
    return np.full(n, f.default, dtype=np.int64 if f.kind == "int" else np.float64)


def _first_null(col: pa.Array) -> int:
    return int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])


def _bad(mask: np.ndarray, code: str, detail) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise InvalidRecord(code, f"ping {i}: {detail(i)}")


def _byte_lengths(col: pa.Array) -> np.ndarray:
    """UTF-8 byte length of each value of a (large_)string array, from its offsets buffer (no copy of it)."""
    dt = np.int64 if pa.types.is_large_string(col.type) else np.int32
    return np.diff(np.frombuffer(col.buffers()[1], dtype=dt, count=len(col) + 1,
                                 offset=col.offset * np.dtype(dt).itemsize))


def _text(name: str, f, col: pa.Array, n: int) -> pa.Array:
    """The validated string column (dictionaries decoded): every value 1–``f.hi`` characters."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise InvalidRecord("bad_type", f"{name} must be a string column, not {col.type}")
    if col.null_count == n:
        return col
    lim = int(f.hi)
    # a UTF-8 string has at least one byte per character: byte lengths all within 1..lim settle it
    # without decoding; only otherwise are the characters counted
    blen = _byte_lengths(col)
    if col.null_count:
        blen = np.where(col.is_null().to_numpy(zero_copy_only=False), 1, blen)
    if blen.min() >= 1 and blen.max() <= lim:
        return col
    ln = pc.utf8_length(col).to_numpy(zero_copy_only=False)
    ln = np.where(col.is_null().to_numpy(zero_copy_only=False), 1, ln)
    _bad((ln < 1) | (ln > lim), "bad_type", lambda i: f"{name} must be a string of 1–{lim} characters")
    return col


def _numbers(name: str, f, col: pa.Array, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 values (zero-copy when the column is float64 without nulls) and the null mask (or None)."""
    t = col.type
    if pa.types.is_boolean(t) or not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise InvalidRecord("bad_type", f"{name} must be a numeric column, not {t}")
    null = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else None
    if null is not None:
        col = col.fill_null(0)
    a = col.to_numpy(zero_copy_only=False)
    return a, null


def _mileage(name: str, f, col: pa.Array, n: int):
    """Validated now; the list of floats and Nones (the JSON form's shape) made when it is read."""
    if col.null_count == n:
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type)):
            raise InvalidRecord("bad_type", f"{name} must be a numeric column, not {col.type}")
        return _nones(n)
    v, null = _number(name, f, col, n, None)

    def as_list() -> list:
        vals = v.tolist()
        return vals if null is None else [None if m else x for x, m in zip(vals, null.tolist())]
    return as_list


def _number(name: str, f, col: pa.Array, n: int, years):
    a, null = _numbers(name, f, col, n)
    if f.kind == "int":
        if a.dtype.kind == "f":
            _bad(~np.isfinite(a), "out_of_range", lambda i: f"{name}={a[i]} outside [{f.lo:g}, {f.hi:g}]")
            _bad(a != np.floor(a), "bad_type", lambda i: f"{name} must be an integer")
            _bad(np.abs(a) > INT_LIMIT, "out_of_range", lambda i: f"{name} is too large for an integer field")
        if a.dtype == np.uint64:
            _bad(a > np.uint64(f.hi), "out_of_range", lambda i: f"{name}={a[i]} outside [{f.lo:g}, {f.hi:g}]")
        v = a.astype(np.int64)
        if not (a.dtype.kind in "iu" and np.iinfo(a.dtype).min >= f.lo and np.iinfo(a.dtype).max <= f.hi):
            # (a wire type that cannot hold a value out of bounds — uint8 plate_color — needs no check)
            _bad((v < f.lo) | (v > f.hi), "out_of_range", lambda i: f"{name}={v[i]} outside [{f.lo:g}, {f.hi:g}]")
        if null is not None:
            v[null] = f.default
        return v
    v = a if a.dtype == np.float64 else a.astype(np.float64)
    if null is None and v.min() >= f.lo and v.max() <= f.hi:    # NaN fails both: the exact check says which
        return (v, null) if name == "mileage_km" else v
    bad = ~np.isfinite(v) | (v < f.lo) | (v > f.hi)
    if null is not None:
        bad &= ~null
    _bad(bad, "out_of_range", lambda i: f"{name}={v[i]} outside [{f.lo:g}, {f.hi:g}]")
    if name == "mileage_km":
        return v, null
    return v


def _time(name: str, f, col: pa.Array, n: int, years, out: dict | None = None) -> np.ndarray:
    t = col.type
    null = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else None
    if pa.types.is_timestamp(t):
        if t.tz is None:
            raise InvalidRecord("bad_timestamp", f"{name}: an Arrow timestamp needs a time zone (the instant is UTC)")
        per_ms = {"s": None, "ms": 1, "us": 1000, "ns": 1_000_000}[t.unit]
        raw = col.view(pa.int64()) if col.null_count == 0 else col.fill_null(0).view(pa.int64())
        a = raw.to_numpy(zero_copy_only=False)
        if per_ms is None:   # seconds: guard the multiplication against wrapping round into plausible years
            _bad(np.abs(a) > 1 << 50, "bad_timestamp", lambda i: f"{name} is not a time in the plausible years")
        a = a * 1000 if per_ms is None else (a // per_ms if per_ms > 1 else a)
    elif pa.types.is_integer(t):
        a = (col if col.null_count == 0 else col.fill_null(0)).to_numpy(zero_copy_only=False)
        if a.dtype == np.uint64:
            _bad(a > np.uint64(1 << 62), "bad_timestamp", lambda i: f"{name}={a[i]} is not epoch milliseconds")
        a = a.astype(np.int64, copy=False)
    else:
        raise InvalidRecord("bad_type", f"{name} must be int64 epoch ms or an Arrow timestamp, not {t}")
    lo, hi = plausible_ms_range(years)
    bad = (a < lo) | (a > hi)
    if null is not None:
        bad &= ~null
    _bad(bad, "bad_timestamp", lambda i: f"{name}={a[i]} is not epoch milliseconds in the plausible years")
    if null is not None and out is not None:
        out["_recv_null"] = null
    return a


def _bool(name: str, f, col: pa.Array, n: int, years) -> np.ndarray:
    t = col.type
    if col.null_count:
        col = col.fill_null(False if pa.types.is_boolean(t) else 0)
    if pa.types.is_boolean(t):
        return col.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t):
        a = col.to_numpy(zero_copy_only=False)
        _bad((a != 0) & (a != 1), "bad_type", lambda i: f"{name} must be true/false (or 0/1)")
        return a == 1
    raise InvalidRecord("bad_type", f"{name} must be a boolean column, not {t}")


_COLUMN = {"int": _number, "float": _number, "bool": _bool}
