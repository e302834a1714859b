"""PingBatcher: Kafka-compatible partitioning, flush by size and by time, failure keeps the batch."""
from __future__ import annotations

import ctypes

import pytest
from kafka.partitioner.default import DefaultPartitioner

from roadwatch.models.config import Config
from roadwatch.models.pingbatch import columns_to_pings, decode_batch
from roadwatch.models.pingarrow import encode_arrow_rows
from roadwatch.streams.batcher import (ROW_FIELDS, MemoryPublisher, PingBatcher, PublishError, _encode_rows_general,
                                       encode_rows, partition_for)

PLATES = ["京A12345", "粤B8K2Q1", "沪C00001", "冀D7788挂", "新AX1234", "苏E12F34", "川A99999", "鲁Q0K001",
          "黑AB1234", "琼A00001", "浙A0A0A0", "A", "foobar"]


class _Cluster:
    """The two ClusterMetadata calls DefaultPartitioner makes, for a topic with ``n`` partitions."""

    def __init__(self, n: int):
        self.n = n

    def topics(self):
        return {"gps-pings"}

    def partitions_for_topic(self, topic):
        return set(range(self.n))

    available_partitions_for_topic = partitions_for_topic


def _ping(plate: str, i: int = 0) -> dict:
    return {"plate": plate, "plate_color": 2, "terminal_id": "13800000000", "ts": 1_714_521_600_000 + i * 1000,
            "lat": 30.0, "lon": 120.0, "speed_kmh": 50.0, "heading": 0, "altitude_m": 0.0, "alarm_flags": 0,
            "status_flags": 3, "reupload": False, "driver_id": None, "mileage_km": None}


def test_murmur2_matches_java_kafka_vectors():
    """Vectors from Apache Kafka's UtilsTest.testMurmur2 (signed Java ints) → partition by hand."""
    vectors = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
               "a-little-bit-longer-string": -1486304829, "abc": 479470107}
    for key, java_hash in vectors.items():
        for n in (1, 4, 7, 12):
            assert partition_for(key, n) == (java_hash & 0x7FFFFFFF) % n


@pytest.mark.parametrize("n", [1, 2, 4, 8, 12])
def test_partitions_match_kafka_python_default_partitioner(n):
    dp = DefaultPartitioner()
    for plate in PLATES:
        key = plate.encode("utf-8")
        assert partition_for(plate, n) == dp.partition("gps-pings", key, key, None, None, _Cluster(n))


def test_flush_by_size_boundary_and_never_mixes_partitions():
    sent = []
    b = PingBatcher(lambda p, k, v: sent.append((p, k, v)), partitions=4, max_pings=3, max_ms=10_000,
                    clock=lambda: 0.0)
    pings = [_ping(pl, i) for i, pl in enumerate(PLATES * 3)]
    for p in pings:
        b.add(p)
    assert b.pending + sum(len(decode_batch(v)) for _, _, v in sent) == len(pings)
    for part, key, value in sent:
        rows = columns_to_pings(decode_batch(value))
        assert len(rows) == 3                                  # flushed exactly at max_pings
        assert {partition_for(r["plate"], 4) for r in rows} == {part}
        assert key == rows[0]["plate"].encode("utf-8")
    # a partition holding max_pings − 1 pings has not been sent
    assert all(len(v) < 3 for v in b._pings.values())


def test_flush_by_time_boundary():
    now = [100.0]
    sent = []
    b = PingBatcher(lambda p, k, v: sent.append(p), partitions=4, max_pings=500, max_ms=200, clock=lambda: now[0])
    b.add(_ping("京A12345"))
    now[0] = 100.1
    b.add(_ping("京A12345", 1))                  # same partition: its age counts from the first ping
    now[0] = 100.199
    assert b.poll() == 0 and sent == []
    assert b.next_due() == pytest.approx(100.2)
    now[0] = 100.2
    assert b.poll() == 1 and sent == [partition_for("京A12345", 4)]
    assert b.pending == 0 and b.next_due() is None
    assert b.pings_sent == 2 and b.records_sent == 1


def test_time_flush_per_partition():
    now = [0.0]
    sent = []
    b = PingBatcher(lambda p, k, v: sent.append(p), partitions=8, max_pings=500, max_ms=100, clock=lambda: now[0])
    a, z = next((x, y) for x in PLATES for y in PLATES if partition_for(x, 8) != partition_for(y, 8))
    b.add(_ping(a))
    now[0] = 0.05
    b.add(_ping(z))
    now[0] = 0.1
    assert b.poll() == 1 and sent == [partition_for(a, 8)]
    now[0] = 0.15
    assert b.poll() == 1 and sent[-1] == partition_for(z, 8)


def test_send_failure_keeps_the_batch():
    fail = [True]
    sent = []

    def send(p, k, v):
        if fail[0]:
            raise PublishError("down")
        sent.append(v)

    b = PingBatcher(send, partitions=1, max_pings=2, max_ms=1000, clock=lambda: 0.0)
    b.add(_ping("京A12345", 0))
    with pytest.raises(PublishError):
        b.add(_ping("京A12345", 1))
    assert b.pending == 2
    fail[0] = False
    assert b.flush() == 1
    assert [r["ts"] for r in columns_to_pings(decode_batch(sent[0]))] == [1_714_521_600_000, 1_714_521_601_000]


def test_from_config_and_memory_publisher():
    pub = MemoryPublisher()
    b = PingBatcher.from_config(Config({"stream.partitions": 3, "stream.batch_max_pings": 2,
                                        "stream.batch_max_ms": 350}),
                                lambda p, k, v: pub.send("gps-pings", k, v, p))
    assert (b.partitions, b.max_pings, b.max_s) == (3, 2, 0.35)
    b.add(_ping("京A12345"))
    b.add(_ping("京A12345"))
    assert pub.topic("gps-pings") == []          # not visible before flush (delivery confirmation)
    pub.flush()
    (key, value, part), = pub.topic("gps-pings")
    assert part == partition_for("京A12345", 3) and key == "京A12345".encode()
    pub.down = True
    with pytest.raises(PublishError):
        pub.send("gps-pings", b"k", b"v")


def test_java_signed_hash_helper_consistency():
    # guard the test's own arithmetic: & 0x7fffffff of a negative Java int equals masking the unsigned value
    assert (ctypes.c_int32(-973932308).value & 0x7FFFFFFF) == ((-973932308 % 2**32) & 0x7FFFFFFF)


def _gateway_row(plate: str, i: int, **kw) -> tuple:
    """A row tuple in ``ROW_FIELDS`` order, as the gateway's fast path builds it."""
    row = dict(plate=plate, terminal_id="13800000000", ts=1_714_521_600_000 + i * 1000, lat=30.0 + i * 1e-4,
               lon=120.0, speed_kmh=50.5, heading=90, altitude_m=12.0, plate_color=2, alarm_flags=0,
               status_flags=3, reupload=0, driver_id=None if i % 2 else "D42", mileage_km=None if i % 3 else 1000.5,
               recv_ts=1_714_521_600_500 + i * 1000, jt808_version=2019 if i % 4 == 0 else 0)
    row.update(kw)
    return tuple(row[f] for f in ROW_FIELDS)


@pytest.mark.parametrize("versions", ["mixed", "all 2019", "none"])
def test_arrow_records_of_one_flush_carry_exactly_their_partitions_rows(versions):
    """A flush of several partitions converts the columns once and writes one record per partition: each
    decodes to the same pings as that partition's rows encoded on their own (the general path)."""
    sent = []
    b = PingBatcher(lambda p, k, v: sent.append((p, k, v)), partitions=4, max_pings=500, max_ms=200,
                    clock=lambda: 0.0)
    rows = [_gateway_row(pl, i) for i, pl in enumerate(PLATES * 2)]
    if versions != "mixed":
        rows = [r[:-1] + (2019 if versions == "all 2019" else 0,) for r in rows]
    for r in rows:
        b.add_row(r)
    assert b.flush() == len({partition_for(pl, 4) for pl in PLATES}) > 1
    assert sum(len(decode_batch(v)) for _, _, v in sent) == len(rows)
    for part, key, value in sent:
        mine = [r for r in rows if partition_for(r[0], 4) == part]
        assert value[:4] == b"\xff\xff\xff\xff"                     # the Arrow form
        alone = _encode_rows_general(mine, "arrow")
        assert columns_to_pings(decode_batch(value)) == columns_to_pings(decode_batch(alone))
        assert key == mine[0][0].encode("utf-8")


def test_arrow_rows_with_unusual_values_take_the_general_path():
    """A value whose column would change it (a float heading, a flag word above 2³², a bool latitude) is
    written by ``pingarrow.encode_arrow`` unchanged, so the reader rejects it with its reason."""
    plain = [_gateway_row("京A12345", i) for i in range(3)]
    assert encode_rows(plain) == _encode_rows_general(plain, "arrow")       # the same bytes either way
    for odd in ({"heading": 1.5}, {"alarm_flags": 1 << 33}, {"lat": True}, {"reupload": 2}):
        rows = plain[:2] + [_gateway_row("京A12345", 2, **odd)]
        assert encode_arrow_rows([rows], ROW_FIELDS) is None
        assert encode_rows(rows) == _encode_rows_general(rows, "arrow")
