"""Intercept tasks in the archive (streams/archive/intercept.py via streams/intercept.py), on SQLite and
PostgreSQL: one task per truck, replays write nothing, an outcome once, append-only history, the rates."""
from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from roadwatch.models import intercept as I
from roadwatch.models.config import Config
from roadwatch.streams.archive import intercept as A
from roadwatch.streams.archive import insert_track_points, open_archive
from roadwatch.streams.cases import ArchiveTracks
from prometheus_client import REGISTRY

from roadwatch.streams.intercept import InterceptStore, export_metrics, month_summary

from test_intercept_model import MIN, T0_MS, graph, verdict

NOW = datetime(2026, 3, 10, 4, 0, tzinfo=timezone.utc)      # 12:00 Beijing, 4 h after T0


def _acts(conn, task_id):
    return [(a["seq"], a["action"], a["by_officer"]) for a in A.task_acts(conn, task_id)]


def test_tasks_outcomes_and_rates(archive_target):
    conn = open_archive(archive_target)
    store = InterceptStore(conn, Config(), graph(), track=ArchiveTracks(conn))
    first = store.on_verdict(verdict(), speed_kmh=60.0)
    tid = first["task_id"]
    assert A.get_task(conn, tid) == first and first["basis"] == "road_graph"
    # a replayed passage (redelivery, restart) returns the stored task and writes nothing
    assert store.on_verdict(verdict(), speed_kmh=60.0) == first
    assert _acts(conn, tid) == [(1, "create", "roadwatch")]
    # below the threshold: no task
    assert store.on_verdict(verdict(case="CW", action="warning", plate="豫A77777")) is None
    # the same truck again, 30 min later at B: the same task, updated
    second = store.on_verdict(verdict(station="B", ts_ms=T0_MS + 30 * MIN, case="C2"), speed_kmh=60.0)
    assert second["task_id"] == tid and second["revision"] == 2 and second["case_ids"] == ["C1", "C2"]
    assert store.on_verdict(verdict(station="B", ts_ms=T0_MS + 30 * MIN, case="C2")) == second
    assert _acts(conn, tid) == [(1, "create", "roadwatch"), (2, "update", "roadwatch")]
    assert A.task_for_case(conn, "C1")["revision"] == 2
    # a stale revision never overwrites a newer one
    assert A.save_task(conn, first, by="roadwatch", entered_at="x") is False
    assert A.get_task(conn, tid)["revision"] == 2

    assert [t["task_id"] for t in store.list("open", now=datetime(2026, 3, 10, 1, 0, tzinfo=timezone.utc))] == [tid]
    assert store.list("open", now=NOW) == [] and [t["status"] for t in store.list("expired", now=NOW)] == ["expired"]

    out = store.record(tid, "intercepted", by="张警官", at="2026-03-10T08:50:00+08:00", unloaded_kg=14000,
                       on_the_spot=True, point_id="K1", now=NOW)
    assert out["status"] == "intercepted" and out["replayed"] is False
    assert out["outcome"]["case_id"] == "C2" and out["outcome"]["unloaded_kg"] == 14000.0
    assert out["history"][-1]["action"] == "intercepted" and out["history"][-1]["by_officer"] == "张警官"
    again = store.record(tid, "intercepted", by="张警官", unloaded_kg=14000, on_the_spot=True, now=NOW)
    assert again["replayed"] is True and len(again["history"]) == 3
    with pytest.raises(I.InterceptError) as e:
        store.record(tid, "released", by="李警官", reason="证件齐全", now=NOW)
    assert e.value.code == "already_recorded"
    with pytest.raises(I.InterceptError) as e:
        store.record("INOPE", "not_found", by="李警官", now=NOW)
    assert e.value.code == "not_found"
    # an update planned before the outcome was recorded (a quicker officer) is refused: nothing written
    late = I.plan(verdict(ts_ms=T0_MS + 40 * MIN, case="C2b"), graph(), Config(), open_task=second)
    assert late["task_id"] == tid and late["revision"] == 3
    with pytest.raises(A.TaskClosed):
        A.save_task(conn, late, by="roadwatch", entered_at="x")
    assert A.get_task(conn, tid)["revision"] == 2 and A.task_for_case(conn, "C2b") is None
    assert len(A.task_acts(conn, tid)) == 3
    # a closed task is never updated: the truck's next passage opens a new task
    third = store.on_verdict(verdict(ts_ms=T0_MS + 60 * MIN, case="C3"), speed_kmh=60.0)
    assert third["task_id"] != tid and third["revision"] == 1
    other = store.on_verdict(verdict(plate="豫B00002", case="C4", ts_ms=T0_MS + 5 * MIN), speed_kmh=60.0)
    store.record(other["task_id"], "released", by="李警官", reason="持有效大件运输许可", now=NOW)

    r = store.rates("2026-03", now=NOW)
    assert r["total"]["interception_rate"]["numerator"] == 1
    assert r["total"]["interception_rate"]["denominator"] == 3
    assert r["total"]["interception_rate"]["percent"] == 33.33
    assert (r["total"]["released"], r["total"]["expired"]) == (1, 1)
    assert r["total"]["unloaded_kg"] == 14000.0 and r["total"]["median_detect_to_intercept_min"] == 50.0
    assert A.status_counts(conn) == {"intercepted": 1, "released": 1, "pending": 1}

    # the status page's and the gauges' figures: the same counts (no cases in this archive: 查处率 0/0)
    summary = month_summary(conn, Config(), graph(), "2026-03", NOW)
    assert summary["total"]["interception_rate"] == r["total"]["interception_rate"]
    assert summary["total"]["enforcement_rate"]["denominator"] == 0
    export_metrics(summary)
    g = REGISTRY.get_sample_value
    assert g("roadwatch_intercept_rate_ratio", {"station": "total"}) == pytest.approx(1 / 3)
    assert g("roadwatch_intercept_month_tasks", {"station": "A", "status": "created"}) == 3
    assert g("roadwatch_intercept_month_tasks", {"station": "total", "status": "intercepted"}) == 1
    assert g("roadwatch_intercept_unloaded_kg", {"station": "total"}) == 14000.0
    assert g("roadwatch_intercept_median_minutes", {"station": "total"}) == 50.0
    assert g("roadwatch_enforcement_month_cases", {"station": "total", "stage": "detected"}) == 0


def test_gps_track_from_the_archive_sets_the_heading(archive_target):
    conn = open_archive(archive_target)
    dlon = 1.0 / (111.32 * math.cos(math.radians(34.70)))
    insert_track_points(conn, [("豫A12345", T0_MS - MIN, 34.70, 113.60 - dlon, 70.0),
                               ("豫A12345", T0_MS, 34.70, 113.60, 70.0)])
    store = InterceptStore(conn, Config(), graph(), track=ArchiveTracks(conn))
    task = store.on_verdict(verdict(), speed_kmh=60.0)
    assert task["basis"] == "gps" and [t["point_id"] for t in task["targets"]] == ["K2"]
    assert task["position"]["speed_kmh"] == 70.0
