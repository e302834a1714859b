"""``roadwatch users add NAME --role R``: create a console user or change an existing one.

The password is read from stdin with ``--password-stdin`` (first line, for scripts) or prompted twice on
the terminal; it never appears on the command line. Changing a user ends that user's sessions.
"""
from __future__ import annotations

import argparse
import getpass
import sys

from roadwatch.models.config import Config
from roadwatch.streams.archive import open_archive
from roadwatch.streams.cli import UsageError
from roadwatch.streams.web import auth


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="user name (letters, digits, _ . @ -)")
    p.add_argument("--role", required=True, choices=auth.ROLES,
                   help="viewer: read only; operator: acts on alerts and cases; admin: also manages users")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument("--keep-password", action="store_true", help="existing user: change the role only")
    p.add_argument("--archive", help="archive path (default: from the config)")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        pw = line[:-1] if line.endswith("\n") else line
        return pw[:-1] if pw.endswith("\r") else pw
    if not sys.stdin.isatty():
        raise UsageError("no terminal to prompt for the password: use --password-stdin")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the passwords differ")
    return first


def run(args: argparse.Namespace, cfg: Config) -> int:
    try:
        auth.check_username(args.name)
    except auth.AuthError as e:
        raise UsageError(e.detail) from None
    conn = open_archive(args.archive or cfg.archive_path)
    exists = auth.get_user(conn, args.name) is not None
    if args.keep_password and not exists:
        raise UsageError(f"--keep-password: no user {args.name!r} yet")
    password = None if args.keep_password else _read_password(args)
    if exists and auth.get_user(conn, args.name)["role"] == "admin" and args.role != "admin" \
            and auth.count_admins(conn) <= 1:
        raise UsageError("the last admin cannot be demoted")
    try:
        result = auth.upsert_user(conn, args.name, args.role, password, cfg)
    except auth.AuthError as e:
        raise UsageError(e.detail) from None
    print(f"roadwatch: user {args.name} {result} (role {args.role})", file=sys.stderr)
    return 0
