"""``roadwatch worker``: the Faust worker against ``$ROADWATCH_KAFKA`` or an embedded broker."""
from __future__ import annotations

import argparse
import os

from roadwatch.models.config import Config

from .broker import kafka_bootstrap


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="FILE", default=os.environ.get("ROADWATCH_REGISTRY"),
                   help="registry JSON (default $ROADWATCH_REGISTRY)")
    p.add_argument("--loglevel", default="warning", help="worker log level (default warning)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.models.registry import load_registry

    from .proclock import LOCK_NAME, check_port_free, hold
    from .worker import run_worker
    # expected failures before anything starts: one line on stderr, exit 2 (cli.py)
    registry = load_registry(args.registry)       # loaded once: the worker is built with it
    port = int(cfg["web.port"])
    check_port_free(cfg["web.host"], port)
    hold(cfg.data_dir / LOCK_NAME, f"roadwatch worker (console port {port})", shared=True)
    with kafka_bootstrap(cfg) as bootstrap:
        if not os.environ.get("ROADWATCH_KAFKA"):
            print(f"embedded broker on {bootstrap}", flush=True)
        return run_worker(cfg, bootstrap, args.registry, args.loglevel, registry=registry)
