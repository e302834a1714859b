"""Who is acting, for CLI commands that change a legal outcome (case acts, documents, proposals).

The console knows its officer from the session; a command line only has ``--by NAME``, which anyone could
type. So a CLI act names a console user (``roadwatch users add``) of at least the ``operator`` role and proves
it with that user's password — from the first line of stdin (``--password-stdin``), from
``ROADWATCH_OFFICER_PASSWORD`` (scripts, like ``PGPASSWORD``), or prompted on a terminal. The password is
checked against the same argon2 hash the console uses; a wrong password costs the same as a right one.
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys

from roadwatch.models.config import Config
from roadwatch.streams.web import auth

ENV = "ROADWATCH_OFFICER_PASSWORD"
ROLE = "operator"          # the console's role for acting on alerts and cases (streams/web/console.py)


class OfficerRefused(ValueError):
    def __init__(self, detail: str):
        super().__init__(detail)
        self.code, self.detail = "officer_not_authenticated", detail


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", required=True, metavar="OFFICER",
                   help=f"the acting officer: a console user with the {ROLE} role or above")
    p.add_argument("--password-stdin", action="store_true",
                   help=f"read the officer's password from the first line of stdin (else ${ENV}, else a prompt)")


def _password(args: argparse.Namespace) -> str | None:
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if os.environ.get(ENV):
        return os.environ[ENV]
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {args.by}: ")
    return None


def authenticate(conn, args: argparse.Namespace, cfg: Config) -> str:
    """The officer's user name once the password proves it; raises ``OfficerRefused`` otherwise."""
    password = _password(args)
    if password is None:
        raise OfficerRefused(f"no password for {args.by!r}: use --password-stdin, ${ENV} or a terminal")
    user = auth.get_user(conn, args.by) if auth.USERNAME_RE.fullmatch(args.by or "") else None
    if not auth.verify_password(user["pw_hash"] if user else None, password, cfg):
        raise OfficerRefused(f"user {args.by!r} unknown or password wrong")
    if not auth.role_allows(user["role"], ROLE):
        raise OfficerRefused(f"user {args.by!r} has the {user['role']} role; acting needs {ROLE} or above")
    return user["username"]
