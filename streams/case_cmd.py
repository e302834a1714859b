"""``roadwatch case show|act`` and ``roadwatch escalations``: the case workflow for scripts and tests.

The console calls the same ``CaseStore`` methods (streams/cases.py), so both go through one workflow:

    roadwatch case show CASE_ID --archive PATH
    roadwatch case act CASE_ID ACTION --archive PATH --by OFFICER [--reason TEXT] [--at ISO-8601] [--driver ID]
    roadwatch case act PROPOSAL_ID legal_review|notify|decide|withdraw --archive PATH --by OFFICER …
    roadwatch escalations --archive PATH --at ISO-DATE
    roadwatch case document CASE_ID notice|inform|decision --archive PATH --by OFFICER [--pdf] [--out FILE]

Acts and documents change a legal outcome, so ``--by`` must be proven: the officer is a console user
(operator or above) and gives the password (streams/officer_cli.py). ``--archive`` is the SQLite file or a
``postgresql://…`` URL.

Output is JSON on stdout (one line per escalation). Exit 0 ok, 1 not found, 2 refused act or bad usage
(the reason on stderr).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from roadwatch.models import lifecycle
from roadwatch.models.art66 import PROPOSAL_TRANSITIONS
from roadwatch.models.config import Config
from roadwatch.streams import officer_cli
from roadwatch.streams.cli import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    word = p.prog.split()[-1]
    p.set_defaults(_case_cmd=word)
    if word == "show":
        p.add_argument("case_id", metavar="CASE_ID", help="a case id (C…) or an escalation proposal id (P…)")
    elif word == "act":
        p.add_argument("case_id", metavar="ID", help="a case id (C…) or an escalation proposal id (P…)")
        p.add_argument("action", metavar="ACTION",
                       help=f"case: {' '.join(lifecycle.ACTIONS)}, or amend (with --driver: record the driver "
                            f"without a transition); proposal: {' '.join(PROPOSAL_TRANSITIONS)}")
        officer_cli.add_arguments(p)
        p.add_argument("--reason", metavar="TEXT", help="reason (required to dismiss, withdraw, close)")
        p.add_argument("--at", metavar="ISO-8601", help="legal date of the act, e.g. the decision date "
                                                        "(a date, or a date-time with offset; default now)")
        p.add_argument("--driver", metavar="DRIVER_ID", help="record the driver identified in the investigation")
    elif word == "document":
        p.add_argument("case_id", metavar="CASE_ID", help="a case id (C…)")
        p.add_argument("kind", choices=("notice", "inform", "decision"),
                       help="违法行为通知书 | 行政处罚告知书 | 行政处罚决定书")
        officer_cli.add_arguments(p)
        p.add_argument("--pdf", action="store_true",
                       help="also print it to PDF with headless Chromium (/usr/bin/chromium; HTML only without it)")
        p.add_argument("--out", metavar="FILE", help="also copy the document here (.pdf → the PDF, else the HTML)")
    else:   # escalations
        p.add_argument("--at", required=True, metavar="ISO-DATE", help="last day of the Art. 66 window")
    p.add_argument("--archive", required=True, metavar="TARGET", help="the archive (SQLite file or postgresql://… URL)")


def _store(args, cfg: Config):
    from roadwatch.streams.archive import open_archive
    from roadwatch.streams.cases import CaseStore
    target = args.archive
    if "://" not in target and not Path(target.removeprefix("sqlite:")).is_file():
        raise UsageError(f"no archive at {target}")
    return CaseStore(open_archive(target), cfg, data_dir=cfg.data_dir)


def _out(obj) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.flush()


def _document(store, args) -> int:
    from roadwatch.models.documents import DocumentError
    from roadwatch.streams import documents
    want_pdf = args.pdf or (args.out or "").lower().endswith(".pdf")
    try:
        doc = documents.issue(store, args.case_id, args.kind, by=args.by, pdf=want_pdf)
    except DocumentError as e:
        print(f"roadwatch: {e.code}: {e.detail}", file=sys.stderr)
        return 1 if e.code == "not_found" else 2
    if doc.get("pdf_note"):
        print(f"roadwatch: {doc['pdf_note']}", file=sys.stderr)
    if args.out:
        pkg = documents.package_of(store, args.case_id)
        media = "application/pdf" if args.out.lower().endswith(".pdf") else "text/html"
        src = next((f for f in doc["files"] if f["media_type"] == media), None)
        if src is None:
            print(f"roadwatch: no {media} produced; nothing written to {args.out}", file=sys.stderr)
            _out(doc)
            return 1
        Path(args.out).write_bytes((pkg / src["path"]).read_bytes())
    _out(doc)
    return 0


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.cases import CaseActionError
    store = _store(args, cfg)
    word = args._case_cmd
    try:
        if word in ("act", "document"):
            try:
                args.by = officer_cli.authenticate(store.conn, args, cfg)
            except officer_cli.OfficerRefused as e:
                print(f"roadwatch: {e.code}: {e.detail}", file=sys.stderr)
                return 2
        if word == "escalations":
            for e in store.escalations(args.at):
                _out(e)
            return 0
        if word == "document":
            return _document(store, args)
        is_proposal = args.case_id.startswith("P")
        if word == "show":
            found = store.proposal(args.case_id) if is_proposal else store.show(args.case_id)
            if found is None:
                print(f"roadwatch: no case or proposal {args.case_id!r}", file=sys.stderr)
                return 1
            _out(found)
            return 0
        if is_proposal:
            if args.driver:
                raise UsageError("--driver applies to cases, not to escalation proposals")
            _out(store.act_proposal(args.case_id, args.action, args.by, args.reason, at=args.at))
        else:
            _out(store.act(args.case_id, args.action, args.by, args.reason, at=args.at, driver_id=args.driver))
        return 0
    except CaseActionError as e:
        print(f"roadwatch: {e.code}: {e.detail}", file=sys.stderr)
        return 1 if e.code == "not_found" else 2
