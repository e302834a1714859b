"""The durable archive: what outlives the worker and the broker — the system of record.

Every output with legal weight is written here with a deterministic primary key and upsert semantics: a
replay writes the same rows again, never new ones.

- ``backend``: SQLite (default, embedded: one file, WAL, one connection per thread) or PostgreSQL
  (``psycopg`` 3 with a connection pool), both behind ``ArchiveConnection`` (qmark parameters,
  ``executemany``, ``transaction()``, rows by name or index).
- ``schema``: versioned migrations recorded in ``schema_version``; ``open_archive`` applies the pending ones,
  so an archive made by an older release is upgraded in place (``roadwatch archive migrate`` does it ahead).
- the queries, as named functions: ``snapshots`` (alerts, vehicle days, track samples, per-partition ping
  snapshots, the stored rows of past days that late data changes), ``reports`` (the monthly report's tables), ``tracks`` (the console's vehicle track),
  ``transfer`` (``roadwatch archive copy``).

Which archive: ``open_archive(cfg)`` (or ``cfg.archive_path``) — ``$ROADWATCH_ARCHIVE``, the ``archive.url``
key, or ``paths.archive`` (a file path or a ``postgresql://…`` URL); default ``<data_dir>/archive.sqlite``.

Compatibility for this round: ``register_schema(ddl)`` still works — tables registered that way (the case
workflow's passages and driver cards, console users and sessions, alert acknowledgements, …) are created
after the migrations, with SQLite types translated for PostgreSQL. They are to be moved into migrations
(schema.py) as their modules move their SQL into this package; so are the SQLite-flavoured statements that
``backend._legacy_to_pg`` still translates.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .backend import (POSTGRESQL, SQLITE, ArchiveConnection, ArchiveError, PostgresConnection, PostgresPool,
                      SQLiteConnection, parse_target, redact)
from .reports import month_has_rows, report_tables
from .schema import LATEST, applied, current_version, migrate
from .snapshots import (insert_track_points, load_partition_snapshot, load_partition_snapshots,
                        load_vehicle_days, save_partition_snapshot, snapshot_progress, total_pings, upsert_alerts,
                        upsert_vehicle_days)
from .tracks import prune_track_points, recent_track

__all__ = [
    "ArchiveConnection", "ArchiveError", "POSTGRESQL", "SQLITE", "LATEST", "applied", "archive_target",
    "close_all", "close_pools", "current_version", "insert_track_points", "load_partition_snapshot",
    "load_partition_snapshots", "load_vehicle_days", "migrate", "month_has_rows", "open_archive", "parse_target", "prune_track_points",
    "recent_track", "redact", "register_schema", "registered_schemas", "report_tables", "save_partition_snapshot",
    "snapshot_progress", "total_pings", "upsert_alerts", "upsert_vehicle_days",
]

_SCHEMAS: list[str] = []
_local = threading.local()
_pools: dict[str, PostgresPool] = {}
_pools_lock = threading.Lock()
DEFAULT_POOL_SIZE = 4


def register_schema(ddl: str) -> None:
    """Compatibility (this round): extra ``CREATE … IF NOT EXISTS`` DDL, applied after the migrations."""
    if ddl not in _SCHEMAS:
        _SCHEMAS.append(ddl)


# Modules that still declare tables with ``register_schema`` (to move into migrations): the archive CLI
# imports them so that ``archive migrate`` and ``archive copy`` see the whole schema.
REGISTERING_MODULES = ("roadwatch.streams.cases", "roadwatch.streams.web.auth", "roadwatch.streams.web.console",
                       "roadwatch.streams.web.handling", "roadwatch.streams.jt808.terminal_auth")


def registered_schemas() -> list[str]:
    """Every ``register_schema`` DDL, after importing the modules that declare them."""
    import importlib
    for name in REGISTERING_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:   # a module removed on another branch: its tables went with it
            if e.name != name:
                raise
    return list(_SCHEMAS)


def archive_target(cfg) -> Path | str:
    """The configured archive: a PostgreSQL URL or the SQLite file (``Config.archive_path``)."""
    return cfg.archive_path


def _key(backend: str, loc: str) -> str:
    return str(Path(loc).resolve()) if backend == SQLITE else loc


def _pool(url: str, size: int) -> PostgresPool:
    with _pools_lock:
        p = _pools.get(url)
        if p is None:
            p = _pools[url] = PostgresPool(url, size)
            p.n_registered = -1          # migrations not yet checked through this pool
        return p


def open_archive(target: Any = None, *, pool_size: int | None = None, migrate_now: bool = True) -> ArchiveConnection:
    """This thread's connection to the archive ``target`` (a ``Config``, a path, ``sqlite:…`` or
    ``postgresql://…``), with every migration and registered schema applied."""
    if target is not None and hasattr(target, "archive_path"):
        if pool_size is None:
            pool_size = int(target["archive.pool_size"])
        target = target.archive_path
    if target is None:
        raise ArchiveError("open_archive needs a Config, a path or a URL")
    backend, loc = parse_target(target)
    key = _key(backend, loc)
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    conn = conns.get(key)
    if conn is None:
        if backend == SQLITE:
            conn = SQLiteConnection(loc)
            conn.n_registered = -1          # migrations not yet checked on this connection
            holder = conn
        else:
            holder = _pool(loc, pool_size or DEFAULT_POOL_SIZE)
            conn = PostgresConnection(holder)
        conns[key] = conn
    holder = conn if backend == SQLITE else conn.pool
    if migrate_now and holder.n_registered != len(_SCHEMAS):
        if backend == SQLITE:
            migrate(conn, _SCHEMAS)
            holder.n_registered = len(_SCHEMAS)
        else:
            with _pools_lock:
                if holder.n_registered != len(_SCHEMAS):
                    migrate(conn, _SCHEMAS)
                    holder.n_registered = len(_SCHEMAS)
    return conn


def close_all() -> None:
    """Close this thread's connections (a PostgreSQL pool stays open for the process's other threads)."""
    for conn in getattr(_local, "conns", {}).values():
        conn.close()
    _local.conns = {}


def close_pools() -> None:
    """Close this thread's connections and every PostgreSQL pool of the process (CLI exit, tests)."""
    close_all()
    with _pools_lock:
        for p in _pools.values():
            p.close()
        _pools.clear()
