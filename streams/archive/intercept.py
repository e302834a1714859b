"""Intercept tasks (布控) in the archive: the tasks, the cases they cover, their append-only acts.

Written by ``streams/intercept.py`` (the WIM path and the outcome workflow); every write is keyed by a
deterministic id, so a replayed passage or a redelivered record writes nothing new:

- a task row is upserted only by a higher ``revision`` (the number of passages folded in);
- ``intercept_task_cases`` maps each case to its task once (the look-up that makes a replay a no-op);
- acts (``create``, ``update:<case>``, ``outcome``) are inserted with ``ON CONFLICT DO NOTHING``.
"""
from __future__ import annotations

from datetime import datetime

import orjson

from roadwatch.models.records import BEIJING

from .backend import POSTGRESQL, ArchiveConnection

_COLS = "task_id, plate, station_id, detected_ms, month, expires_ms, revision, status, task, updated_at"


def _task(row) -> dict | None:
    return orjson.loads(row["task"]) if row is not None else None


def task_for_case(conn: ArchiveConnection, case_id: str) -> dict | None:
    """The task a case already belongs to (a replayed passage), or None."""
    row = conn.execute("SELECT t.task FROM intercept_task_cases c JOIN intercept_tasks t ON t.task_id = c.task_id "
                       "WHERE c.case_id = ?", (case_id,)).fetchone()
    return _task(row)


def latest_pending_task(conn: ArchiveConnection, plate: str) -> dict | None:
    """The plate's newest task without an outcome (open or expired: ``models.intercept.is_open`` decides)."""
    row = conn.execute("SELECT task FROM intercept_tasks WHERE plate = ? AND status = 'pending' "
                       "ORDER BY detected_ms DESC, task_id DESC LIMIT 1", (plate,)).fetchone()
    return _task(row)


def get_task(conn: ArchiveConnection, task_id: str, *, for_update: bool = False) -> dict | None:
    """``for_update`` (inside a transaction): hold the row until the outcome is written, so a passage folded
    in meanwhile is not lost (PostgreSQL row lock; SQLite's write transaction already holds the database)."""
    lock = " FOR UPDATE" if for_update and conn.backend == POSTGRESQL else ""
    return _task(conn.execute(f"SELECT task FROM intercept_tasks WHERE task_id = ?{lock}", (task_id,)).fetchone())


def _next_seq(conn: ArchiveConnection, task_id: str) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM intercept_acts WHERE task_id = ?", (task_id,)).fetchone()[0]) + 1


def _act(conn: ArchiveConnection, act_id: str, task_id: str, action: str, by: str, at: str, entered_at: str,
         reason: str | None = None, details: dict | None = None, *, first: bool = False) -> bool:
    """Append the act once. ``first``: the task was inserted by the caller's transaction, so this is its first
    act (seq 1) and none can exist yet (two look-ups spared per new task on the WIM path)."""
    if not first and conn.execute("SELECT 1 FROM intercept_acts WHERE act_id = ?", (act_id,)).fetchone():
        return False
    conn.execute("INSERT INTO intercept_acts (act_id, task_id, seq, action, by_officer, at, entered_at, reason, "
                 "details) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                 (act_id, task_id, 1 if first else _next_seq(conn, task_id), action, by, at, entered_at, reason,
                  orjson.dumps(details).decode() if details is not None else None))
    return True


class TaskClosed(RuntimeError):
    """The task got its outcome after it was read for an update (a field officer was quicker): the passage
    must open a new task instead. Raised inside the transaction, so nothing of the update is written."""


def save_task(conn: ArchiveConnection, task: dict, *, by: str, entered_at: str) -> bool:
    """Store a task after a passage opened or updated it, with its ``create`` / ``update`` act, in one
    transaction. False when nothing changed (the passage was already folded in); ``TaskClosed`` when an
    update meets a task that has its outcome by now."""
    month = datetime.fromtimestamp(int(task["detected_ms"]) / 1000, tz=BEIJING).strftime("%Y-%m")
    body = orjson.dumps(task).decode()
    with conn.transaction():
        cur = conn.execute(
            f"INSERT INTO intercept_tasks ({_COLS}) VALUES (?,?,?,?,?,?,?,'pending',?,?) "
            "ON CONFLICT(task_id) DO UPDATE SET expires_ms = excluded.expires_ms, revision = excluded.revision, "
            "task = excluded.task, updated_at = excluded.updated_at "
            "WHERE intercept_tasks.revision < excluded.revision AND intercept_tasks.status = 'pending'",
            (task["task_id"], task["plate"], task["station_id"], int(task["detected_ms"]), month,
             int(task["expires_ms"]), int(task["revision"]), body, entered_at))
        changed = cur.rowcount == 1
        if not changed and task["revision"] > 1:
            row = conn.execute("SELECT status FROM intercept_tasks WHERE task_id = ?", (task["task_id"],)).fetchone()
            if row is not None and row[0] != "pending":
                raise TaskClosed(task["task_id"])
        for p in task["passages"]:
            conn.execute("INSERT INTO intercept_task_cases (case_id, task_id) VALUES (?,?) ON CONFLICT DO NOTHING",
                         (p["case_id"], task["task_id"]))
        newest = task["passages"][-1] if task["revision"] > 1 else task["passages"][0]
        if task["revision"] == 1:      # changed: inserted (a revision-1 row is never updated)
            _act(conn, f"{task['task_id']}:create", task["task_id"], "create", by, task["detected_at"], entered_at,
                 details={"case_id": task["case_ids"][0], "basis": task["basis"],
                          "targets": [t["point_id"] for t in task["targets"]]}, first=changed)
        else:
            for p in task["passages"][1:]:
                _act(conn, f"{task['task_id']}:update:{p['case_id']}", task["task_id"], "update", by, p["ts"],
                     entered_at, details={"case_id": p["case_id"], "station_id": p["station_id"],
                                          "targets": [t["point_id"] for t in task["targets"]]
                                          if p is newest else None})
    return changed


def save_outcome(conn: ArchiveConnection, task: dict, outcome: dict, *, entered_at: str) -> bool:
    """Record the task's one outcome (an append-only act) and the task with it. False when the task
    already has an outcome (the caller checked it in this transaction; a racing writer lost)."""
    with conn.transaction():
        done = _act(conn, f"{task['task_id']}:outcome", task["task_id"], outcome["outcome"], outcome["by"],
                    outcome["at"], entered_at, outcome.get("reason"),
                    {k: outcome.get(k) for k in ("unloaded_kg", "on_the_spot", "point_id", "case_id")})
        if not done:
            return False
        conn.execute("UPDATE intercept_tasks SET status = ?, task = ?, updated_at = ? WHERE task_id = ?",
                     (outcome["outcome"], orjson.dumps({**task, "outcome": outcome}).decode(), entered_at,
                      task["task_id"]))
    return True


def unpublished_outcomes(conn: ArchiveConnection, limit: int = 500) -> list[dict]:
    """Tasks whose outcome is recorded (console, CLI) but not yet on the ``intercept-tasks`` topic."""
    return [_task(r) for r in conn.execute("SELECT task FROM intercept_tasks WHERE status <> 'pending' AND "
                                           "outcome_published = 0 ORDER BY updated_at, task_id LIMIT ?",
                                           (int(limit),))]


def mark_outcomes_published(conn: ArchiveConnection, task_ids: list[str]) -> None:
    with conn.transaction():
        conn.executemany("UPDATE intercept_tasks SET outcome_published = 1 WHERE task_id = ?",
                         [(t,) for t in task_ids])


def task_acts(conn: ArchiveConnection, task_id: str) -> list[dict]:
    out = []
    for r in conn.execute("SELECT act_id, seq, action, by_officer, at, entered_at, reason, details "
                          "FROM intercept_acts WHERE task_id = ? ORDER BY seq", (task_id,)):
        d = dict(r)
        d["details"] = orjson.loads(d["details"]) if d["details"] else None
        out.append(d)
    return out


def list_tasks(conn: ArchiveConnection, *, pending: bool | None = None, plate: str | None = None,
               station_id: str | None = None, since_ms: int | None = None, limit: int = 200) -> list[dict]:
    """Tasks, newest first. ``pending``: True → without an outcome, False → with one."""
    cond, args = [], []
    if pending is not None:
        cond.append("status = 'pending'" if pending else "status <> 'pending'")
    if plate:
        cond.append("plate = ?")
        args.append(plate)
    if station_id:
        cond.append("station_id = ?")
        args.append(station_id)
    if since_ms is not None:
        cond.append("detected_ms >= ?")
        args.append(int(since_ms))
    where = f"WHERE {' AND '.join(cond)} " if cond else ""
    rows = conn.execute(f"SELECT task FROM intercept_tasks {where}ORDER BY detected_ms DESC, task_id LIMIT ?",
                        (*args, int(limit))).fetchall()
    return [_task(r) for r in rows]


def month_tasks(conn: ArchiveConnection, month: str) -> list[dict]:
    """Every task opened in ``month`` (YYYY-MM, Beijing): the rows of the 拦截率."""
    return [_task(r) for r in conn.execute("SELECT task FROM intercept_tasks WHERE month = ? ORDER BY task_id",
                                           (month,))]


def status_counts(conn: ArchiveConnection) -> dict[str, int]:
    """Tasks by stored status (pending = no outcome yet), for the metrics."""
    return {r[0]: int(r[1]) for r in conn.execute("SELECT status, COUNT(*) FROM intercept_tasks GROUP BY status")}
