"""Gateway → Kafka producer (aiokafka in the loop, or kafka-python) → embedded broker: records land in the
partition the batcher chose; the in-loop publisher starts anew once a broker answers."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.models.pingbatch import columns_to_pings, decode_batch
from roadwatch.models.registry import parse_registry
from roadwatch.streams.batcher import AioKafkaPublisher, KafkaPublisher, PublishError, partition_for
from roadwatch.streams.broker import EmbeddedBroker, create_topics, free_port
from roadwatch.streams.outbox import Out
from roadwatch.streams.jt808 import codec as c
from roadwatch.streams.jt808.gateway import serve

pytestmark = pytest.mark.integration

PLATES = ["粤B12345", "京A00001", "沪C12345", "苏E12F34", "浙A0A0A0", "川A99999"]


@pytest.mark.parametrize("client", ["aiokafka", "kafka-python"])
def test_pings_reach_kafka_in_the_murmur2_partition(tmp_path, client):
    cfg = Config({"stream.partitions": 4, "stream.batch_max_ms": 20, "paths.data_dir": str(tmp_path)})
    registry = parse_registry({"vehicles": [{"plate": p, "plate_color": 2, "category": "危险货物运输车辆",
                                             "enterprise_id": ""} for p in PLATES]})
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, cfg)
        publisher = (AioKafkaPublisher(broker.bootstrap) if client == "aiokafka"
                     else KafkaPublisher(bootstrap=broker.bootstrap))

        async def main():
            server = await serve(cfg, registry, publisher, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            try:
                for n, plate in enumerate(PLATES):
                    phone = f"1380000000{n}"
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(c.build_frame(0x0100, phone, 1, c.encode_registration(plate, 2)))
                    got = bytearray()
                    while not (frames := c.split_frames(got)):
                        got += await asyncio.wait_for(reader.read(4096), 5)
                    code = c.parse_frame(frames[0]).fields["auth_code"]
                    writer.write(c.build_frame(0x0102, phone, 2, c.encode_authentication(code)))
                    writer.write(c.build_frame(0x0200, phone, 3, c.encode_location(
                        {"lat": 30.0, "lon": 120.0 + n, "ts": "2024-03-01T10:00:00+08:00", "status_flags": 3})))
                    await writer.drain()
                    acks = []
                    while len(acks) < 2:
                        got += await asyncio.wait_for(reader.read(4096), 5)
                        acks += [c.parse_frame(f).fields["result"] for f in c.split_frames(got)]
                    assert acks == [0, 0]
                    writer.close()
                for _ in range(200):
                    if not server.gateway.buffered_pings:
                        break
                    await asyncio.sleep(0.05)
                assert server.gateway.buffered_pings == 0
            finally:
                await server.gateway.aclose()
                if client == "aiokafka":
                    await publisher.aclose()
        asyncio.run(main())
        if client == "kafka-python":
            publisher.close()

        from kafka import KafkaConsumer, TopicPartition
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=3000)
        consumer.assign([TopicPartition("gps-pings", p) for p in range(4)])
        seen = {}
        for rec in consumer:
            for ping in columns_to_pings(decode_batch(rec.value)):
                seen[ping["plate"]] = rec.partition
                assert partition_for(ping["plate"], 4) == rec.partition     # batches never mix partitions
            if len(seen) == len(PLATES):
                break
        consumer.close()
        assert seen == {p: partition_for(p, 4) for p in PLATES}


def test_in_loop_publisher_buffers_while_kafka_is_down_and_delivers_once_it_answers():
    """No broker at first: ``publish`` raises ``PublishError`` (the outbox keeps the records and retries);
    a broker on that address later: the same publisher starts its producer anew and delivers."""
    port = free_port()
    publisher = AioKafkaPublisher(f"127.0.0.1:{port}")
    rec = Out("gps-pings", b"k", b"v", 0)

    async def attempt():
        await publisher.publish([rec])

    with pytest.raises(PublishError):
        asyncio.run(attempt())
    with EmbeddedBroker(port=port) as broker:
        create_topics(broker.bootstrap, Config({"stream.partitions": 4}))

        async def deliver():
            try:
                await publisher.publish([rec, Out("gps-pings", b"k2", b"v2", 3)])
            finally:
                await publisher.aclose()
        asyncio.run(deliver())
        from stack_support import read_to_end      # the publisher is closed: the topic is final
        got = {(m.partition, m.key, m.value) for m in read_to_end(broker.bootstrap, "gps-pings", [0, 3])}
    assert got == {(0, b"k", b"v"), (3, b"k2", b"v2")}
