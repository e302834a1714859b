"""The archive's schema: versioned migrations, applied in order, recorded in ``schema_version``.

Each migration is written once in SQLite's column types; ``backend.ddl_for`` gives the PostgreSQL form.
``migrate`` runs under a lock (``BEGIN IMMEDIATE`` on SQLite, an advisory transaction lock on PostgreSQL)
and in one transaction, so two workers starting together apply each migration exactly once, and a failed
migration leaves the archive at the previous version.

Migration 1 is the schema of the first release, written with ``IF NOT EXISTS``: an archive made by that
release (which has no ``schema_version`` table) is adopted as version 1 and then upgraded in place.
To change the schema, append a migration — never edit one that has shipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from .backend import POSTGRESQL, ArchiveConnection, ddl_for, split_statements


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: list[Migration] = [
    Migration(1, "first release: alerts, vehicle days, verdicts, cases, case actions, ping snapshots, truck "
                 "tracks", """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id   TEXT PRIMARY KEY,      -- deterministic: type|plate|start (replays upsert the same row)
    type       TEXT NOT NULL,
    plate      TEXT NOT NULL,
    start_ts   TEXT NOT NULL,         -- ISO-8601, Beijing time
    end_ts     TEXT,
    severity   TEXT NOT NULL,
    lat        REAL,
    lon        REAL,
    late       INTEGER NOT NULL DEFAULT 0,
    details    TEXT NOT NULL,         -- JSON
    day        TEXT NOT NULL,         -- YYYY-MM-DD (Beijing) of start_ts
    emitted_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_day ON alerts(day, type);
CREATE INDEX IF NOT EXISTS alerts_plate ON alerts(plate, start_ts);

CREATE TABLE IF NOT EXISTS vehicle_day (
    plate            TEXT NOT NULL,
    day              TEXT NOT NULL,   -- YYYY-MM-DD, Beijing time
    pings            INTEGER NOT NULL,
    qualified        INTEGER NOT NULL,
    km_total         REAL NOT NULL,
    km_incomplete    REAL NOT NULL,
    drift_points     INTEGER NOT NULL,
    overspeed_count  INTEGER NOT NULL,
    fatigue_s        REAL NOT NULL,
    curfew_events    INTEGER NOT NULL,
    offline_events   INTEGER NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (plate, day)
);
CREATE INDEX IF NOT EXISTS vehicle_day_day ON vehicle_day(day);

CREATE TABLE IF NOT EXISTS wim_verdicts (   -- one row per distinct passage (replays upsert)
    passage_id  TEXT PRIMARY KEY,    -- deterministic: station|plate|window bucket (see models/overload.py)
    station_id  TEXT NOT NULL,
    plate       TEXT NOT NULL,
    ts          TEXT NOT NULL,
    day         TEXT NOT NULL,       -- YYYY-MM-DD Beijing
    action      TEXT NOT NULL,       -- none | warning | fine | review
    over_limit  INTEGER NOT NULL,
    excess_kg   REAL NOT NULL,
    fine_yuan   INTEGER NOT NULL,
    review_reason TEXT,
    case_id     TEXT,                -- set when action != none
    verdict     TEXT NOT NULL        -- full verdict JSON
);
CREATE INDEX IF NOT EXISTS wim_verdicts_day ON wim_verdicts(day, station_id);

CREATE TABLE IF NOT EXISTS cases (
    case_id       TEXT PRIMARY KEY,  -- deterministic from the passage: replays never create a second case
    plate         TEXT NOT NULL,
    station_id    TEXT NOT NULL,
    ts            TEXT NOT NULL,
    day           TEXT NOT NULL,
    action        TEXT NOT NULL,     -- warning | fine | review
    violation     INTEGER NOT NULL,  -- 1 when it counts for 一超四罚 (over limit after tolerance)
    excess_kg     REAL NOT NULL,
    fine_yuan     INTEGER NOT NULL,
    enterprise_id TEXT,
    driver_id     TEXT,
    source_site_id TEXT,
    status        TEXT NOT NULL,     -- detected | reviewed | confirmed | dismissed | notified
    evidence_path TEXT,
    manifest      TEXT NOT NULL      -- manifest JSON
);
CREATE INDEX IF NOT EXISTS cases_plate ON cases(plate, ts);
CREATE INDEX IF NOT EXISTS cases_driver ON cases(driver_id, ts);
CREATE INDEX IF NOT EXISTS cases_enterprise ON cases(enterprise_id, ts);

CREATE TABLE IF NOT EXISTS case_actions (   -- audit trail (feeds the report's case funnel)
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id   TEXT NOT NULL,
    action    TEXT NOT NULL,         -- review | confirm | dismiss | notify
    operator  TEXT NOT NULL,
    reason    TEXT,
    ts        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS case_actions_case ON case_actions(case_id);

CREATE TABLE IF NOT EXISTS ping_state (  -- per-partition snapshot of the vectorised ping state
    topic      TEXT NOT NULL,
    partition  INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,         -- first source offset NOT covered by this snapshot
    epoch      TEXT NOT NULL DEFAULT '',  -- broker incarnation the offsets refer to (streams/broker.py)
    state      BLOB NOT NULL,
    saved_at   TEXT NOT NULL,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE IF NOT EXISTS track_points (     -- sampled truck points for cargo-source tracing
    plate     TEXT NOT NULL,
    ts_ms     INTEGER NOT NULL,
    lat       REAL NOT NULL,
    lon       REAL NOT NULL,
    speed_kmh REAL NOT NULL,
    PRIMARY KEY (plate, ts_ms)
) WITHOUT ROWID;                                -- clustered by (plate, time): cheaper inserts and look-backs
CREATE INDEX IF NOT EXISTS track_points_ts ON track_points(ts_ms);
"""),
    Migration(2, "ping_state.saved_by: the worker (host:pid) that wrote each partition snapshot", """
ALTER TABLE ping_state ADD COLUMN saved_by TEXT NOT NULL DEFAULT '';
"""),
    Migration(3, "vehicle_day.late_from_closed: pings of a closed month counted on the day they were received", """
ALTER TABLE vehicle_day ADD COLUMN late_from_closed INTEGER NOT NULL DEFAULT 0;
"""),
]

LATEST = MIGRATIONS[-1].version
_LOCK_KEY = 0x526F6164   # advisory lock id for schema changes on PostgreSQL ("Road")

_VERSION_DDL = """CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  TEXT NOT NULL
)"""


def current_version(conn: ArchiveConnection) -> int:
    """0 for an empty archive or one made by the first release (no ``schema_version`` table)."""
    if "schema_version" not in conn.tables():
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def applied(conn: ArchiveConnection) -> list[dict]:
    if "schema_version" not in conn.tables():
        return []
    return [dict(r) for r in conn.execute(
        "SELECT version, description, applied_at FROM schema_version ORDER BY version")]


def _lock(conn: ArchiveConnection) -> None:
    if conn.backend == POSTGRESQL:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))


def migrate(conn: ArchiveConnection, extra_ddl: list[str] = ()) -> list[int]:
    """Apply the pending migrations, then ``extra_ddl`` (tables still registered with ``register_schema``;
    idempotent ``IF NOT EXISTS`` statements). Returns the versions applied now."""
    done: list[int] = []
    with conn.transaction():
        _lock(conn)
        conn.execute(ddl_for(conn.backend, _VERSION_DDL))
        have = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
        if have > LATEST:
            raise RuntimeError(f"the archive has schema version {have}, newer than this roadwatch ({LATEST}): "
                               "upgrade roadwatch before using this archive")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for m in MIGRATIONS:
            if m.version <= have:
                continue
            for stmt in split_statements(m.sql):
                conn.execute(ddl_for(conn.backend, stmt))
            conn.execute("INSERT INTO schema_version(version, description, applied_at) VALUES (?,?,?)",
                         (m.version, m.description, now))
            done.append(m.version)
        for ddl in extra_ddl:
            for stmt in split_statements(ddl):
                conn.execute(ddl_for(conn.backend, stmt))
    if hasattr(conn, "forget_catalog"):
        conn.forget_catalog()
    return done
