"""``roadwatch intercept list|record``: intercept tasks (布控) for scripts, tests and field teams without the
console. The console calls the same ``InterceptStore`` (streams/intercept.py): one workflow.

    roadwatch intercept list [--archive PATH] [--status open|expired|intercepted|not_found|released]
                             [--plate PLATE] [--station ID] [--limit N]
    roadwatch intercept record TASK_ID intercepted|not_found|released [--archive PATH] --by OFFICER
                             [--password-stdin] [--unloaded-kg KG] [--on-the-spot yes|no] [--reason TEXT]
                             [--at ISO-8601] [--point ID]

An outcome is an officer's record like a case act, so ``--by`` is proven the same way (streams/officer_cli.py):
a console user of the operator role or above and that user's password (stdin, ROADWATCH_OFFICER_PASSWORD or
a prompt).

Output is JSON on stdout (one task per line for ``list``). Exit 0 ok, 1 no such task, 2 refused or bad usage
(the reason on stderr). Without ``--archive`` the configured archive is used.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from roadwatch.models import intercept as I
from roadwatch.models.config import Config
from roadwatch.models.registry import Registry, load_registry
from roadwatch.streams import officer_cli
from roadwatch.streams.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    word = p.prog.split()[-1]
    p.set_defaults(_intercept_cmd=word)
    if word == "list":
        p.add_argument("--status", choices=I.STATUSES, help="only tasks in this status (derived now)")
        p.add_argument("--plate", metavar="PLATE")
        p.add_argument("--station", metavar="ID", help="the detecting station")
        p.add_argument("--limit", type=int, default=200, metavar="N")
    else:
        p.add_argument("task_id", metavar="TASK_ID")
        p.add_argument("outcome", choices=I.OUTCOMES)
        officer_cli.add_arguments(p)
        p.add_argument("--unloaded-kg", type=float, metavar="KG", help="intercepted: mass unloaded (卸载)")
        p.add_argument("--on-the-spot", choices=("yes", "no"),
                       help="intercepted: was the case handled on the spot (现场处理)")
        p.add_argument("--reason", metavar="TEXT", help="required for released")
        p.add_argument("--at", metavar="ISO-8601", help="when the truck was stopped / the search ended (default now)")
        p.add_argument("--point", metavar="ID", help="the enforcement point that stopped it")
    p.add_argument("--archive", metavar="PATH", help="the archive (SQLite file or postgresql:// URL; "
                                                     "default: the configured archive)")
    p.add_argument("--registry", metavar="FILE", help="registry JSON (station names in the output)")


def _out(obj) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.flush()


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.archive import open_archive
    from roadwatch.streams.intercept import InterceptStore
    target = args.archive or cfg.archive_path
    if "://" not in str(target) and not Path(str(target).removeprefix("sqlite:")).is_file():
        raise UsageError(f"no archive at {target}")
    registry = load_registry(args.registry) if args.registry else Registry()
    store = InterceptStore(open_archive(target), cfg, registry)
    try:
        if args._intercept_cmd == "list":
            if not 1 <= args.limit <= 100_000:
                raise UsageError("--limit must lie in [1, 100000]")
            for t in store.list(args.status, plate=args.plate, station_id=args.station, limit=args.limit):
                _out(t)
            return 0
        try:
            by = officer_cli.authenticate(store.conn, args, cfg)
        except officer_cli.OfficerRefused as e:
            print(f"roadwatch: {e.code}: {e.detail}", file=sys.stderr)
            return 2
        spot = None if args.on_the_spot is None else args.on_the_spot == "yes"
        _out(store.record(args.task_id, args.outcome, by=by, at=args.at, unloaded_kg=args.unloaded_kg,
                          on_the_spot=spot, reason=args.reason, point_id=args.point))
        return 0
    except I.InterceptError as e:
        print(f"roadwatch: {e.code}: {e.detail}", file=sys.stderr)
        return 1 if e.code == "not_found" else 2
