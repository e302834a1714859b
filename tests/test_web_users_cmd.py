"""``roadwatch users add`` through the real CLI entry point."""
from __future__ import annotations

import io

import pytest

from roadwatch.models.config import Config
from roadwatch.streams.archive import open_archive
from roadwatch.streams.cli import main
from roadwatch.streams.web import auth


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp_path}";web.argon2_time_cost=1;web.argon2_memory_kib=1024')
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    return tmp_path / "archive.sqlite"


def add(monkeypatch, argv, stdin=""):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["users", "add", *argv])


def test_create_update_and_refuse(env, monkeypatch, capsys):
    assert add(monkeypatch, ["chief", "--role", "admin", "--password-stdin"], "a long password\n") == 0
    conn = open_archive(env)
    u = auth.get_user(conn, "chief")
    assert u["role"] == "admin" and auth.verify_password(u["pw_hash"], "a long password", Config())
    assert "created" in capsys.readouterr().err
    # the last admin cannot be demoted
    assert add(monkeypatch, ["chief", "--role", "viewer", "--keep-password"]) == 2
    assert add(monkeypatch, ["ops", "--role", "operator", "--password-stdin"], "short\n") == 2
    assert "at least 10" in capsys.readouterr().err
    assert add(monkeypatch, ["bad name", "--role", "viewer", "--password-stdin"], "a long password\n") == 2
    assert add(monkeypatch, ["ops", "--role", "operator", "--keep-password"]) == 2        # no such user yet
    assert add(monkeypatch, ["ops", "--role", "operator"], "") == 2                        # no tty to prompt
    # exactly the minimum length, with a CRLF line ending from a Windows pipe
    assert add(monkeypatch, ["ops", "--role", "operator", "--password-stdin"], "0123456789\r\n") == 0
    assert auth.verify_password(auth.get_user(conn, "ops")["pw_hash"], "0123456789", Config())
    assert add(monkeypatch, ["ops", "--role", "viewer", "--keep-password"]) == 0
    u = auth.get_user(conn, "ops")
    assert u["role"] == "viewer" and auth.verify_password(u["pw_hash"], "0123456789", Config())
    with pytest.raises(SystemExit):
        add(monkeypatch, ["x", "--role", "root", "--password-stdin"], "a long password\n")
