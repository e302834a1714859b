"""Throw-away PostgreSQL schemas: ``roadwatch bench --archive postgresql://…`` and the test suite run each
measurement or test in a schema of its own on a shared server, dropped at the end."""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from typing import Iterator

from .backend import POSTGRESQL, ArchiveError, parse_target, url_with_schema


@contextmanager
def scratch_schema(url: str, prefix: str = "rw_scratch") -> Iterator[str]:
    """Create an empty schema, yield a URL whose connections use it, drop it (and its tables) afterwards."""
    backend, _ = parse_target(url)
    if backend != POSTGRESQL:
        raise ArchiveError("a scratch schema needs a postgresql:// archive")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,30}", prefix):
        raise ArchiveError(f"bad schema prefix {prefix!r}")
    import psycopg
    name = f"{prefix}_{os.getpid()}_{time.monotonic_ns() % 10**12}"
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {name}")
    try:
        yield url_with_schema(url, name)
    finally:
        from . import close_pools
        close_pools()          # this process's pools on the scratch URL hold connections to it
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
