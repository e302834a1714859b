"""Archive-backed state for the WIM path: verdicts, cases, the review workflow, and the sources ``assess``
reads (counters, passages, driver cards, truck tracks).

Everything is keyed by the deterministic ids of models/overload.py and written with upsert / insert-or-
ignore, so a replayed feed or a restarted worker re-writes the same rows and never opens a second case;
the 一超四罚 counters are SQL over the ``cases`` table, hence restart-proof too.

Case workflow (``CaseStore.act``)::

    detected ──review──▶ reviewed ──confirm──▶ confirmed ──notify──▶ notified
                                   └─dismiss(reason)─▶ dismissed
"""
from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson

from roadwatch.models.config import Config
from roadwatch.models.evidence import SigningKey, load_signing_key, write_package
from roadwatch.models.records import WimReading, format_ts, iso_to_epoch_ms, parse_ts
from roadwatch.streams.archive import register_schema

register_schema("""
CREATE INDEX IF NOT EXISTS cases_source_site ON cases(source_site_id, ts);

CREATE TABLE IF NOT EXISTS wim_passages (     -- passage de-duplication (models/overload.py step 1)
    passage_id  TEXT PRIMARY KEY,
    station_id  TEXT NOT NULL,
    plate       TEXT NOT NULL,
    first_ts_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS wim_passages_key ON wim_passages(station_id, plate, first_ts_ms);

CREATE TABLE IF NOT EXISTS driver_cards (     -- JT/T 808 0x0702 IC card events
    plate     TEXT NOT NULL,
    ts_ms     INTEGER NOT NULL,
    ts        TEXT NOT NULL,
    event     TEXT NOT NULL,                  -- login | logout
    driver_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (plate, ts_ms, event)
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
""")

# action → {from status: to status}
TRANSITIONS = {
    "review": {"detected": "reviewed"},
    "confirm": {"reviewed": "confirmed"},
    "dismiss": {"reviewed": "dismissed"},
    "notify": {"confirmed": "notified"},
}


def _iso(ms: int) -> str:
    return format_ts(datetime.fromtimestamp(ms / 1000, tz=timezone.utc))


class _Tx:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, *_):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


class CaseActionError(ValueError):
    """A refused case action. ``code``: not_found | bad_action | bad_transition | reason_required | bad_input
    (the console maps it to an HTTP answer)."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


MAX_REASON = 500


class CaseStore:
    """Verdicts and cases in the archive. Also the ``PassageSource`` for ``assess`` (``passages=store``)."""

    def __init__(self, conn: sqlite3.Connection, cfg: Config | None = None):
        self.conn = conn
        self.cfg = cfg or Config()
        self._passages = ArchivePassages(conn)
        self._keys: dict[str, SigningKey] = {}

    # PassageSource
    def find_passage(self, station_id, plate, ts_ms, window_ms):
        return self._passages.find_passage(station_id, plate, ts_ms, window_ms)

    def note_passage(self, station_id, plate, first_ts_ms, passage_id):
        self._passages.note_passage(station_id, plate, first_ts_ms, passage_id)

    def _key(self, data_dir: Path) -> SigningKey:
        k = str(Path(data_dir).resolve())
        if k not in self._keys:
            self._keys[k] = load_signing_key(data_dir)
        return self._keys[k]

    def record(self, verdict: dict, *, reading: WimReading | None = None, evidence_dir: str | Path | None = None,
               data_dir: str | Path | None = None, chain_id: str = "default",
               evidence_path: str | None = None, manifest: dict | None = None) -> bool:
        """Upsert the passage's verdict; insert its case once. True when a new case was created.

        With ``reading`` and ``evidence_dir`` the case's evidence package is written first (a no-op when it
        exists), signed with the key of ``data_dir`` (models/evidence.py), and the signed manifest is
        stored with the case. Duplicate readings (``duplicate_of``) are not stored: their passage is."""
        if verdict.get("duplicate_of"):
            return False
        if verdict.get("case_id") and reading is not None and evidence_dir is not None:
            pkg = write_package(evidence_dir, verdict, reading, chain_id=chain_id,
                                key=self._key(Path(data_dir) if data_dir else Path(evidence_dir).parent))
            evidence_path = str(pkg)
            manifest = orjson.loads((pkg / "manifest.json").read_bytes())
        vjson = orjson.dumps(verdict).decode()
        day = verdict["ts"][:10]
        with _Tx(self.conn) as c:
            c.execute("""INSERT INTO wim_verdicts (passage_id, station_id, plate, ts, day, action, over_limit,
                             excess_kg, fine_yuan, review_reason, case_id, verdict)
                         VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
                         ON CONFLICT(passage_id) DO UPDATE SET action=excluded.action,
                             over_limit=excluded.over_limit, excess_kg=excluded.excess_kg,
                             fine_yuan=excluded.fine_yuan, review_reason=excluded.review_reason,
                             case_id=excluded.case_id, verdict=excluded.verdict""",
                      (verdict["passage_id"], verdict["station_id"], verdict["plate"], verdict["ts"], day,
                       verdict["action"], int(bool(verdict["over_limit"])), float(verdict["excess_kg"]),
                       int(verdict["fine_yuan"]), verdict.get("review_reason"), verdict.get("case_id"), vjson))
            c.execute("INSERT OR IGNORE INTO wim_passages VALUES (?,?,?,?)",
                      (verdict["passage_id"], verdict["station_id"], verdict["plate"], int(verdict["ts_ms"])))
            if not verdict.get("case_id"):
                return False
            cur = c.execute("""INSERT OR IGNORE INTO cases (case_id, plate, station_id, ts, day, action, violation,
                                   excess_kg, fine_yuan, enterprise_id, driver_id, source_site_id, status,
                                   evidence_path, manifest)
                               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'detected',?,?)""",
                            (verdict["case_id"], verdict["plate"], verdict["station_id"], verdict["ts"], day,
                             verdict["action"], int(bool(verdict.get("violation"))), float(verdict["excess_kg"]),
                             int(verdict["fine_yuan"]), verdict.get("enterprise_id"),
                             (verdict.get("driver") or {}).get("id"),
                             (verdict.get("source_site") or {}).get("site_id"), evidence_path,
                             orjson.dumps(manifest if manifest is not None else verdict).decode()))
            return cur.rowcount == 1

    def set_evidence(self, case_id: str, evidence_path: str, manifest: dict) -> None:
        self.conn.execute("UPDATE cases SET evidence_path=?, manifest=? WHERE case_id=?",
                          (evidence_path, orjson.dumps(manifest).decode(), case_id))

    def get(self, case_id: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM cases WHERE case_id=?", (case_id,)).fetchone()
        return dict(row) if row else None

    def actions(self, case_id: str) -> list[dict]:
        return [dict(r) for r in self.conn.execute(
            "SELECT case_id, action, operator, reason, ts FROM case_actions WHERE case_id=? ORDER BY id", (case_id,))]

    def act(self, case_id: str, action: str, operator: str, reason: str | None = None, *,
            now: datetime | None = None) -> dict:
        """Move a case through the workflow and record it in ``case_actions``. Invalid → ValueError.

        Confirming a case opened for review (e.g. low plate confidence) makes it count: its action becomes
        the Art. 43 outcome computed at detection and it joins the 一超四罚 counters."""
        if action not in TRANSITIONS:
            raise CaseActionError("bad_action", f"unknown action {action!r}; one of {', '.join(TRANSITIONS)}")
        if not isinstance(operator, str) or not operator.strip():
            raise CaseActionError("bad_input", "operator is required")
        reason = (reason or "").strip() or None
        if action == "dismiss" and reason is None:
            raise CaseActionError("reason_required", "dismiss needs a reason")
        if reason is not None and len(reason) > MAX_REASON:
            raise CaseActionError("bad_input", f"reason longer than {MAX_REASON} characters")
        now = now or datetime.now(timezone.utc)
        with _Tx(self.conn) as c:
            row = c.execute("SELECT status, action, manifest FROM cases WHERE case_id=?", (case_id,)).fetchone()
            if row is None:
                raise CaseActionError("not_found", f"no case {case_id!r}")
            new = TRANSITIONS[action].get(row["status"])
            if new is None:
                raise CaseActionError("bad_transition", f"cannot {action} a case that is {row['status']}")
            sets, args = ["status=?"], [new]
            if action == "confirm" and row["action"] == "review":
                rp = (orjson.loads(row["manifest"]).get("road_penalty")
                      or (orjson.loads(row["manifest"]).get("penalties") or {}).get("road_administration") or {})
                if rp.get("action") in ("warning", "fine"):
                    sets += ["action=?", "fine_yuan=?", "violation=1"]
                    args += [rp["action"], int(rp.get("fine_yuan", 0))]
            if action == "dismiss":
                sets.append("violation=0")
            c.execute(f"UPDATE cases SET {', '.join(sets)} WHERE case_id=?", (*args, case_id))
            c.execute("INSERT INTO case_actions (case_id, action, operator, reason, ts) VALUES (?,?,?,?,?)",
                      (case_id, action, operator, reason, format_ts(now)))
        out = {"case_id": case_id, "status": new}
        if new == "confirmed":
            out["notify_due"] = format_ts(now + timedelta(days=int(self.cfg["notify.days_after_review"])))
        return out


class ArchiveCounters:
    """``CounterSource`` over ``cases``: violations not dismissed, ``since < ts ≤ until`` (second resolution:
    case timestamps are stored as Beijing ISO-8601 seconds)."""

    _BASE = "FROM cases WHERE violation=1 AND status!='dismissed' AND ts>? AND ts<=?"

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def _count(self, col: str, value: str, since_ms: int, until_ms: int, exclude: str | None) -> int:
        return self.conn.execute(f"SELECT COUNT(*) {self._BASE} AND {col}=? AND case_id!=?",
                                 (_iso(since_ms), _iso(until_ms), value, exclude or "")).fetchone()[0]

    def vehicle_violations(self, plate, since_ms, until_ms, exclude_case_id):
        return self._count("plate", plate, since_ms, until_ms, exclude_case_id)

    def driver_violations(self, driver_id, since_ms, until_ms, exclude_case_id):
        return self._count("driver_id", driver_id, since_ms, until_ms, exclude_case_id)

    def source_site_violations(self, site_id, since_ms, until_ms, exclude_case_id):
        return self._count("source_site_id", site_id, since_ms, until_ms, exclude_case_id)

    def enterprise_violating_vehicles(self, enterprise_id, since_ms, until_ms, exclude_plate):
        return self.conn.execute(f"SELECT COUNT(DISTINCT plate) {self._BASE} AND enterprise_id=? AND plate!=?",
                                 (_iso(since_ms), _iso(until_ms), enterprise_id, exclude_plate or "")).fetchone()[0]


class ArchivePassages:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def find_passage(self, station_id, plate, ts_ms, window_ms):
        row = self.conn.execute(
            """SELECT passage_id, first_ts_ms FROM wim_passages WHERE station_id=? AND plate=?
               AND first_ts_ms BETWEEN ? AND ? ORDER BY ABS(first_ts_ms - ?), first_ts_ms LIMIT 1""",
            (station_id, plate, ts_ms - window_ms, ts_ms + window_ms, ts_ms)).fetchone()
        return (row[0], row[1]) if row else None

    def note_passage(self, station_id, plate, first_ts_ms, passage_id):
        self.conn.execute("INSERT OR IGNORE INTO wim_passages VALUES (?,?,?,?)",
                          (passage_id, station_id, plate, first_ts_ms))


class ArchiveDrivers:
    """``DriverSource`` over ``driver_cards``: the latest card event at or before ts decides."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def record_driver_event(self, plate: str, ts: str, event: str, driver_id: str = "") -> None:
        if event not in ("login", "logout"):
            raise ValueError(f"event must be login or logout, got {event!r}")
        t = parse_ts(ts)
        self.conn.execute("INSERT OR REPLACE INTO driver_cards VALUES (?,?,?,?,?)",
                          (plate, iso_to_epoch_ms(ts), format_ts(t), event, driver_id or ""))

    def active_driver(self, plate, ts_ms):
        row = self.conn.execute("""SELECT event, driver_id FROM driver_cards WHERE plate=? AND ts_ms<=?
                                   ORDER BY ts_ms DESC, event='login' LIMIT 1""", (plate, ts_ms)).fetchone()
        if row is None or row[0] != "login" or not row[1]:
            return None
        return row[1]


class ArchiveTracks:
    """``TrackSource`` over ``track_points`` (written by the GPS path)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def record_points(self, plate: str, ts_ms, lat, lon, speed_kmh) -> None:
        rows = [(plate, int(t), float(a), float(o), float(s)) for t, a, o, s in zip(ts_ms, lat, lon, speed_kmh)]
        with _Tx(self.conn) as c:
            c.executemany("INSERT OR REPLACE INTO track_points VALUES (?,?,?,?,?)", rows)

    def points(self, plate, since_ms, until_ms):
        rows = self.conn.execute("""SELECT ts_ms, lat, lon, speed_kmh FROM track_points
                                    WHERE plate=? AND ts_ms BETWEEN ? AND ? ORDER BY ts_ms""",
                                 (plate, int(since_ms), int(until_ms))).fetchall()
        if not rows:
            e = np.empty(0)
            return np.empty(0, dtype=np.int64), e, e.copy(), e.copy()
        a = np.array([tuple(r) for r in rows], dtype=float)
        return a[:, 0].astype(np.int64), a[:, 1], a[:, 2], a[:, 3]

    def prune_track_points(self, before_ms: int) -> int:
        return self.conn.execute("DELETE FROM track_points WHERE ts_ms < ?", (int(before_ms),)).rowcount


ArchiveTrack = ArchiveTracks   # the name the worker (streams/wim.py) imports
