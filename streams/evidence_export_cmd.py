"""``roadwatch evidence export DIR [--archive TARGET]``: write every evidence package the archive holds, with
the hash chain it is linked on and the chain's signed head, to ``DIR/<chain_id>-<root>/`` — one folder per
writer's chain, whichever host wrote it — so ``roadwatch evidence verify DIR/<folder> --keys TRUSTED`` checks
them as on the writer's host (TRUSTED: the public keys of every worker host, ``keys/trusted/*.pub``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roadwatch.models.config import Config

from .archive import ArchiveError, close_pools, open_archive, redact
from .archive.evidence import export_chains


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="DIR", help="folder to write the packages and chains into (created)")
    p.add_argument("--archive", metavar="TARGET",
                   help="SQLite file, sqlite:PATH or postgresql://… (default: $ROADWATCH_ARCHIVE or the config)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from .errors import UsageError
    target = args.archive or cfg.archive_path
    try:
        written = export_chains(open_archive(target, pool_size=2), Path(args.out))
    except ArchiveError as e:
        raise UsageError(str(e)) from None
    finally:
        close_pools()
    for folder, n in written.items():
        print(f"  {folder}: {n} package(s)")
    print(f"roadwatch: {sum(written.values())} evidence package(s) on {len(written)} chain(s) from "
          f"{redact(target)} written to {args.out}", file=sys.stderr)
    return 0
