"""Officers for CLI case acts: a console user of the operator role whose password the CLI checks
(streams/officer_cli.py). ``enrol`` creates the user in the archive and puts the password where the CLI
reads it (``ROADWATCH_OFFICER_PASSWORD``)."""
from __future__ import annotations

from roadwatch.models.config import Config
from roadwatch.streams.archive import open_archive
from roadwatch.streams.officer_cli import ENV
from roadwatch.streams.web import auth

PASSWORD = "officer-test-password"


def enrol(monkeypatch, archive, *names: str, role: str = "operator") -> None:
    conn = open_archive(str(archive))
    cfg = Config()
    for name in names:
        auth.upsert_user(conn, name, role, PASSWORD, cfg)
    monkeypatch.setenv(ENV, PASSWORD)
