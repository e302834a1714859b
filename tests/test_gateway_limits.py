"""The gateway process at its descriptor limit: it pauses accepting (one log line, a metric, /healthz 503)
instead of asyncio's accept-error storm, keeps descriptors for its Kafka producer, and serves waiting
terminals as soon as connections free up. A real ``roadwatch gateway`` process with a low RLIMIT_NOFILE,
the embedded broker and real TCP."""
from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.streams.jt808 import native
from roadwatch.models.pingbatch import columns_to_pings, decode_batch
from roadwatch.streams.broker import EmbeddedBroker, create_topics, free_port
from roadwatch.streams.jt808 import codec as c
from stack_support import read_to_end

pytestmark = pytest.mark.integration

NOFILE = 160


def _limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _metric(port: int, name: str) -> float:
    for line in _get(f"http://127.0.0.1:{port}/metrics")[1].decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def _plates(bootstrap: str) -> list[str]:
    """The plates of every ping on ``gps-pings`` now (read to its end offsets)."""
    return [p["plate"] for r in read_to_end(bootstrap, "gps-pings") for p in columns_to_pings(decode_batch(r.value))]


def _recv(sock: socket.socket, buf: bytearray, timeout: float) -> c.Message:
    sock.settimeout(timeout)
    while not (frames := c.split_frames(buf)):
        data = sock.recv(4096)
        assert data, "closed by the gateway"
        buf += data
    buf[:0] = b"".join(frames[1:])
    return c.parse_frame(frames[0])


def test_descriptor_limit_pauses_accepting_without_an_error_storm_and_publishing_continues(tmp_path):
    reg = tmp_path / "registry.json"
    reg.write_bytes(orjson.dumps({"vehicles": [{"plate": "粤B12345", "plate_color": 2, "category": "危险货物运输车辆",
                                                "enterprise_id": "", "terminal_id": "13800000001"}]}))
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, Config({"stream.partitions": 4}))
        port, mport = free_port(), free_port()
        env = dict(os.environ, ROADWATCH_SET=f'paths.data_dir="{tmp_path}";stream.partitions=4;'
                   'stream.batch_max_ms=20;gateway.auth_timeout_s=3.0;gateway.max_pending_per_address=1000')
        log = open(tmp_path / "gw.log", "w+")
        gw = subprocess.Popen([sys.executable, "-m", "roadwatch.streams.cli", "gateway", "--host", "127.0.0.1",
                               "--port", str(port), "--registry", str(reg), "--bootstrap", broker.bootstrap,
                               "--metrics-port", str(mport)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              preexec_fn=_limit)
        idle: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if _get(f"http://127.0.0.1:{mport}/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline and gw.poll() is None, "gateway did not start"
                time.sleep(0.2)
            for _ in range(NOFILE + 40):                       # more sockets than the process has descriptors
                idle.append(socket.create_connection(("127.0.0.1", port)))
            deadline = time.monotonic() + 10
            while _metric(mport, "roadwatch_gateway_accepting") != 0:
                assert time.monotonic() < deadline, "accepting never paused"
                time.sleep(0.1)
            held = _metric(mport, "roadwatch_gateway_connections")
            assert 0 < held <= NOFILE - 64                     # gateway.fd_reserve kept free
            status, body = _get(f"http://127.0.0.1:{mport}/healthz")
            assert status == 503 and orjson.loads(body)["status"] == "degraded"
            # gateway.front_end = "auto": the native front end wherever it was built, and /healthz says which
            assert orjson.loads(body)["front_end"] == ("native" if native.available() else "python")
            # a real terminal connects now: it waits in the backlog until the silent sockets hit their
            # authentication deadline, then logs in, and its fix reaches Kafka (the producer's sockets were kept)
            term = socket.create_connection(("127.0.0.1", port))
            buf = bytearray()
            term.sendall(c.build_frame(0x0100, "13800000001", 1, c.encode_registration("粤B12345", 2)))
            code = _recv(term, buf, 20).fields["auth_code"]
            term.sendall(c.build_frame(0x0102, "13800000001", 2, c.encode_authentication(code)))
            assert _recv(term, buf, 5).fields["result"] == 0
            term.sendall(c.build_frame(0x0200, "13800000001", 3, c.encode_location(
                {"lat": 23.1, "lon": 113.3, "ts": "2026-11-30T10:00:00+08:00", "status_flags": 3})))
            assert _recv(term, buf, 5).fields["result"] == 0
            deadline = time.monotonic() + 15
            while not (got := _plates(broker.bootstrap)) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert got == ["粤B12345"]                         # published while accepting is paused
            term.close()
        finally:
            for s in idle:
                s.close()
            gw.terminate()
            gw.wait(20)
        # and once the gateway has stopped, the topic holds that one fix exactly once (read to its end offsets,
        # no quiet period to wait out)
        assert _plates(broker.bootstrap) == ["粤B12345"]
        log.seek(0)
        text = log.read()
        assert text.count("accepting paused") == 1, text[-3000:]          # one line, not a storm
        assert "out of system resource" not in text and len(text.splitlines()) < 40, text[-3000:]
        assert f"descriptor limit {NOFILE}" in text
