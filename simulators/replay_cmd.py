"""``roadwatch replay FILE``: re-publish a recording (or a generated feed) with its relative timing."""
from __future__ import annotations

import argparse
import os
import sys

from roadwatch.models.config import Config
from roadwatch.streams.cli import UsageError

from .recording import read_records
from .replay import parse_speed, ping_count, publish


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="recording (JSON lines, .gz allowed) from `roadwatch record` or `simulate --out`")
    p.add_argument("--speed", default="1", help="N × real time, or 'max' (default 1)")
    p.add_argument("--bootstrap", default=os.environ.get("ROADWATCH_KAFKA"),
                   help="Kafka bootstrap (default $ROADWATCH_KAFKA; required)")
    p.add_argument("--keep-partitions", action="store_true",
                   help="send to the recorded partition (default: let the key choose, like the original producer)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    try:
        speed = parse_speed(args.speed)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not args.bootstrap:
        raise UsageError("no Kafka: pass --bootstrap HOST:PORT or set ROADWATCH_KAFKA")
    records = list(read_records(args.file))   # validates the whole file before sending anything
    if not args.keep_partitions:
        records = [r.__class__(r.topic, r.partition if r.key is None else -1, r.key, r.value, r.ts_ms) for r in records]
    from roadwatch.streams.batcher import make_producer
    try:
        producer = make_producer(args.bootstrap)
    except Exception as e:   # noqa: BLE001 - NoBrokersAvailable and friends
        print(f"roadwatch: cannot connect to Kafka at {args.bootstrap}: {e}", file=sys.stderr)
        return 1
    try:
        res = publish(records, producer, speed, total=len(records), count_units=ping_count)
    finally:
        producer.close(timeout=10)
    print(f"replayed {res['messages']:,} records ({res['units']:,} pings) in {res['seconds']} s", file=sys.stderr)
    return 0
