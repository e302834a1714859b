"""Input files of the batch commands: one reader for every format a tester has, or an honest refusal.

``assess gps``, ``assess wim`` and ``report monthly --pings`` accept

- a **feed** — what ``simulate --out`` writes and ``record``/``replay`` use (simulators/recording.py): one
  Kafka record per line, ``{"topic", "partition", "key", "value" (base64), "timestamp"}``, plain or ``.gz``;
  a ``gps-pings`` value is a columnar batch (models/pingbatch.py) or one interchange ping, a
  ``wim-readings`` value one reading; records of other topics are skipped (counted, not rejected);
- **JSON lines** of single records (one interchange ping or WIM reading per line).

The format is recognised from the first non-empty line. The reader yields single-record JSON lines (bytes),
the form the engines parse — or, for the GPS engine's batch path, a feed's ping records as decoded column
batches — and counts what it read, skipped and rejected. ``InputCheck.verdict`` is the
refusal rule: no usable line at all, or more than ``input.max_rejected_share`` of the lines rejected (by
this reader or by the engine downstream) → ``UsageError`` (exit 2) with a one-line reason — never a report
built on nothing. Memory is bounded by one record: the file is streamed.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import io
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from typing import IO, Iterator

import numpy as np
import orjson
import pyarrow as pa

from roadwatch.models.config import Config
from roadwatch.models.pingarrow import MAGIC as ARROW_MAGIC, arrow_lists, batch_columns, is_arrow, read_arrow
from roadwatch.models import pingjson
from roadwatch.models.pingbatch import decode_batch, decode_json_batches
from roadwatch.models.pingschema import concat
from roadwatch.models.records import InvalidRecord
from roadwatch.models.timerange import plausible_years

from .errors import UsageError

PINGS, WIM = "gps-pings", "wim-readings"
PING_KEYS = ("plate", "plate_color", "terminal_id", "ts", "lat", "lon", "speed_kmh", "heading", "altitude_m",
             "alarm_flags", "status_flags", "reupload", "driver_id", "mileage_km", "recv_ts")
_GZIP_MAGIC = b"\x1f\x8b"
JSON_BLOCK_BYTES = 4 << 20     # JSON lines of pings are read and parsed in blocks of about this size


def open_input(path: str, what: str = "input") -> IO[bytes]:
    """``-`` = stdin; a gzip file (by its magic bytes) is decompressed on the fly."""
    if path == "-":
        fh: IO[bytes] = sys.stdin.buffer
    else:
        try:
            fh = open(path, "rb")
        except OSError as e:
            raise UsageError(f"cannot read {what} {path}: {e.strerror}") from None
    if not hasattr(fh, "peek"):      # (a test's BytesIO stdin): the format is recognised by peeking
        fh = io.BufferedReader(fh)   # type: ignore[arg-type]
    head = fh.peek(2)[:2]
    if head == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=fh)      # type: ignore[return-value]
    return fh


def _iso_column(ms: list) -> list[str]:
    """Epoch ms → ``YYYY-MM-DDTHH:MM:SS+08:00`` (Beijing), vectorised (whole seconds, like the wire)."""
    secs = (np.asarray(ms, dtype=np.int64) // 1000 + 8 * 3600).astype("datetime64[s]")
    return [s + "+08:00" for s in np.datetime_as_string(secs, unit="s").tolist()]


@dataclass
class InputCheck:
    """What one input produced: lines read, records yielded, skipped (other topics) and rejected."""
    label: str
    kind: str
    max_rejected_share: float
    lines: int = 0
    units: int = 0            # single records yielded (pings or readings)
    skipped: int = 0          # feed records of another topic
    rejected: int = 0         # lines this reader could not read
    reasons: list = field(default_factory=list)
    feed: bool | None = None
    fmt: str | None = None    # how the input was recognised, for the refusal message (default: feed / JSON lines)
    broken: str | None = None  # a binary input that could not be read to its end: how much is lost is unknown
    errors: list = field(default_factory=list)   # JSON lines of pings rejected here: {"line", "reason", "detail"}

    def reject(self, lineno: int, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < 3:
            self.reasons.append(f"line {lineno}: {reason}")

    def verdict(self, rejected_downstream: int = 0) -> None:
        """Raise ``UsageError`` when the input cannot honestly support a result."""
        what = "GPS pings" if self.kind == PINGS else "WIM readings"
        fmt = self.fmt or ("feed" if self.feed else "JSON lines")
        if self.broken:
            raise UsageError(f"{self.label}: the {fmt} cannot be read to its end ({self.broken}); "
                             f"{self.units} {what} before that point")
        if self.units == 0:
            why = (f"; first problem: {self.reasons[0]}" if self.reasons else
                   f" ({self.skipped} record(s) of other topics)" if self.skipped else " (empty input)")
            raise UsageError(f"{self.label}: no {what} could be read from this {fmt}{why}")
        bad = self.rejected + int(rejected_downstream)
        total = self.units + self.rejected
        if total and bad / total > self.max_rejected_share:
            first = f"; first: {self.reasons[0]}" if self.reasons else ""
            raise UsageError(f"{self.label}: {bad} of {total} {what} rejected ({bad / total:.1%} > "
                             f"input.max_rejected_share {self.max_rejected_share:.1%}){first}")


def read_lines(fh: IO[bytes], kind: str, check: InputCheck, columns: bool = False,
               max_bytes: int = 1_000_000, batch_pings: int = 32_000,
               years: tuple[int, int] | None = None, json_batch: int | None = None) -> Iterator:
    """Single-record JSON lines of ``kind`` (``PINGS`` or ``WIM``) from a feed or from JSON lines. With
    ``columns``, a feed's ``gps-pings`` records come out as ``PingColumns`` instead, decoded and validated
    by the worker's own ``decode_batch`` — the same checks and order as the stream, consecutive records
    merged up to ``batch_pings`` (no per-ping JSON on the way: the batch path runs at the engine's speed;
    fewer engine calls and larger rounds: on the province month 8 000 was ≈ 9 % faster than 2 000 and
    32 000 ≈ 10 % faster than 8 000, docs/performance.md; one merged batch is all the input held) — and
    JSON lines of pings as ``PingColumns`` of ``json_batch`` (default ``batch_pings``) lines each
    (``_json_columns``; rejected lines are in ``check.errors``). ``years``: the plausible years
    (``time.min_year``/``max_year``)."""
    if kind == PINGS and _peek(fh, 4) == ARROW_MAGIC:
        yield from _arrow_input(fh, check, columns, batch_pings)
        return
    pending: list = []            # consecutive column batches merged up to batch_pings (engine calls)
    arrow: list = []              # Arrow records not decoded yet: (line number, record batch)
    jsonrec: list = []            # JSON records not decoded yet: (line number, value)
    n_pending = 0
    for lineno, line in enumerate(fh, 1):
        if not line.strip():
            continue
        check.lines += 1
        if check.feed is None:
            check.feed = _is_feed_line(line)
        if not check.feed:
            if columns and kind == PINGS:
                yield from _json_columns(fh, line, lineno, check, json_batch or batch_pings, years)
                return
            check.units += 1
            yield line
            continue
        try:
            topic, value = _split_record(line)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as e:
            check.reject(lineno, f"not a feed record ({type(e).__name__})")
            continue
        if topic != kind:
            check.skipped += 1
            continue
        if kind == WIM:
            check.units += 1
            yield value
            continue
        if columns:
            # decoded later, merged with their neighbours of the same encoding (one decode per merge)
            try:
                if is_arrow(value):
                    pending += _json_record_columns(jsonrec, check, max_bytes)
                    rb = read_arrow(value, max_bytes)
                    arrow.append((lineno, rb))
                    n_pending += rb.num_rows
                else:
                    pending += _arrow_columns(arrow, check)
                    jsonrec.append((lineno, value))
                    n_pending += _json_count(value)
            except InvalidRecord as e:
                check.reject(lineno, f"gps-pings record rejected: {e.code}: {e.detail}")
                continue
            if n_pending >= batch_pings:
                pending += _arrow_columns(arrow, check) + _json_record_columns(jsonrec, check, max_bytes)
                if pending:
                    yield concat(pending)
                pending, n_pending = [], 0
            continue
        try:
            out = ping_lines(value)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            check.reject(lineno, f"gps-pings record is not a ping batch ({type(e).__name__}: {str(e)[:60]})")
            continue
        check.units += len(out)
        yield from out
    pending += _arrow_columns(arrow, check) + _json_record_columns(jsonrec, check, max_bytes)
    if pending:
        yield concat(pending)


def _json_columns(fh: IO[bytes], first: bytes, first_no: int, check: InputCheck, batch: int,
                  years: tuple[int, int] | None) -> Iterator:
    """JSON lines of pings (from ``first``, line ``first_no``, on) → ``PingColumns`` of ``batch`` non-blank
    lines each (minus the rejected ones) — the batches ``run_pings`` would cut from the lines themselves.

    The file is read in blocks of whole lines; a worker thread reads and parses the next block with
    Arrow's JSON reader (models/pingjson.py, mostly outside the GIL) while this one validates the current
    block and the engine runs on it. A block Arrow cannot vouch for, or a batch of rows with a defect, is
    read again line by line (``parse_numbered``): each rejected line is counted with its file line number
    and reason (``check.reject``, ``check.errors``). Memory: two blocks and their columns."""
    state = {"rest": first}
    block_bytes = JSON_BLOCK_BYTES

    def read_block():        # in the worker thread, one call at a time, in order
        buf = state["rest"]
        while True:          # whole batches of lines (else whole lines): a batch is converted in one piece
            data = fh.read(block_bytes)
            buf += data
            nl = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
            cut = int(nl[len(nl) // batch * batch - 1]) + 1 if len(nl) >= batch else 0
            if cut or not data:
                break
        if data:
            block, state["rest"] = buf[:cut], buf[cut:]
        else:                # end of input: the last line may lack its newline
            block, state["rest"] = (buf if buf.endswith(b"\n") or not buf else buf + b"\n"), b""
        return (block, pingjson.block_table(block)) if block else None

    errors = pingjson.LineErrors()
    acc: list = []             # the current engine batch: columns of its parts
    acc_lines = 0

    def split(block: bytes) -> list[bytes]:
        return [ln + b"\n" for ln in block.split(b"\n")[:-1]]

    pool = ThreadPoolExecutor(1, thread_name_prefix="json-lines")
    try:
        fut = pool.submit(read_block)
        lineno = first_no      # file line number of the block's first line
        while (got := fut.result()) is not None:
            fut = pool.submit(read_block)
            block, table = got
            raw = None if table is not None else split(block)
            nos = None if raw is None else [lineno + k for k, ln in enumerate(raw) if ln.strip()]
            n = table.num_rows if table is not None else len(nos)   # table: one row per line, none blank
            check.lines += n
            done = 0
            while done < n:
                m = min(batch - acc_lines, n - done)
                if nos is None:
                    try:
                        cols = pingjson.table_columns(table.slice(done, m), years)
                    except InvalidRecord:     # a defect in these rows: their exact reasons, line by line
                        raw = raw or split(block)
                        cols = pingjson.parse_numbered(raw[done:done + m], range(lineno + done, lineno + done + m),
                                                       errors, years)
                else:
                    part = nos[done:done + m]
                    cols = pingjson.parse_numbered([raw[k - lineno] for k in part], part, errors, years)
                for e in errors:
                    check.reject(e["line"], f"{e['reason']}: {e['detail']}")
                check.errors += errors
                errors.clear()
                if cols is not None:
                    check.units += len(cols)
                    acc.append(cols)
                done += m
                acc_lines += m
                if acc_lines == batch:
                    if acc:
                        yield acc[0] if len(acc) == 1 else concat(acc)
                    acc.clear()
                    acc_lines = 0
            lineno += table.num_rows if raw is None else len(raw)
        if acc:
            yield acc[0] if len(acc) == 1 else concat(acc)
    finally:                 # (a consumer that stops early does not wait for the block being parsed)
        pool.shutdown(wait=False, cancel_futures=True)


def _json_count(value: bytes) -> int:
    """Pings in a JSON columnar record, estimated without parsing it (for the merge size only): the
    separators of its ``ts`` list."""
    i = value.find(b'"ts":[')
    return value.count(b",", i, value.find(b"]", i)) + 1 if i >= 0 else 1


def _json_record_columns(jsonrec: list, check: InputCheck, max_bytes: int) -> list:
    """Drain the pending JSON records (``(lineno, value)``) as columns: validated as one batch
    (``decode_json_batches``) — or, when that fails (a defect, a record of another shape), record by
    record."""
    return _drain(jsonrec, check, lambda values: decode_json_batches(values, max_bytes),
                  lambda value: decode_batch(value, max_bytes))


def _arrow_columns(arrow: list, check: InputCheck) -> list:
    """Drain the pending Arrow records (``(lineno, record batch)``) as columns: merged into one batch and
    validated once (a feed of small records costs one decode per ``batch_pings``, not per record); if the
    merged batch is refused or the records' schemas differ, record by record."""
    return _drain(arrow, check, _arrow_merged, batch_columns)


def _arrow_merged(batches: list):
    try:
        merged = pa.Table.from_batches(batches).combine_chunks().to_batches()
        return batch_columns(merged[0]) if len(merged) == 1 else None
    except (InvalidRecord, pa.ArrowException):
        return None


def _drain(pending: list, check: InputCheck, merged, one) -> list:
    """The pending records (``(lineno, record)``, emptied) as columns: ``merged(records)`` — all of them as
    one batch, or None when that cannot be told at once — else ``one(record)`` each, so that a defect
    rejects only its own record, as on the topic."""
    if not pending:
        return []
    items = list(pending)
    pending.clear()
    if len(items) > 1:
        cols = merged([r for _, r in items])
        if cols is not None:
            check.units += len(cols)
            return [cols]
    out = []
    for lineno, rec in items:
        try:
            cols = one(rec)
        except InvalidRecord as e:
            check.reject(lineno, f"gps-pings record rejected: {e.code}: {e.detail}")
            continue
        check.units += len(cols)
        out.append(cols)
    return out


def _peek(fh: IO[bytes], n: int) -> bytes:
    return fh.peek(n)[:n] if hasattr(fh, "peek") else b""


def _arrow_input(fh: IO[bytes], check: InputCheck, columns: bool, batch_pings: int) -> Iterator:
    """An Arrow IPC stream file of ping record batches (docs/formats.md; e.g. what pyarrow's or polars'
    IPC stream writers produce), or several such streams one after another (Kafka record values
    concatenated). Read batch by batch — memory is one batch — and validated like a record on the topic;
    a batch with a defect is rejected whole (counted per ping); a stream that cannot be read to its end
    (truncated, corrupt framing) makes the input refused: what was lost cannot be counted."""
    check.feed = True
    check.fmt = "Arrow IPC stream"
    pending: list = []
    n_pending = 0
    no = 0
    while _peek(fh, 4) == ARROW_MAGIC:
        try:
            reader = pa.ipc.open_stream(fh)
        except (pa.ArrowException, OSError, ValueError) as e:
            check.broken = f"after record batch {no}: {str(e)[:80]}"
            return
        while True:
            try:
                batch = reader.read_next_batch()
                batch.validate(full=True)
            except StopIteration:
                break
            except (pa.ArrowException, OSError, ValueError) as e:
                check.broken = f"record batch {no + 1}: {str(e)[:80]}"
                return
            no += 1
            check.lines += 1
            try:
                cols = batch_columns(batch.replace_schema_metadata(reader.schema.metadata))
            except InvalidRecord as e:
                check.reject(no, f"record batch {no} rejected: {e.code}: {e.detail}")
                check.rejected += max(0, batch.num_rows - 1)      # the share counts pings
                continue
            check.units += len(cols)
            if not columns:
                yield from ping_lines_of(cols)
                continue
            pending.append(cols)
            n_pending += len(cols)
            if n_pending >= batch_pings:
                yield concat(pending)
                pending, n_pending = [], 0
    if _peek(fh, 1):
        check.broken = f"bytes after record batch {no} that are not an Arrow IPC stream"
    if pending:
        yield concat(pending)


def ping_lines_of(cols) -> list[bytes]:
    """Validated columns → interchange JSON lines (``ts``/``recv_ts`` ISO-8601)."""
    from roadwatch.models.pingbatch import columns_to_pings
    out = []
    for p, recv in zip(columns_to_pings(cols), cols.recv_ts.tolist() if cols.recv_ts is not None else repeat(None)):
        p["ts"] = _iso_column([p["ts"]])[0]
        if recv is not None:
            p["recv_ts"] = _iso_column([recv])[0]
        out.append(orjson.dumps({k: v for k, v in p.items() if v is not None}) + b"\n")
    return out


_VALUE = b'"value":"'


def _split_record(line: bytes) -> tuple[str, bytes]:
    """(topic, decoded value) of one feed line. Lines as ``simulate``/``record`` write them (topic first,
    then a base64 value without escapes) are cut apart without parsing the large value as JSON; any other
    object is parsed in full."""
    for topic in (PINGS, WIM):
        if line.startswith(b'{"topic":"' + topic.encode() + b'"'):
            i = line.find(_VALUE)
            j = line.find(b'"', i + len(_VALUE)) if i >= 0 else -1
            if j > 0:
                return topic, base64.b64decode(line[i + len(_VALUE):j], validate=True)
    rec = orjson.loads(line)
    return rec["topic"], base64.b64decode(rec["value"], validate=True)


def _is_feed_line(line: bytes) -> bool:
    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(d, dict) and "topic" in d and "value" in d and "plate" not in d


def ping_lines(value: bytes) -> list[bytes]:
    """One ``gps-pings`` record value (columnar batch or a single ping) → interchange JSON lines, with
    ``ts``/``recv_ts`` as ISO-8601 strings. Values are passed through as they are: validating them is the
    engine's job, so a bad value in a feed is rejected exactly as the stream would reject it. An Arrow
    record (models/pingarrow.py) that cannot be read raises ``ValueError``."""
    if is_arrow(value):
        d = arrow_lists(value)
    else:
        d = orjson.loads(value)
    if not isinstance(d, dict):
        raise TypeError("record value is not a JSON object")
    if "schema" not in d:
        return [orjson.dumps(d) + b"\n"]
    n = len(d["plate"])
    cols = []
    for k in PING_KEYS:
        col = d.get(k)
        if k in ("ts", "recv_ts") and isinstance(col, list) and len(col) == n:
            col = _iso_column(col)
        elif k == "reupload" and isinstance(col, list):
            col = [bool(x) for x in col]
        if not isinstance(col, list) or len(col) != n:
            if k in ("driver_id", "mileage_km", "recv_ts", "reupload", "alarm_flags", "status_flags"):
                col = [None] * n
            else:
                raise ValueError(f"column {k} missing or of the wrong length")
        cols.append(col)
    dumps = orjson.dumps
    out = []
    for row in zip(*cols):
        out.append(dumps({k: v for k, v in zip(PING_KEYS, row) if v is not None}) + b"\n")
    return out


def pings(path: str, cfg: Config, label: str, columns: bool = False,
          batch: int = 8000) -> tuple[Iterator, InputCheck, IO[bytes]]:
    """(ping lines — or, with ``columns``, ``PingColumns`` batches of up to ``batch`` pings (JSON lines:
    of ``batch`` lines, as ``run_pings(batch=…)`` cuts them) —, their check, the open file to close) for
    ``--pings FILE`` / stdin."""
    fh = open_input(path, "pings file")
    chk = InputCheck(label, PINGS, float(cfg["input.max_rejected_share"]))
    return read_lines(fh, PINGS, chk, columns, int(cfg["stream.max_record_bytes"]),
                      years=plausible_years(cfg), json_batch=batch), chk, fh


def readings(path: str, cfg: Config, label: str) -> tuple[Iterator[bytes], InputCheck, IO[bytes]]:
    """(WIM reading lines, their check, the open file) for ``assess wim``'s input."""
    fh = open_input(path, "readings file")
    chk = InputCheck(label, WIM, float(cfg["input.max_rejected_share"]))
    return read_lines(fh, WIM, chk), chk, fh
