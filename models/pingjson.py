"""JSON lines of single pings → ``PingColumns``: Arrow's C++ JSON reader for whole blocks, orjson line by line
for a block it cannot vouch for.

The block path (``block_table`` → ``table_columns``) parses a block of complete lines straight into Arrow
columns — outside the GIL, on Arrow's thread pool — and validates them with the Arrow wire form's checks
(models/pingarrow.py ``batch_columns``, the bounds of the one ping schema). It only ever *accepts* a block
the per-line path (``parse_lines``) would accept whole, with the same values; anything else makes it give
up (None / ``InvalidRecord``) and the caller re-reads that block line by line, so every bad line still gets
its own reason and line number. Arrow's reader is laxer than JSON in a few ways, each closed by a guard:

- several objects on one line, or one object across lines → every line must start with ``{`` and end with
  ``}`` (before an optional ``\\r``), and the rows must equal the lines (a blank line gives up too);
- ``NaN`` / ``Infinity`` literals → a block containing ``NaN`` or ``Inf`` anywhere gives up;
- invalid UTF-8 in a key or an ignored field → the whole block is checked as UTF-8 first;
- nesting deeper than orjson allows (1024) in an ignored field → a block with a line over 2 048 bytes gives up;
- values of the wrong JSON type, duplicate keys, surrogates, control characters → Arrow refuses the block.

``ts``/``recv_ts`` are read as int64 (epoch ms) or as strings (ISO-8601) by their type in the block's first
line (an absent ``recv_ts``: the type of ``ts``); strings go through the same time parser as the per-line path (``pingschema._time_column``).
"""
from __future__ import annotations

import io

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from .pingarrow import batch_columns
from .pingschema import FIELDS, PingColumns, _Errors, _time_column, dicts_getter, take, validate_columns
from .records import InvalidRecord

_ARROW_TYPE = {"text": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
_TIMES = tuple(k for k, f in FIELDS.items() if f.kind == "time")


def _schema(str_times: frozenset) -> pa.Schema:
    return pa.schema([(k, pa.string() if k in str_times else _ARROW_TYPE.get(f.kind, pa.int64()))
                      for k, f in FIELDS.items()])


_SCHEMAS = {s: _schema(s) for s in (frozenset(), frozenset({"ts"}), frozenset({"recv_ts"}), frozenset(_TIMES))}


class LineErrors(list):
    """Rejected lines as ``{"line", "reason", "detail"}`` (what ``assess gps`` prints on stderr)."""

    def add(self, line: int, reason: str, detail: str) -> None:
        self.append({"line": line, "reason": reason, "detail": detail})


# --- line by line (exact reasons) -------------------------------------------------------------------------

def parse_lines(lines: list, first_line: int, errors: LineErrors,
                years: tuple[int, int] | None = None) -> PingColumns | None:
    """JSON lines (numbered from ``first_line``) → ``PingColumns`` of the valid lines; invalid lines are
    added to ``errors``."""
    try:   # every line a JSON object: parsed as one array (one orjson call per chunk)
        dicts = orjson.loads(b"[" + b",".join(lines) + b"]")
        if len(dicts) == len(lines) and set(map(type, dicts)) == {dict}:
            return _columns(dicts, list(range(first_line, first_line + len(dicts))), errors, years)
    except (orjson.JSONDecodeError, TypeError):   # a bad line (or str lines): sort it out line by line
        pass
    return parse_numbered(lines, range(first_line, first_line + len(lines)), errors, years)


def parse_numbered(lines: list, linenos, errors: LineErrors,
                   years: tuple[int, int] | None = None) -> PingColumns | None:
    """Like ``parse_lines``, each line with its own number (``linenos``); blank lines are skipped."""
    dicts = []
    pos = []
    for no, raw in zip(linenos, lines):
        if not raw.strip():
            continue
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            errors.add(no, "bad_json", str(e)[:120])
            continue
        if type(d) is not dict:
            errors.add(no, "bad_json", f"expected a JSON object, got {type(d).__name__}")
            continue
        dicts.append(d)
        pos.append(no)
    return _columns(dicts, pos, errors, years)


def _columns(dicts: list, pos: list, errors: LineErrors, years: tuple[int, int] | None = None) -> PingColumns | None:
    """Validate with the one ping schema (``models.pingschema``); keep the valid lines."""
    n = len(dicts)
    if n == 0:
        return None
    cols, errs = validate_columns(dicts_getter(dicts), n, years=years)
    for i in sorted(errs):
        errors.add(pos[i], *errs[i])
    if not errs:
        return cols
    keep = np.array([i for i in range(n) if i not in errs], dtype=np.int64)
    return take(cols, keep) if len(keep) else None


# --- whole blocks (Arrow) ---------------------------------------------------------------------------------

_NL, _LBRACE, _RBRACE, _CR = 10, ord("{"), ord("}"), 13
_MAX_LINE = 2048     # bytes: a longer line may nest deeper than orjson's limit (1024) in a field Arrow ignores


def block_table(block: bytes, block_size: int = 1 << 20) -> pa.Table | None:
    """A block of complete lines (ending with a newline) → an Arrow table with one row per line, or None
    when the block is not one plain JSON object per line that Arrow reads exactly as orjson does (the
    caller then reads it line by line). Runs mostly outside the GIL (numpy and Arrow)."""
    a = np.frombuffer(block, dtype=np.uint8)
    if not len(a) or a[0] != _LBRACE or a[-1] != _NL:
        return None
    nl = np.flatnonzero(a == _NL)
    if np.diff(nl, prepend=-1).max() > _MAX_LINE:
        return None
    before = a[nl - 1]
    if not (a[nl[:-1] + 1] == _LBRACE).all():
        return None
    if not ((before == _RBRACE) | ((before == _CR) & (a[np.maximum(nl - 2, 0)] == _RBRACE))).all():
        return None
    if _has_literal(a, b"NaN") or _has_literal(a, b"Inf"):
        return None
    buf = pa.py_buffer(block)
    try:   # UTF-8 of the whole block (keys and ignored fields included; Arrow checks only what it keeps)
        offsets = pa.py_buffer(np.array([0, len(block)], dtype=np.int32 if len(block) < 1 << 31 else np.int64))
        typ = pa.binary() if len(block) < 1 << 31 else pa.large_binary()
        pa.Array.from_buffers(typ, 1, [None, offsets, buf]).cast(pa.string() if typ == pa.binary() else pa.large_string())
        first = orjson.loads(block[:nl[0]])
        if type(first) is not dict:
            return None
        str_times = frozenset(k for k in _TIMES if type(first.get(k)) is str or
                              (first.get(k) is None and type(first.get("ts")) is str))   # (absent: as ``ts``)
        table = pa_json.read_json(io.BytesIO(block), read_options=pa_json.ReadOptions(block_size=block_size),
                                  parse_options=pa_json.ParseOptions(explicit_schema=_SCHEMAS[str_times],
                                                                     unexpected_field_behavior="ignore"))
    except (pa.ArrowException, orjson.JSONDecodeError, KeyError):
        return None
    if table.num_rows != len(nl):
        return None
    return table.combine_chunks()


def _has_literal(a: np.ndarray, lit: bytes) -> bool:
    p = np.flatnonzero(a[:len(a) - len(lit) + 1] == lit[0])
    if not len(p):
        return False
    hit = np.ones(len(p), dtype=bool)
    for k in range(1, len(lit)):
        hit &= a[p + k] == lit[k]
    return bool(hit.any())


def table_columns(table: pa.Table, years: tuple[int, int] | None = None) -> PingColumns:
    """Rows of a ``block_table`` → ``PingColumns``, checked like an Arrow wire record; ``InvalidRecord`` on
    the first defect (the caller re-reads those lines one by one for their exact reasons)."""
    for name in _TIMES:
        col = table.column(name)
        if col.type != pa.string():
            continue
        vals = col.to_pylist()
        if name == "recv_ts":       # an absent receipt time is the fix time (as the per-line path does)
            if col.null_count == len(vals):
                continue
            ts = table.column("ts").to_numpy().tolist()
            vals = [t if v is None else v for v, t in zip(vals, ts)]
        elif col.null_count:
            raise InvalidRecord("missing_field", f"{name} is required")
        errs = _Errors()
        ms = _time_column(name, vals, errs, years)
        if errs:
            raise InvalidRecord(*errs[min(errs)])
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(ms, type=pa.int64()))
    batches = table.to_batches()
    if len(batches) != 1:
        raise InvalidRecord("bad_arrow", "expected one record batch")
    return batch_columns(batches[0], years=years)
