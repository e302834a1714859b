"""``roadwatch archive copy --from SRC --to DST``: copy a whole archive onto another backend (e.g. a pilot's
SQLite file onto the production PostgreSQL server), in one transaction; DST must be empty."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roadwatch.models.config import Config

from . import SQLITE, ArchiveError, close_pools, open_archive, parse_target, redact
from .transfer import copy_archive


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="src", required=True, metavar="SRC", help="sqlite:PATH, a file or postgresql://…")
    p.add_argument("--to", dest="dst", required=True, metavar="DST", help="postgresql://… , sqlite:PATH or a file")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.errors import UsageError
    try:
        backend, loc = parse_target(args.src)
        if backend == SQLITE and not Path(loc).is_file():
            raise UsageError(f"no archive file {loc}")
        src = open_archive(args.src, pool_size=2)
        dst = open_archive(args.dst, pool_size=2)
        if src.backend == dst.backend and src.target == dst.target:
            raise UsageError("--from and --to are the same archive")
        copied = copy_archive(src, dst, progress=lambda t, n: print(f"  {t}: {n:,} rows", file=sys.stderr))
    except ArchiveError as e:
        raise UsageError(str(e)) from None
    finally:
        close_pools()
    print(f"roadwatch: copied {sum(copied.values()):,} rows in {len(copied)} tables from {redact(args.src)} "
          f"to {redact(args.dst)}", file=sys.stderr)
    return 0
