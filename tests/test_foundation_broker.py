"""The embedded broker: starts, answers Kafka, creates topics, and leaves no orphan on exit or signal."""
import os
import signal
import subprocess
import sys
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from roadwatch.models.config import Config
from roadwatch.streams.broker import EmbeddedBroker, create_topics
from roadwatch.streams.topics import TOPICS


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def test_broker_creates_topics_and_round_trips_a_record():
    with EmbeddedBroker() as b:
        create_topics(b.bootstrap, Config({"stream.partitions": 3}))
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            names = set(admin.list_topics())
            assert {t.name for t in TOPICS} <= names
            parts = {d.get("topic", d.get("name")): len(d["partitions"]) for d in admin.describe_topics(["gps-pings", "dead-letter"])}
            assert parts == {"gps-pings": 3, "dead-letter": 1}
        finally:
            admin.close()
        p = KafkaProducer(bootstrap_servers=b.bootstrap)
        md = p.send("alerts", key=b"k", value=b"hello").get(10)
        p.close()
        c = KafkaConsumer(bootstrap_servers=b.bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
        tp = TopicPartition("alerts", md.partition)
        c.assign([tp])
        c.seek(tp, md.offset)
        got = next(iter(c))
        c.close()
        assert got.value == b"hello"
        pid = b.proc.pid
    assert not _alive(pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_broker_stops_child_on_signal(sig):
    proc = subprocess.Popen([sys.executable, "-m", "roadwatch.streams.cli", "broker", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "embedded broker ready on 127.0.0.1:" in line
        children = subprocess.run(["pgrep", "-f", "tansu.*broker"], capture_output=True, text=True).stdout.split()
        port = line.split("127.0.0.1:")[1].split(";")[0].strip()
        mine = [int(p) for p in children if port in open(f"/proc/{p}/cmdline").read().replace("\0", " ")]
        assert mine, "broker child not found"
        proc.send_signal(sig)
        assert proc.wait(15) == 0
        time.sleep(0.2)
        assert not any(_alive(p) for p in mine)
    finally:
        proc.kill()
