"""End to end over the wire: simulated JT/T 808 terminals → the real TCP gateway (its own process) → Kafka →
the real worker → the expected live alert. The scenario (gps_curfew) declares which alert it expects."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import orjson
import pytest
from kafka import KafkaConsumer

from roadwatch.models.config import Config, load_config
from roadwatch.simulators.gateway_feed import send_to_gateway
from roadwatch.simulators.scenario import build, load_scenario
from roadwatch.streams import topics as T
from roadwatch.streams.broker import free_port
from roadwatch.streams.runtime import stack

pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(os.environ.get("ROADWATCH_KAFKA")),
                                                          reason="uses the embedded broker")]


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"gateway did not listen on {port}")


def test_terminals_through_gateway_raise_the_expected_alert_in_the_worker(tmp_path, monkeypatch):
    built = build(load_scenario("gps_curfew"), Config())
    expected = [e for e in built.expectations if e.get("kind") == "alert" and e.get("count", 0) > 0]
    assert expected, "the scenario must expect at least one alert"
    reg_path = tmp_path / "registry.json"
    built.registry.dump(reg_path)
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp_path / "var"}";web.port={free_port()}')
    cfg = load_config(None)
    with stack(cfg, registry_path=str(reg_path)) as st:
        port = free_port()
        # the gateway's per-connection frame limit raised from 50 to 1 000 frames/s (the limit itself:
        # test_gateway_tcp.py): at the default's 40 frames/s the busiest terminal's 761 frames were 19 s of sleeping
        env = dict(os.environ, ROADWATCH_SET=os.environ["ROADWATCH_SET"] + ";gateway.max_frames_per_s=1000")
        gw = subprocess.Popen([sys.executable, "-m", "roadwatch.streams.cli", "gateway", "--host", "127.0.0.1", "--port",
                               str(port), "--registry", str(reg_path), "--bootstrap", st.bootstrap],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            _wait_port(port)
            # 800 frames/s per terminal: under that limit
            assert send_to_gateway(built, f"127.0.0.1:{port}", None, max_fps=800.0) == 0
            want = {(e["type"], e["plate"]) for e in expected}
            c = KafkaConsumer(T.ALERTS, bootstrap_servers=st.bootstrap, group_id=None,
                              auto_offset_reset="earliest", enable_auto_commit=False)
            got: set = set()
            deadline = time.monotonic() + 90
            try:
                while time.monotonic() < deadline and not want <= got:
                    for recs in c.poll(timeout_ms=500).values():
                        for r in recs:
                            a = orjson.loads(r.value)
                            got.add((a["type"], a["plate"]))
            finally:
                c.close()
            assert want <= got, f"expected {want}, the worker raised {got}"
            # and none of the alerts the scenario rules out (exempt route, charter bus, stopped before 02:00)
            forbidden = {(e["type"], e["plate"]) for e in built.expectations
                         if e.get("kind") == "alert" and e.get("count") == 0}
            assert not (got & forbidden), got & forbidden
        finally:
            gw.terminate()
            out = gw.communicate(timeout=15)[0]
        assert gw.returncode in (0, -15, 143), out[-2000:]
