"""A running stack (embedded broker + real worker) for integration tests, with its own data dir and port."""
from __future__ import annotations

import os
from contextlib import contextmanager

from roadwatch.models.config import load_config
from roadwatch.streams.broker import free_port
from roadwatch.streams.runtime import stack


@contextmanager
def worker_stack(tmp, reg_path):
    """Yields ``(stack, cfg)``; ``ROADWATCH_SET`` points the worker and this process at ``tmp/data``."""
    old = os.environ.get("ROADWATCH_SET")
    os.environ["ROADWATCH_SET"] = f'paths.data_dir="{tmp / "data"}";web.port={free_port()}'
    cfg = load_config(None)
    try:
        with stack(cfg, registry_path=str(reg_path)) as st:
            yield st, cfg
    finally:
        if old is None:
            os.environ.pop("ROADWATCH_SET", None)
        else:
            os.environ["ROADWATCH_SET"] = old


def read_to_end(bootstrap: str, topic: str, partitions=None, timeout: float = 30.0, quiet_s: float = 0.5) -> list:
    """Every record on ``topic`` (or its ``partitions``), for tests whose producers are done: read from the
    beginning at least up to the end offsets taken at the call, then until a poll of ``quiet_s`` brings
    nothing more (the embedded broker can report an end offset below records it holds: 4 for 22 batches
    after a frozen-broker outage). A consumer iterated until ``consumer_timeout_ms`` of silence waited
    3–5 s every time for the same answer."""
    import time

    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        parts = sorted(c.partitions_for_topic(topic) or ()) if partitions is None else partitions
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        got: list = []
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"{topic} could not be read to its end"
            recs = c.poll(timeout_ms=int(quiet_s * 1000))
            for batch in recs.values():
                got += batch
            if not recs and all(c.position(tp) >= ends[tp] for tp in tps):
                return sorted(got, key=lambda r: (r.partition, r.offset))
    finally:
        c.close()
