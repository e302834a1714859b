"""The one definition of a GPS ping: its fields, their types and structural bounds, and the column arrays.

Every input path validates with ``validate_columns``: ``models.records.parse_ping`` (one JSON object),
``models.pingbatch.decode_batch`` (a columnar Kafka record) and ``roadwatch assess gps`` (JSON lines).
Structural validation only: a well-typed value outside the regulator's range (a latitude of 4282.7 from a
two's-complement terminal, a speed of 170 km/h) makes the ping *unqualified* (``models.quality``), not
invalid; only values that cannot be what the field says (not a number, a speed above the JT/T 808 wire
maximum, a time outside the plausible years — models/timerange.py, default 2000–2100) make it invalid.

A field is (kind, required, default, bounds):
- ``text``: str of 1..max characters; ``int`` / ``float``: finite number in [lo, hi] (ints integral);
- ``time``: epoch milliseconds (int) or an ISO-8601 string with a UTC offset, in the plausible years;
- ``bool``: true/false (or 0/1). Optional fields take their default when absent or null.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import chain, repeat
from operator import is_not, itemgetter
from typing import Any, Callable, Sequence

import numpy as np

from .timerange import implausible, plausible_ms_range

TS_MIN_MS = 946_684_800_000    # 2000-01-01: GNSS fixes before that are garbage, not history
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01
INT_LIMIT = 2.0 ** 53          # larger "integers" lost precision on the way through JSON floats
# JT/T 808 carries latitude/longitude as DWORD millionths of a degree, sign in status bits 2/3: anything in
# this range is a coordinate a terminal can send (quality decides whether it is a plausible one).
WIRE_DEG = 4294.967295


@dataclass(frozen=True)
class Field:
    kind: str                  # text | int | float | time | bool
    required: bool
    default: Any = None
    lo: float = 0.0            # numbers: inclusive bounds; text: ignored
    hi: float = 0.0            # numbers: inclusive bounds; text: maximum length


FIELDS: dict[str, Field] = {
    "plate": Field("text", True, hi=16),
    "terminal_id": Field("text", True, hi=20),     # BCD phone digits, or the hex string of a binary id
    "plate_color": Field("int", True, lo=0, hi=255),
    "ts": Field("time", True),
    "lat": Field("float", True, lo=-WIRE_DEG, hi=WIRE_DEG),
    "lon": Field("float", True, lo=-WIRE_DEG, hi=WIRE_DEG),
    "speed_kmh": Field("float", True, lo=0.0, hi=6553.5),
    "heading": Field("int", True, lo=0, hi=65535),
    "altitude_m": Field("float", True, lo=-32768.0, hi=65535.0),
    "alarm_flags": Field("int", False, 0, lo=0, hi=0xFFFFFFFF),
    "status_flags": Field("int", False, 0, lo=0, hi=0xFFFFFFFF),
    "reupload": Field("bool", False, False),
    "driver_id": Field("text", False, None, hi=64),
    # JT/T 808 0x01: a DWORD of 0.1 km — anything up to its wire maximum is a value a terminal can send (the
    # gateway fuzz target found batches the gateway published and this schema then refused whole)
    "mileage_km": Field("float", False, None, lo=0.0, hi=429_496_729.5),
    "jt808_version": Field("int", False, 0, lo=0, hi=2100),   # 2011/2013/2019; 0 = not known
    "recv_ts": Field("time", False, None),
}
_NUM_TYPES = {int, float}
_ISO_FAST_LEN = len("2026-01-01T00:00:00+08:00")
_SUFFIX, _PREFIX = itemgetter(slice(19, None)), itemgetter(slice(0, 19))


@dataclass
class PingColumns:
    """Parallel arrays of one batch. ``plate``/``terminal_id``/``driver_id``/``mileage_km`` are lists."""
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
    jt808_version: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ts)

    # A batch decoded from Arrow (models/pingarrow.py) makes the Python lists of its text and mileage
    # columns only when they are read: the ping agent never reads ``terminal_id`` and resolves plates to
    # vehicles on the Arrow column (``arrow_column``), so a ping costs no Python string on that path.
    @classmethod
    def deferred(cls, lists: dict[str, Callable[[], list]], arrow: dict[str, Any], **columns) -> "PingColumns":
        """Columns given now, plus ``lists``: name → function making that list on first read; ``arrow``:
        name → the column's Arrow array (the same values)."""
        obj = cls.__new__(cls)
        obj.__dict__.update(columns, _lazy=dict(lists), _arrow=dict(arrow))
        return obj

    def __getattr__(self, name: str):
        # reached only for an attribute not set: a deferred list not read yet
        lazy = self.__dict__.get("_lazy")
        if lazy and name in lazy:
            value = self.__dict__[name] = lazy.pop(name)()
            return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        if "_arrow" in d:                   # a column replaced: its Arrow form no longer holds its values
            d["_arrow"].pop(name, None)
            d["_lazy"].pop(name, None)
        d[name] = value

    def arrow_column(self, name: str):
        """The Arrow array of column ``name`` when the batch was decoded from Arrow, else None."""
        arrow = self.__dict__.get("_arrow")
        return arrow.get(name) if arrow else None


_LISTS = ("plate", "terminal_id", "driver_id", "mileage_km")
_OPTIONAL_COLUMNS = ("recv_ts", "jt808_version")


def take(c: PingColumns, sel: np.ndarray) -> PingColumns:
    """The pings ``sel`` (index array) of a batch, in that order."""
    lst = np.asarray(sel, dtype=np.int64).tolist()
    out = {k: [getattr(c, k)[i] for i in lst] for k in _LISTS}
    for k in ("plate_color", "ts", "lat", "lon", "speed_kmh", "heading", "altitude_m", "alarm_flags",
              "status_flags", "reupload", "recv_ts", "jt808_version"):
        v = getattr(c, k)
        out[k] = None if v is None else v[sel]
    return PingColumns(**out)


def concat(parts: list[PingColumns]) -> PingColumns:
    """One batch of several, in order. An optional column absent from some parts takes its fallback
    (``recv_ts``: the ping's own time; ``jt808_version``: 0) — records of one feed may disagree on them.
    A list column that a part has not made yet (``PingColumns.deferred``) stays deferred: the ping agent
    joins the batches already waiting (streams/gps.py), and the engine never reads ``terminal_id`` or
    ``mileage_km``."""
    if len(parts) == 1:
        return parts[0]
    out: dict[str, Any] = {}
    for k in ("plate_color", "ts", "lat", "lon", "speed_kmh", "heading", "altitude_m", "alarm_flags",
              "status_flags", "reupload"):
        out[k] = np.concatenate([getattr(p, k) for p in parts])
    out["recv_ts"] = (np.concatenate([p.recv_ts if p.recv_ts is not None else p.ts for p in parts])
                      if any(p.recv_ts is not None for p in parts) else None)
    out["jt808_version"] = (np.concatenate([p.jt808_version if p.jt808_version is not None
                                            else np.zeros(len(p), dtype=np.int64) for p in parts])
                            if any(p.jt808_version is not None for p in parts) else None)
    lazy = {}
    for k in _LISTS:
        if all(k in p.__dict__ for p in parts):
            out[k] = _joined(parts, k)
        else:
            lazy[k] = partial(_joined, tuple(parts), k)   # (a copy: callers reuse their list)
    return PingColumns.deferred(lazy, {}, **out) if lazy else PingColumns(**out)


def _joined(parts: Sequence[PingColumns], name: str) -> list:
    return list(chain.from_iterable(getattr(p, name) for p in parts))


# --- validation ---------------------------------------------------------------------------------------

class _Errors(dict):
    """row → (code, detail); the first defect of a row wins."""

    def bad(self, i: int, code: str, detail: str) -> None:
        self.setdefault(int(i), (code, detail))


def _time_column(name: str, col: list, errs: _Errors, years: tuple[int, int] | None = None) -> np.ndarray:
    """Times outside the plausible years (models/timerange.py) are ``bad_timestamp``."""
    n = len(col)
    out = np.zeros(n, dtype=np.int64)
    ts_min, ts_max = plausible_ms_range(years)
    types = set(map(type, col))
    if types <= {int} and (n == 0 or max(map(abs, col)) < 1 << 62):
        out[:] = col
        for i in np.flatnonzero((out < ts_min) | (out > ts_max)):
            errs.bad(i, "bad_timestamp", f"{name}={col[i]} is not epoch milliseconds in the plausible years")
        return out
    done: set = set()
    if types == {str} and set(map(len, col)) == {_ISO_FAST_LEN} and set(map(_SUFFIX, col)) == {"+08:00"}:
        fast = list(range(n))      # the common case: every value is "YYYY-MM-DDTHH:MM:SS+08:00"
    else:
        fast = [i for i, x in enumerate(col) if type(x) is str and len(x) == _ISO_FAST_LEN and x.endswith("+08:00")]
    if fast:
        try:
            secs = np.array([col[i][:19] for i in fast] if len(fast) < n else list(map(_PREFIX, col)),
                            dtype="datetime64[s]").astype(np.int64)
        except ValueError:   # one is not a date (02-30): the others keep this form — a value's verdict and
            fast, secs = _each_iso(col, fast)      # reason never depend on its neighbours in the batch
        out[fast] = secs * 1000 - 8 * 3_600_000
        done = set(fast)
        for j in np.flatnonzero((out[fast] < ts_min) | (out[fast] > ts_max)):
            errs.bad(fast[j], "bad_timestamp", f"{name} {col[fast[j]]!r} is outside the plausible years")
    for i, x in enumerate(col):
        if i in done:
            continue
        if type(x) is int:
            out[i] = x if abs(x) < 1 << 62 else 0
        elif type(x) is str and len(x) <= 40:
            try:
                dt = datetime.fromisoformat(x)
            except ValueError:
                errs.bad(i, "bad_timestamp", f"{name} {x!r} is not ISO-8601")
                continue
            if dt.tzinfo is None:
                errs.bad(i, "bad_timestamp", f"{name} {x!r} has no UTC offset")
                continue
            why = implausible(dt, name, years)        # years like 1 or 9999 overflow in timestamp()
            if why:
                errs.bad(i, "bad_timestamp", why)
                continue
            out[i] = int(round(dt.timestamp() * 1000))
        elif x is None:
            errs.bad(i, "missing_field", f"{name} is required")
            continue
        else:
            errs.bad(i, "bad_type", f"{name} must be epoch ms or an ISO-8601 string with offset")
            continue
        if not ts_min <= out[i] <= ts_max:
            errs.bad(i, "bad_timestamp", f"{name}={x} is not epoch milliseconds in the plausible years"
                     if type(x) is int else f"{name}={x!r} is not a time in the plausible years")
    return out


def _each_iso(col: list, idx: list) -> tuple[list, np.ndarray]:
    """(the indexes of ``idx`` whose first 19 characters numpy reads as a date-time, their epoch seconds)."""
    ok, secs = [], []
    for i in idx:
        try:
            secs.append(int(np.datetime64(col[i][:19], "s").astype(np.int64)))
        except ValueError:
            continue
        ok.append(i)
    return ok, np.array(secs, dtype=np.int64)


def _text_column(name: str, f: Field, col: list, errs: _Errors) -> list:
    lim = int(f.hi)
    # map() over builtins runs in C: this check is on the hot path (~0.1 µs per ping instead of ~0.5)
    types = set(map(type, col))
    if types == {str} and min(map(len, col)) > 0 and max(map(len, col)) <= lim:
        return col
    if not f.required and types == {str, type(None)}:    # an optional column with gaps (driver_id)
        lens = set(map(len, filter(partial(is_not, None), col)))
        if min(lens) > 0 and max(lens) <= lim:
            return col
    out = list(col)
    for i, x in enumerate(col):
        if x is None and not f.required:
            continue
        if type(x) is not str or not 0 < len(x) <= lim:
            errs.bad(i, "missing_field" if x is None else "bad_type", f"{name} must be a string of 1–{lim} characters")
            out[i] = None
    return out


def _number_column(name: str, f: Field, col: list, errs: _Errors) -> np.ndarray:
    n = len(col)
    if set(map(type, col)) <= _NUM_TYPES:
        try:
            arr = np.array(col, dtype=np.float64)
        except OverflowError:        # an int beyond float range
            arr = np.array([float(x) if abs(x) < 1e300 else np.inf for x in col], dtype=np.float64)
    else:
        arr = np.zeros(n, dtype=np.float64)
        for i, x in enumerate(col):
            if type(x) in _NUM_TYPES:
                arr[i] = float(x) if abs(x) < 1e300 else np.inf
            elif x is None and not f.required:
                arr[i] = np.nan if f.default is None else f.default
            else:
                errs.bad(i, "missing_field" if x is None else "bad_type", f"{name} must be a number")
    # a NaN marks a null (JSON cannot carry NaN): mask those only when there are any (rare; not on the hot path)
    nan = np.isnan(arr)
    null = nan & np.array([x is None for x in col], dtype=bool) if f.default is None and nan.any() else None
    finite = np.isfinite(arr)
    wrong = ~finite | (arr < f.lo) | (arr > f.hi)
    if null is not None:
        wrong &= ~null
    for i in np.flatnonzero(wrong):
        if type(col[i]) in _NUM_TYPES:
            errs.bad(i, "out_of_range", f"{name}={col[i]} outside [{f.lo:g}, {f.hi:g}]")
    if f.kind == "int":
        for i in np.flatnonzero(finite & (arr != np.floor(arr))):
            errs.bad(i, "bad_type", f"{name} must be an integer")
        if (np.abs(np.where(finite, arr, 0)) > INT_LIMIT).any():
            for i in np.flatnonzero(finite & (np.abs(arr) > INT_LIMIT)):
                errs.bad(i, "out_of_range", f"{name} is too large for an integer field")
        arr = np.clip(np.where(finite, arr, 0), -INT_LIMIT, INT_LIMIT).astype(np.int64)
    return arr


def _bool_column(name: str, f: Field, col: list, errs: _Errors) -> np.ndarray:
    """true/false, or 0/1 (the columnar wire format carries flags as numbers)."""
    types = set(map(type, col))
    if types <= {bool}:
        return np.array(col, dtype=bool)
    if types <= {int} and min(col) >= 0 and max(col) <= 1:
        return np.array(col, dtype=bool)
    for i, x in enumerate(col):
        if not (type(x) is bool or (type(x) is int and x in (0, 1)) or (x is None and not f.required)):
            errs.bad(i, "bad_type", f"{name} must be true/false (or 0/1)")
    return np.array([x is True or (type(x) is int and x == 1) for x in col], dtype=bool)


def validate_columns(get: Callable[[str], list | None], n: int, *,
                     years: tuple[int, int] | None = None) -> tuple[PingColumns, dict[int, tuple[str, str]]]:
    """Validate ``n`` pings given column-wise: ``get(name)`` → a list of n values, or None when the field is
    absent from every ping. Returns the columns (rows with a defect hold placeholders) and the defects
    {row: (code, detail)}, the first per row. ``years``: the plausible years (default 2000–2100)."""
    errs = _Errors()
    out: dict[str, Any] = {}
    for name, f in FIELDS.items():
        col = get(name)
        if col is None:
            if f.required:
                for i in range(n):
                    errs.bad(i, "missing_field", f"{name} is required")
                col = [None] * n
            elif name in ("recv_ts", "jt808_version"):
                out[name] = None
                continue
            else:
                col = [f.default] * n
        if f.kind == "text":
            out[name] = _text_column(name, f, col, errs)
        elif f.kind == "time":
            if not f.required and None in col:   # an absent receipt time falls back to the ping's own time
                col = [out["ts"][i].item() if x is None else x for i, x in enumerate(col)]
            out[name] = _time_column(name, col, errs, years)
        elif f.kind == "bool":
            out[name] = _bool_column(name, f, col, errs)
        else:
            arr = _number_column(name, f, col, errs)
            out[name] = arr if name != "mileage_km" else (
                arr.tolist() if None not in col else [None if x is None else float(v) for x, v in zip(col, arr)])
    return PingColumns(**out), dict(errs)


def dicts_getter(dicts: list[dict]) -> Callable[[str], list | None]:
    """Column access over a list of ping objects (absent key → None for that ping)."""
    same = _same_keys(dicts)
    if same is not None:
        return same

    def get(name: str) -> list | None:
        col = list(map(dict.get, dicts, repeat(name)))
        if name not in ("recv_ts", "jt808_version") or any(x is not None for x in col):
            return col
        return None
    return get


def _same_keys(dicts: list[dict]) -> Callable[[str], list | None] | None:
    """The common case of JSON lines — every object has the same keys — as one C-level transposition (one
    ``itemgetter`` call per object, ``zip`` for the columns) instead of one ``dict.get`` per value; None when
    the objects differ (the caller then goes value by value)."""
    first = dicts[0]
    keys = tuple(first)
    if not keys or set(map(len, dicts)) != {len(keys)}:
        return None
    try:     # same length and every key of the first: the same key set
        rows = list(map(itemgetter(*keys), dicts)) if len(keys) > 1 else [(d[keys[0]],) for d in dicts]
    except (KeyError, TypeError):
        return None
    cols = dict(zip(keys, map(list, zip(*rows))))

    def get(name: str) -> list | None:
        col = cols.get(name)
        if col is None:
            return None if name in _OPTIONAL_COLUMNS else [None] * len(dicts)
        if name in _OPTIONAL_COLUMNS and col.count(None) == len(col):
            return None
        return col
    return get
