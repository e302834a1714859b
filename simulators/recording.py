"""Recording files: one Kafka record per line, JSON ``{"topic", "partition", "key", "value", "timestamp"}``
with key/value base64 and timestamp in epoch ms. ``.gz`` paths are gzip-compressed (level 1: fast).

``roadwatch record`` writes them from live topics, ``roadwatch simulate --out`` writes a generated feed in
the same format, and ``roadwatch replay`` reads either.
"""
from __future__ import annotations

import base64
import gzip
from pathlib import Path
from typing import IO, Iterable, Iterator

import orjson

from roadwatch.streams.cli import UsageError

from .feed import FeedRecord


def _open(path: str | Path, mode: str) -> IO[bytes]:
    p = Path(path)
    if p.suffix == ".gz":
        return gzip.open(p, mode + "b", compresslevel=1)   # type: ignore[return-value]
    return open(p, mode + "b")


def encode_line(r: FeedRecord) -> bytes:
    d = {"topic": r.topic, "partition": r.partition,
         "key": base64.b64encode(r.key).decode() if r.key is not None else None,
         "value": base64.b64encode(r.value).decode(), "timestamp": r.ts_ms}
    if r.barrier:
        d["barrier"] = True
    return orjson.dumps(d) + b"\n"


def write_records(path: str | Path, records: Iterable[FeedRecord]) -> int:
    n = 0
    with _open(path, "w") as f:
        for r in records:
            f.write(encode_line(r))
            n += 1
    return n


class RecordingWriter:
    """Append-as-you-go writer (the recorder)."""

    def __init__(self, path: str | Path):
        self._f = _open(path, "w")
        self.count = 0

    def write(self, r: FeedRecord) -> None:
        self._f.write(encode_line(r))
        self.count += 1

    def close(self) -> None:
        self._f.close()


def decode_line(line: bytes, lineno: int = 0) -> FeedRecord:
    try:
        d = orjson.loads(line)
        key = d.get("key")
        return FeedRecord(str(d["topic"]), int(d.get("partition", -1) if d.get("partition") is not None else -1),
                          base64.b64decode(key, validate=True) if key is not None else None,
                          base64.b64decode(d["value"], validate=True), int(d["timestamp"]),
                          bool(d.get("barrier", False)))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UsageError(f"recording line {lineno}: not a record line ({type(e).__name__}: {str(e)[:80]})") from None


def read_records(path: str | Path) -> Iterator[FeedRecord]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"recording not found: {p}")
    with _open(p, "r") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                yield decode_line(line, i)
