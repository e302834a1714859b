"""The WIM path's case store: verdicts, passages, readings, cases and their histories (``case_acts``,
``case_state``), cases waiting for late data, Art. 66 escalation proposals, driver cards and the counts
``assess`` reads. The workflow (what may happen, in which order) is ``streams/cases.py``; this module only
reads and writes rows.

Every insert is insert-or-ignore on a deterministic key, so a replay writes nothing new. Functions that take
part in a workflow step are called inside the caller's ``conn.transaction()``.
"""
from __future__ import annotations

import orjson

from .backend import ArchiveConnection

# --- verdicts, passages, readings -----------------------------------------------------------------------


_INSERT_VERDICT = """INSERT INTO wim_verdicts (passage_id, station_id, plate, ts, day, action, over_limit,
                          excess_kg, fine_yuan, review_reason, case_id, verdict, reading_key)
                      VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
                      ON CONFLICT(passage_id) DO NOTHING"""
_NOTE_PASSAGE = ("INSERT INTO wim_passages (passage_id, station_id, plate, first_ts_ms) VALUES (?,?,?,?) "
                 "ON CONFLICT DO NOTHING")
_INSERT_READING = """INSERT INTO wim_readings (reading_key, identity, passage_id, received_at, reading, verdict,
                         conflict_of) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"""


def verdict_row(v: dict, day: str, verdict_json: str, reading_key: str | None) -> tuple:
    """``v``'s row of ``wim_verdicts`` (``insert_verdicts``). With ``reading_key`` the verdict's text is that
    reading's ``wim_readings.verdict`` and ``verdict_json`` is '' (migration 14 in schema.py)."""
    return (v["passage_id"], v["station_id"], v["plate"], v["ts"], day, v["action"], int(bool(v["over_limit"])),
            float(v["excess_kg"]), int(v["fine_yuan"]), v.get("review_reason"), v.get("case_id"), verdict_json,
            reading_key)


def insert_verdicts(conn: ArchiveConnection, rows: list[tuple]) -> None:
    """``verdict_row`` rows, in order (the first row of a passage wins, as one insert each would)."""
    conn.executemany(_INSERT_VERDICT, rows)


def note_passage(conn: ArchiveConnection, passage_id: str, station_id: str, plate: str, first_ts_ms: int) -> None:
    conn.execute(_NOTE_PASSAGE, (passage_id, station_id, plate, int(first_ts_ms)))


def note_passages(conn: ArchiveConnection, rows: list[tuple]) -> None:
    """``(passage_id, station_id, plate, first_ts_ms)`` rows, in order."""
    conn.executemany(_NOTE_PASSAGE, rows)


def find_passage(conn: ArchiveConnection, station_id: str, plate: str, ts_ms: int, window_ms: int):
    """The stored passage of ``plate`` at ``station_id`` nearest to ``ts_ms`` within the window:
    ``(passage_id, first_ts_ms)`` or None."""
    row = conn.execute(
        """SELECT passage_id, first_ts_ms FROM wim_passages WHERE station_id=? AND plate=?
           AND first_ts_ms BETWEEN ? AND ? ORDER BY ABS(first_ts_ms - ?), first_ts_ms LIMIT 1""",
        (station_id, plate, ts_ms - window_ms, ts_ms + window_ms, ts_ms)).fetchone()
    return (row[0], row[1]) if row else None


def reading_seen(conn: ArchiveConnection, reading_key: str, identity: str):
    """One lookup for a reading about to be kept: its own row when it was received before (``seen`` 1, with
    ``conflict_of``), else the first non-conflicting reading with its identity (``seen`` 0, with its
    ``reading_key``, ``passage_id`` and ``verdict``), else None."""
    return conn.execute("""SELECT reading_key = ? AS seen, reading_key, conflict_of, passage_id, verdict
                           FROM wim_readings WHERE reading_key = ? OR (identity = ? AND conflict_of IS NULL)
                           ORDER BY reading_key = ? DESC, received_at, reading_key LIMIT 1""",
                        (reading_key, reading_key, identity, reading_key)).fetchone()


_IN_CHUNK = 400          # values per IN list: far below SQLite's oldest limit of 999 bound parameters


def passages_near(conn: ArchiveConnection, station_plates: dict[str, list[str]], lo_ms: int,
                  hi_ms: int) -> list[tuple]:
    """``(passage_id, station_id, plate, first_ts_ms)`` of every stored passage that began in
    ``[lo_ms, hi_ms]`` at a station of ``station_plates`` (station → plates) of one of its plates: what
    ``find_passage`` would search, for a batch of readings at once (one search of the index per plate)."""
    out = []
    for station_id, plates in station_plates.items():
        for i in range(0, len(plates), _IN_CHUNK):
            part = plates[i:i + _IN_CHUNK]
            out += [tuple(r) for r in conn.execute(
                f"""SELECT passage_id, station_id, plate, first_ts_ms FROM wim_passages
                    WHERE station_id = ? AND plate IN ({",".join("?" * len(part))})
                      AND first_ts_ms BETWEEN ? AND ?""",
                (station_id, *part, int(lo_ms), int(hi_ms)))]
    return out


def readings_of(conn: ArchiveConnection, keys: list[str], identities: list[str]) -> list[dict]:
    """Every stored reading with one of ``keys`` or ``identities`` (``reading_key``, ``identity``,
    ``conflict_of``, ``passage_id``, ``verdict``, ``received_at``): what ``reading_seen`` would search, for a
    batch of readings at once."""
    out = []
    for i in range(0, max(len(keys), len(identities)), _IN_CHUNK):
        k, ids = keys[i:i + _IN_CHUNK] or [""], identities[i:i + _IN_CHUNK] or [""]
        out += [dict(zip(("reading_key", "identity", "conflict_of", "passage_id", "verdict", "received_at"), r))
                for r in conn.execute(
                    f"""SELECT reading_key, identity, conflict_of, passage_id, verdict, received_at FROM wim_readings
                        WHERE reading_key IN ({",".join("?" * len(k))})
                           OR identity IN ({",".join("?" * len(ids))})""", (*k, *ids))]
    return out


def insert_reading(conn: ArchiveConnection, reading_key: str, identity: str, passage_id: str, received_at: str,
                   reading_json: str, verdict_json: str, conflict_of: str | None) -> None:
    conn.execute(_INSERT_READING, (reading_key, identity, passage_id, received_at, reading_json, verdict_json,
                                   conflict_of))


def insert_readings(conn: ArchiveConnection, rows: list[tuple]) -> None:
    """``insert_reading``'s arguments after ``conn`` as rows, in order."""
    conn.executemany(_INSERT_READING, rows)


def reading_conflicts(conn: ArchiveConnection) -> list:
    """Every conflicting reading with the verdict of the reading it conflicts with, by time received."""
    return conn.execute("""SELECT r.reading_key, r.identity, r.conflict_of, r.received_at, r.verdict,
                                  f.verdict AS first_verdict
                           FROM wim_readings r JOIN wim_readings f ON f.reading_key = r.conflict_of
                           ORDER BY r.received_at""").fetchall()


# --- cases ---------------------------------------------------------------------------------------------


def insert_case(conn: ArchiveConnection, v: dict, day: str, driver_id: str | None, evidence_path: str | None,
                manifest_json: str) -> bool:
    """The case of verdict ``v`` (status ``detected``); False when it exists already."""
    cur = conn.execute("""INSERT INTO cases (case_id, plate, station_id, ts, day, action, violation,
                              excess_kg, fine_yuan, enterprise_id, driver_id, source_site_id, status,
                              evidence_path, manifest)
                          VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'detected',?,?)
                          ON CONFLICT(case_id) DO NOTHING""",
                       (v["case_id"], v["plate"], v["station_id"], v["ts"], day, v["action"],
                        int(bool(v.get("violation"))), float(v["excess_kg"]), int(v["fine_yuan"]),
                        v.get("enterprise_id"), driver_id, (v.get("source_site") or {}).get("site_id"),
                        evidence_path, manifest_json))
    return cur.rowcount == 1


def case_exists(conn: ArchiveConnection, case_id: str) -> bool:
    return conn.execute("SELECT 1 FROM cases WHERE case_id=?", (case_id,)).fetchone() is not None


def get_case(conn: ArchiveConnection, case_id: str):
    return conn.execute("SELECT * FROM cases WHERE case_id=?", (case_id,)).fetchone()


def set_case_evidence(conn: ArchiveConnection, case_id: str, evidence_path: str, manifest_json: str) -> None:
    conn.execute("UPDATE cases SET evidence_path=?, manifest=? WHERE case_id=?",
                 (evidence_path, manifest_json, case_id))


def set_case_status(conn: ArchiveConnection, case_id: str, status: str) -> None:
    conn.execute("UPDATE cases SET status=? WHERE case_id=?", (status, case_id))


def set_case_derived(conn: ArchiveConnection, case_id: str, status: str, *, penalty: tuple[str, int] | None = None,
                     void: bool = False, driver_id: str | None = None) -> None:
    """Cache a derived status in ``cases``: ``penalty`` (action, fine) makes a confirmed review case a
    violation with that action; ``void`` (dismissed, withdrawn) makes it no violation; ``driver_id`` is the
    driver an officer identified."""
    sets, args = ["status=?"], [status]
    if penalty is not None:
        sets += ["action=?", "fine_yuan=?", "violation=1"]
        args += [penalty[0], int(penalty[1])]
    if void:
        sets.append("violation=0")
    if driver_id is not None:
        sets.append("driver_id=?")
        args.append(driver_id)
    conn.execute(f"UPDATE cases SET {', '.join(sets)} WHERE case_id=?", (*args, case_id))


def set_case_source_site(conn: ArchiveConnection, case_id: str, site_id: str) -> None:
    conn.execute("UPDATE cases SET source_site_id=? WHERE case_id=?", (site_id, case_id))


def set_case_card_driver(conn: ArchiveConnection, case_id: str, driver_id: str) -> None:
    """A driver found by an IC card login after detection (late data)."""
    conn.execute("UPDATE cases SET driver_id=? WHERE case_id=?", (driver_id, case_id))
    conn.execute("UPDATE case_state SET driver_id=?, driver_source='ic_card' WHERE case_id=?", (driver_id, case_id))


def cases_without_history(conn: ArchiveConnection, case_id: str | None = None) -> list:
    """Cases that have no ``case_state`` (written before the lifecycle existed); only ``case_id`` if given."""
    cond, args = ("AND c.case_id=?", (case_id,)) if case_id else ("", ())
    return conn.execute(f"""SELECT c.* FROM cases c WHERE NOT EXISTS
                            (SELECT 1 FROM case_state s WHERE s.case_id = c.case_id) {cond}""", args).fetchall()


def legacy_trail(conn: ArchiveConnection, case_id: str) -> list[tuple]:
    """The first release's audit trail of a case: (action, operator, reason, ts), oldest first."""
    return [(r["action"], r["operator"], r["reason"], r["ts"]) for r in conn.execute(
        "SELECT action, operator, reason, ts FROM case_actions WHERE case_id=? ORDER BY id", (case_id,))]


# --- case history and derived state ------------------------------------------------------------------------


def insert_case_act(conn: ArchiveConnection, act_id: str, case_id: str, seq: int, action: str, by: str, at: str,
                    entered_at: str, reason: str | None = None, driver_id: str | None = None,
                    details: dict | None = None) -> None:
    conn.execute("""INSERT INTO case_acts (act_id, case_id, seq, action, by_officer, at, entered_at, reason,
                        driver_id, details) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING""",
                 (act_id, case_id, seq, action, by, at, entered_at, reason, driver_id,
                  orjson.dumps(details).decode() if details else None))


def case_acts(conn: ArchiveConnection, case_id: str) -> list:
    return conn.execute("SELECT * FROM case_acts WHERE case_id=? ORDER BY seq", (case_id,)).fetchall()


def case_acts_of(conn: ArchiveConnection, case_ids: list[str]) -> list:
    """The acts of many cases, by case then order (queried in chunks of 500 ids)."""
    out = []
    for i in range(0, len(case_ids), 500):
        chunk = case_ids[i:i + 500]
        q = ",".join("?" * len(chunk))
        out += conn.execute(f"SELECT * FROM case_acts WHERE case_id IN ({q}) ORDER BY case_id, seq",
                            chunk).fetchall()
    return out


def insert_case_state(conn: ArchiveConnection, case_id: str, status: str, driver_id: str | None, driver_source: str,
                      goods_vehicles, updated_at: str) -> None:
    conn.execute("""INSERT INTO case_state (case_id, status, decided_on, driver_id, driver_source,
                        goods_vehicles, updated_at) VALUES (?,?,NULL,?,?,?,?) ON CONFLICT DO NOTHING""",
                 (case_id, status, driver_id, driver_source, goods_vehicles, updated_at))


def case_state(conn: ArchiveConnection, case_id: str):
    return conn.execute("SELECT * FROM case_state WHERE case_id=?", (case_id,)).fetchone()


def has_case_state(conn: ArchiveConnection, case_id: str) -> bool:
    return conn.execute("SELECT 1 FROM case_state WHERE case_id=?", (case_id,)).fetchone() is not None


def update_case_state(conn: ArchiveConnection, case_id: str, status: str, decided_on: str | None, updated_at: str,
                      officer_driver: str | None = None) -> None:
    """The derived status; ``officer_driver``: the driver an officer identified (source ``officer``)."""
    if officer_driver:
        conn.execute("""UPDATE case_state SET status=?, decided_on=?, driver_id=?, driver_source='officer',
                        updated_at=? WHERE case_id=?""", (status, decided_on, officer_driver, updated_at, case_id))
    else:
        conn.execute("UPDATE case_state SET status=?, decided_on=?, updated_at=? WHERE case_id=?",
                     (status, decided_on, updated_at, case_id))


def case_drivers(conn: ArchiveConnection, case_id: str) -> set[str]:
    """Every driver a case names: detected or identified by an officer in its history."""
    return {r[0] for r in conn.execute(
        """SELECT driver_id FROM case_state WHERE case_id=? AND driver_id IS NOT NULL
           UNION SELECT driver_id FROM case_acts WHERE case_id=? AND driver_id IS NOT NULL""", (case_id, case_id))}


_SUBJECT_COND = {
    "vehicle": ("c.plate=?", 1),
    "enterprise": ("c.enterprise_id=?", 1),
    "driver": ("(s.driver_id=? OR c.case_id IN (SELECT case_id FROM case_acts WHERE driver_id=?))", 2),
}


def case_facts_rows(conn: ArchiveConnection, target: str | None = None, subject: str | None = None) -> list:
    """Cases with their cached state (case_id, plate, enterprise_id, goods_vehicles, det_driver,
    driver_source): all, or the decided, not void cases of one Art. 66 subject (``target``: vehicle |
    enterprise | driver)."""
    where, args = "", ()
    if target is not None:
        cond, n = _SUBJECT_COND[target]
        where = f"WHERE ({cond}) AND s.decided_on IS NOT NULL AND s.status NOT IN ('withdrawn', 'dismissed')"
        args = (subject,) * n
    return conn.execute(f"""SELECT c.case_id, c.plate, c.enterprise_id, s.goods_vehicles,
                                   s.driver_id AS det_driver, s.driver_source
                            FROM cases c JOIN case_state s ON s.case_id = c.case_id {where}""", args).fetchall()


# --- cases waiting for late data (track and card data from other partitions) ------------------------------


def insert_pending(conn: ArchiveConnection, case_id: str, plate: str, ts_ms: int, detected_ms: int) -> None:
    conn.execute("""INSERT INTO case_pending (case_id, plate, ts_ms, detected_ms, state)
                    VALUES (?,?,?,?,'waiting') ON CONFLICT DO NOTHING""", (case_id, plate, int(ts_ms), int(detected_ms)))


def pending_cases(conn: ArchiveConnection) -> list[dict]:
    return [dict(r) for r in conn.execute("SELECT * FROM case_pending ORDER BY ts_ms")]


def drop_pending(conn: ArchiveConnection, case_id: str) -> None:
    conn.execute("DELETE FROM case_pending WHERE case_id=?", (case_id,))


def mark_pending_provisional(conn: ArchiveConnection, case_id: str) -> None:
    conn.execute("UPDATE case_pending SET state='provisional' WHERE case_id=?", (case_id,))


# --- Art. 66 escalation proposals ---------------------------------------------------------------------------


def proposal_acts(conn: ArchiveConnection, proposal_id: str) -> list:
    return conn.execute("SELECT * FROM proposal_acts WHERE proposal_id=? ORDER BY seq", (proposal_id,)).fetchall()


def count_proposal_acts(conn: ArchiveConnection, proposal_id: str) -> int:
    return conn.execute("SELECT COUNT(*) FROM proposal_acts WHERE proposal_id=?", (proposal_id,)).fetchone()[0]


def insert_proposal_act(conn: ArchiveConnection, act_id: str, proposal_id: str, seq: int, action: str, by: str,
                        at: str, entered_at: str, reason: str | None, details_json: str | None) -> None:
    conn.execute("""INSERT INTO proposal_acts (act_id, proposal_id, seq, action, by_officer, at, entered_at,
                        reason, details) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING""",
                 (act_id, proposal_id, seq, action, by, at, entered_at, reason, details_json))


def subject_proposals(conn: ArchiveConnection, target: str, subject: str) -> list:
    return conn.execute("SELECT * FROM escalation_proposals WHERE target=? AND subject=? ORDER BY created_at, "
                        "proposal_id", (target, subject)).fetchall()


def set_proposal_basis(conn: ArchiveConnection, proposal_id: str, basis_json: str) -> None:
    conn.execute("UPDATE escalation_proposals SET basis=? WHERE proposal_id=?", (basis_json, proposal_id))


def set_proposal_flag(conn: ArchiveConnection, proposal_id: str, flag: str | None) -> None:
    conn.execute("UPDATE escalation_proposals SET flag=? WHERE proposal_id=?", (flag, proposal_id))


def insert_proposal(conn: ArchiveConnection, proposal_id: str, target: str, subject: str, sanction: str,
                    created_at: str, basis_json: str) -> None:
    conn.execute("""INSERT INTO escalation_proposals (proposal_id, target, subject, sanction, created_at, basis)
                    VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING""",
                 (proposal_id, target, subject, sanction, created_at, basis_json))


def list_proposals(conn: ArchiveConnection, subjects: list[str] | None = None) -> list:
    """Every proposal (or those about ``subjects``), oldest first."""
    cond, args = "", ()
    if subjects is not None:
        cond, args = f" WHERE subject IN ({','.join('?' * len(subjects)) or 'NULL'})", tuple(subjects)
    return conn.execute(f"SELECT * FROM escalation_proposals{cond} ORDER BY created_at, proposal_id",
                        args).fetchall()


def proposal_subject(conn: ArchiveConnection, proposal_id: str) -> str | None:
    r = conn.execute("SELECT subject FROM escalation_proposals WHERE proposal_id=?", (proposal_id,)).fetchone()
    return r[0] if r else None


# --- the counts assess reads (一超四罚): violations not void, since < ts ≤ until -------------------------------

_VIOLATIONS = "FROM cases WHERE violation=1 AND status NOT IN ('dismissed', 'withdrawn') AND ts>? AND ts<=?"
_COUNTED_BY = {"plate": "plate", "source_site": "source_site_id"}


def count_violations(conn: ArchiveConnection, by: str, value: str, since_iso: str, until_iso: str,
                     exclude_case_id: str | None) -> int:
    """Violations of one vehicle (``by="plate"``) or source site (``by="source_site"``) in the window."""
    col = _COUNTED_BY[by]
    return conn.execute(f"SELECT COUNT(*) {_VIOLATIONS} AND {col}=? AND case_id!=?",
                        (since_iso, until_iso, value, exclude_case_id or "")).fetchone()[0]


def count_driver_violations(conn: ArchiveConnection, driver_id: str, since_iso: str, until_iso: str,
                            exclude_case_id: str | None) -> int:
    """Identified drivers only: a registry-assigned (presumed) driver is never counted."""
    return conn.execute(
        f"""SELECT COUNT(*) {_VIOLATIONS} AND driver_id=? AND case_id!=? AND case_id IN
            (SELECT case_id FROM case_state WHERE driver_source IN ('ic_card', 'officer'))""",
        (since_iso, until_iso, driver_id, exclude_case_id or "")).fetchone()[0]


def count_enterprise_violating_vehicles(conn: ArchiveConnection, enterprise_id: str, since_iso: str,
                                        until_iso: str, exclude_plate: str | None) -> int:
    return conn.execute(f"SELECT COUNT(DISTINCT plate) {_VIOLATIONS} AND enterprise_id=? AND plate!=?",
                        (since_iso, until_iso, enterprise_id, exclude_plate or "")).fetchone()[0]


# --- driver cards (JT/T 808 0x0702) -------------------------------------------------------------------------


def record_driver_card(conn: ArchiveConnection, plate: str, ts_ms: int, ts: str, event: str, driver_id: str) -> None:
    conn.execute("""INSERT INTO driver_cards (plate, ts_ms, ts, event, driver_id) VALUES (?,?,?,?,?)
                    ON CONFLICT (plate, ts_ms, event) DO UPDATE SET driver_id = excluded.driver_id""",
                 (plate, ts_ms, ts, event, driver_id))


def last_card_event(conn: ArchiveConnection, plate: str, ts_ms: int) -> tuple[str, str] | None:
    """(event, driver_id) of the latest card event at or before ``ts_ms`` (a logout wins a tie)."""
    row = conn.execute("""SELECT event, driver_id FROM driver_cards WHERE plate=? AND ts_ms<=?
                          ORDER BY ts_ms DESC, event='login' LIMIT 1""", (plate, ts_ms)).fetchone()
    return (row[0], row[1]) if row else None


# --- the console's case list ----------------------------------------------------------------------------------

_CONSOLE_COLS = ("case_id, plate, station_id, ts, day, action, violation, excess_kg, fine_yuan, enterprise_id, "
                 "driver_id, source_site_id, status")


def cases_for_console(conn: ArchiveConnection, status: str | None, plate: str | None, day: str | None, limit: int,
                      offset: int) -> dict:
    """One page of cases, newest first (filtered by status, plate, day when given): ``{total, cases,
    status_counts}`` (the counts over every case)."""
    used = {col: v for col, v in (("status", status), ("plate", plate), ("day", day)) if v}
    cond = (" WHERE " + " AND ".join(f"{col} = ?" for col in used)) if used else ""
    args = list(used.values())
    total = conn.execute(f"SELECT COUNT(*) FROM cases{cond}", args).fetchone()[0]
    rows = conn.execute(f"SELECT {_CONSOLE_COLS} FROM cases{cond} ORDER BY ts DESC LIMIT ? OFFSET ?",
                        args + [limit, offset]).fetchall()
    counts = {r[0]: r[1] for r in conn.execute("SELECT status, COUNT(*) FROM cases GROUP BY status")}
    return {"total": total, "cases": [dict(r) for r in rows], "status_counts": counts}


def open_cases_by_enterprise(conn: ArchiveConnection) -> dict[str, int]:
    """Cases still open (detected, reviewed) per enterprise ("" for none)."""
    return {r[0] or "": r[1] for r in conn.execute(
        "SELECT enterprise_id, COUNT(*) FROM cases WHERE status IN ('detected', 'reviewed') GROUP BY enterprise_id")}
