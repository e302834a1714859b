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

Every table is created by a migration (schema.py) and every query is a named function of a module here,
named by what it holds: ``cases`` (verdicts, cases, histories, Art. 66 proposals), ``users`` (console users
and sessions), ``alerts`` (acknowledgements and handling notes), ``terminals`` (JT/T 808 bindings),
``platforms`` (the JT/T 809 link), ``evidence`` (signed evidence packages), ``outcomes`` (what ``scenario
check`` reads). No module outside this package holds SQL (tests/test_sql_home.py keeps it so).
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
                        load_vehicle_days, pack_state, save_partition_snapshot, snapshot_progress, total_pings,
                        upsert_alerts, upsert_day_tuples,
                        upsert_vehicle_days)
from .stops import save_stops
from .tracks import prune_track_points, recent_track

__all__ = [
    "ArchiveConnection", "ArchiveError", "POSTGRESQL", "SQLITE", "LATEST", "applied", "archive_target",
    "close_all", "close_pools", "current_version", "insert_track_points", "load_partition_snapshot",
    "load_partition_snapshots", "load_vehicle_days", "migrate", "month_has_rows", "open_archive", "pack_state",
    "parse_target", "prune_track_points", "recent_track", "redact", "report_tables", "save_partition_snapshot",
    "save_stops", "snapshot_progress", "total_pings", "upsert_alerts", "upsert_day_tuples", "upsert_vehicle_days",
]

_local = threading.local()
_pools: dict[str, PostgresPool] = {}
_pools_lock = threading.Lock()
DEFAULT_POOL_SIZE = 4


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
            p.migrated = False           # migrations not yet checked through this pool
        return p


def open_archive(target: Any = None, *, pool_size: int | None = None, migrate_now: bool = True) -> ArchiveConnection:
    """This thread's connection to the archive ``target`` (a ``Config``, a path, ``sqlite:…`` or
    ``postgresql://…``), with every migration applied."""
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
            conn.migrated = False           # migrations not yet checked on this connection
            holder = conn
        else:
            holder = _pool(loc, pool_size or DEFAULT_POOL_SIZE)
            conn = PostgresConnection(holder)
        conns[key] = conn
    holder = conn if backend == SQLITE else conn.pool
    if migrate_now and not holder.migrated:
        if backend == SQLITE:
            migrate(conn)
            holder.migrated = True
        else:
            with _pools_lock:
                if not holder.migrated:
                    migrate(conn)
                    holder.migrated = True
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
