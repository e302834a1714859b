"""Intercept tasks through the real worker on the embedded broker: readings → cases → tasks on the
``intercept-tasks`` topic (GPS and road-graph targets, a repeated passage updating the task, a replay and a
worker restart adding nothing); outcomes recorded with ``roadwatch intercept record``; the monthly report's
拦截率 / 查处率 exactly as constructed."""
from __future__ import annotations

import math
import time
from datetime import datetime

import orjson
import pytest
from kafka import KafkaConsumer

from roadwatch.models.config import load_config
from roadwatch.models.intercept import task_id_for
from roadwatch.models.records import BEIJING
from roadwatch.streams import topics as T
from roadwatch.streams.archive import close_all, insert_track_points, open_archive
from roadwatch.streams.archive import intercept as A
from roadwatch.streams.broker import free_port, kafka_bootstrap
from roadwatch.streams.cli import main
from roadwatch.streams.runtime import WorkerProcess

from officers import PASSWORD, enrol
from test_case_worker import send, wait, wim
from test_overload_helpers import registry_dict, vehicle

pytestmark = pytest.mark.integration
PA, PB, PC = "豫A11111", "豫B22222", "豫C33333"


def at(h, mi=0):
    return datetime(2025, 3, 10, h, mi, tzinfo=BEIJING)


def topic_tasks(bootstrap, until, timeout=60) -> list[dict]:
    """Every record on intercept-tasks from the start, read until ``until(records)`` holds."""
    c = KafkaConsumer(T.INTERCEPT_TASKS, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                      enable_auto_commit=False)
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(got):
            for recs in c.poll(timeout_ms=500).values():
                for r in recs:
                    task = orjson.loads(r.value)
                    assert r.key.decode() == task["task_id"]
                    got.append(task)
    finally:
        c.close()
    return got


def _closed(records: list[dict]) -> dict:
    return {t["task_id"]: t["outcome"]["outcome"] for t in records if t.get("outcome")}


def cli(capsys, *argv) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, (orjson.loads(out.out.splitlines()[-1]) if out.out.strip() else None), out.err


def test_worker_tasks_outcomes_and_report_rates(tmp_path, monkeypatch, capsys):
    reg_d = registry_dict(vehicles=[vehicle(PA, driver_id=""), vehicle(PB, driver_id="")])   # C: unknown plate
    s1 = reg_d["stations"][0]                       # S1 at 34.7 N 113.6 E, weighing northbound
    s1["downstream"] = [{"station": "K1", "km": 50.0}]
    reg_d["stations"].append({"station_id": "K1", "name": "北站超限检测站", "lat": 35.15, "lon": 113.6,
                              "kind": "checkpoint"})
    reg_d["stations"].append({"station_id": "K2", "name": "东站超限检测站", "lat": 34.7, "lon": 114.3,
                              "kind": "checkpoint"})
    reg = tmp_path / "registry.json"
    reg.write_bytes(orjson.dumps(reg_d))
    settings = f'paths.data_dir="{tmp_path / "data"}";web.port={free_port()}'
    monkeypatch.setenv("ROADWATCH_SET", settings)
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    cfg = load_config(None)
    conn = open_archive(cfg.archive_path)
    enrol(monkeypatch, cfg.archive_path, "officer8", "officer9")        # CLI outcomes and acts prove the officer
    enrol(monkeypatch, cfg.archive_path, "watcher", role="viewer")
    # B has a terminal: its archived track drives east past S1 (the GPS path writes these points)
    dlon = 1.0 / (111.32 * math.cos(math.radians(34.7)))
    b_ms = int(at(10, 5).timestamp() * 1000)
    insert_track_points(conn, [(PB, b_ms - 60_000, 34.7, 113.6 - dlon, 72.0), (PB, b_ms, 34.7, 113.6, 72.0)])

    def cases():
        return {r["plate"] + r["ts"][11:16]: r["case_id"] for r in conn.execute("SELECT plate, ts, case_id FROM cases")}

    with kafka_bootstrap(cfg) as bootstrap:
        w = WorkerProcess(bootstrap, registry_path=str(reg), env={"ROADWATCH_SET": settings})
        try:
            w.wait_ready(60)
            send(bootstrap, T.WIM_READINGS, [(PA, wim(PA, at(10))), (PB, wim(PB, at(10, 5))),
                             (PC, wim(PC, at(10, 7)))])      # C: a review case, no task
            wait(lambda: len(A.list_tasks(conn)) == 2 and len(cases()) == 3, 60, "two tasks")
            w.kill()                                                       # crash …
            w = WorkerProcess(bootstrap, registry_path=str(reg), env={"ROADWATCH_SET": settings})
            w.wait_ready(60)                                               # … restart; A again 30 min later,
            send(bootstrap, T.WIM_READINGS, [(PA, wim(PA, at(10, 30))), (PA, wim(PA, at(10)))])    # and a replay of its first
            wait(lambda: len(cases()) == 4 and (A.task_for_case(conn, cases()[PA + "10:30"]) or {}).get("revision")
                 == 2, 60, "A's task updated")
            published = topic_tasks(bootstrap, lambda got: {t["revision"] for t in got} == {1, 2})
            c = cases()
            assert conn.execute("SELECT action FROM cases WHERE case_id=?", (c[PC + "10:07"],)).fetchone()[0] == "review"
            ta, tb = task_id_for(PA, c[PA + "10:00"]), task_id_for(PB, c[PB + "10:05"])
            newest = {}
            for t in published:
                if t["revision"] >= newest.get(t["task_id"], {}).get("revision", 0):
                    newest[t["task_id"]] = t
            assert set(newest) == {ta, tb}                              # one task per truck; C (review) none
            a, b = newest[ta], newest[tb]
            assert a["revision"] == 2 and a["case_ids"] == [c[PA + "10:00"], c[PA + "10:30"]]
            assert a["basis"] == "road_graph" and [(x["point_id"], x["km"], x["eta_min"]) for x in a["targets"]] == \
                [("K1", 50.0, 50.0)]
            assert a["targets"][0]["eta"] == "2025-03-10T11:20:00+08:00"
            assert b["basis"] == "gps" and [x["point_id"] for x in b["targets"]] == ["K2"]
            assert A.get_task(conn, ta) == a and A.get_task(conn, tb) == b
            assert [x["action"] for x in A.task_acts(conn, ta)] == ["create", "update"]

            archive = str(cfg.archive_path)
            rc, out, _ = cli(capsys, "intercept", "list", "--archive", archive, "--plate", PA)
            assert rc == 0 and out["task_id"] == ta and out["status"] == "expired"       # March 2025 is long past
            # the officer is proven: a viewer, an unknown user or a wrong password records nothing
            rc, _, err = cli(capsys, "intercept", "record", ta, "not_found", "--archive", archive, "--by", "watcher")
            assert rc == 2 and "officer_not_authenticated" in err and "viewer" in err
            monkeypatch.setenv("ROADWATCH_OFFICER_PASSWORD", "wrong")
            rc, _, err = cli(capsys, "intercept", "record", ta, "not_found", "--archive", archive, "--by", "officer8")
            assert rc == 2 and "password wrong" in err and A.get_task(conn, ta)["outcome"] is None
            monkeypatch.setenv("ROADWATCH_OFFICER_PASSWORD", PASSWORD)
            rc, out, err = cli(capsys, "intercept", "record", ta, "intercepted", "--archive", archive, "--by", "officer8",
                               "--unloaded-kg", "12000", "--on-the-spot", "yes", "--at", "2025-03-10T11:15:00+08:00",
                               "--point", "K1")
            assert rc == 0, err
            assert out["status"] == "intercepted" and out["outcome"]["case_id"] == c[PA + "10:30"]
            rc, _, err = cli(capsys, "intercept", "record", ta, "released", "--archive", archive, "--by", "officer9",
                             "--reason", "x")
            assert rc == 2 and "already_recorded" in err
            rc, _, err = cli(capsys, "intercept", "record", tb, "intercepted", "--archive", archive, "--by", "officer8")
            assert rc == 2 and "unloaded_kg" in err
            rc, out, _ = cli(capsys, "intercept", "record", tb, "not_found", "--archive", archive, "--by", "officer8",
                             "--at", "2025-03-10T12:00:00+08:00")
            assert rc == 0 and out["status"] == "not_found"
            # the outcomes recorded on the command line go out on intercept-tasks too (the worker's timer)
            closed = _closed(topic_tasks(bootstrap, lambda got: len(_closed(got)) == 2))
            assert closed == {ta: "intercepted", tb: "not_found"}
        except AssertionError:
            print("\n".join(w.lines[-80:]), dict(cases()), [r["action"] for r in conn.execute("SELECT action FROM cases")])
            raise
        finally:
            w.stop()
    assert len(cases()) == 4                                      # the interception made no case
    # decide A's first case so that the 查处率 is not trivial: 1 of 4 cases decided
    for action, day in (("confirm", "2025-03-11"), ("file", "2025-03-11"), ("notify", "2025-03-12"),
                        ("decide", "2025-03-20")):
        assert main(["case", "act", c[PA + "10:00"], action, "--archive", archive, "--by", "officer8",
                     "--at", day]) == 0
    out_dir = tmp_path / "report"
    assert main(["report", "monthly", "--month", "2025-03", "--registry", str(reg), "--archive", archive,
                 "--out", str(out_dir)]) == 0
    rep = orjson.loads((out_dir / "report.json").read_bytes())
    ic = rep["overload"]["interception"]
    assert [s["station_id"] for s in ic["stations"]] == ["S1"]
    tot = ic["total"]
    assert tot["interception_rate"] == {"name": "拦截率", "numerator": 1, "denominator": 2, "percent": 50.0,
                                        "definition": "拦截车辆数 / 布控任务数"}
    assert (tot["tasks"], tot["intercepted"], tot["not_found"]) == (2, 1, 1)
    assert tot["enforcement_rate"]["numerator"] == 1 and tot["enforcement_rate"]["denominator"] == 4
    assert tot["unloaded_t"] == 12.0 and tot["median_detect_to_intercept_min"] == 75.0
    assert "拦截率50%（1/2）" in rep["narrative"] and "卸载货物12吨" in rep["narrative"]
    html = (out_dir / "report.html").read_text()
    assert "布控拦截" in html and "50% (1/2)" in html
    csv_text = (out_dir / "report.csv").read_text(encoding="utf-8-sig")
    assert "station,S1,G107 治超点,interception_rate,拦截率,1,2,50.0" in csv_text
    close_all()
