"""A throw-away PostgreSQL server for the test session, and the fixtures that run tests on both backends.

The server is Debian's ``postgresql`` binaries (``scripts/ensure-postgresql.sh`` installs them when `make test`
runs as root), started with ``initdb`` + ``pg_ctl`` as an unprivileged user in a temporary directory, on a
free port, listening only on a unix socket in that directory. Each test gets a scratch schema of its own
(``streams/archive/scratch.py``), dropped afterwards. Where PostgreSQL cannot be had, the PostgreSQL variant
of a test is skipped with the reason (``pytest -ra`` lists it) — never silently.

Fixtures (imported by conftest.py):
- ``pg_server``: session-scoped ``PgServer`` (or a skip with the reason);
- ``pg_url``: a scratch-schema URL on it;
- ``archive_target``: parametrised ``sqlite`` / ``postgresql`` — a SQLite file path or a scratch-schema URL.
"""
from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

UNPRIVILEGED_USER = "rwpgtest"       # created (system user, no login) when the suite runs as root


def find_bindir() -> str | None:
    """$ROADWATCH_PG_BINDIR, Debian's newest /usr/lib/postgresql/N/bin, or initdb on PATH."""
    env = os.environ.get("ROADWATCH_PG_BINDIR")
    if env:
        return env if os.path.exists(os.path.join(env, "initdb")) else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _run_as(user: pwd.struct_passwd | None):
    if user is None:
        return None

    def demote():
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    return demote


def _unprivileged_user() -> pwd.struct_passwd | None:
    """None when not root (the server runs as us); else a user PostgreSQL accepts to run as."""
    if os.geteuid() != 0:
        return None
    for name in (UNPRIVILEGED_USER, "postgres"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", UNPRIVILEGED_USER],
                   check=True, capture_output=True)
    return pwd.getpwnam(UNPRIVILEGED_USER)


class PgServer:
    def __init__(self, bindir: str, settings: dict | None = None):
        from roadwatch.streams.broker import free_port
        self.bindir = bindir
        self.user = _unprivileged_user()
        self.dir = Path(tempfile.mkdtemp(prefix="rw-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        os.chmod(self.dir, 0o755)
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.log = self.dir / "server.log"
        demote = _run_as(self.user)
        r = subprocess.run([f"{bindir}/initdb", "-D", str(self.data), "-U", "roadwatch", "-A", "trust", "-E", "UTF8",
                            "--locale=C", "--no-sync"], capture_output=True, text=True, preexec_fn=demote)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr[-2000:]}")
        opts = {"listen_addresses": "''", "unix_socket_directories": f"'{self.dir}'", "port": str(self.port),
                "max_connections": "200", "shared_buffers": "64MB", **(settings or {})}
        with open(self.data / "postgresql.conf", "a") as f:
            for k, v in opts.items():
                f.write(f"{k} = {v}\n")
        r = subprocess.run([f"{bindir}/pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"],
                           capture_output=True, text=True, preexec_fn=demote)
        if r.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stderr[-1000:]} {log}")
        self.url = f"postgresql://roadwatch@/postgres?host={self.dir}&port={self.port}"

    def stop(self) -> None:
        subprocess.run([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, preexec_fn=_run_as(self.user))
        shutil.rmtree(self.dir, ignore_errors=True)


_SERVER: PgServer | None = None
_REASON: str | None = None


def server_or_reason() -> tuple[PgServer | None, str | None]:
    """The session's server, started on first use; or why there is none."""
    global _SERVER, _REASON
    if _SERVER is None and _REASON is None:
        bindir = find_bindir()
        if bindir is None:
            _REASON = ("PostgreSQL not available: no initdb (Debian: apt-get install postgresql; `make test` "
                       "installs it when run as root)")
        else:
            try:
                import psycopg  # noqa: F401
                _SERVER = PgServer(bindir)
                atexit.register(stop_server)      # also when the session ends without sessionfinish
            except Exception as e:  # noqa: BLE001 - reported as the skip reason
                _REASON = f"PostgreSQL could not be started: {e}"
    return _SERVER, _REASON


def stop_server() -> None:
    global _SERVER
    if _SERVER is not None:
        _SERVER.stop()
        _SERVER = None


@pytest.fixture(scope="session")
def pg_server():
    srv, reason = server_or_reason()
    if srv is None:
        pytest.skip(reason)
    yield srv


@pytest.fixture
def pg_url(pg_server):
    from roadwatch.streams.archive.scratch import scratch_schema
    with scratch_schema(pg_server.url, "rw_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def archive_target(request, tmp_path):
    """The archive a test runs on: a SQLite file, or a scratch schema on the session's PostgreSQL."""
    from roadwatch.streams.archive import close_all
    if request.param == "sqlite":
        yield tmp_path / "archive.sqlite"
        close_all()
    else:
        yield request.getfixturevalue("pg_url")
