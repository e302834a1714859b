"""The two archive backends behind one connection interface.

``ArchiveConnection`` is what every archive function receives. Its portable interface:

- ``execute(sql, params)`` / ``executemany(sql, seq)`` with qmark ``?`` parameters (translated to psycopg's
  ``%s`` on PostgreSQL); the result has ``fetchone()``, ``fetchall()``, iteration, ``rowcount``,
  ``description``;
- rows answer ``row["col"]``, ``row[0]`` and ``dict(row)`` on both backends;
- ``with conn.transaction():`` — one explicit transaction (``BEGIN IMMEDIATE`` on SQLite, so a writer never
  fails half-way on a lock upgrade); nested blocks join the outer transaction;
- numbers come back as ``int``/``float`` on both (PostgreSQL's ``SUM(bigint)`` is loaded as ``int``, not
  ``Decimal``).

SQLite (the embedded default): one connection per thread and file, WAL, autocommit outside transactions —
the behaviour of the first release. PostgreSQL: one ``psycopg_pool.ConnectionPool`` per process and URL; a
statement outside a transaction borrows a pooled connection for that statement, a transaction holds one
until it ends.

Queries are written portably: ``INSERT … ON CONFLICT(…) DO NOTHING | DO UPDATE``, ``conn.transaction()``;
DDL names its dialect differences (``DIALECTS``). On PostgreSQL, ``execute("BEGIN [IMMEDIATE]")`` /
``"COMMIT"`` / ``"ROLLBACK"`` open and end the connection's transaction as on SQLite (``rollback_quietly``).
"""
from __future__ import annotations

import collections
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


class ArchiveError(RuntimeError):
    """The archive cannot be opened or used as configured (bad URL, driver missing, server refused)."""


def integrity_errors() -> tuple[type[BaseException], ...]:
    """The drivers' unique/foreign-key violation errors (sqlite3's, and psycopg's when it is installed): what
    a query function catches when the table's own constraint is the answer (e.g. a vehicle already bound)."""
    try:
        from psycopg import IntegrityError as PgIntegrityError
    except ImportError:   # pragma: no cover - psycopg is a dependency
        return (sqlite3.IntegrityError,)
    return (sqlite3.IntegrityError, PgIntegrityError)


# --- targets ----------------------------------------------------------------------------------------------

def parse_target(target: str | Path) -> tuple[str, str]:
    """(backend, location): a SQLite file path, or a PostgreSQL conninfo URL.

    Accepted: a plain path or ``Path``; ``sqlite:PATH`` / ``sqlite:///ABS/PATH``; ``postgresql://…`` /
    ``postgres://…``."""
    if isinstance(target, Path):
        if re.search(r"(^|/)postgres(ql)?:", str(target), re.I):
            # Path("postgresql://…") keeps one slash: opening it would create a SQLite file named after the URL
            raise ArchiveError(f"a PostgreSQL URL was turned into a file path ({redact(target)}): pass the URL "
                               "as a string")
        return SQLITE, str(target)
    t = str(target).strip()
    if not t:
        raise ArchiveError("empty archive target")
    low = t.lower()
    if low.startswith(("postgresql://", "postgres://")):
        return POSTGRESQL, t
    if low.startswith("sqlite:"):
        rest = t[len("sqlite:"):]
        if rest.startswith("///"):
            rest = rest[2:]             # sqlite:///abs/path → /abs/path
        elif rest.startswith("//"):
            rest = rest[2:]
        if not rest:
            raise ArchiveError(f"no file in archive target {t!r}")
        return SQLITE, rest
    if "://" in t:
        raise ArchiveError(f"unsupported archive URL {redact(t)!r} (sqlite:PATH or postgresql://…)")
    return SQLITE, t


def redact(target: str | Path) -> str:
    """The target for messages and logs: a URL's password replaced by ``***``."""
    return re.sub(r"(:/+[^:/@]+:)[^@]*@", r"\1***@", str(target))


# --- rows and results -------------------------------------------------------------------------------------

class Row:
    """A PostgreSQL row that behaves like ``sqlite3.Row``: by index, by column name, ``dict(row)``."""

    __slots__ = ("_values", "_index")

    def __init__(self, values: Sequence, index: dict[str, int]):
        self._values = values
        self._index = index

    def __getitem__(self, k):
        if isinstance(k, str):
            return self._values[self._index[k]]
        return self._values[k]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)

    def __eq__(self, other) -> bool:
        return tuple(self._values) == (tuple(other) if isinstance(other, (Row, tuple, list)) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values))!r})"


def _row_factory(cursor):
    desc = cursor.description
    if desc is None:
        return tuple
    index = {d.name: i for i, d in enumerate(desc)}
    return lambda values: Row(values, index)


class Result:
    """A fully read PostgreSQL result (the pooled connection is already back in the pool)."""

    def __init__(self, rows: list, rowcount: int, description):
        self._rows = rows
        self._pos = 0
        self.rowcount = rowcount
        self.description = description

    def fetchone(self):
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchall(self) -> list:
        out = self._rows[self._pos:]
        self._pos = len(self._rows)
        return out

    def fetchmany(self, size: int = 1) -> list:
        out = self._rows[self._pos:self._pos + size]
        self._pos += len(out)
        return out

    def __iter__(self) -> Iterator:
        while self._pos < len(self._rows):
            self._pos += 1
            yield self._rows[self._pos - 1]


class PipelinedResult(Result):
    """A statement sent in pipeline mode (``PostgresConnection.pipelined``): its answer is read only when
    something of it is (rows, ``rowcount``, ``description``), with one round trip for every statement sent
    before it. An insert nobody asks about costs no round trip of its own."""

    def __init__(self, conn: "PostgresConnection", cur, sent_at: int):
        self._conn, self._cur, self._sent_at = conn, cur, sent_at
        self._rows, self._pos, self._read = [], 0, False
        self._rowcount, self._description = -1, None

    def _answer(self) -> None:
        if self._read:
            return
        self._conn._sync_since(self._sent_at)
        cur, self._cur = self._cur, None
        self._read = True
        try:
            self._description = cur.description
            self._rows = cur.fetchall() if cur.description is not None else []
            self._rowcount = cur.rowcount
        finally:
            cur.close()

    @property
    def rowcount(self) -> int:
        self._answer()
        return self._rowcount

    @property
    def description(self):
        self._answer()
        return self._description

    def fetchone(self):
        self._answer()
        return Result.fetchone(self)

    def fetchall(self) -> list:
        self._answer()
        return Result.fetchall(self)

    def fetchmany(self, size: int = 1) -> list:
        self._answer()
        return Result.fetchmany(self, size)

    def __iter__(self) -> Iterator:
        self._answer()
        return Result.__iter__(self)


# --- the connection -------------------------------------------------------------------------------------

class ArchiveConnection:
    """One thread's handle on one archive (see the module docstring for the interface)."""

    backend: str = ""
    target: str = ""
    # one write lock for the whole archive (SQLite): a long transaction holds up every other writer
    one_writer: bool = False

    def execute(self, sql: str, params: Sequence | dict = ()):  # pragma: no cover - abstract
        raise NotImplementedError

    def executemany(self, sql: str, seq: Iterable[Sequence]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextmanager
    def transaction(self):  # pragma: no cover - abstract
        raise NotImplementedError
        yield

    @property
    def in_transaction(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def bulk_upsert(self, table: str, cols: Sequence[str], rows: Sequence[Sequence], key: Sequence[str],
                    update: Sequence[str] | None = None) -> None:
        """Insert ``rows``; on a conflict on ``key`` set the ``update`` columns (``None``: keep the stored
        row). The same as one ``INSERT … ON CONFLICT`` per row, in order; PostgreSQL gets multi-row
        statements (one round trip per chunk instead of per row)."""
        if rows:
            self.executemany(upsert_sql(table, cols, key, update), rows)

    @contextmanager
    def pipelined(self):
        """Inside a transaction: statements are sent without waiting for each answer, and an answer is
        waited for only when it is read (PostgreSQL's pipeline mode: one round trip for every statement
        sent before it). A failed statement fails the transaction, reported when the next answer is read at
        the latest — at the end of the block. SQLite has no round trips: nothing changes there."""
        yield self

    def script(self, sql: str) -> None:
        """Several ``;``-separated statements (DDL), each through ``execute``."""
        for stmt in split_statements(sql):
            self.execute(stmt)

    def tables(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def columns(self, table: str) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # Write-ahead-log housekeeping (SQLite; PostgreSQL's server does its own: no-ops there)
    def defer_checkpoints(self) -> None:
        """Commits on this connection never copy the log back into the database themselves; someone
        else calls ``checkpoint`` (the worker's event-loop connection, streams/gps.py)."""

    def checkpoint(self) -> "LogCheckpoint":
        """Copy what the write-ahead log holds into the database, so that the next writer starts the log
        over. Returns the log's frames and those it could not copy (``LogCheckpoint``)."""
        return LogCheckpoint(0, 0)


class LogCheckpoint(NamedTuple):
    """What a checkpoint found (the worker's ``roadwatch_archive_log_*`` gauges; all 0 on PostgreSQL)."""
    frames: int       # in the log as the (last) pass ran: what the log holds since it last started over
    uncopied: int     # of them, not copied: a reader in another process still needed older ones, or another
    #                   process's writer appended meanwhile (-1 in both when SQLite could not checkpoint)


# rows per statement of ``SQLiteConnection.bulk_upsert`` (fewer when SQLite's variable limit says so): after
# each statement the thread waits for the GIL — up to the 5 ms switch interval while the event loop computes —
# so a commit of ~12 000 track points takes 3 statements, not 12 000 (docs/performance.md)
CHUNK_ROWS = 4096


# how long a SQLite writer waits for the write lock (its turn in this process, then SQLite's busy handler)
BUSY_TIMEOUT_S = 30.0


def _set_wal(raw: sqlite3.Connection, timeout_s: float) -> None:
    """``journal_mode=WAL``, waiting for the lock it needs: SQLite may answer "database is locked" at once,
    without its busy handler, while another process sets it up on a new file (workers starting together)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            raw.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class _WriteTurns:
    """The writers of one SQLite database in this process, served in the order they asked.

    SQLite has one write lock, and a connection that finds it taken sleeps in its busy handler and tries
    again (1, 2, 5, … then 100 ms at a time). The lock is not handed over: the worker's GPS commit thread, which
    writes a burst's track points in several transactions back to back, took it again each time while a WIM
    batch on the event loop slept, and that batch waited up to 630 ms (docs/performance.md, round 12). Here a
    writer waits for its turn, and the one before it hands the turn over as it ends its transaction. Writers in
    other processes still meet the busy handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = False
        self._waiting: collections.deque[threading.Event] = collections.deque()

    def acquire(self, timeout_s: float) -> None:
        with self._lock:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiting.append(turn)
        if turn.wait(timeout_s):
            return
        with self._lock:
            if turn.is_set():     # handed over as the wait ran out
                return
            self._waiting.remove(turn)
        raise sqlite3.OperationalError("database is locked (waited for this process's other writers)")

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()     # the turn passes straight on: nobody can slip in between
            else:
                self._held = False


_WRITE_TURNS: dict[str, _WriteTurns] = {}
_WRITE_TURNS_LOCK = threading.Lock()


def _forget_turns() -> None:         # a forked child has none of its parent's writers (nor their lock)
    global _WRITE_TURNS_LOCK
    _WRITE_TURNS_LOCK = threading.Lock()
    _WRITE_TURNS.clear()


os.register_at_fork(after_in_child=_forget_turns)


def _write_turns(path: str) -> _WriteTurns:
    key = os.path.realpath(path)
    with _WRITE_TURNS_LOCK:
        return _WRITE_TURNS.setdefault(key, _WriteTurns())


class SQLiteConnection(ArchiveConnection):
    """The first release's behaviour: WAL, ``synchronous=NORMAL``, 30 s busy timeout, autocommit; the
    transactions of one process take turns (``_WriteTurns``)."""

    backend = SQLITE
    one_writer = True

    def __init__(self, path: str):
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.target = str(p)
        self.raw = sqlite3.connect(str(p), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self._turns = _write_turns(str(p))
        self._deferred = False            # ``defer_checkpoints`` done
        _set_wal(self.raw, BUSY_TIMEOUT_S)
        self.raw.execute("PRAGMA synchronous=NORMAL")
        self.raw.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        # bound parameters per statement (``bulk_upsert``): 32 766 since SQLite 3.32, 999 before
        getlimit = getattr(self.raw, "getlimit", None)
        self.max_variables = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit else 999
        self.raw.row_factory = sqlite3.Row

    def execute(self, sql: str, params: Sequence | dict = ()):
        return self.raw.execute(sql, params)

    def executemany(self, sql: str, seq: Iterable[Sequence]):
        return self.raw.executemany(sql, seq)

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    @contextmanager
    def transaction(self):
        if self.raw.in_transaction:
            yield self
            return
        self._turns.acquire(BUSY_TIMEOUT_S)
        try:
            self.raw.execute("BEGIN IMMEDIATE")
            try:
                yield self
                self.raw.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (disk full): a plain ROLLBACK would raise "cannot
                # rollback" and hide the error; a failed COMMIT must not leave the transaction open for the
                # next caller
                if self.raw.in_transaction:
                    self.raw.execute("ROLLBACK")
                raise
        finally:
            self._turns.release()

    def tables(self) -> list[str]:
        return [r[0] for r in self.raw.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self.raw.execute(f'PRAGMA table_info("{table}")')]

    def close(self) -> None:
        self.raw.close()

    def bulk_upsert(self, table: str, cols: Sequence[str], rows: Sequence[Sequence], key: Sequence[str],
                    update: Sequence[str] | None = None) -> None:
        # Many rows per statement (as many as SQLite's variable limit allows), not one statement per row:
        # each statement hands the GIL back and forth once, and with the event loop busy the worker's commit
        # thread crawled row by row while it held the database's write lock — every WIM transaction on the
        # loop waited for it (docs/performance.md). SQLite applies a statement's rows in order, each meeting
        # the ones before it (tests/test_archive.py), so this is the same as one upsert per row.
        if not rows:
            return
        per = max(1, min(CHUNK_ROWS, self.max_variables // len(cols)))
        if len(rows) < 8:
            self.executemany(upsert_sql(table, cols, key, update), rows)
            return
        for i in range(0, len(rows), per):
            chunk = rows[i:i + per]
            self.raw.execute(upsert_sql(table, cols, key, update, len(chunk)),
                             [v for row in chunk for v in row])

    def defer_checkpoints(self) -> None:
        # SQLite's automatic checkpoint runs inside whichever COMMIT finds the log over 1 000 pages: after
        # the GPS commit thread wrote megabytes of state, that was the next WIM transaction on the event loop
        if not self._deferred:       # (the commit thread asks before each snapshot: once is enough)
            self.raw.execute("PRAGMA wal_autocheckpoint=0")
            self._deferred = True

    def checkpoint(self) -> LogCheckpoint:
        # A passive checkpoint copies the log's frames as of its start while writers go on appending; the log
        # starts over only when a writer finds every frame copied. Under a steady stream of WIM transactions
        # that never happened: frames appended during each checkpoint were left for the next one, and the
        # log grew without bound (300 MB in 20 s at 500 readings/s), each checkpoint's sync flushing more
        # (docs/performance.md, round 17). So a second pass, while this process's writers wait for their
        # turn, copies what the first one left: little, so the wait is short.
        self.raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()     # (SQLite refuses it in a transaction)
        self._turns.acquire(BUSY_TIMEOUT_S)
        try:
            busy, log, done = self.raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            self._turns.release()
        return LogCheckpoint(int(log), int(log) - int(done)) if not busy and log >= 0 else LogCheckpoint(-1, -1)

    def __enter__(self):
        # sqlite3's ``with conn:``: commit (or roll back) an open transaction on exit; it does not begin one
        self.raw.__enter__()
        return self

    def __exit__(self, *exc):
        return self.raw.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        if name == "raw":
            raise AttributeError(name)
        # compatibility: code written against the first release's sqlite3.Connection (this round only)
        return getattr(self.raw, name)


# PostgreSQL ---------------------------------------------------------------------------------------------

_QMARK = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|--[^\n]*|(\?)|(%)")


def qmark_to_pyformat(sql: str) -> str:
    """``?`` → ``%s`` outside quoted strings, identifiers and comments; every ``%`` → ``%%`` (psycopg reads
    placeholders everywhere, even inside literals)."""
    def sub(m: re.Match) -> str:
        if m.group(1):
            return "%s"
        if m.group(2):
            return "%%"
        return m.group(0).replace("%", "%%")
    return _QMARK.sub(sub, sql)


_BEGIN = re.compile(r"^\s*BEGIN(\s+(IMMEDIATE|DEFERRED|EXCLUSIVE|TRANSACTION))?\s*;?\s*$", re.I)
_END = re.compile(r"^\s*(COMMIT|END|ROLLBACK)(\s+TRANSACTION)?\s*;?\s*$", re.I)


class PostgresPool:
    """One pool per process and URL; numeric results loaded as int/float like SQLite's."""

    def __init__(self, url: str, max_size: int):
        try:
            import psycopg
            from psycopg.types.numeric import NumericLoader
            from psycopg_pool import ConnectionPool
        except ImportError as e:   # pragma: no cover - psycopg is a dependency
            raise ArchiveError(f"PostgreSQL archive needs psycopg 3 and psycopg-pool: {e}") from None
        self.psycopg = psycopg
        self.url = url

        class IntOrFloat(NumericLoader):
            """SUM(bigint) and friends: ``int`` when integral, else ``float`` (as SQLite returns them)."""

            def load(self, data):
                d = super().load(data)
                return int(d) if d == d.to_integral_value() else float(d)

        def configure(conn):
            conn.adapters.register_loader("numeric", IntOrFloat)

        self.pool = ConnectionPool(url, min_size=1, max_size=max(1, max_size), open=False,
                                   kwargs={"autocommit": True, "row_factory": _row_factory},
                                   configure=configure, name="roadwatch-archive")
        try:
            self.pool.open(wait=True, timeout=30)
        except Exception as e:  # noqa: BLE001 - psycopg_pool raises PoolTimeout with the cause in the log
            self.pool.close()
            raise ArchiveError(f"cannot connect to the archive {redact(url)}: {e}") from None
        self.col_cache: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def close(self) -> None:
        self.pool.close()


class PostgresConnection(ArchiveConnection):
    backend = POSTGRESQL

    def __init__(self, pool: PostgresPool):
        self.pool = pool
        self.target = redact(pool.url)
        self._tx = None            # the pooled connection held by the open transaction
        self._sql_cache: dict[str, str] = {}
        self._pipe = None          # psycopg's Pipeline while ``pipelined`` is open
        self._sent = 0             # statements sent in pipeline mode
        self._synced = 0           # … of which the answers are in

    # statement translation
    def _translate(self, sql: str) -> str:
        out = self._sql_cache.get(sql)
        if out is None:
            out = qmark_to_pyformat(sql)
            if len(self._sql_cache) < 2000:
                self._sql_cache[sql] = out
        return out

    # execution
    def _run(self, sql: str, params=(), many: Iterable | None = None) -> Result:
        if self._pipe is not None and many is None:
            cur = self._tx.cursor()
            cur.execute(sql, params if params else None)
            self._sent += 1
            return PipelinedResult(self, cur, self._sent)
        if self._tx is not None:
            return self._on(self._tx, sql, params, many)
        with self.pool.pool.connection() as conn:
            return self._on(conn, sql, params, many)

    @staticmethod
    def _on(conn, sql: str, params, many) -> Result:
        with conn.cursor() as cur:
            if many is not None:
                cur.executemany(sql, many)
                return Result([], cur.rowcount, None)
            cur.execute(sql, params if params else None)
            rows = cur.fetchall() if cur.description is not None else []
            return Result(rows, cur.rowcount, cur.description)

    def execute(self, sql: str, params: Sequence | dict = ()):
        if _BEGIN.match(sql):
            self._begin()
            return Result([], -1, None)
        m = _END.match(sql)
        if m:
            self._end(commit=m.group(1).upper() != "ROLLBACK")
            return Result([], -1, None)
        return self._run(self._translate(sql), tuple(params) if not isinstance(params, dict) else params)

    def executemany(self, sql: str, seq: Iterable[Sequence]) -> None:
        seq = [tuple(p) for p in seq]
        if seq:
            self._run(self._translate(sql), many=seq)

    def bulk_upsert(self, table: str, cols: Sequence[str], rows: Sequence[Sequence], key: Sequence[str],
                    update: Sequence[str] | None = None) -> None:
        if not rows:
            return
        if (update is not None and set(update) | set(key) != set(cols)) or self._pipe is not None:
            # partial updates row by row; in pipeline mode too (no COPY there)
            return ArchiveConnection.bulk_upsert(self, table, cols, rows, key, update)
        # COPY into a per-connection staging table, then one INSERT … SELECT … ON CONFLICT: psycopg formats
        # COPY rows in C, while a long VALUES list or array parameters are adapted in Python (which cost
        # more than the server's work). One statement may not touch a row twice: rows with the same key
        # collapse as sequential upserts would (the last one wins when every non-key column is updated, the
        # first one when doing nothing).
        idx = [cols.index(k) for k in key]
        by_key: dict = {}
        for r in rows:
            k = tuple(r[i] for i in idx)
            if update is None:
                by_key.setdefault(k, r)
            else:
                by_key[k] = r
        types = self._column_types(table)
        convs = [_PY_TYPE.get(types[c]) for c in cols]
        names = ", ".join(cols)
        stage = f"rw_stage_{table}"
        action = ("DO UPDATE SET " + ", ".join(f"{c}=EXCLUDED.{c}" for c in update)) if update else "DO NOTHING"
        with self.transaction():
            conn = self._tx
            with conn.cursor() as cur:
                cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table}) ON COMMIT DELETE ROWS")
                cur.execute(f"TRUNCATE {stage}")
                with cur.copy(f"COPY {stage} ({names}) FROM STDIN") as cp:
                    for r in by_key.values():
                        cp.write_row([v if v is None or f is None else f(v) for v, f in zip(r, convs)])
                cur.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} "
                            f"ON CONFLICT({', '.join(key)}) {action}")

    def _column_types(self, table: str) -> dict[str, str]:
        key = "types:" + table
        types = self.pool.col_cache.get(key)
        if types is None:
            types = {r[0]: r[1] for r in self._run(
                "SELECT column_name, udt_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s", (table,))}
            self.pool.col_cache[key] = types
        return types

    def _begin(self) -> None:
        if self._tx is not None:
            raise ArchiveError("a transaction is already open on this connection")
        conn = self.pool.pool.getconn()
        try:
            conn.execute("BEGIN")
        except BaseException:
            self.pool.pool.putconn(conn)
            raise
        self._tx = conn

    def _end(self, commit: bool) -> None:
        conn, self._tx = self._tx, None
        if conn is None:
            raise ArchiveError("no transaction is open on this connection")
        try:
            conn.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            self.pool.pool.putconn(conn)

    @contextmanager
    def pipelined(self):
        if self._tx is None or self._pipe is not None:     # no transaction: one statement at a time; nested: as is
            yield self
            return
        with self._tx.pipeline() as pipe:
            self._pipe = pipe
            try:
                yield self
            finally:
                self._pipe = None
        self._synced = self._sent                # the pipeline's end read every answer

    def _sync_since(self, sent_at: int) -> None:
        """The answers of every statement up to number ``sent_at`` are in (one round trip if they are not)."""
        if self._synced < sent_at and self._pipe is not None:
            self._pipe.sync()
            self._synced = self._sent

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    def __enter__(self):
        # as sqlite3's ``with conn:``: commit (or roll back) an open transaction on exit; it does not begin one
        return self

    def __exit__(self, exc_type, *_):
        if self._tx is not None:
            self._end(commit=exc_type is None)
        return False

    @contextmanager
    def transaction(self):
        if self._tx is not None:
            yield self
            return
        self._begin()
        try:
            yield self
        except BaseException:
            self._end(commit=False)
            raise
        self._end(commit=True)

    def tables(self) -> list[str]:
        return [r[0] for r in self._run(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name")]

    def columns(self, table: str) -> list[str]:
        cols = self.pool.col_cache.get(table)
        if cols is None:
            cols = [r[0] for r in self._run(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s ORDER BY ordinal_position", (table,))]
            if cols:
                self.pool.col_cache[table] = cols
        return cols

    def forget_catalog(self) -> None:
        """After DDL: column lists and types are read again."""
        self.pool.col_cache.clear()

    def close(self) -> None:
        if self._tx is not None:
            self._end(commit=False)


_PY_TYPE = {"int8": int, "int4": int, "int2": int, "float8": float, "float4": float, "text": str, "bytea": bytes}


def upsert_sql(table: str, cols: Sequence[str], key: Sequence[str], update: Sequence[str] | None,
               rows: int = 1) -> str:
    """``INSERT INTO table(cols) VALUES (?,…)[, (?,…) × rows] ON CONFLICT(key) DO UPDATE SET c=excluded.c … |
    DO NOTHING``."""
    action = ("DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in update)) if update else "DO NOTHING"
    one = f"({', '.join('?' * len(cols))})"
    return (f"INSERT INTO {table}({', '.join(cols)}) VALUES {', '.join([one] * rows)} "
            f"ON CONFLICT({', '.join(key)}) {action}")


def rollback_quietly(conn) -> None:
    """End a transaction a failed attempt left open (SQLite may already have rolled it back itself, e.g.
    on SQLITE_FULL, in which case a plain ROLLBACK would raise "cannot rollback - no transaction is active")."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - any backend's "no transaction": nothing left to end
            pass


# --- DDL ------------------------------------------------------------------------------------------------

def split_statements(sql: str) -> list[str]:
    """``;``-separated statements with ``--`` comments removed (our DDL has no ``;`` inside literals)."""
    text = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


# What differs between the two dialects in our DDL, by name. Migrations write ``{INTEGER}``, ``{REAL}``,
# ``{BLOB}``, ``{SERIAL_PK}`` (an auto-numbered primary key) and ``{WITHOUT_ROWID}`` (SQLite's clustered table,
# after the closing parenthesis); everything else is the SQL both accept.
DIALECTS: dict[str, dict[str, str]] = {
    SQLITE: {"INTEGER": "INTEGER", "REAL": "REAL", "BLOB": "BLOB",
             "SERIAL_PK": "INTEGER PRIMARY KEY AUTOINCREMENT", "WITHOUT_ROWID": " WITHOUT ROWID"},
    POSTGRESQL: {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "BLOB": "BYTEA",
                 "SERIAL_PK": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
                 # a primary-key B-tree serves the (plate, time) look-backs; PostgreSQL has no clustered tables
                 "WITHOUT_ROWID": ""},
}


def ddl_for(backend: str, stmt: str) -> str:
    """One DDL statement of a migration (comments removed: ``split_statements``) in ``backend``'s dialect."""
    return stmt.format_map(DIALECTS[backend])


def url_with_schema(url: str, schema: str) -> str:
    """``url`` with its session ``search_path`` set to ``schema`` (libpq ``options``)."""
    from urllib.parse import quote
    return url + ("&" if "?" in url else "?") + "options=" + quote(f"-c search_path={schema}", safe="")
