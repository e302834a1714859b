"""报警处理意见: an operator's handling note on an alert, with who and when, kept append-only in the
archive (``alert_notes``); the newest note also marks the alert handled (``alert_acks``)."""
from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web

from roadwatch.models.records import format_ts
from roadwatch.streams.archive import alerts as db

MAX_NOTE = 500


def add_note(conn, alert_id: str, operator: str, note: str, known_live: bool) -> dict | None:
    if not known_live and not db.alert_exists(conn, alert_id):
        return None
    ts = format_ts(datetime.now(timezone.utc))
    db.add_alert_note(conn, alert_id, operator, note, ts)
    return {"alert_id": alert_id, "ack_by": operator, "ack_ts": ts, "note": note}


def notes_for(conn, alert_id: str) -> list[dict]:
    return db.alert_notes(conn, alert_id)


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
