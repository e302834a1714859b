"""``roadwatch archive migrate [--archive TARGET]``: bring an archive to the current schema ahead of an
upgrade (workers do the same on start; this lets an operator do it, and see it, first)."""
from __future__ import annotations

import argparse
import sys

from roadwatch.models.config import Config

from . import LATEST, ArchiveError, applied, close_pools, current_version, migrate, open_archive, redact


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archive", metavar="TARGET",
                   help="SQLite file, sqlite:PATH or postgresql://… (default: $ROADWATCH_ARCHIVE or the config)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.errors import UsageError
    target = args.archive or cfg.archive_path
    try:
        # open without migrating first, so the message can say where the archive came from
        conn = open_archive(target, pool_size=2, migrate_now=False)
        before = current_version(conn)
        now = migrate(conn)
    except ArchiveError as e:
        raise UsageError(str(e)) from None
    for m in applied(conn):
        mark = "applied now" if m["version"] in now else f"applied {m['applied_at']}"
        print(f"  {m['version']:>3}  {m['description']}  ({mark})")
    print(f"roadwatch: archive {redact(target)} at schema version {LATEST} (was {before or 'none'})",
          file=sys.stderr)
    close_pools()
    return 0
