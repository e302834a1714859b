"""``roadwatch fleet generate``: write a synthetic registry JSON (simulators/fleet.py)."""
from __future__ import annotations

import argparse
import sys
import time

from roadwatch.models.config import Config
from roadwatch.streams.cli import UsageError

from .fleet import generate_fleet


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vehicles", type=int, default=100, help="number of vehicles (default 100)")
    p.add_argument("--stations", type=int, default=3, help="number of WIM stations (default 3)")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed → same file)")
    p.add_argument("--enterprises", type=int, default=None, help="default: one per 25 vehicles")
    p.add_argument("--out", required=True, help="registry JSON file to write")


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.vehicles < 0 or args.stations < 0 or (args.enterprises is not None and args.enterprises < 1):
        raise UsageError("--vehicles/--stations must be ≥ 0 and --enterprises ≥ 1")
    t0 = time.perf_counter()
    reg = generate_fleet(args.vehicles, args.stations, args.seed, enterprises=args.enterprises)
    try:
        reg.dump(args.out)
    except OSError as e:
        raise UsageError(f"cannot write {args.out}: {e.strerror}") from None
    print(f"wrote {args.out}: {len(reg.enterprises)} enterprises, {len(reg.vehicles)} vehicles, "
          f"{len(reg.drivers)} drivers, {len(reg.source_sites)} sites, {len(reg.zones)} zones, "
          f"{len(reg.stations)} stations in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 0
