"""``roadwatch config show``: the effective configuration as commented TOML."""
from __future__ import annotations

import argparse
import sys

from roadwatch.models.config import Config, render_toml


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", help="print only this key's value")


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.key:
        from roadwatch.models.config import KEYS
        if args.key not in KEYS:
            print(f"roadwatch: unknown config key {args.key!r}", file=sys.stderr)
            return 2
        print(cfg[args.key])
        return 0
    sys.stdout.write(render_toml(cfg))
    return 0
