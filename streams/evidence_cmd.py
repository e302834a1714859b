"""``roadwatch evidence verify PATH [--keys DIR]``: check evidence packages.

PATH is one package (a directory with ``manifest.json``) or an evidence directory (every package, every
hash chain and its signed head). Exit 0 intact, 1 when anything was altered (each problem named on stdout),
2 when PATH is not a package or the trusted-keys folder is refused (group/world-writable, foreign owner).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roadwatch.models.config import Config
from roadwatch.models.evidence import (EvidenceError, NotAPackage, check_trusted_dir, is_package, verify_package,
                                       verify_tree)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="an evidence package or a directory of packages")
    p.add_argument("--keys", metavar="DIR",
                   help="trusted public keys (default: evidence.trusted_keys_dir, else the keys/trusted of the data "
                        "directory PATH lies in, else <data_dir>/keys/trusted); refused when group/world-writable")


def default_keys(path: Path, cfg: Config) -> Path:
    """The deployment's trusted keys: ``keys/trusted`` beside the evidence directory PATH belongs to (the
    demo keeps its own under <data_dir>/demo), else the configured data directory's."""
    for d in [path.resolve(), *path.resolve().parents]:
        if (d / "keys" / "trusted").is_dir():
            return d / "keys" / "trusted"
    return cfg.data_dir / "keys" / "trusted"


def run(args: argparse.Namespace, cfg: Config) -> int:
    path = Path(args.path)
    keys = Path(args.keys or cfg["evidence.trusted_keys_dir"] or default_keys(path, cfg))
    try:
        check_trusted_dir(keys)
    except EvidenceError as e:
        print(f"roadwatch: {e}", file=sys.stderr)
        return 2
    try:
        if is_package(path):
            found = {path.name: verify_package(path, keys)}
            total = 1
        else:
            found = verify_tree(path, keys)
            total = sum(1 for p in path.iterdir() if not p.name.startswith(".") and is_package(p))
    except NotAPackage as e:
        print(f"roadwatch: {e}", file=sys.stderr)
        return 2
    bad = {k: v for k, v in found.items() if v}
    for name, problems in bad.items():
        for prob in problems:
            print(f"{name}: {prob}")
    if bad:
        print(f"roadwatch: {len(bad)} item(s) with problems ({total} package(s) checked)", file=sys.stderr)
        if any("trusted" in p for probs in bad.values() for p in probs):
            print(f"roadwatch: trusted keys were read from {keys}; pass --keys DIR to use another deployment's "
                  "public keys", file=sys.stderr)
        return 1
    print(f"ok: {total} package(s) intact")
    return 0
