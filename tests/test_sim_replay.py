"""Recording format, paced publishing, progress output, fast CRC-32C for kafka-python."""
import io
import os

import pytest

from kafka.record._crc32c import crc as crc_reference
from roadwatch.simulators.feed import FeedRecord
from roadwatch.simulators.recording import read_records, write_records
from roadwatch.simulators.replay import Progress, parse_speed, publish
from roadwatch.streams.cli import UsageError


class FakeFuture:
    def __init__(self, md):
        self.md = md

    def add_callback(self, fn):
        fn(self.md)


class FakeProducer:
    """Records what is sent, with the simulated clock at the time of sending."""

    def __init__(self, clock):
        self.clock, self.sent, self.offsets = clock, [], {}

    def send(self, topic, key, value, partition):
        off = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = off + 1
        self.sent.append((self.clock(), topic, partition, key, value))

        class MD:
            pass
        md = MD()
        md.topic, md.partition, md.offset = topic, partition, off
        return FakeFuture(md)

    def flush(self):
        pass


def _records():
    return [FeedRecord("gps-pings", 0, b"k", b"a", 1_000_000), FeedRecord("wim-readings", 1, b"k", b"b", 1_010_000),
            FeedRecord("gps-pings", 2, None, b"c", 1_070_000)]


@pytest.mark.parametrize("speed,expect", [(1.0, [0, 10, 70]), (10.0, [0, 1, 7]), (None, [0, 0, 0])])
def test_publish_preserves_relative_timing(speed, expect):
    now = [0.0]
    prod = FakeProducer(lambda: now[0])
    sent = []
    res = publish(_records(), prod, speed, clock=lambda: now[0],
                  sleep=lambda s: now.__setitem__(0, now[0] + s), progress=False,
                  on_sent=lambda t, p, o: sent.append((t, p, o)))
    assert [round(s[0], 6) for s in prod.sent] == expect
    assert [s[2] for s in prod.sent] == [0, 1, 2]                 # stored partitions kept
    assert sent == [("gps-pings", 0, 0), ("wim-readings", 1, 0), ("gps-pings", 2, 0)]
    assert res["messages"] == 3


def test_parse_speed():
    assert parse_speed("max") is None and parse_speed("60") == 60.0
    for bad in ("-1", "fast", "nan"):
        with pytest.raises(ValueError):
            parse_speed(bad)


def test_progress_plain_text_when_not_a_tty():
    buf = io.StringIO()
    p = Progress(10, stream=buf, every_s=0)
    p.update(5, 100, force=True)
    p.done()
    lines = buf.getvalue().splitlines()
    assert lines and "\r" not in buf.getvalue()
    assert lines[0].startswith("5/10 messages") and "msg/s" in lines[0] and "ETA" in lines[0]


def test_recording_round_trip_and_bad_lines(tmp_path):
    recs = _records()
    write_records(tmp_path / "r.jsonl", recs)
    assert list(read_records(tmp_path / "r.jsonl")) == recs
    (tmp_path / "bad.jsonl").write_text('{"topic": "x"}\n')
    with pytest.raises(UsageError, match="line 1"):
        list(read_records(tmp_path / "bad.jsonl"))
    with pytest.raises(UsageError, match="not found"):
        list(read_records(tmp_path / "missing.jsonl"))


def test_kafka_python_uses_the_c_crc32c():
    # without the crc32c extension kafka-python checksums in pure Python (~8 MB/s) and caps publishing at
    # ~68 k pings/s; the dependency is what lets the producers keep up with the worker
    from kafka.record import util
    assert util.crc32c_c is not None
    assert util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283   # the published CRC-32C check value


def test_barrier_flushes_and_settles_before_the_record():
    now = [0.0]
    prod = FakeProducer(lambda: now[0])
    events = []
    prod.flush = lambda: events.append(("flush", len(prod.sent)))
    recs = _records()
    recs[1] = FeedRecord(*[getattr(recs[1], f) for f in ("topic", "partition", "key", "value", "ts_ms")], True)

    def settle():
        events.append(("settle", len(prod.sent)))
        now[0] += 5.0                                   # the worker took 5 s to go idle
    res = publish(recs, prod, 1.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s),
                  progress=False, settle=settle)
    assert events[:2] == [("flush", 1), ("settle", 1)]  # before the barrier record was sent
    assert [round(s[0], 6) for s in prod.sent] == [0, 15, 75]   # pacing resumes after the settle time
    assert res["settle_s"] == 5.0


def test_event_time_gate_keeps_topics_in_step():
    """A worker that drains WIM instantly but GPS one record per look: the gate holds every record of event
    time T back until the worker has taken in each record of either topic up to T − lead."""
    from roadwatch.simulators.replay import EventTimeGate
    recs = []
    for m in range(120):                        # one GPS batch a minute, a WIM reading every 7 minutes
        recs.append(FeedRecord("gps-pings", 0, b"k", b"{}", m * 60_000))
        if m % 7 == 3:
            recs.append(FeedRecord("wim-readings", 0, b"k", b"{}", m * 60_000 + 2000))
    now = [0.0]
    prod = FakeProducer(lambda: now[0])
    taken = {"gps-pings": 0, "wim-readings": 0}

    def intake():                               # the slow GPS consumer moves on by one record per look
        sent = [r[1] for r in prod.sent]
        taken["wim-readings"] = sent.count("wim-readings")
        taken["gps-pings"] = min(sent.count("gps-pings"), taken["gps-pings"] + 1)
        return dict(taken)

    lead = 10 * 60_000
    gate = EventTimeGate(intake, lead, sleep=lambda s: None, clock=lambda: now[0])
    seen_at_send = []
    orig = prod.send

    def send(topic, key, value, partition):
        seen_at_send.append(dict(gate.seen))
        return orig(topic, key, value, partition)
    prod.send = send
    res = publish(recs, prod, None, progress=False, gate=gate)
    assert res["messages"] == len(recs) and not gate.open
    for r, seen in zip(recs, seen_at_send):
        need = sum(1 for x in recs if x.topic == "gps-pings" and x.ts_ms <= r.ts_ms - lead)
        assert seen.get("gps-pings", 0) >= need, (r.topic, r.ts_ms)


def test_event_time_gate_opens_when_the_worker_stalls(capsys):
    from roadwatch.simulators.replay import EventTimeGate
    t = [0.0]

    def sleep(s):
        t[0] += s
    gate = EventTimeGate(lambda: {"gps-pings": 0}, 1000, stall_s=5.0, sleep=sleep, clock=lambda: t[0])
    recs = [FeedRecord("gps-pings", 0, b"k", b"{}", i * 1000) for i in range(5)]
    res = publish(recs, FakeProducer(lambda: t[0]), None, progress=False, gate=gate)
    assert res["messages"] == 5 and gate.open
    assert "without event-time gating" in capsys.readouterr().err
