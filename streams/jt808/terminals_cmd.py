"""``roadwatch terminals list|revoke``: the JT/T 808 terminal bindings held in the archive.

``revoke TERMINAL_ID`` deactivates the terminal's auth code: a running gateway closes the terminal's
connection within ``gateway.revocation_check_s`` and refuses its code from then on; the terminal has to
register (0x0100) again, which also frees its vehicle for another terminal.
"""
from __future__ import annotations

import argparse
import sys

import orjson

from roadwatch.models.config import Config

from .codec import terminal_key
from .terminal_auth import TerminalAuth


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "revoke"), help="list bindings, or revoke one terminal's auth code")
    p.add_argument("terminal_id", nargs="?", help="terminal id (BCD phone, leading zeros optional) for revoke")
    p.add_argument("--reason", default="revoked by operator", help="reason stored with the revocation")
    p.add_argument("--json", action="store_true", help="list as JSON lines")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.cli import UsageError
    auth = TerminalAuth(cfg.archive_path)
    if args.action == "list":
        for b in auth.list():
            if args.json:
                print(orjson.dumps(b.__dict__).decode())
            else:
                state = f"revoked {b.revoked_at} ({b.revoked_reason})" if b.revoked_at else "active"
                print(f"{b.terminal_key}\t{b.plate}\t{b.plate_color}\tissued {b.issued_at}\t{state}")
        return 0
    tid = args.terminal_id or ""
    if not tid.isdigit() or len(tid) > 20:
        raise UsageError("revoke needs a TERMINAL_ID of at most 20 digits")
    if auth.revoke(terminal_key(tid), args.reason):
        print(f"terminal {tid}: auth code revoked", file=sys.stderr)
        return 0
    print(f"terminal {tid}: no active binding", file=sys.stderr)
    return 1
