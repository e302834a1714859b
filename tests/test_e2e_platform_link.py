"""Done-when of the JT/T 809 link: simulated lower platforms (2011 and 2019, encrypted and plain, one that
does not escape) log in to the real `roadwatch platform-link` process, forward a scenario's day of
positions and answer an inspection sent with `roadwatch platform inspect`; the real worker produces the
same alerts and vehicle-day rows as the same feed over JT/T 808 through the real gateway."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import numpy as np
import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from roadwatch.models.config import Config
from roadwatch.models.pingbatch import decode_batch
from roadwatch.models.records import BEIJING
from roadwatch.simulators.gateway_feed import send_to_gateway
from roadwatch.simulators.lower_platform import PlatformSpec, forward_feed
from roadwatch.simulators.scenario import build, load_scenario
from roadwatch.streams import topics as T
from roadwatch.streams.archive import open_archive
from roadwatch.streams.broker import free_port
from roadwatch.streams.jt809 import codec as c
from roadwatch.streams.archive import platforms as store
from roadwatch.streams.jt809.platforms import Platform, render_platforms
from roadwatch.streams.runtime import wait_consumed
from stack_support import read_to_end, worker_stack

pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(os.environ.get("ROADWATCH_KAFKA")),
                                                          reason="uses the embedded broker")]

CIPHER = c.Cipher(30000000, 20000000, 20000000)
SPECS = [PlatformSpec(20180920, 1, "pw2011", 2011, answer_delay_s=0.2),                       # 2011, plain
         PlatformSpec(20190708, 2, "pw2019", 2019, CIPHER, encrypt=True, answer_delay_s=0.2),  # 2019, encrypted
         PlatformSpec(33000001, 3, "noesc", 2011, CIPHER, encrypt=True, escape=False,          # 2011, encrypted,
                      answer_delay_s=0.2),                                                     # not escaping
         PlatformSpec(44000001, 4, "pw2019b", 2019, escape=False, answer_delay_s=0.2)]        # 2019, not escaping


GATEWAY_FPS = 1000          # the gateway's per-connection frame limit here; the terminals send at 80 % of it


def _built():
    built = build(load_scenario("gps_overspeed"), Config())
    cols = built.pings
    # JT/T 809-2011 carries whole km/h and whole km: feed both protocols the same values
    cols["speed_kmh"] = np.round(cols["speed_kmh"])
    cols["mileage_km"] = np.round(cols["mileage_km"])
    built.records = [r for r in built.records if r.topic != "driver-events"]   # 809 carries no IC-card events
    return built


def _wait_port(port: int, proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-2000:]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def _wait_processed(bootstrap: str, pings: int, timeout: float = 180.0) -> None:
    """Until the gps-pings topic holds ``pings`` pings and the worker committed past all of them."""
    cons = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    parts = [TopicPartition(T.GPS_PINGS, p) for p in cons.partitions_for_topic(T.GPS_PINGS)]
    cons.assign(parts)
    cons.seek_to_beginning()
    seen, deadline = 0, time.monotonic() + timeout
    try:
        while seen < pings and time.monotonic() < deadline:
            for recs in cons.poll(timeout_ms=500).values():
                seen += sum(len(decode_batch(r.value)) for r in recs)
        assert seen == pings, f"{seen} of {pings} pings reached {T.GPS_PINGS}"
        ends = {(tp.topic, tp.partition): off for tp, off in cons.end_offsets(parts).items()}
    finally:
        cons.close()
    assert wait_consumed(bootstrap, ends, timeout)


def _outputs(cfg) -> tuple[list, list]:
    conn = open_archive(cfg.archive_path)
    alerts = sorted(tuple(r) for r in conn.execute(
        "SELECT type, plate, start_ts, end_ts, severity, late, details FROM alerts"))
    days = sorted(tuple(r) for r in conn.execute(
        "SELECT plate, day, pings, qualified, km_total, km_incomplete, drift_points, overspeed_count, fatigue_s, "
        "curfew_events, offline_events FROM vehicle_day"))
    return alerts, days


def _day_shift(built) -> int:
    now = datetime.now(timezone.utc).astimezone(BEIJING)
    start = datetime.fromtimestamp(min(r.ts_ms for r in built.records) / 1000, tz=BEIJING)
    return ((now.date() - start.date()).days - 1) * 86400          # as `simulate --gateway` at full speed


def _run_808(tmp_path, built, reg_path):
    with worker_stack(tmp_path / "808", reg_path) as (st, cfg):
        port = free_port()
        # the busiest terminal sends 784 frames: under the default per-connection limit (50 frames/s, paced at
        # 40) that alone was 20 s of sleeping; the limit is not what this test is about (test_gateway_tcp.py)
        env = dict(os.environ)
        env["ROADWATCH_SET"] += f";gateway.max_frames_per_s={GATEWAY_FPS}"
        gw = subprocess.Popen([sys.executable, "-m", "roadwatch.streams.cli", "gateway", "--host", "127.0.0.1",
                               "--port", str(port), "--registry", str(reg_path), "--bootstrap", st.bootstrap],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            _wait_port(port, gw)
            assert send_to_gateway(built, f"127.0.0.1:{port}", None, max_fps=GATEWAY_FPS * 0.8) == 0
            _wait_processed(st.bootstrap, len(built.pings["vid"]))
            return _outputs(cfg)
        finally:
            gw.terminate()
            gw.communicate(timeout=15)


def _run_809(tmp_path, built, reg_path, shift):
    pf = tmp_path / "platforms.toml"
    pf.write_text(render_platforms([Platform(s.center_id, f"平台{s.center_id}", s.user_id, s.password, s.protocol,
                                             s.cipher, s.encrypt) for s in SPECS]), encoding="utf-8")
    with worker_stack(tmp_path / "809", reg_path) as (st, cfg):
        port = free_port()
        env = dict(os.environ)
        env["ROADWATCH_SET"] += f';jt809.platforms_file="{pf}"'
        link = subprocess.Popen([sys.executable, "-m", "roadwatch.streams.cli", "platform-link", "--host", "127.0.0.1",
                                 "--port", str(port), "--bootstrap", st.bootstrap],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            _wait_port(port, link)

            async def feed():
                res = await forward_feed(built, "127.0.0.1", port, SPECS, shift)
                q = subprocess.run([sys.executable, "-m", "roadwatch.streams.cli", "platform", "inspect", "--platform",
                                    "all", "--question", "请报告值班人员"], env=env, capture_output=True, text=True)
                assert q.returncode == 0, q.stderr
                deadline = time.monotonic() + 30
                while sum(lp.answered for lp in res["platforms"]) < len(SPECS) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert [lp.answered for lp in res["platforms"]] == [1] * len(SPECS)
                for lp in res["platforms"]:
                    await lp.barrier()
                    await lp.close()
                return res
            res = asyncio.run(feed())
            assert res["pings"] == len(built.pings["vid"])
            _wait_processed(st.bootstrap, res["pings"])
            outputs = _outputs(cfg)
        finally:
            link.terminate()
            log = link.communicate(timeout=15)[0]
        assert link.returncode in (0, -15, 143), log[-2000:]
        conn = open_archive(cfg.archive_path)
        ins = store.inspections_between(conn, 0, 2e10, time.time())
        assert sorted((i["center_id"], i["status"]) for i in ins) == sorted((s.center_id, "answered") for s in SPECS)
        sessions = store.sessions_between(conn, 0, 2e10, time.time())
        assert sorted(sessions) == sorted(s.center_id for s in SPECS)
        assert set(store.vehicle_platforms(conn).values()) == {s.center_id for s in SPECS}
        dead = [orjson.loads(r.value) for r in read_to_end(st.bootstrap, T.DEAD_LETTER)]   # the link has stopped
        assert [d for d in dead if d["source"] == "platform-link"] == []
        return outputs


def test_platform_feed_gives_the_same_alerts_and_day_rows_as_the_terminal_feed(tmp_path):
    built = _built()
    reg_path = tmp_path / "registry.json"
    built.registry.dump(reg_path)
    shift = _day_shift(built)
    alerts_808, days_808 = _run_808(tmp_path, built, reg_path)
    alerts_809, days_809 = _run_809(tmp_path, built, reg_path, shift)
    assert alerts_808 and days_808
    assert {a[0] for a in alerts_808} >= {"overspeed"}
    assert alerts_809 == alerts_808
    assert days_809 == days_808
