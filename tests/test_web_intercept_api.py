"""The console's intercept API (streams/web/intercept_api.py) against a real archive: the list and its
filters, roles (a viewer reads, only an operator records), refused outcomes with their HTTP answers, the
live event an outcome publishes, and the task named by the case API."""
from __future__ import annotations

import time

import pytest

from roadwatch.models.config import Config
from roadwatch.models.records import epoch_ms_to_iso
from roadwatch.streams.archive import open_archive
from roadwatch.streams.intercept import InterceptStore
from test_web_console import session_test
from web_support import make_cfg, registry, seed_case, seed_user


@pytest.fixture()
def cfg(tmp_path):
    cfg = make_cfg(tmp_path)
    seed_user(cfg, "ops", "operator")
    seed_user(cfg, "view", "viewer")
    seed_case(cfg, "CA1", plate="冀A30001")
    now = int(time.time() * 1000)
    store = InterceptStore(open_archive(cfg.archive_path), Config(), registry())
    for plate, case, ago in (("冀A30001", "CA1", 10), ("冀B40002", "CB1", 5)):
        store.on_verdict({"plate": plate, "case_id": case, "station_id": "ST1", "ts": epoch_ms_to_iso(now - ago * 60_000),
                          "ts_ms": now - ago * 60_000, "action": "fine", "excess_pct": 20.0, "vehicle_kind": "train",
                          "axle_count": 6, "gross_kg": 58800.0, "excess_kg": 9800.0, "fine_yuan": 2000},
                         speed_kmh=60.0)
    return cfg


def _id(tasks, plate):
    return next(t["task_id"] for t in tasks if t["plate"] == plate)


def test_list_and_outcome_through_the_api(cfg):
    @session_test(cfg)
    async def _(c, hub, fleet, h):
        body = await (await c.get("/api/intercept/tasks")).json()
        assert [t["plate"] for t in body["tasks"]] == ["冀B40002", "冀A30001"]          # newest first
        assert {t["status"] for t in body["tasks"]} == {"open"} and body["event_id"] == hub.event_id
        assert body["tasks"][0]["station_name"] == "石安治超站"
        ta = _id(body["tasks"], "冀A30001")
        assert (await c.get("/api/intercept/tasks?status=bogus")).status == 400
        assert (await c.get("/api/intercept/tasks?limit=0")).status == 400
        assert (await c.get("/api/intercept/tasks/INOPE")).status == 404
        url = f"/api/intercept/tasks/{ta}/outcome"
        for payload, status, code in (({}, 400, "bad_input"),
                                      ({"outcome": "intercepted", "on_the_spot": True}, 400, "bad_input"),
                                      ({"outcome": "intercepted", "unloaded_kg": "5", "on_the_spot": True}, 400,
                                       "bad_input"),
                                      ({"outcome": "intercepted", "unloaded_kg": 5, "on_the_spot": "yes"}, 400,
                                       "bad_input"),
                                      ({"outcome": "released"}, 400, "reason_required")):
            r = await c.post(url, json=payload, headers=h)
            assert (r.status, (await r.json())["error"]) == (status, code), payload
        assert (await c.post(url, json={"outcome": "not_found"})).status == 403          # no CSRF header
        seq = hub.seq
        r = await c.post(url, json={"outcome": "intercepted", "unloaded_kg": 9800, "on_the_spot": False}, headers=h)
        assert r.status == 200
        task = await r.json()
        assert (task["status"], task["outcome"]["by"], task["outcome"]["case_id"]) == ("intercepted", "ops", "CA1")
        assert hub.seq == seq + 1                                           # pushed to the live stream
        r = await c.post(url, json={"outcome": "not_found"}, headers=h)
        assert (r.status, (await r.json())["error"]) == (409, "already_recorded")
        case = await (await c.get("/api/cases/CA1")).json()
        assert case["intercept"]["task_id"] == ta and case["intercept"]["outcome"]["unloaded_kg"] == 9800.0
        summary = await (await c.get("/api/intercept/summary")).json()
        assert summary["total"]["interception_rate"]["numerator"] == 1
        assert summary["total"]["interception_rate"]["denominator"] == 2


def test_a_viewer_reads_but_cannot_record(cfg):
    @session_test(cfg, user="view")
    async def _(c, hub, fleet, h):
        tasks = (await (await c.get("/api/intercept/tasks")).json())["tasks"]
        assert len(tasks) == 2
        r = await c.post(f"/api/intercept/tasks/{tasks[0]['task_id']}/outcome", json={"outcome": "not_found"},
                         headers=h)
        assert r.status == 403
        assert (await c.get("/intercept")).status == 200
