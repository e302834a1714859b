"""``roadwatch devices publish``: the public list of enforcement devices (streams/device_list.py) as
devices.html, devices.csv and devices.json in ``--out``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roadwatch.models.config import Config
from roadwatch.models.records import InvalidRecord, iso_to_epoch_ms
from roadwatch.models.registry import load_registry
from roadwatch.streams.errors import UsageError

from .device_list import device_list, to_csv, to_html, to_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="FILE", required=True, help="registry JSON with the stations' devices")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for devices.html, devices.csv, devices.json")
    p.add_argument("--at", metavar="ISO", default=None,
                   help="the list as of this time (ISO-8601 with offset; default now): items dated later show "
                        "as not yet in force")


def run(args: argparse.Namespace, cfg: Config) -> int:
    try:
        at = iso_to_epoch_ms(args.at) if args.at else None
    except InvalidRecord as e:
        raise UsageError(f"--at: {e.detail}") from None
    registry = load_registry(args.registry)
    doc = device_list(registry, cfg, at)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in (("devices.json", to_json(doc)), ("devices.csv", to_csv(doc)), ("devices.html", to_html(doc))):
        (out / name).write_bytes(data)
    print(f"wrote {out}/devices.{{html,csv,json}}: {doc['total']} devices, {doc['approved']} approved for "
          f"enforcement as of {doc['as_of']}", file=sys.stderr)
    return 0
