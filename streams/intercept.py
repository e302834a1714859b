"""Intercept tasks (布控) between the WIM path, the archive, the console and the CLI — thin wiring.

``InterceptStore.on_verdict`` is the WIM path's step after the case is stored: a passage over the intercept
threshold opens or updates the truck's one open task (``models/intercept.py`` plans it; the truck's fixes
come from the archived track, mobile teams from ``mobile_points``) and the archive keeps it
(``streams/archive/intercept.py``). ``InterceptStore.record`` is the one outcome workflow of the console and
``roadwatch intercept record``. Both are idempotent: deterministic task and act ids.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Iterable

from roadwatch.models import intercept as I
from roadwatch.models.config import Config
from roadwatch.models.records import BEIJING, format_ts
from roadwatch.models.registry import Registry
from roadwatch.streams.archive import intercept as A
from roadwatch.streams.archive.backend import ArchiveConnection

SYSTEM = "roadwatch"

# mobile teams active at a time (epoch ms) → their enforcement points (流动治超: supplied by the deployments)
MobilePoints = Callable[[int], Iterable[I.EnforcementPoint]]


def _no_mobile(_ts_ms: int) -> list[I.EnforcementPoint]:
    return []


class InterceptStore:
    def __init__(self, conn: ArchiveConnection, cfg: Config, registry: Registry, *,
                 mobile_points: MobilePoints | None = None, track=None):
        if not isinstance(cfg, Config):
            raise TypeError("InterceptStore needs the Config it is given")
        self.conn = conn
        self.cfg = cfg
        self.registry = registry
        self.mobile_points: MobilePoints = mobile_points or _no_mobile
        self.track = track            # a TrackSource (streams/cases.ArchiveTracks) or None: no GPS

    # --- the WIM path -----------------------------------------------------------------------------------

    def on_verdict(self, verdict: dict, *, speed_kmh: float | None = None, new_case: bool = False) -> dict | None:
        """The task this passage opened or updated (also when it was already stored: a replay re-publishes
        the same task), or None when the passage is not over the intercept threshold. ``new_case``: the case
        was created in the caller's transaction, so no task holds it yet (the look-up is spared)."""
        if not I.over_threshold(verdict, self.cfg):
            return None
        known = None if new_case else A.task_for_case(self.conn, verdict["case_id"])
        if known is not None:
            return known
        ts_ms = int(verdict["ts_ms"])
        track = None
        if self.track is not None:
            age = int(self.cfg["intercept.gps_max_age_s"]) * 1000
            track = self.track.points(verdict["plate"], ts_ms - age, ts_ms + age)
        mobile = list(self.mobile_points(ts_ms))
        entered = format_ts(datetime.now(timezone.utc))
        task = I.plan(verdict, self.registry, self.cfg, open_task=A.latest_pending_task(self.conn, verdict["plate"]),
                      track=track, mobile=mobile, passage_speed_kmh=speed_kmh)
        try:
            A.save_task(self.conn, task, by=SYSTEM, entered_at=entered)
        except A.TaskClosed:           # an outcome was recorded meanwhile: this passage opens a new task
            task = I.plan(verdict, self.registry, self.cfg, open_task=None, track=track, mobile=mobile,
                          passage_speed_kmh=speed_kmh)
            A.save_task(self.conn, task, by=SYSTEM, entered_at=entered)
        return task

    # --- the outcome workflow ---------------------------------------------------------------------------

    def record(self, task_id: str, outcome: str, *, by: str, at: str | None = None,
               unloaded_kg: float | None = None, on_the_spot: bool | None = None, reason: str | None = None,
               point_id: str | None = None, now: datetime | None = None) -> dict:
        """Record a task's outcome (``models.intercept.check_outcome``); returns the task as ``show`` gives it
        with ``replayed``. Raises ``InterceptError``."""
        now = now or datetime.now(timezone.utc)
        with self.conn.transaction():
            task = A.get_task(self.conn, task_id, for_update=True)
            if task is None:
                raise I.InterceptError("not_found", f"no intercept task {task_id!r}")
            rec = I.check_outcome(task, outcome, by=by, at=at, now=now, unloaded_kg=unloaded_kg,
                                  on_the_spot=on_the_spot, reason=reason, point_id=point_id)
            replayed = bool(rec.pop("replayed", False))
            if not replayed:
                A.save_outcome(self.conn, task, rec, entered_at=format_ts(now))
        return {**self.show(task_id, now=now), "replayed": replayed}

    # --- reading ------------------------------------------------------------------------------------------

    def view(self, task: dict, now_ms: int) -> dict:
        st = I.status(task, now_ms)
        known = task["station_id"] in self.registry.stations or task["station_id"] in self.registry.mobile_units
        return {**task, "status": st, "status_label": I.LABELS[st],
                "station_name": self.registry.point_name(task["station_id"]) if known
                else task.get("station_name") or task["station_id"]}

    def show(self, task_id: str, now: datetime | None = None) -> dict | None:
        task = A.get_task(self.conn, task_id)
        if task is None:
            return None
        now_ms = int((now or datetime.now(timezone.utc)).timestamp() * 1000)
        return {**self.view(task, now_ms), "history": A.task_acts(self.conn, task_id)}

    def list(self, status: str | None = None, *, plate: str | None = None, station_id: str | None = None,
             limit: int = 200, now: datetime | None = None) -> list[dict]:
        """Tasks newest first; ``status``: open | expired | intercepted | not_found | released | None (all)."""
        if status is not None and status not in I.STATUSES:
            raise I.InterceptError("bad_input", f"status must be one of {', '.join(I.STATUSES)}")
        now_ms = int((now or datetime.now(timezone.utc)).timestamp() * 1000)
        pending = None if status is None else status in ("open", "expired")
        rows = A.list_tasks(self.conn, pending=pending, plate=plate, station_id=station_id,
                            limit=limit if status not in ("open", "expired") else 10 * limit)
        out = [self.view(t, now_ms) for t in rows]
        if status is not None:
            out = [t for t in out if t["status"] == status]
        return out[:limit]

    def rates(self, month: str, *, now: datetime | None = None, station_kinds: dict | None = None) -> dict:
        now_ms = int((now or datetime.now(timezone.utc)).timestamp() * 1000)
        return I.interception_rates(A.month_tasks(self.conn, month), month, now_ms,
                                    int(self.cfg["report.decimals"]), station_kinds)


def beijing_month(now: datetime) -> str:
    return now.astimezone(BEIJING).strftime("%Y-%m")


def month_summary(conn: ArchiveConnection, cfg: Config, registry: Registry, month: str, now: datetime) -> dict:
    """拦截率 and 查处率 of ``month`` per detecting station and in total, counted as the monthly report counts
    them (streams/reports/overload.py) — for the fleet/status page and the metrics."""
    import roadwatch.streams.cases  # noqa: F401 - declares case_acts on a fresh archive
    from roadwatch.streams.archive.reports import month_case_tables
    from roadwatch.streams.reports.overload import case_stages, interception_section, station_stats
    names = registry.point_names()
    dec = int(cfg["report.decimals"])
    tables = month_case_tables(conn, month)
    stats = station_stats([], tables["cases"], case_stages(tables["cases"], tables["case_acts"]), names, dec)
    return interception_section(A.month_tasks(conn, month), stats, month, int(now.timestamp() * 1000), dec, names,
                                I.station_kinds(registry))


def export_metrics(summary: dict) -> None:
    """This month's rates as Prometheus gauges (streams/metrics.py), numerator and denominator beside each."""
    from roadwatch.streams import metrics as M
    for row in [*summary["stations"], summary["total"]]:
        sid = row["station_id"] or "total"
        for st in ("tasks", *I.STATUSES):
            M.INTERCEPT_MONTH.labels(station=sid, status="created" if st == "tasks" else st).set(row[st])
        q, e = row["interception_rate"], row["enforcement_rate"]
        M.INTERCEPT_RATE.labels(station=sid).set(q["numerator"] / q["denominator"] if q["denominator"] else 0.0)
        M.ENFORCEMENT_RATE.labels(station=sid).set(e["numerator"] / e["denominator"] if e["denominator"] else 0.0)
        M.ENFORCEMENT_COUNTS.labels(station=sid, stage="detected").set(e["denominator"])
        M.ENFORCEMENT_COUNTS.labels(station=sid, stage="decided").set(e["numerator"])
        M.INTERCEPT_UNLOADED.labels(station=sid).set(row["unloaded_kg"])
        wait = row["median_detect_to_intercept_min"]
        M.INTERCEPT_MEDIAN.labels(station=sid).set(wait if wait is not None else float("nan"))
