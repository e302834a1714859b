-- The archive schema as the first release (0.1.0) created it: streams/archive.py plus the tables that
-- streams/cases.py, streams/web/auth.py and streams/web/console.py registered. No schema_version table.
-- tests/test_archive.py builds an old archive from it and checks the in-place upgrade.
CREATE TABLE alert_acks (   -- operator acknowledgements of live alerts (console)
    alert_id  TEXT PRIMARY KEY,
    operator  TEXT NOT NULL,
    note      TEXT,
    ts        TEXT NOT NULL
);
CREATE TABLE alerts (
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
CREATE TABLE case_actions (   -- audit trail (feeds the report's case funnel)
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id   TEXT NOT NULL,
    action    TEXT NOT NULL,         -- review | confirm | dismiss | notify
    operator  TEXT NOT NULL,
    reason    TEXT,
    ts        TEXT NOT NULL
);
CREATE TABLE cases (
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
CREATE TABLE driver_cards (     -- JT/T 808 0x0702 IC card events
    plate     TEXT NOT NULL,
    ts_ms     INTEGER NOT NULL,
    ts        TEXT NOT NULL,
    event     TEXT NOT NULL,                  -- login | logout
    driver_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (plate, ts_ms, event)
);
CREATE TABLE ping_state (  -- per-partition snapshot of the vectorised ping state
    topic      TEXT NOT NULL,
    partition  INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,         -- first source offset NOT covered by this snapshot
    epoch      TEXT NOT NULL DEFAULT '',  -- broker incarnation the offsets refer to (streams/broker.py)
    state      BLOB NOT NULL,
    saved_at   TEXT NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,       -- sha256 hex of the cookie token
    username   TEXT NOT NULL,
    expires_at REAL NOT NULL,          -- unix seconds
    csrf       TEXT NOT NULL
);
CREATE TABLE track_points (     -- sampled truck points for cargo-source tracing
    plate     TEXT NOT NULL,
    ts_ms     INTEGER NOT NULL,
    lat       REAL NOT NULL,
    lon       REAL NOT NULL,
    speed_kmh REAL NOT NULL,
    PRIMARY KEY (plate, ts_ms)
) WITHOUT ROWID;
CREATE TABLE users (
    username   TEXT PRIMARY KEY,
    role       TEXT NOT NULL,          -- viewer | operator | admin
    pw_hash    TEXT NOT NULL,          -- argon2id encoded hash
    created_at TEXT NOT NULL
);
CREATE TABLE vehicle_day (
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
CREATE TABLE wim_passages (     -- passage de-duplication (models/overload.py step 1)
    passage_id  TEXT PRIMARY KEY,
    station_id  TEXT NOT NULL,
    plate       TEXT NOT NULL,
    first_ts_ms INTEGER NOT NULL
);
CREATE TABLE wim_verdicts (   -- one row per distinct passage (replays upsert)
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
CREATE INDEX alerts_day ON alerts(day, type);
CREATE INDEX alerts_plate ON alerts(plate, start_ts);
CREATE INDEX case_actions_case ON case_actions(case_id);
CREATE INDEX cases_driver ON cases(driver_id, ts);
CREATE INDEX cases_enterprise ON cases(enterprise_id, ts);
CREATE INDEX cases_plate ON cases(plate, ts);
CREATE INDEX cases_source_site ON cases(source_site_id, ts);
CREATE INDEX sessions_user ON sessions(username);
CREATE INDEX track_points_ts ON track_points(ts_ms);
CREATE INDEX vehicle_day_day ON vehicle_day(day);
CREATE INDEX wim_passages_key ON wim_passages(station_id, plate, first_ts_ms);
CREATE INDEX wim_verdicts_day ON wim_verdicts(day, station_id);
