"""Issue 12 "Done when", stream path: the real worker on the embedded broker. IC-card events (JT/T 808
0x0702 on ``driver-events``) reach the cases; readings arrive out of order with a SIGKILL and restart of the
worker in the middle; acts are entered through the worker's console API and through the CLI on the same
archive; the escalations are exactly those of the statute (worked out by hand below)."""
from __future__ import annotations

import io
import sys
import time
from datetime import datetime

import orjson
import pytest
import requests
from kafka import KafkaProducer

from roadwatch.models.config import load_config
from roadwatch.models.records import BEIJING
from roadwatch.streams import topics as T
from roadwatch.streams.archive import close_all, open_archive
from roadwatch.streams.broker import free_port, kafka_bootstrap
from roadwatch.streams.cases import CaseStore
from roadwatch.streams.cli import main
from roadwatch.streams.runtime import WorkerProcess
from roadwatch.streams.web import auth

from test_overload_helpers import iso, registry_dict, vehicle

pytestmark = pytest.mark.integration
A, B = "豫A11111", "豫B22222"
PASSWORD = "case-officer-pw-1"


def day(m, d, h=10):
    return datetime(2025, m, d, h, 0, tzinfo=BEIJING)


def wim(plate, ts, gross=60000):
    return {"station_id": "S1", "lane": 1, "ts": iso(ts), "plate": plate, "plate_color": 2,
            "plate_confidence": 0.97, "vehicle_kind": "train", "axle_count": 6,
            "axle_loads_kg": [7000] + [(gross - 7000) / 5] * 5, "axle_spacings_m": [3.5] * 5, "gross_kg": gross,
            "speed_kmh": 60, "device_id": "W1"}


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def send(bootstrap, topic, items):
    p = KafkaProducer(bootstrap_servers=bootstrap)
    for key, value in items:
        p.send(topic, key=key.encode(), value=orjson.dumps(value)).get(10)
    p.close()


def escalations(capsys, archive, at):
    capsys.readouterr()
    assert main(["escalations", "--archive", str(archive), "--at", at]) == 0
    return {(e["target"], e["subject"]): e["count"]
            for e in map(orjson.loads, capsys.readouterr().out.splitlines())}


def test_driver_cards_restart_console_and_cli_give_the_statutory_escalations(tmp_path, monkeypatch, capsys):
    reg = tmp_path / "registry.json"
    reg.write_bytes(orjson.dumps(registry_dict(goods_vehicles=20, vehicles=[vehicle(A, driver_id="D1"),
                                                                            vehicle(B, driver_id="")])))
    port = free_port()
    settings = (f'paths.data_dir="{tmp_path / "data"}";web.port={port};'
                "case.resolve_interval_s=1;case.resolve_timeout_s=2")
    monkeypatch.setenv("ROADWATCH_SET", settings)
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    cfg = load_config(None)
    conn = open_archive(cfg.archive_path)
    fast_hash = load_config(None, env={"ROADWATCH_SET": settings + ";web.argon2_time_cost=1;web.argon2_memory_kib=1024"})
    for officer in ("officer7", "officer8"):      # officer7 acts in the console, officer8 on the command line
        auth.upsert_user(conn, officer, "operator", PASSWORD, fast_hash)
    monkeypatch.setenv("ROADWATCH_OFFICER_PASSWORD", PASSWORD)

    def cases():
        return {r["plate"] + r["ts"][5:10]: r["case_id"] for r in conn.execute("SELECT plate, ts, case_id FROM cases")}

    with kafka_bootstrap(cfg) as bootstrap:
        w = WorkerProcess(bootstrap, registry_path=str(reg), env={"ROADWATCH_SET": settings})
        try:
            w.wait_ready(60)
            # B's driver inserts the IC card (0x0702 as the gateway publishes it) before the 11th–13th
            send(bootstrap, T.DRIVER_EVENTS, [(B, {"plate": B, "terminal_id": "013300000002",
                                                   "ts": iso(day(3, 10, 6)), "event": "login", "driver_id": "D2"})])
            wait(lambda: conn.execute("SELECT COUNT(*) FROM driver_cards").fetchone()[0], 30, "the card event")
            send(bootstrap, T.WIM_READINGS, [(A, wim(A, day(3, 20))), (B, wim(B, day(3, 12))),
                                             (A, wim(A, day(3, 10)))])
            wait(lambda: len(cases()) == 3, 60, "three cases")
            w.kill()                                            # crash mid-sequence …
            w = WorkerProcess(bootstrap, registry_path=str(reg), env={"ROADWATCH_SET": settings})
            w.wait_ready(60)                                    # … and restart
            send(bootstrap, T.WIM_READINGS, [(B, wim(B, day(3, 13))), (A, wim(A, day(3, 30))),
                                             (B, wim(B, day(3, 11))), (A, wim(A, day(3, 5))),
                                             (B, wim(B, day(3, 1))),     # before the card login: no driver
                                             (A, wim(A, day(3, 10)))])  # replay of a reading already judged
            wait(lambda: len(cases()) == 8, 60, "eight cases")
            time.sleep(1.0)
            assert len(cases()) == 8                             # the replay opened no second case
            c = cases()
            src = {r["case_id"]: (r["driver_id"], r["driver_source"])
                   for r in conn.execute("SELECT case_id, driver_id, driver_source FROM case_state")}
            assert [src[c[B + k]] for k in ("03-11", "03-12", "03-13")] == [("D2", "ic_card")] * 3
            assert src[c[B + "03-01"]] == (None, "unknown")
            assert {src[c[A + k]] for k in ("03-05", "03-10", "03-20", "03-30")} == {("D1", "registry")}

            # acts through the worker's console (real HTTP) for B, through the CLI for A
            s = requests.Session()
            r = s.post(f"http://127.0.0.1:{port}/api/login", json={"username": "officer7", "password": PASSWORD},
                       timeout=10)
            assert r.status_code == 200, r.text
            h = {auth.CSRF_HEADER: r.json()["csrf"]}
            for k, dec in (("03-11", "04-02"), ("03-12", "04-03"), ("03-13", "04-04"), ("03-01", "04-05")):
                for action, at, extra in (("confirm", "2025-03-20", {}),
                                          ("file", "2025-03-20", {"driver_id": "D2"} if k == "03-01" else {}),
                                          ("notify", "2025-03-21", {}), ("decide", f"2025-{dec}", {})):
                    r = s.post(f"http://127.0.0.1:{port}/api/cases/{c[B + k]}/actions",
                               json={"action": action, "at": at, **extra}, headers=h, timeout=10)
                    assert r.status_code == 200, r.text
            assert r.json()["status"] == "decided" and r.json()["history"][-1]["act"] == "decide"
            assert r.json()["liable"]["driver"]["source"] == "officer"
            for k, dec in (("03-30", "04-10"), ("03-10", "04-12"), ("03-20", "04-11"), ("03-05", "04-13")):
                for action, at in (("confirm", "2025-04-01"), ("file", "2025-04-01"), ("notify", "2025-04-02"),
                                   ("decide", f"2025-{dec}")):
                    assert main(["case", "act", c[A + k], action, "--archive", str(cfg.archive_path),
                                 "--by", "officer8", "--at", at]) == 0
            # A's driver's card event arrives late (its partition lagged): A's open cases are amended
            send(bootstrap, T.DRIVER_EVENTS, [(A, {"plate": A, "terminal_id": "013300000001",
                                                   "ts": iso(day(3, 4, 6)), "event": "login", "driver_id": "D9"})])
            wait(lambda: conn.execute("SELECT COUNT(*) FROM case_state WHERE driver_id='D9' AND "
                                      "driver_source='ic_card'").fetchone()[0] == 4, 30, "the late-data amendments")
            amended = CaseStore(conn, cfg).show(c[A + "03-05"])
            assert [h["act"] for h in amended["history"]][-1] == "amend"
            assert amended["liable"]["driver"] == {"id": "D9", "source": "ic_card", "identified": True}
            # the same reading re-sent with other values: kept beside the first, flagged, nothing overwritten
            send(bootstrap, T.WIM_READINGS, [(A, wim(A, day(3, 20), gross=40000))])
            wait(lambda: conn.execute("SELECT COUNT(*) FROM wim_readings WHERE conflict_of IS NOT NULL")
                 .fetchone()[0], 30, "the conflict")
            assert conn.execute("SELECT action FROM wim_verdicts WHERE case_id=?", (c[A + "03-20"],)).fetchone()[0] \
                == "fine"
            assert len(cases()) == 8
        finally:
            w.stop()
    # by hand: B's four decided cases (three with the card, one identified by the officer) from 04-05; A's
    # four from 04-13 — A's registry driver D1 was only presumed, but the late card names D9 for all four;
    # enterprise E1: 2 vehicles of 20 is not above 10 %
    assert escalations(capsys, cfg.archive_path, "2025-04-04") == {}
    assert escalations(capsys, cfg.archive_path, "2025-04-05") == {("vehicle", B): 4, ("driver", "D2"): 4}
    assert escalations(capsys, cfg.archive_path, "2025-04-12") == {("vehicle", B): 4, ("driver", "D2"): 4}
    assert escalations(capsys, cfg.archive_path, "2025-04-13") == {("vehicle", B): 4, ("driver", "D2"): 4,
                                                                    ("vehicle", A): 4, ("driver", "D9"): 4}
    # every act and amendment, written by the worker, its console and the CLI, is on the verified chains
    capsys.readouterr()
    assert main(["evidence", "verify", str(tmp_path / "data" / "evidence")]) == 0, capsys.readouterr().out
    dead = [ln for ln in w.lines if "AttributeError" in ln or "Traceback" in ln]
    assert dead == []
    close_all()
