"""``roadwatch report monthly --month YYYY-MM --registry FILE [--pings FILE | --archive PATH] --out DIR``

Builds the monthly regulator report (rates per §5.2, scores per §5.3, overload statistics) and writes
report.json, report.html, report.xlsx, report.csv and the trace CSVs into DIR. Source of the vehicle-day
rows: ``--pings`` (a scenario/replay feed or JSON lines of pings, run through the GPS engine; no overload
section; an input the engine cannot read is refused with exit 2 — streams/feed_input.py) or ``--archive`` (default:
the configured archive). Exit 2 for a bad month, an unreadable registry or a missing source.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from roadwatch.models.records import InvalidRecord, format_ts, parse_ts
from roadwatch.models.registry import RegistryError, load_registry
from roadwatch.models.rates import parse_month

from .cli import UsageError


def add_arguments(p) -> None:
    p.add_argument("--month", required=True, help="report month YYYY-MM (Beijing time)")
    p.add_argument("--registry", required=True, metavar="FILE", help="registry JSON (vehicles, enterprises)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pings", metavar="FILE", help="GPS pings: a feed (simulate --out / record) or JSON lines ('-' = stdin)")
    src.add_argument("--archive", metavar="TARGET", help="SQLite file or postgresql://… URL (default: the configured archive)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--snapshot", metavar="TS",
                   help="statistic time stamped on every figure, ISO-8601 with offset (default: now)")


def _day_rows_from_pings(path: str, registry, cfg) -> list[dict]:
    try:
        from roadwatch.streams.assess_gps import run_pings
    except ModuleNotFoundError as e:
        raise UsageError(f"--pings needs the GPS engine (streams.assess_gps): {e}; use --archive") from None
    from roadwatch.geo.zones import ZoneIndex

    from . import feed_input
    lines, check, fh = feed_input.pings(path, cfg, f"--pings {path}", columns=True)
    with fh:
        _alerts, day_rows, errors = run_pings(lines, registry, ZoneIndex.from_registry(registry), cfg,
                                              keep_alerts=False)
    n_err = len(errors) if hasattr(errors, "__len__") else errors
    check.verdict(rejected_downstream=n_err)
    if n_err or check.rejected:
        print(f"roadwatch report: {n_err + check.rejected} of {check.units + check.rejected} ping(s) rejected "
              f"(within input.max_rejected_share)", file=sys.stderr)
    return list(day_rows)


def run(args, cfg) -> int:
    try:
        parse_month(args.month)
    except InvalidRecord as e:
        raise UsageError(e.detail) from None
    if args.snapshot:
        try:
            snapshot = format_ts(parse_ts(args.snapshot, "--snapshot"))
        except InvalidRecord as e:
            raise UsageError(e.detail) from None
    else:
        snapshot = format_ts(datetime.now(timezone.utc))
    try:
        registry = load_registry(args.registry)
    except RegistryError as e:
        raise UsageError(str(e)) from None

    from .reports import build_monthly_report, write_report
    if args.pings:
        source = _day_rows_from_pings(args.pings, registry, cfg)
        days = sorted({str(r["day"]) for r in source})
        if not any(d[:7] == args.month for d in days):    # read fine, but nothing to report on: refuse
            raise UsageError(f"--pings {args.pings}: no ping of it lies in {args.month} (its data covers "
                             + (f"{days[0]} … {days[-1]})" if days else "no day)"))
    else:
        from .archive import SQLITE, ArchiveError, open_archive, parse_target
        target = args.archive or cfg.archive_path
        try:
            backend, loc = parse_target(target)
            if backend == SQLITE and not Path(loc).is_file():
                raise UsageError(f"archive not found: {loc}")
            source = open_archive(target)
        except ArchiveError as e:
            raise UsageError(str(e)) from None
    report = build_monthly_report(source, registry, args.month, cfg, snapshot)
    paths = write_report(report, args.out)
    r = report["rates"]
    print(f"roadwatch report: {args.month}: {report['population']['vehicles']} vehicles, "
          f"上线率 {r['online_rate']['percent']}%, {report['trace']['excluded_rows_total']} row(s) excluded",
          file=sys.stderr)
    for p in paths:
        print(p)
    return 0
