"""Kafka's murmur2 partitioner hash in C (``streams/_kafkahash.c``) against kafka-python's pure-Python one and
Kafka's own test vectors: a record must land on the partition every other Kafka client picks for its key
(the worker's per-vehicle state lives on that partition)."""
from __future__ import annotations

import random

import pytest
from kafka.partitioner.default import murmur2 as murmur2_py

from roadwatch.streams import batcher

_kafkahash = pytest.importorskip("roadwatch.streams._kafkahash",
                                 reason="the C hash was not built (no compiler when installed)")


def _signed(h: int) -> int:
    return h - (1 << 32) if h >= 1 << 31 else h


@pytest.mark.parametrize("key, java", [
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (Java ints)
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829), (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107)])
def test_kafka_test_vectors(key, java):
    assert _signed(_kafkahash.murmur2(key)) == java
    assert _signed(murmur2_py(key)) == java


def test_same_as_kafka_python_on_every_length_and_plates():
    rnd = random.Random(808)
    keys = [bytes(rnd.randrange(256) for _ in range(n)) for n in range(64) for _ in range(20)]
    keys += [p.encode() for p in ("京A12345", "粤B·D1234", "沪C0000挂", "WJ01·1234", "")]
    for k in keys:
        assert _kafkahash.murmur2(k) == murmur2_py(k), k


def test_the_batcher_uses_it():
    assert batcher.murmur2 is _kafkahash.murmur2
    assert batcher.partition_for("京A12345", 4) == (murmur2_py("京A12345".encode()) & 0x7FFFFFFF) % 4
