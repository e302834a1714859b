"""抄告 wiring (models/notices.py holds the rules, streams/archive/notices.py the SQL).

- ``on_close``: when a case is closed (``CaseStore.act``), its Art. 44 notice is built, stored once, and its
  printable 抄告单 issued onto the case's evidence chain like the other documents (streams/documents.py).
- ``envelope``: the notice signed with this installation's evidence key (Ed25519); ``roadwatch notices
  export`` writes it as JSON beside the printable document; the worker (``install``) puts unsent notices on
  the ``agency-notices`` topic, records when the broker took them, and keeps the overdue gauge.
- ``accept``: an inbound envelope — from a known agency (``notices.agencies_file``), signature verified,
  addressed to us, complete — is stored and counts for 条例 Art. 66 (``art66_facts``); from a file
  (``roadwatch notices import``) or from the topic (``install``: a refused one goes to the dead-letter topic
  with its reason; our own notices and those addressed to other agencies are passed over and counted).
"""
from __future__ import annotations

import logging
from datetime import date, datetime, timezone

import orjson

from roadwatch.models import notices as N
from roadwatch.models.config import Config, ConfigError, read_toml_file
from roadwatch.models.documents import DocumentError
from roadwatch.models.evidence import EvidenceError
from roadwatch.models.records import BEIJING, format_ts
from roadwatch.streams.archive import notices as db

log = logging.getLogger("roadwatch.notices")


def load_agencies(cfg: Config) -> dict[str, N.Agency]:
    """The agencies of ``notices.agencies_file`` (none when the key is empty)."""
    got = read_toml_file(cfg, "notices.agencies_file")
    if got is None:
        return {}
    try:
        return N.parse_agencies(*got)
    except N.NoticeError as e:
        raise ConfigError(e.detail) from None


def on_close(store, case_id: str, case: dict, *, by: str) -> dict:
    """Build and store the case's notice (once) and issue its 抄告单; returns the stored notice."""
    have = db.outbound(store.conn, case_id=case_id)
    if have:
        notice = have[0]["notice"]
    else:
        agencies = load_agencies(store.cfg)
        registered = (((case.get("manifest") or {}).get("targets") or {}).get("vehicle") or {}).get("home_agency")
        to = N.home_agency(case["plate"], registered, agencies)
        notice = N.build(case, store.cfg, to)
        if to in agencies:
            notice["to_agency_name"] = agencies[to].name
        with store.conn.transaction():
            db.insert_outbound(store.conn, notice, format_ts(datetime.now(timezone.utc)))
        if to is not None and to not in agencies:
            log.warning("case %s closed: its 抄告 goes to %s, an agency not listed in notices.agencies_file", case_id,
                        to)
        if to is None:
            log.warning("case %s closed: the vehicle's home agency is unknown (no registry home_agency, no plate "
                        "prefix in notices.agencies_file); the 抄告 waits for it", case_id)
    issue_document(store, case_id, notice, by=by, case=case)
    return notice


def issue_document(store, case_id: str, notice: dict, *, by: str, case: dict | None = None) -> dict | None:
    """The printable 抄告单 onto the case's evidence chain (a no-op when the same one is there); None when
    the case has no package or it could not be written now (``roadwatch notices export`` tries again)."""
    from roadwatch.streams import documents
    if documents.package_of(store, case_id) is None or store.data_dir is None:
        return None
    case = case or store.show(case_id)
    try:
        return documents.issue(store, case_id, "agency_notice", by=by, case={**case, "agency_notice": notice})
    except (DocumentError, EvidenceError, OSError) as e:
        log.warning("case %s: 抄告单 not issued (%s); `roadwatch notices export` issues it", case_id, e)
        return None


def listing(conn, today: date) -> list[dict]:
    """Outbound notices with their state: sent, due, overdue (not sent and past the due day)."""
    out = []
    for r in db.outbound(conn):
        out.append({"notice_id": r["notice_id"], "case_id": r["case_id"], "plate": r["notice"]["vehicle"]["plate"],
                    "to_agency": r["to_agency"], "closed_on": r["closed_on"], "due_on": r["due_on"],
                    "sent_at": r["sent_at"], "sent_via": r["sent_via"],
                    "overdue": N.overdue(r["due_on"], r["sent_at"], today)})
    return out


def case_notice(conn, case_id: str) -> dict | None:
    """The case's 抄告 state for the case JSON (None before closure)."""
    rows = db.outbound(conn, case_id=case_id)
    if not rows:
        return None
    r = rows[0]
    return {"notice_id": r["notice_id"], "to_agency": r["to_agency"], "closed_on": r["closed_on"],
            "due_on": r["due_on"], "sent_at": r["sent_at"], "sent_via": r["sent_via"],
            "overdue": N.overdue(r["due_on"], r["sent_at"], today_beijing())}


def today_beijing() -> date:
    return datetime.now(BEIJING).date()


def envelope(store, notice: dict) -> dict:
    key = store._key(store.data_dir)
    return N.sign(notice, key.private, key.key_id)


def unsent(store) -> list[tuple[str, bytes, bytes]]:
    """(notice id, topic key, signed envelope) of every unsent notice whose addressee is known."""
    return [(r["notice_id"], r["to_agency"].encode(), orjson.dumps(envelope(store, r["notice"])))
            for r in db.outbound(store.conn, unsent=True) if r["to_agency"]]


def mark_sent(store, notice_id: str, via: str, by: str) -> bool:
    with store.conn.transaction():
        return db.mark_sent(store.conn, notice_id, format_ts(datetime.now(timezone.utc)), via, by)


def accept(store, raw: bytes, *, via: str, registry=None, agencies: dict | None = None,
           by: str | None = None) -> tuple[dict, bool]:
    """Verify and store an inbound envelope: (notice, new?); a new one re-derives the Art. 66 proposals of
    its vehicle, enterprise and driver. ``by``: the proven officer importing it from a file. Raises
    ``NoticeError`` when refused."""
    agencies = load_agencies(store.cfg) if agencies is None else agencies
    notice = N.open_envelope(raw, agencies, store.cfg["notices.own_agency_id"])
    return notice, keep(store, notice, raw, via=via, registry=registry, by=by)


def keep(store, notice: dict, raw: bytes, *, via: str, registry=None, by: str | None = None) -> bool:
    """Store a verified inbound notice (idempotent: the first receipt and its officer stay); True when new."""
    conn = store.conn
    plate = notice["vehicle"]["plate"]
    veh = registry.vehicles.get(plate) if registry is not None else None
    ent = veh.enterprise_id if veh is not None and veh.enterprise_id else notice["vehicle"].get("enterprise_id")
    drv = notice["driver"]
    row = {"notice_key": f"{notice['from_agency']}:{notice['notice_id']}", "from_agency": notice["from_agency"],
           "notice_id": notice["notice_id"], "case_id": notice["case_id"], "plate": plate, "enterprise_id": ent,
           "driver_id": drv["id"] if drv["identified"] and drv.get("id") else None,
           "decided_on": notice["decision"]["decided_on"], "closed_on": notice["decision"]["closed_on"],
           "received_at": format_ts(datetime.now(timezone.utc)), "received_via": via, "received_by": by,
           "notice": orjson.dumps(notice).decode(), "envelope": raw.decode("utf-8", errors="replace")}
    with conn.transaction():
        new = db.insert_inbound(conn, row)
    if new:
        store.recompute_subjects(plate, ent, {row["driver_id"]} if row["driver_id"] else set())
    return new


def art66_facts(conn, registry_goods: dict[str, int] | None = None, **subject) -> list:
    """Accepted inbound notices as Art. 66 cases (optionally only those about ``plate``/``enterprise_id``/
    ``driver_id``)."""
    out = []
    for r in db.inbound(conn, **subject):
        out.append(N.case_facts(r["notice"], r["enterprise_id"],
                                (registry_goods or {}).get(r["enterprise_id"])))
    return out


# --- the worker: out onto the topic, in from it ------------------------------------------------------------

def _sender(raw: bytes):
    try:
        env = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return env.get("from_agency") if isinstance(env, dict) else None


def install(app, ctx, store) -> None:
    from . import metrics as M
    from . import topics as T
    from .deadletter import send_dead_letter
    from .archive.backend import rollback_quietly

    topic, dlq = ctx.topics[T.AGENCY_NOTICES], ctx.topics[T.DEAD_LETTER]
    own = ctx.cfg["notices.own_agency_id"]
    agencies = load_agencies(ctx.cfg)
    seen, overdue_g = M.AGENCY_NOTICES, M.AGENCY_NOTICES_OVERDUE

    @app.agent(topic, name="agency-notices-agent")
    async def inbound(stream):
        async for event in stream.events():
            raw = event.value
            M.MESSAGES.labels(topic=T.AGENCY_NOTICES, direction="in").inc()
            if _sender(raw) == own:
                seen.labels(direction="in", outcome="own").inc()       # our own notice, on its way out
                continue
            try:
                notice = N.open_envelope(raw, agencies, own)
            except N.NoticeError as e:
                if e.code == "not_for_us":
                    seen.labels(direction="in", outcome="not_for_us").inc()    # another agency's business
                    continue
                seen.labels(direction="in", outcome=e.code).inc()
                await send_dead_letter(dlq, T.AGENCY_NOTICES, e.code, e.detail, raw)
                continue
            new = await ctx.faults.retry_until_ok(
                "notices", lambda: keep(store, notice, raw, via="kafka", registry=ctx.registry),
                on_error=lambda: rollback_quietly(store.conn))
            seen.labels(direction="in", outcome="accepted" if new else "replayed").inc()

    @app.timer(float(ctx.cfg["notices.publish_interval_s"]))
    async def outbound():
        try:
            for notice_id, key, value in unsent(store):
                await (await topic.send(key=key, value=value))      # delivered, then recorded as sent
                mark_sent(store, notice_id, "kafka", "roadwatch")
                M.MESSAGES.labels(topic=T.AGENCY_NOTICES, direction="out").inc()
                seen.labels(direction="out", outcome="sent").inc()
            overdue_g.set(db.overdue_count(store.conn, today_beijing().isoformat()))
        except Exception as err:  # noqa: BLE001 - retried at the next tick; unsent notices stay unsent
            log.exception("sending 抄告 failed; retried in %s s", ctx.cfg["notices.publish_interval_s"])
            rollback_quietly(store.conn)
            ctx.faults.report("notices", err)
        else:
            ctx.faults.clear("notices")
