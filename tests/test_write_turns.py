"""SQLite writers of one process take turns in the order they asked (``streams/archive/backend.py``
``_WriteTurns``): a transaction that waits while another thread runs transactions back to back gets in after
the current one, not after all of them (SQLite's own busy handler sleeps and retries, and lost that race to
the GPS commit thread's back-to-back track-point transactions for up to 630 ms)."""
from __future__ import annotations

import os
import threading
import time

import pytest

from roadwatch.streams.archive.backend import SQLiteConnection


def _table(path) -> SQLiteConnection:
    conn = SQLiteConnection(str(path))
    conn.execute("CREATE TABLE IF NOT EXISTS log (who TEXT NOT NULL)")
    return conn


def _waiting(conn: SQLiteConnection, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(conn._turns._waiting) < n:
        assert time.monotonic() < deadline, "the other writer never started waiting"
        time.sleep(0.001)


def test_a_waiting_writer_gets_the_next_turn(tmp_path):
    path = tmp_path / "a.db"
    busy, waiter = _table(path), SQLiteConnection(str(path))
    inside, go = threading.Event(), threading.Event()

    def back_to_back() -> None:          # like the commit thread: one transaction after another
        for k in range(20):
            with busy.transaction():
                busy.execute("INSERT INTO log VALUES (?)", (f"a{k}",))
                if k == 0:
                    inside.set()
                    assert go.wait(10)
                time.sleep(0.003)         # (SQLite's busy handler would sleep through several of these)

    def one() -> None:
        with waiter.transaction():
            waiter.execute("INSERT INTO log VALUES ('b')")

    a = threading.Thread(target=back_to_back)
    a.start()
    assert inside.wait(10)
    b = threading.Thread(target=one)
    b.start()
    _waiting(busy, 1)
    go.set()
    a.join(30)
    b.join(30)
    order = [r[0] for r in busy.execute("SELECT who FROM log ORDER BY rowid")]
    assert order[:3] == ["a0", "b", "a1"] and len(order) == 21


def test_a_failed_transaction_hands_the_turn_on_and_a_wait_can_run_out(tmp_path):
    path = tmp_path / "a.db"
    first, second = _table(path), SQLiteConnection(str(path))
    with pytest.raises(ZeroDivisionError):
        with first.transaction():
            first.execute("INSERT INTO log VALUES ('x')")
            1 / 0
    with second.transaction():            # the turn came back although the transaction failed
        second.execute("INSERT INTO log VALUES ('y')")
    assert [r[0] for r in first.execute("SELECT who FROM log")] == ["y"]

    turns = first._turns
    turns.acquire(1.0)
    try:
        with pytest.raises(Exception, match="locked"):
            turns.acquire(0.05)           # (the real wait is the busy timeout, 30 s)
        assert not turns._waiting         # a wait that ran out leaves no place in the queue behind
    finally:
        turns.release()
    with second.transaction():            # and the turn is free again
        second.execute("INSERT INTO log VALUES ('z')")


def test_a_forked_child_does_not_wait_for_its_parents_writers(tmp_path):
    conn = _table(tmp_path / "a.db")
    conn._turns.acquire(1.0)              # the parent is inside a transaction as it forks
    try:
        pid = os.fork()
        if pid == 0:                      # the child: its own turns, free
            try:
                SQLiteConnection(str(tmp_path / "a.db"))._turns.acquire(0.5)
                os._exit(0)
            except BaseException:         # noqa: BLE001
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        conn._turns.release()
