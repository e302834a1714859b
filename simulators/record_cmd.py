"""``roadwatch record --topics a,b --out FILE [--duration S]``: capture topics to a recording file."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from roadwatch.models.config import Config
from roadwatch.streams.cli import UsageError

from .feed import FeedRecord
from .recording import RecordingWriter


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topics", required=True, help="comma-separated topic names")
    p.add_argument("--out", required=True, help="recording file (.gz to compress)")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--from-beginning", action="store_true", help="start at the earliest offset (default: latest)")
    p.add_argument("--bootstrap", default=os.environ.get("ROADWATCH_KAFKA"),
                   help="Kafka bootstrap (default $ROADWATCH_KAFKA; required)")


def record(bootstrap: str, topics: list[str], out: str, duration: float | None, from_beginning: bool,
           stop=lambda: False, ready=None) -> int:
    """Capture with an assigned (group-less) kafka-python consumer; returns the number of records."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             fetch_max_wait_ms=100, consumer_timeout_ms=200)
    tps = []
    for t in topics:
        parts = consumer.partitions_for_topic(t)
        if not parts:
            consumer.close()
            raise UsageError(f"topic {t!r} does not exist")
        tps += [TopicPartition(t, p) for p in sorted(parts)]
    consumer.assign(tps)
    if from_beginning:
        consumer.seek_to_beginning(*tps)
    else:
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)   # resolve now: records produced after this call are captured
    if ready:
        ready()
    w = RecordingWriter(out)
    deadline = time.monotonic() + duration if duration else None
    try:
        while not stop() and (deadline is None or time.monotonic() < deadline):
            polled = consumer.poll(timeout_ms=200)
            for tp, msgs in polled.items():
                for m in msgs:
                    w.write(FeedRecord(m.topic, m.partition, m.key, m.value or b"", int(m.timestamp)))
    finally:
        w.close()
        consumer.close()
    return w.count


def run(args: argparse.Namespace, cfg: Config) -> int:
    if not args.bootstrap:
        raise UsageError("no Kafka: pass --bootstrap HOST:PORT or set ROADWATCH_KAFKA")
    topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    if not topics:
        raise UsageError("--topics is empty")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        n = record(args.bootstrap, topics, args.out, args.duration, args.from_beginning, stop=lambda: bool(stopping))
    except KeyboardInterrupt:
        n = -1
    print(f"recorded {n if n >= 0 else 'some'} records to {args.out}", file=sys.stderr)
    return 0
