"""The durable archive (SQLite by default): what outlives the worker and the broker.

The embedded broker keeps everything in memory and its changelog recovery can miss the newest updates
(see streams/broker.py), so every output with legal weight is also written here with a
deterministic primary key and upsert semantics: a replay writes the same rows again, never new ones.

Each module that owns tables declares its DDL with ``register_schema`` next to the code that writes them;
``open_archive`` applies all of them (``CREATE … IF NOT EXISTS``). WAL mode lets several worker processes
on one host share the file; docs/operations.md explains using a server database in production.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

_SCHEMAS: list[str] = []


def register_schema(ddl: str) -> None:
    if ddl not in _SCHEMAS:
        _SCHEMAS.append(ddl)


# Tables shared by several parts of the system.
register_schema("""
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
""")

_local = threading.local()


def open_archive(path: str | Path) -> sqlite3.Connection:
    """A connection with every registered schema applied. One connection per thread and path."""
    path = Path(path)
    key = str(path.resolve())
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    conn = conns.get(key)
    if conn is not None:
        _apply(conn)
        return conn
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.row_factory = sqlite3.Row
    _apply(conn)
    conns[key] = conn
    return conn


def _apply(conn: sqlite3.Connection) -> None:
    n = _applied_count.get(id(conn), 0)
    if n == len(_SCHEMAS):
        return
    for ddl in _SCHEMAS[n:]:
        conn.executescript(ddl)
    _applied_count[id(conn)] = len(_SCHEMAS)


_applied_count: dict[int, int] = {}


def close_all() -> None:
    for conn in getattr(_local, "conns", {}).values():
        _applied_count.pop(id(conn), None)
        conn.close()
    _local.conns = {}
