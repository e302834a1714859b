"""Broker outage: the embedded broker is frozen with SIGSTOP (it keeps its data in memory, so it is paused,
never killed) and resumed with SIGCONT. The worker must stay up, say what is happening, and catch up: every
record published before, during and after the outage is processed exactly as the batch oracle says. The
JT/T 808 gateway must keep its terminals served (acknowledged while buffering) or back-pressured, and the
pings must reach Kafka after SIGCONT.
"""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from kafka import KafkaProducer

from roadwatch.models.config import Config, load_config
from roadwatch.models.pingbatch import columns_to_pings, decode_batch
from roadwatch.models.registry import parse_registry
from roadwatch.streams import topics as T
from roadwatch.streams.archive import open_archive
from roadwatch.streams.batcher import AioKafkaPublisher, KafkaPublisher, partition_for
from roadwatch.streams.broker import ENV_EPOCH, EmbeddedBroker, create_topics, free_port
from roadwatch.streams.jt808 import codec as c
from roadwatch.streams.jt808.gateway import serve
from roadwatch.streams.runtime import WorkerProcess, wait_consumed

from stack_support import read_to_end
from test_reliability_feed import (archive_state, build_gps_feed, build_registry, build_wim_feed, gps_records,
                                   oracle_config, oracle_gps, oracle_wim, override_string, rows_equal)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 8.0


class Frozen:
    """SIGSTOP the broker for the duration of the block (SIGCONT on exit, whatever happens)."""

    def __init__(self, broker: EmbeddedBroker):
        self.pid = broker.proc.pid

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        os.kill(self.pid, signal.SIGCONT)
        self.duration = time.monotonic() - self.t0


def _send(p: KafkaProducer, items, end: dict) -> None:
    for topic, key, value, part in items:
        md = p.send(topic, key=key, value=value, partition=part).get(60)
        end[(md.topic, md.partition)] = max(end.get((md.topic, md.partition), 0), md.offset + 1)


def test_worker_survives_a_frozen_broker_and_catches_up(tmp_path, monkeypatch, capsys):
    reg = build_registry(90)
    reg_path = tmp_path / "registry.json"
    reg.dump(reg_path)
    pings = build_gps_feed(90)
    readings = build_wim_feed(reg)
    items = [(T.GPS_PINGS, k, v, p) for p, k, v in gps_records(pings)]
    w_items = [(T.WIM_READINGS, r["plate"].encode(), orjson.dumps(r), None) for r in readings]
    thirds = [items[i * len(items) // 3:(i + 1) * len(items) // 3] + w_items[i * len(w_items) // 3:(i + 1) * len(w_items) // 3]
              for i in range(3)]
    ocfg = oracle_config()
    o_alerts, o_rows = oracle_gps(pings, reg, ocfg)
    o_verdicts, o_cases, _ = oracle_wim(readings, reg, ocfg)

    port = free_port()
    monkeypatch.setenv("ROADWATCH_SET", override_string({"paths.data_dir": str(tmp_path / "data"), "web.port": port}))
    cfg = load_config(None)
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, cfg)
        monkeypatch.setenv(ENV_EPOCH, f"embedded:{uuid.uuid4()}")
        w = WorkerProcess(broker.bootstrap, registry_path=str(reg_path), loglevel="warning")
        try:
            w.wait_ready(60)
            p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0, max_request_size=4_000_000)
            end: dict = {}
            _send(p, thirds[0], end)
            assert wait_consumed(broker.bootstrap, end, timeout=60), "phase 1 not consumed"
            n_lines = len(w.lines)
            alive = []
            during = threading.Thread(target=_send, args=(p, thirds[1], end), daemon=True)
            with Frozen(broker) as fz:
                during.start()                           # the producer blocks/retries while the broker is frozen
                deadline = time.monotonic() + OUTAGE_S
                while time.monotonic() < deadline:
                    alive.append(w.proc.poll() is None)
                    time.sleep(0.25)
            t_resume = time.monotonic()
            assert all(alive) and w.proc.poll() is None, "worker died during the outage"
            during.join(90)
            assert not during.is_alive(), "records sent during the outage were never acknowledged"
            _send(p, thirds[2], end)
            p.close()
            assert wait_consumed(broker.bootstrap, end, timeout=120), "worker did not catch up after SIGCONT"
            catch_up_s = time.monotonic() - t_resume
            conn = open_archive(cfg.archive_path)
            deadline = time.monotonic() + 30
            while True:
                alerts, rows, verdicts, cases, _ = archive_state(conn)
                if (alerts == o_alerts and verdicts == o_verdicts and cases == o_cases and not rows_equal(o_rows, rows)) \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert w.proc.poll() is None
            outage_log = w.lines[n_lines:]
        finally:
            w.stop()
    assert alerts.keys() == o_alerts.keys() and alerts == o_alerts
    assert verdicts == o_verdicts and cases == o_cases
    assert rows_equal(o_rows, rows) == []
    assert sum(r["pings"] for r in rows.values()) == len(pings)
    # the outage is visible in the worker's output (streams/worker.py broker watch), not silent
    down = [ln for ln in outage_log if "is not answering" in ln]
    back = [ln for ln in outage_log if "is answering again after" in ln]
    assert len(down) == 1 and len(back) == 1, outage_log
    assert outage_log.index(down[0]) < outage_log.index(back[0])
    silent_s = float(back[0].split("after ")[1].split(" s")[0])
    assert OUTAGE_S - 2 * 2.0 <= silent_s <= OUTAGE_S + 2.0     # detection granularity: the 2 s probe
    with capsys.disabled():
        print(f"\n[outage/worker] broker frozen {fz.duration:.1f} s; worker alive at all {len(alive)} checks; "
              f"{len(items)} ping batches + {len(w_items)} WIM readings (⅓ before, ⅓ during, ⅓ after) all processed "
              f"{catch_up_s:.1f} s after SIGCONT; {len(alerts)} alerts, {len(cases)} cases, {len(rows)} day rows = "
              f"oracle; worker logged: {down[0].split('] ')[-1]!r} then {back[0].split('] ')[-1]!r}")


@pytest.mark.parametrize("client", ["aiokafka", "kafka-python"])
def test_gateway_keeps_terminals_served_and_delivers_after_sigcont(capsys, tmp_path, client):
    cfg = Config({"stream.partitions": 4, "stream.batch_max_ms": 20, "gateway.idle_timeout_s": 60.0,
                  "paths.data_dir": str(tmp_path)})
    plate, phone = "粤B12345", "13800000001"
    registry = parse_registry({"vehicles": [{"plate": plate, "plate_color": 2, "category": "危险货物运输车辆",
                                             "enterprise_id": ""}]})
    n_before, n_during = 5, 20
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, cfg)
        publisher = (AioKafkaPublisher(broker.bootstrap) if client == "aiokafka"
                     else KafkaPublisher(bootstrap=broker.bootstrap))
        acks_during: list[float] = []

        def loc(i: int) -> bytes:
            return c.encode_location({"lat": 23.1 + i * 1e-4, "lon": 113.3, "speed_kmh": 40.0, "status_flags": 3,
                                      "ts": f"2026-11-10T10:{i // 60:02d}:{i % 60:02d}+08:00"})

        async def main():
            server = await serve(cfg, registry, publisher, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            gw = server.gateway
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                buf = bytearray()

                async def recv(timeout: float):
                    nonlocal buf
                    deadline = time.monotonic() + timeout
                    while True:
                        frames = c.split_frames(buf)
                        if frames:
                            buf[:0] = b"".join(frames[1:])
                            return c.parse_frame(frames[0])
                        data = await asyncio.wait_for(reader.read(4096), max(0.01, deadline - time.monotonic()))
                        assert data, "gateway closed the connection"
                        buf += data

                serial = 0

                async def send(msg_id, body):
                    nonlocal serial
                    serial += 1
                    writer.write(c.build_frame(msg_id, phone, serial, body))
                    await writer.drain()

                await send(0x0100, c.encode_registration(plate, 2))
                await send(0x0102, c.encode_authentication((await recv(5)).fields["auth_code"]))
                assert (await recv(5)).fields["result"] == 0
                for i in range(n_before):
                    await send(0x0200, loc(i))
                    assert (await recv(5)).fields["result"] == 0
                for _ in range(200):
                    if gw.buffered_pings == 0:
                        break
                    await asyncio.sleep(0.05)
                with Frozen(broker) as fz:
                    for i in range(n_before, n_before + n_during):
                        t = time.monotonic()
                        await send(0x0200, loc(i))
                        assert (await recv(5)).fields["result"] == 0     # served from the buffer
                        acks_during.append(time.monotonic() - t)
                        await asyncio.sleep(OUTAGE_S / n_during)
                    buffered_in_outage = gw.buffered_pings
                for _ in range(600):
                    if gw.buffered_pings == 0:
                        break
                    await asyncio.sleep(0.05)
                assert gw.buffered_pings == 0, "buffered pings never delivered after SIGCONT"
                writer.close()
                return fz.duration, buffered_in_outage
            finally:
                await gw.aclose()
                if client == "aiokafka":
                    await publisher.aclose()

        duration, buffered = asyncio.run(main())
        if client == "kafka-python":
            publisher.close()
        part = partition_for(plate, 4)                        # the publisher is closed: the topic is final
        got = [p["ts"] for rec in read_to_end(broker.bootstrap, T.GPS_PINGS, [part])
               for p in columns_to_pings(decode_batch(rec.value))]
    bj = timezone(timedelta(hours=8))
    want = {int(datetime(2026, 11, 10, 10, i // 60, i % 60, tzinfo=bj).timestamp() * 1000)
            for i in range(n_before + n_during)}
    assert set(got) == want                                   # every ping, including those of the outage
    assert buffered > 0                                       # they really waited in the gateway's buffer
    with capsys.disabled():
        print(f"\n[outage/gateway, {client}] broker frozen {duration:.1f} s; {n_during} locations during the outage all "
              f"acknowledged (max ack {max(acks_during) * 1000:.0f} ms), {buffered} pings buffered at SIGCONT; "
              f"{len(got)} pings in Kafka ({len(got) - len(want)} duplicates from retries), all {len(want)} present")
