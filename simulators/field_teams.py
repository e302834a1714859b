"""Simulated field teams: record a scenario's intercept outcomes through the outcome workflow.

After the worker has processed a scenario's feed, each outcome the scenario drew (simulators/interception.py)
is recorded on the task the system made for that truck — found by plate and detection time — with
``InterceptStore.record``, the same call the console and ``roadwatch intercept record`` make. A truck handled
on the spot also has its case decided through ``CaseStore.act`` (confirm, file, notify on the detection day,
decide once ``case.statement_days`` have run), so it counts in the 查处率 like an officer's decision.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from roadwatch.models.config import Config
from roadwatch.models.records import BEIJING
from roadwatch.models.registry import Registry
from roadwatch.streams.archive import open_archive
from roadwatch.streams.cases import CaseStore
from roadwatch.streams.intercept import InterceptStore

TEAM = "外勤组"


def record_outcomes(cfg: Config, registry: Registry, outcomes: list[dict], archive: str | None = None) -> dict:
    """Record ``outcomes``; returns counts and the outcomes whose task the archive does not hold."""
    conn = open_archive(archive or cfg)          # this thread's connection (kept open for its other users)
    store = InterceptStore(conn, cfg, registry)
    cases = CaseStore(conn, cfg, evidence_dir=cfg.data_dir / "evidence", data_dir=cfg.data_dir)
    done, decided, missing = 0, 0, []
    for o in outcomes:
        task = next((t for t in store.list(plate=o["plate"], limit=1000)
                     if int(t["detected_ms"]) == int(o["detected_ms"])), None)
        if task is None:
            missing.append(o)
            continue
        by = f"{TEAM}{o['point_id'] or ''}"
        res = store.record(task["task_id"], o["outcome"], by=by, at=o["at"], unloaded_kg=o["unloaded_kg"],
                           on_the_spot=o["on_the_spot"], reason=o["reason"], point_id=o["point_id"])
        done += 1
        if o.get("decide"):
            decide(cases, res["outcome"]["case_id"], by, datetime.fromisoformat(o["at"]), cfg)
            decided += 1
    return {"recorded": done, "decided": decided, "missing": missing}


def decide(cases: CaseStore, case_id: str, by: str, at: datetime, cfg: Config) -> None:
    """Walk a case to its decision; legal dates: the interception day, then after the 陈述申辩 period."""
    day = at.astimezone(BEIJING).date()
    for action in ("confirm", "file", "notify"):
        cases.act(case_id, action, by, at=day.isoformat())
    wait = int(cfg["case.statement_days"])
    cases.act(case_id, "decide", by, at=(day + timedelta(days=wait + (1 if wait else 0))).isoformat())
