"""``roadwatch notices list|export|import``: the 抄告 of 62号令 Art. 44 (streams/notices.py).

    roadwatch notices list --archive PATH [--overdue] [--inbound] [--plate P] [--at YYYY-MM-DD]
    roadwatch notices export CASE_ID|all --archive PATH --out DIR [--mark-sent --by OFFICER]
    roadwatch notices import FILE --archive PATH --by OFFICER [--registry F]

``list``: one JSON line per outbound notice (due day, sent, ``overdue``) or, with ``--inbound``, per accepted
inbound notice. ``export``: ``<notice_id>.json`` (the notice in its signed envelope, what the home agency
imports) and ``<notice_id>.html`` (the printable 抄告单 from the case's evidence chain); ``--mark-sent`` records a dispatch by
hand and, like a case act, needs the officer's password (streams/officer_cli.py). ``import``: FILE holds
one envelope or JSON lines of envelopes; each is accepted only from a known agency with a valid signature,
addressed to us, complete, and only when a proven officer imports it (``--by``, as for case acts: the
accepted notices count for Art. 66, and the archive keeps who brought each one in). Exit 0 ok, 1 not
found, 2 bad usage, an officer not proven or a refused notice (reasons on stderr).
"""
from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import orjson

from roadwatch.models.config import Config
from roadwatch.models.notices import NoticeError
from roadwatch.models.records import format_ts
from roadwatch.streams.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    word = p.prog.split()[-1]
    p.set_defaults(_notices_cmd=word)
    if word == "list":
        p.add_argument("--overdue", action="store_true", help="only notices not sent by their due day")
        p.add_argument("--inbound", action="store_true", help="the notices received from other agencies")
        p.add_argument("--plate", metavar="PLATE", help="only notices about this vehicle (with --inbound)")
        p.add_argument("--at", metavar="YYYY-MM-DD", help="the day overdue is judged on (default today, Beijing)")
    elif word == "export":
        p.add_argument("which", metavar="CASE_ID|all", help="a closed case's id (or its notice id N…), or all")
        p.add_argument("--out", required=True, metavar="DIR", help="folder for <notice_id>.json and .html")
        p.add_argument("--mark-sent", action="store_true",
                       help="record the exported notices as sent (dispatched outside Kafka) by --by, a console "
                            "user of the operator role proven by the password (as for case acts)")
        p.add_argument("--by", metavar="OFFICER", help="the officer sending them (with --mark-sent)")
        p.add_argument("--password-stdin", action="store_true",
                       help="read the officer's password from the first line of stdin (else "
                            "$ROADWATCH_OFFICER_PASSWORD, else a prompt)")
    else:
        p.add_argument("file", metavar="FILE", help="a signed notice envelope, or JSON lines of them")
        p.add_argument("--registry", metavar="FILE",
                       help="our registry: the vehicle's enterprise for the Art. 66 enterprise count")
        from roadwatch.streams import officer_cli
        officer_cli.add_arguments(p)
    p.add_argument("--archive", required=True, metavar="PATH", help="the archive (SQLite file or PostgreSQL URL)")


def _store(args, cfg: Config):
    from roadwatch.streams.archive import open_archive
    from roadwatch.streams.cases import CaseStore
    if "://" not in str(args.archive) and not Path(args.archive).is_file():
        raise UsageError(f"no archive at {args.archive}")
    return CaseStore(open_archive(args.archive), cfg, data_dir=cfg.data_dir)


def _out(obj) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.flush()


def _list(store, args) -> int:
    from roadwatch.streams import notices
    from roadwatch.streams.archive import notices as db
    if args.inbound:
        for r in db.inbound(store.conn, plate=args.plate):
            _out(r)
        return 0
    try:
        today = date.fromisoformat(args.at) if args.at else notices.today_beijing()
    except ValueError:
        raise UsageError(f"--at: {args.at!r} is not a YYYY-MM-DD date") from None
    for n in notices.listing(store.conn, today):
        if (not args.overdue or n["overdue"]) and (not args.plate or n["plate"] == args.plate):
            _out(n)
    return 0


def _export(store, args) -> int:
    from roadwatch.streams import documents, notices
    from roadwatch.streams.archive import notices as db
    if args.mark_sent:
        from roadwatch.streams import officer_cli
        if not (args.by or "").strip():
            raise UsageError("--mark-sent needs --by OFFICER")
        try:
            args.by = officer_cli.authenticate(store.conn, args, store.cfg)
        except officer_cli.OfficerRefused as e:
            print(f"roadwatch: {e.code}: {e.detail}", file=sys.stderr)
            return 2
    rows = db.outbound(store.conn) if args.which == "all" else [
        r for r in db.outbound(store.conn) if args.which in (r["case_id"], r["notice_id"])]
    if not rows:
        print(f"roadwatch: no 抄告 for {args.which!r} (it is made when the case is closed)", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        env = notices.envelope(store, r["notice"])
        (out / f"{r['notice_id']}.json").write_bytes(orjson.dumps(env, option=orjson.OPT_INDENT_2))
        written = [f"{r['notice_id']}.json"]
        pkg = documents.package_of(store, r["case_id"])
        doc = next((d for d in reversed(documents.listing(pkg)) if d["kind"] == "agency_notice"), None)
        if doc is None and pkg is not None:           # not issued on closure (e.g. the disk was full then)
            doc = notices.issue_document(store, r["case_id"], r["notice"], by=args.by or "roadwatch")
        for f in (doc or {}).get("files", []):
            name = f"{r['notice_id']}{Path(f['path']).suffix}"
            (out / name).write_bytes((pkg / f["path"]).read_bytes())
            written.append(name)
        sent = None
        if args.mark_sent:
            with store.conn.transaction():
                if db.mark_sent(store.conn, r["notice_id"], format_ts(datetime.now(timezone.utc)), "manual",
                                args.by.strip()):
                    sent = "now"
        _out({"notice_id": r["notice_id"], "case_id": r["case_id"], "to_agency": r["to_agency"],
              "due_on": r["due_on"], "files": written, "marked_sent": sent})
        if doc is None:
            print(f"roadwatch: case {r['case_id']}: no printable 抄告单 on its evidence chain (JSON only)",
                  file=sys.stderr)
    return 0


def _import(store, args) -> int:
    from roadwatch.models.registry import load_registry
    from roadwatch.streams import notices, officer_cli
    try:
        by = officer_cli.authenticate(store.conn, args, store.cfg)
    except officer_cli.OfficerRefused as e:
        print(f"roadwatch: {e.code}: {e.detail}", file=sys.stderr)
        return 2
    try:
        raw = Path(args.file).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {args.file}: {e.strerror}") from None
    registry = load_registry(args.registry) if args.registry else None
    agencies = notices.load_agencies(store.cfg)
    stripped = raw.strip()
    items = [stripped] if stripped.startswith(b"{") and b"\n{" not in stripped else [
        ln for ln in raw.splitlines() if ln.strip()]
    refused = 0
    for i, item in enumerate(items, 1):
        try:
            notice, new = notices.accept(store, item, via="file", registry=registry, agencies=agencies, by=by)
        except NoticeError as e:
            refused += 1
            print(f"roadwatch: {args.file}: notice {i}: refused ({e.code}): {e.detail}", file=sys.stderr)
            continue
        _out({"notice_id": notice["notice_id"], "from_agency": notice["from_agency"], "case_id": notice["case_id"],
              "plate": notice["vehicle"]["plate"], "decided_on": notice["decision"]["decided_on"],
              "accepted": True, "new": new})
    return 2 if refused else 0


def run(args: argparse.Namespace, cfg: Config) -> int:
    store = _store(args, cfg)
    return {"list": _list, "export": _export, "import": _import}[args._notices_cmd](store, args)
