"""streams/keyed_sender.py against the real embedded broker: every record arrives once, on the partition a
per-record send would have chosen (Kafka's default partitioner), in order per key."""
import asyncio

from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from roadwatch.models.config import Config
from roadwatch.streams import topics as T
from roadwatch.streams.broker import EmbeddedBroker, create_topics
from roadwatch.streams.keyed_sender import KeyedBatchSender


def _read_all(bootstrap: str, topic: str, expect: int) -> dict[int, list[tuple[bytes, bytes]]]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got: dict[int, list] = {}
    n = 0
    for r in c:
        got.setdefault(r.partition, []).append((r.key, r.value))
        n += 1
        if n >= expect:
            break
    c.close()
    return got


async def _send_both_ways(bootstrap: str, records: list[tuple[bytes, bytes]]) -> None:
    sender = KeyedBatchSender(bootstrap, T.ALERTS, linger_ms=5, max_request_size=4_000_000, max_queued=1000,
                              faults=None, component="alerts-publish")
    # in three calls, the middle one larger than a record batch holds (a batch per partition fills up)
    await sender.send(records[:10])
    await sender.send(records[10:-10])
    await sender.send(records[-10:])
    await sender.aclose()
    # the same records, one aiokafka send each with the default partitioner, to a second topic
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await prod.start()
    futs = [await prod.send("vehicle-day-stats", v, key=k) for k, v in records]
    await asyncio.gather(*futs)
    await prod.stop()


def test_batches_land_where_per_record_sends_do_in_order_and_once():
    # 40 plates, 3 000 records of ~300 B: > 16 KiB per partition, so batches fill and are sent mid-call
    records = [(f"苏A{i % 40:05d}".encode(), (f'{{"seq":{i},"pad":"' + "x" * 280 + '"}').encode())
               for i in range(3000)]
    with EmbeddedBroker() as b:
        create_topics(b.bootstrap, Config({"stream.partitions": 4}))
        asyncio.run(_send_both_ways(b.bootstrap, records))
        batched = _read_all(b.bootstrap, T.ALERTS, len(records))
        per_record = _read_all(b.bootstrap, "vehicle-day-stats", len(records))
    assert sum(map(len, batched.values())) == len(records)
    assert len(batched) > 1                                  # the keys spread over partitions
    assert batched == per_record                             # same partition, same order, nothing twice


def test_a_record_larger_than_a_batch_goes_in_a_batch_of_its_own():
    big = b"v" * (1 << 20)          # 1 MiB: more than a record batch (16 KiB), less than a request
    with EmbeddedBroker() as b:
        create_topics(b.bootstrap, Config({"stream.partitions": 2}))

        async def go():
            sender = KeyedBatchSender(b.bootstrap, T.ALERTS, linger_ms=5, max_request_size=4_000_000,
                                      max_queued=1000, faults=None, component="alerts-publish")
            try:
                await sender.send([(b"k1", b"small"), (b"k1", big), (b"k1", b"after")])
            finally:
                await sender.aclose()
        asyncio.run(go())
        got = _read_all(b.bootstrap, T.ALERTS, 3)
    assert [v for recs in got.values() for _, v in recs] == [b"small", big, b"after"]


def test_while_kafka_is_away_send_returns_the_fault_is_reported_and_nothing_is_lost():
    from roadwatch.streams.broker import free_port
    from roadwatch.streams.retry import Faults
    port = free_port()
    records = [(f"浙B{i % 7:05d}".encode(), f"alert {i}".encode()) for i in range(500)]

    async def go():
        faults = Faults(0.1, 0.5)
        sender = KeyedBatchSender(f"127.0.0.1:{port}", T.ALERTS, linger_ms=5, max_request_size=4_000_000,
                                  max_queued=10_000, faults=faults, component="alerts-publish")
        await asyncio.wait_for(sender.send(records[:300]), 1)      # queued: the agent does not wait
        for _ in range(200):
            if "alerts-publish" in faults.active:
                break
            await asyncio.sleep(0.05)
        assert "alerts-publish" in faults.active                     # /healthz says why
        await sender.send(records[300:])
        with EmbeddedBroker(port=port) as b:
            await asyncio.to_thread(create_topics, b.bootstrap, Config({"stream.partitions": 3}))
            for _ in range(600):
                if "alerts-publish" not in faults.active and sender.queued == 0:
                    break
                await asyncio.sleep(0.05)
            assert "alerts-publish" not in faults.active and sender.queued == 0
            await sender.aclose()
            return await asyncio.to_thread(_read_all, b.bootstrap, T.ALERTS, len(records))

    got = asyncio.run(go())
    values = [v for recs in got.values() for _, v in recs]
    assert sorted(values) == sorted(v for _, v in records)         # each once
    for recs in got.values():                                        # in order within a partition
        assert [int(v.split()[1]) for _, v in recs] == sorted(int(v.split()[1]) for _, v in recs)
