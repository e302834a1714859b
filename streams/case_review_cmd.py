"""``roadwatch case-review --month YYYY-MM --archive PATH [--at YYYY-MM-DD]``: 案卷评查 of a month's closed
cases — the sample drawn with ``review.sample_rate`` and ``review.seed``, each file's checklist score and the
tables per officer and per station, as JSON on stdout (the monthly report carries the same tables)."""
from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import orjson

from roadwatch.models.config import Config
from roadwatch.models.records import InvalidRecord
from roadwatch.streams.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--month", required=True, metavar="YYYY-MM", help="the month the cases were closed in")
    p.add_argument("--archive", required=True, metavar="PATH", help="the archive (SQLite file or PostgreSQL URL)")
    p.add_argument("--at", metavar="YYYY-MM-DD", help="the day deadlines not yet met are judged on (default today)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.models.rates import parse_month
    from roadwatch.streams.archive import open_archive
    from roadwatch.streams.case_review import month_review
    from roadwatch.streams.notices import today_beijing
    try:
        parse_month(args.month)
    except InvalidRecord as e:
        raise UsageError(f"--month: {e.detail}") from None
    try:
        as_of = date.fromisoformat(args.at) if args.at else today_beijing()
    except ValueError:
        raise UsageError(f"--at: {args.at!r} is not a YYYY-MM-DD date") from None
    if "://" not in str(args.archive) and not Path(args.archive).is_file():
        raise UsageError(f"no archive at {args.archive}")
    out = month_review(open_archive(args.archive), cfg, args.month, as_of)
    sys.stdout.buffer.write(orjson.dumps(out) + b"\n")
    return 0
