"""The archive's schema: versioned migrations, applied in order, recorded in ``schema_version``.

Each migration is written once, with the few things the dialects spell differently named in braces
(``{INTEGER}``, ``{REAL}``, ``{BLOB}``, ``{SERIAL_PK}``, ``{WITHOUT_ROWID}``); ``backend.DIALECTS`` says what each
becomes on SQLite and on PostgreSQL (``backend.ddl_for``).
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
    lat        {REAL},
    lon        {REAL},
    late       {INTEGER} NOT NULL DEFAULT 0,
    details    TEXT NOT NULL,         -- JSON
    day        TEXT NOT NULL,         -- YYYY-MM-DD (Beijing) of start_ts
    emitted_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_day ON alerts(day, type);
CREATE INDEX IF NOT EXISTS alerts_plate ON alerts(plate, start_ts);

CREATE TABLE IF NOT EXISTS vehicle_day (
    plate            TEXT NOT NULL,
    day              TEXT NOT NULL,   -- YYYY-MM-DD, Beijing time
    pings            {INTEGER} NOT NULL,
    qualified        {INTEGER} NOT NULL,
    km_total         {REAL} NOT NULL,
    km_incomplete    {REAL} NOT NULL,
    drift_points     {INTEGER} NOT NULL,
    overspeed_count  {INTEGER} NOT NULL,
    fatigue_s        {REAL} NOT NULL,
    curfew_events    {INTEGER} NOT NULL,
    offline_events   {INTEGER} NOT NULL,
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
    over_limit  {INTEGER} NOT NULL,
    excess_kg   {REAL} NOT NULL,
    fine_yuan   {INTEGER} NOT NULL,
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
    violation     {INTEGER} NOT NULL,  -- 1 when it counts for 一超四罚 (over limit after tolerance)
    excess_kg     {REAL} NOT NULL,
    fine_yuan     {INTEGER} NOT NULL,
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
    id        {SERIAL_PK},
    case_id   TEXT NOT NULL,
    action    TEXT NOT NULL,         -- review | confirm | dismiss | notify
    operator  TEXT NOT NULL,
    reason    TEXT,
    ts        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS case_actions_case ON case_actions(case_id);

CREATE TABLE IF NOT EXISTS ping_state (  -- per-partition snapshot of the vectorised ping state
    topic      TEXT NOT NULL,
    partition  {INTEGER} NOT NULL,
    next_offset {INTEGER} NOT NULL,         -- first source offset NOT covered by this snapshot
    epoch      TEXT NOT NULL DEFAULT '',  -- broker incarnation the offsets refer to (streams/broker.py)
    state      {BLOB} NOT NULL,
    saved_at   TEXT NOT NULL,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE IF NOT EXISTS track_points (     -- sampled truck points for cargo-source tracing
    plate     TEXT NOT NULL,
    ts_ms     {INTEGER} NOT NULL,
    lat       {REAL} NOT NULL,
    lon       {REAL} NOT NULL,
    speed_kmh {REAL} NOT NULL,
    PRIMARY KEY (plate, ts_ms)
){WITHOUT_ROWID};                                -- clustered by (plate, time): cheaper inserts and look-backs
CREATE INDEX IF NOT EXISTS track_points_ts ON track_points(ts_ms);
"""),
    Migration(2, "ping_state.saved_by: the worker (host:pid) that wrote each partition snapshot", """
ALTER TABLE ping_state ADD COLUMN saved_by TEXT NOT NULL DEFAULT '';
"""),
    Migration(3, "intercept tasks (布控): tasks, the cases they cover, their append-only acts", """
CREATE TABLE IF NOT EXISTS intercept_tasks (      -- one per truck and opening case (models/intercept.py)
    task_id     TEXT PRIMARY KEY,                 -- deterministic: plate + the case that opened it
    plate       TEXT NOT NULL,
    station_id  TEXT NOT NULL,                    -- the detecting station of the opening passage
    detected_ms {INTEGER} NOT NULL,                 -- the opening passage (event time)
    month       TEXT NOT NULL,                    -- YYYY-MM (Beijing) of detected_ms: the rates' month
    expires_ms  {INTEGER} NOT NULL,
    revision    {INTEGER} NOT NULL,                 -- passages folded in; a replayed older revision never wins
    status      TEXT NOT NULL,                    -- pending | intercepted | not_found | released (expiry derived)
    task        TEXT NOT NULL,                    -- the task JSON as published on intercept-tasks
    updated_at  TEXT NOT NULL,
    outcome_published {INTEGER} NOT NULL DEFAULT 0  -- 1 once the task with its outcome is on intercept-tasks
);
CREATE INDEX IF NOT EXISTS intercept_tasks_plate ON intercept_tasks(plate, detected_ms);
CREATE INDEX IF NOT EXISTS intercept_tasks_month ON intercept_tasks(month, station_id);

CREATE TABLE IF NOT EXISTS intercept_task_cases ( -- every case a task covers: a passage joins one task once
    case_id  TEXT PRIMARY KEY,
    task_id  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS intercept_acts (       -- the task's history: append-only
    act_id     TEXT PRIMARY KEY,                  -- <task>:create | <task>:update:<case> | <task>:outcome
    task_id    TEXT NOT NULL,
    seq        {INTEGER} NOT NULL,
    action     TEXT NOT NULL,                     -- create | update | intercepted | not_found | released
    by_officer TEXT NOT NULL,
    at         TEXT NOT NULL,                     -- event time of the passage / time of the outcome
    entered_at TEXT NOT NULL,
    reason     TEXT,
    details    TEXT                               -- JSON
);
CREATE UNIQUE INDEX IF NOT EXISTS intercept_acts_seq ON intercept_acts(task_id, seq);
"""),
    # Tables that the first releases declared in the modules that used them (created after the migrations,
    # IF NOT EXISTS): an archive that has them keeps them as they are.
    Migration(4, "the case workflow: passages, driver cards, readings, pending cases, case history and state, "
                 "Art. 66 proposals", """
CREATE INDEX IF NOT EXISTS cases_source_site ON cases(source_site_id, ts);

CREATE TABLE IF NOT EXISTS wim_passages (     -- passage de-duplication (models/overload.py step 1)
    passage_id  TEXT PRIMARY KEY,
    station_id  TEXT NOT NULL,
    plate       TEXT NOT NULL,
    first_ts_ms {INTEGER} NOT NULL
);
CREATE INDEX IF NOT EXISTS wim_passages_key ON wim_passages(station_id, plate, first_ts_ms);

CREATE TABLE IF NOT EXISTS driver_cards (     -- JT/T 808 0x0702 IC card events
    plate     TEXT NOT NULL,
    ts_ms     {INTEGER} NOT NULL,
    ts        TEXT NOT NULL,
    event     TEXT NOT NULL,                  -- login | logout
    driver_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (plate, ts_ms, event)
);

CREATE TABLE IF NOT EXISTS wim_readings (     -- every reading as received: append-only, never overwritten
    reading_key  TEXT PRIMARY KEY,             -- sha256 of the parsed reading (a replay is the same row)
    identity     TEXT NOT NULL,                -- station|reading_id, or station|plate|epoch-ms without an id
    passage_id   TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    reading      TEXT NOT NULL,                -- JSON
    verdict      TEXT NOT NULL,                -- JSON: the verdict this reading gave
    conflict_of  TEXT                          -- reading_key of the first reading with this identity
);
CREATE INDEX IF NOT EXISTS wim_readings_identity ON wim_readings(identity);

CREATE TABLE IF NOT EXISTS case_pending (     -- cases whose track / card data (other partitions) may come later
    case_id     TEXT PRIMARY KEY,
    plate       TEXT NOT NULL,
    ts_ms       {INTEGER} NOT NULL,             -- the passage
    detected_ms {INTEGER} NOT NULL,             -- wall clock at detection (timeouts)
    state       TEXT NOT NULL                 -- waiting | provisional (timed out, still open to late data)
);

CREATE TABLE IF NOT EXISTS case_acts (        -- the case's history: append-only, one row per act
    act_id     TEXT PRIMARY KEY,              -- <case_id>:<action> (each transition happens once)
    case_id    TEXT NOT NULL,
    seq        {INTEGER} NOT NULL,              -- order within the case
    action     TEXT NOT NULL,                 -- detect | review | confirm | … | withdraw | amend
    by_officer TEXT NOT NULL,
    at         TEXT NOT NULL,                 -- legal date-time of the act (ISO-8601, Beijing)
    entered_at TEXT NOT NULL,
    reason     TEXT,
    driver_id  TEXT,                          -- a driver identified by an officer (with this act)
    details    TEXT                           -- JSON: amended facts
);
CREATE UNIQUE INDEX IF NOT EXISTS case_acts_seq ON case_acts(case_id, seq);

CREATE TABLE IF NOT EXISTS case_state (       -- derived from case_acts + the case; rewritten on every act
    case_id        TEXT PRIMARY KEY,
    status         TEXT NOT NULL,
    decided_on     TEXT,                      -- legal date of the decision
    driver_id      TEXT,
    driver_source  TEXT NOT NULL,             -- ic_card | officer | registry (presumed) | unknown
    goods_vehicles {INTEGER},                   -- the enterprise's registered goods vehicles, from the case
    updated_at     TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS escalation_proposals (   -- Art. 66 proposals (derived; own workflow)
    proposal_id  TEXT PRIMARY KEY,
    target       TEXT NOT NULL,               -- vehicle | driver | enterprise
    subject      TEXT NOT NULL,
    sanction     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    basis        TEXT NOT NULL,               -- JSON: the escalation (count, window, case_ids) it rests on
    flag         TEXT                         -- set when its basis fell away: needs review
);
CREATE INDEX IF NOT EXISTS escalation_proposals_subject ON escalation_proposals(target, subject);

CREATE TABLE IF NOT EXISTS proposal_acts (    -- the proposal's history: append-only
    act_id      TEXT PRIMARY KEY,
    proposal_id TEXT NOT NULL,
    seq         {INTEGER} NOT NULL,
    action      TEXT NOT NULL,                -- propose | legal_review | notify | decide | withdraw | basis | flag
    by_officer  TEXT NOT NULL,
    at          TEXT NOT NULL,
    entered_at  TEXT NOT NULL,
    reason      TEXT,
    details     TEXT
);
"""),
    Migration(5, "the console, terminals and platforms: console users and sessions, alert acknowledgements and "
                 "handling notes, JT/T 808 terminal bindings, JT/T 809 link sessions, events, inspections, "
                 "forwarded vehicles", """
-- console users and sessions
CREATE TABLE IF NOT EXISTS users (
    username   TEXT PRIMARY KEY,
    role       TEXT NOT NULL,          -- viewer | operator | admin
    pw_hash    TEXT NOT NULL,          -- argon2id encoded hash
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,       -- sha256 hex of the cookie token
    username   TEXT NOT NULL,
    expires_at {REAL} NOT NULL,          -- unix seconds
    csrf       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(username);
-- alert acknowledgements
CREATE TABLE IF NOT EXISTS alert_acks (   -- operator acknowledgements of live alerts (console)
    alert_id  TEXT PRIMARY KEY,
    operator  TEXT NOT NULL,
    note      TEXT,
    ts        TEXT NOT NULL
);
-- alert handling notes
CREATE TABLE IF NOT EXISTS alert_notes (   -- 报警处理意见: every note an operator wrote on an alert
    id        {SERIAL_PK},
    alert_id  TEXT NOT NULL,
    operator  TEXT NOT NULL,
    note      TEXT NOT NULL,
    ts        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_notes_alert ON alert_notes(alert_id, id);
-- JT/T 808 terminal bindings
CREATE TABLE IF NOT EXISTS terminal_auth (
    terminal_key   TEXT PRIMARY KEY,     -- BCD terminal phone without leading zeros (codec.terminal_key)
    plate          TEXT NOT NULL,
    plate_color    {INTEGER} NOT NULL,
    salt           TEXT NOT NULL,        -- hex, per code
    code_hash      TEXT NOT NULL,        -- hex SHA-256(salt || auth code)
    issued_at      TEXT NOT NULL,        -- ISO-8601 UTC
    revoked_at     TEXT,                 -- NULL while the binding is active
    revoked_reason TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS terminal_auth_vehicle ON terminal_auth(plate, plate_color)
    WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS terminal_auth_revoked ON terminal_auth(revoked_at);
-- JT/T 809 platform link sessions, events, inspections, forwarded vehicles
CREATE TABLE IF NOT EXISTS platform_sessions (
    session_id  TEXT PRIMARY KEY,
    center_id   {INTEGER} NOT NULL,
    start_ts    {REAL} NOT NULL,
    last_seen   {REAL} NOT NULL,        -- last frame received on the main link
    end_ts      {REAL},                 -- NULL while the link is up
    end_reason  TEXT,                 -- logout | lost | idle | server_stop | server_restart | replaced
    protocol    {INTEGER} NOT NULL,
    peer        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS platform_sessions_center ON platform_sessions(center_id, start_ts);

CREATE TABLE IF NOT EXISTS platform_events (
    event_id    TEXT PRIMARY KEY,
    center_id   {INTEGER},
    ts          {REAL} NOT NULL,
    event       TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS platform_events_center ON platform_events(center_id, ts);

CREATE TABLE IF NOT EXISTS platform_inspections (
    inspection_id  TEXT PRIMARY KEY,
    center_id      {INTEGER} NOT NULL,
    object_type    {INTEGER} NOT NULL,  -- 1 the platform, 2 one enterprise, 3 all its enterprises
    object_id      TEXT NOT NULL,
    info_id        {INTEGER} NOT NULL,  -- unique per platform; 2011 answers quote it
    question       TEXT NOT NULL,
    answer_minutes {INTEGER} NOT NULL,
    requested_ts   {REAL} NOT NULL,
    requested_by   TEXT NOT NULL,
    sent_ts        {REAL},              -- NULL while queued
    msg_sn         {INTEGER},           -- MSG_SN of the 0x9300 frame; 2019 answers quote it
    delivered      {INTEGER} NOT NULL DEFAULT 0,
    deadline_ts    {REAL},
    answered_ts    {REAL},              -- first answer
    answer         TEXT
);
CREATE INDEX IF NOT EXISTS platform_inspections_center ON platform_inspections(center_id, sent_ts);

CREATE TABLE IF NOT EXISTS platform_inspection_answers (
    answer_id      TEXT PRIMARY KEY,
    inspection_id  TEXT,              -- NULL when the answer names no inspection we sent
    center_id      {INTEGER} NOT NULL,
    ts             {REAL} NOT NULL,
    info_id        {INTEGER},
    source_msg_sn  {INTEGER},
    responder      TEXT NOT NULL,
    answer         TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS platform_vehicles (
    plate       TEXT PRIMARY KEY,
    plate_color {INTEGER} NOT NULL,
    center_id   {INTEGER} NOT NULL,
    last_seen   {REAL} NOT NULL
);
"""),
    Migration(6, "evidence packages in the archive: content-addressed files of every case's package, the hash "
                 "chains and their signed heads", """
CREATE TABLE IF NOT EXISTS evidence_blobs (       -- each distinct file content once (append-only)
    sha256 TEXT PRIMARY KEY,
    size   {INTEGER} NOT NULL,
    data   {BLOB} NOT NULL
);
CREATE TABLE IF NOT EXISTS case_evidence_files (  -- which file of which case's package has which content
    case_id   TEXT NOT NULL,
    path      TEXT NOT NULL,                      -- relative to the package: manifest.json, entries/0001-act.json …
    sha256    TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    PRIMARY KEY (case_id, path)
);
CREATE TABLE IF NOT EXISTS evidence_chain_links ( -- the hash chains the packages are linked on (append-only)
    chain_id  TEXT NOT NULL,
    root      TEXT NOT NULL,                      -- link_sha256 of the chain's first link: one writer's chain
    seq       {INTEGER} NOT NULL,
    link      TEXT NOT NULL,                      -- the chain file's line, as written
    PRIMARY KEY (chain_id, root, seq)
);
CREATE TABLE IF NOT EXISTS evidence_chain_heads ( -- each chain's newest signed head (count, last link)
    chain_id  TEXT NOT NULL,
    root      TEXT NOT NULL,
    count     {INTEGER} NOT NULL,
    head      TEXT NOT NULL,                      -- the head file, as written
    PRIMARY KEY (chain_id, root)
);
"""),
    Migration(7, "抄告 (62号令 Art. 44): notices to home agencies of closed cases, notices received from other agencies",
              """
CREATE TABLE IF NOT EXISTS outbound_notices (   -- one per closed case (streams/archive/notices.py)
    notice_id  TEXT PRIMARY KEY,
    case_id    TEXT NOT NULL UNIQUE,
    to_agency  TEXT,                 -- NULL: the vehicle's home agency is not known (flagged)
    closed_on  TEXT NOT NULL,        -- YYYY-MM-DD, legal date of the closure
    due_on     TEXT NOT NULL,        -- closure + notices.due_working_days working days
    created_at TEXT NOT NULL,
    notice     TEXT NOT NULL,        -- JSON (models/notices.py)
    sent_at    TEXT,                 -- when it left: on the agency-notices topic, or marked sent by an officer
    sent_via   TEXT,                 -- kafka | manual
    sent_by    TEXT
);
CREATE INDEX IF NOT EXISTS outbound_notices_due ON outbound_notices(sent_at, due_on);

CREATE TABLE IF NOT EXISTS inbound_notices (    -- accepted notices from other agencies (signature verified)
    notice_key    TEXT PRIMARY KEY,  -- <from_agency>:<notice_id>
    from_agency   TEXT NOT NULL,
    notice_id     TEXT NOT NULL,
    case_id       TEXT NOT NULL,
    plate         TEXT NOT NULL,
    enterprise_id TEXT,              -- our registry's enterprise of the vehicle when known, else the sender's
    driver_id     TEXT,              -- only when the sender identified the driver
    decided_on    TEXT NOT NULL,
    closed_on     TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    received_via  TEXT NOT NULL,     -- file | kafka
    notice        TEXT NOT NULL,     -- JSON
    envelope      TEXT NOT NULL      -- the signed envelope as received (JSON)
);
CREATE INDEX IF NOT EXISTS inbound_notices_plate ON inbound_notices(plate, decided_on);
CREATE INDEX IF NOT EXISTS inbound_notices_enterprise ON inbound_notices(enterprise_id, decided_on);
CREATE INDEX IF NOT EXISTS inbound_notices_driver ON inbound_notices(driver_id, decided_on);
"""),
    Migration(8, "vehicle_day.late_from_closed: pings of a closed month counted on the day they were received", """
ALTER TABLE vehicle_day ADD COLUMN late_from_closed {INTEGER} NOT NULL DEFAULT 0;
"""),
    Migration(9, "vehicle_stops: stop events of trucks (the engine's stops), searched for the cargo source site", """
CREATE TABLE IF NOT EXISTS vehicle_stops (    -- one row per ended stop; a late-data replay replaces a plate's newer ones
    plate     TEXT NOT NULL,
    start_ms  {INTEGER} NOT NULL,           -- first stopped fix
    end_ms    {INTEGER} NOT NULL,           -- last stopped fix
    lat       {REAL} NOT NULL,              -- where it stopped (first stopped fix)
    lon       {REAL} NOT NULL,
    closed_ms {INTEGER} NOT NULL,           -- the fix that ended it (what a replay re-derives)
    PRIMARY KEY (plate, start_ms)
){WITHOUT_ROWID};
CREATE INDEX IF NOT EXISTS vehicle_stops_end ON vehicle_stops(end_ms);
"""),
    Migration(10, "ping_state_segment: the held samples of a partition's replay window, appended per snapshot", """
CREATE TABLE IF NOT EXISTS ping_state_segment (   -- streams/archive/snapshots.py: restore = ping_state + these
    topic      TEXT NOT NULL,
    partition  {INTEGER} NOT NULL,
    seq        {INTEGER} NOT NULL,                -- 0: written by a full snapshot; then one per incremental one
    samples    {BLOB} NOT NULL,
    PRIMARY KEY (topic, partition, seq)
);
"""),
    Migration(11, "inbound_notices.received_by: the proven officer who imported a notice from a file", """
ALTER TABLE inbound_notices ADD COLUMN received_by TEXT;   -- NULL: received on the notices topic
"""),
    Migration(12, "covering indexes for the 一超四罚 counters of an enterprise and a source site", """
-- every new case counts its enterprise's violating vehicles and its source site's violations over a year
-- (models/overload.py counters): from these indexes alone, not one table row per case of the year
CREATE INDEX IF NOT EXISTS cases_enterprise_count ON cases(enterprise_id, ts, violation, status, plate);
CREATE INDEX IF NOT EXISTS cases_source_site_count ON cases(source_site_id, ts, violation, status, case_id);
"""),
    Migration(13, "drop the case indexes that migration 12's covering indexes begin with", """
-- (enterprise_id, ts) and (source_site_id, ts) are the first columns of the count indexes, which answer the
-- same searches: two index entries less to write for every new case
DROP INDEX IF EXISTS cases_enterprise;
DROP INDEX IF EXISTS cases_source_site;
"""),
    Migration(14, "wim_verdicts.reading_key: a passage's verdict text kept once, with the reading that gave it", """
-- set: this row's verdict is '' and its text is wim_readings.verdict of that reading (the same transaction
-- wrote both); NULL: the text is in this row (rows written before, and verdicts stored without a reading).
-- The full verdict of every passage: SELECT v.passage_id, COALESCE(r.verdict, v.verdict) FROM wim_verdicts v
--   LEFT JOIN wim_readings r ON r.reading_key = v.reading_key
ALTER TABLE wim_verdicts ADD COLUMN reading_key TEXT;
"""),
]

LATEST = MIGRATIONS[-1].version
_LOCK_KEY = 0x526F6164   # advisory lock id for schema changes on PostgreSQL ("Road")

_VERSION_DDL = """CREATE TABLE IF NOT EXISTS schema_version (
    version     {INTEGER} PRIMARY KEY,
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


def migrate(conn: ArchiveConnection) -> list[int]:
    """Apply the pending migrations. Returns the versions applied now."""
    done: list[int] = []
    with conn.transaction():
        _lock(conn)
        conn.execute(ddl_for(conn.backend, split_statements(_VERSION_DDL)[0]))
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
    if hasattr(conn, "forget_catalog"):
        conn.forget_catalog()
    return done
