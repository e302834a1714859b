"""报警处理意见: an operator's handling note on an alert, with who and when, kept append-only in the
archive (``alert_notes``); the newest note also marks the alert handled (``alert_acks``)."""
from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web

from roadwatch.models.records import format_ts
from roadwatch.streams.archive import register_schema

MAX_NOTE = 500

register_schema("""
CREATE TABLE IF NOT EXISTS alert_notes (   -- 报警处理意见: every note an operator wrote on an alert
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id  TEXT NOT NULL,
    operator  TEXT NOT NULL,
    note      TEXT NOT NULL,
    ts        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_notes_alert ON alert_notes(alert_id, id);
""")


def add_note(conn, alert_id: str, operator: str, note: str, known_live: bool) -> dict | None:
    if not known_live and conn.execute("SELECT 1 FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone() is None:
        return None
    ts = format_ts(datetime.now(timezone.utc))
    with conn.transaction():
        conn.execute("INSERT INTO alert_notes(alert_id, operator, note, ts) VALUES (?,?,?,?)",
                     (alert_id, operator, note, ts))
        conn.execute("INSERT INTO alert_acks(alert_id, operator, note, ts) VALUES (?,?,?,?) "
                     "ON CONFLICT(alert_id) DO UPDATE SET operator = excluded.operator, note = excluded.note, "
                     "ts = excluded.ts", (alert_id, operator, note, ts))
    return {"alert_id": alert_id, "ack_by": operator, "ack_ts": ts, "note": note}


def notes_for(conn, alert_id: str) -> list[dict]:
    return [dict(r) for r in conn.execute(
        "SELECT operator, note, ts FROM alert_notes WHERE alert_id = ? ORDER BY id", (alert_id,))]


async def api_notes(request: web.Request) -> web.Response:
    from .console import STATE, _json
    st = request.app[STATE]
    return _json({"alert_id": request.match_info["alert_id"],
                  "notes": await st.db.run(notes_for, request.match_info["alert_id"])})


async def api_add_note(request: web.Request) -> web.Response:
    from .console import SESSION, STATE, _body, _error, _json
    st = request.app[STATE]
    body = await _body(request)
    note = body.get("note")
    if not isinstance(note, str) or not note.strip() or len(note) > MAX_NOTE:
        return _error(400, "bad_input",
                      f"处理意见必填，最多 {MAX_NOTE} 字 a note of 1–{MAX_NOTE} characters is required")
    alert_id = request.match_info["alert_id"]
    live = any(a.get("alert_id") == alert_id for a in st.live.recent_alerts())
    res = await st.db.run(add_note, alert_id, request[SESSION].username, note.strip(), live)
    if res is None:
        return _error(404, "not_found", f"no alert {alert_id!r}")
    st.live.publish("ack", res)
    res["notes"] = await st.db.run(notes_for, alert_id)
    return _json(res)
