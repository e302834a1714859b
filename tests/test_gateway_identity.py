"""Terminal identity at the JT/T 808 gateway, over real TCP with a real SQLite archive.

Each attack of issue 13 (first bullet) is reproduced: a 0x0200 from a connection that never authenticated,
one that uses another terminal's id, one with a wrong auth code, and a terminal registering with another
vehicle's plate. Each must get the JT/T 808 failure answer and publish nothing (no ping → no alert), and
each connection's refusals become ONE dead letter per reason with the count of frames.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys

import orjson
import pytest

from roadwatch.streams.archive import close_all
from roadwatch.streams.jt808 import codec as c
from roadwatch.streams.jt808.terminal_auth import TerminalAuth

from test_gateway_tcp import Terminal, _loc, dead_letters, pings_of, run_gateway, until
from test_gateway_tcp import front_end  # noqa: F401  (both front ends)

A, B, X = "13800000001", "13800000002", "13800000099"       # two real terminals and an attacker
FAST = 110.0                                                   # km/h: an overspeed fix for a dangerous-goods truck


def reasons(pub) -> list[str]:
    return sorted(d["reason"] for d in dead_letters(pub))


def test_unauthenticated_location_is_refused_once_per_connection(tmp_path):
    async def t(port, pub, gw):
        x = await Terminal(A).open(port)                      # a real terminal's id, never authenticated
        for i in range(6):
            s = await x.send(0x0200, c.encode_location(_loc(i, speed=FAST)))
            assert (await x.recv()).fields == {"reply_serial": s, "reply_msg_id": 0x0200, "result": 1}
        s = await x.send(0x0002, b"")                         # not even a heartbeat before 0x0102
        assert (await x.recv()).fields["result"] == 1
        x.close()
        await until(lambda: len(dead_letters(pub)) == 1)
        dl = dead_letters(pub)[0]
        assert dl["reason"] == "not_authenticated" and dl["detail"].startswith("7 frame(s) refused on one connection")
        await asyncio.sleep(0.1)
        assert pings_of(pub) == [] and len(dead_letters(pub)) == 1
    run_gateway(t, data_dir=str(tmp_path))


def test_another_terminals_id_cannot_feed_positions(tmp_path):
    async def t(port, pub, gw):
        a = await Terminal(A).open(port)
        await a.login("粤B12345")
        x = await Terminal(A).open(port)                      # attacker reuses A's id while A is connected
        s = await x.send(0x0200, c.encode_location(_loc(1, speed=FAST)))
        assert (await x.recv()).fields == {"reply_serial": s, "reply_msg_id": 0x0200, "result": 1}
        r = await x.register("粤B12345")                      # and cannot obtain a code of its own
        assert r.fields["result"] == 3                        # terminal already registered
        a_ok = await a.send(0x0200, c.encode_location(_loc(2)))
        assert (await a.recv()).fields == {"reply_serial": a_ok, "reply_msg_id": 0x0200, "result": 0}
        # an authenticated terminal may not speak for another: refused and its connection closed
        b = await Terminal(B).open(port)
        await b.login("粤B00002")
        b.phone = A
        s = await b.send(0x0200, c.encode_location(_loc(3, speed=FAST)))
        assert (await b.recv()).fields == {"reply_serial": s, "reply_msg_id": 0x0200, "result": 1}
        assert await b.closed_within(2.0)
        x.close()
        await until(lambda: len(pings_of(pub)) == 1)
        await until(lambda: reasons(pub) == ["not_authenticated", "terminal_already_registered", "terminal_mismatch"])
        await asyncio.sleep(0.1)
        assert [p["speed_kmh"] for _, p in pings_of(pub)] == [40.0]     # only A's own fix
        a.close()
    run_gateway(t, data_dir=str(tmp_path))


def test_wrong_auth_code_is_refused_and_repeated_failures_close(tmp_path):
    async def t(port, pub, gw):
        a = await Terminal(A).open(port)
        code = await a.login("粤B12345")
        a.close()
        x = await Terminal(A).open(port)
        for n, guess in enumerate([code[:-1] + ("0" if code[-1] != "0" else "1"), "", code.lower()]):
            assert (await x.authenticate(guess)).fields["result"] == 1
        assert await x.closed_within(2.0)                     # gateway.max_auth_failures = 3
        await until(lambda: reasons(pub) == ["auth_failed"])
        assert dead_letters(pub)[0]["detail"].startswith("3 frame(s)")
        y = await Terminal(A, version=2019).open(port)        # the right code still works (2019 layout too)
        assert (await y.authenticate(code)).fields["result"] == 0
        s = await y.send(0x0200, c.encode_location(_loc(1)))
        assert (await y.recv()).fields == {"reply_serial": s, "reply_msg_id": 0x0200, "result": 0}
        await until(lambda: len(pings_of(pub)) == 1)
        y.close()
    run_gateway(t, data_dir=str(tmp_path))


def test_registering_with_another_vehicles_plate_is_refused(tmp_path):
    async def t(port, pub, gw):
        a = await Terminal(A).open(port)
        await a.login("粤B12345")
        x = await Terminal(X).open(port)
        assert (await x.register("粤B12345")).fields == {"reply_serial": x.serial, "result": 1}   # bound to A
        assert (await x.register("粤B12345", 1)).fields["result"] == 2          # wrong colour: no such vehicle
        x.close()
        x = await Terminal(X).open(port)
        assert (await x.register("京A00009", 1)).fields["result"] == 1          # registry binds 13900000009
        assert (await x.register("浙A99999")).fields["result"] == 2             # not in the registry
        x.close()
        y = await Terminal("13900000009").open(port)         # the registry's terminal for 京A00009 …
        assert (await y.register("粤B00003")).fields["result"] == 3             # … cannot be another vehicle
        y.close()
        x = await Terminal(X).open(port)
        for i in range(6):
            s = await x.send(0x0200, c.encode_location(_loc(i, speed=FAST)))
            assert (await x.recv()).fields["result"] == 1
        x.close()
        await until(lambda: len(dead_letters(pub)) == 6)
        assert reasons(pub) == ["not_authenticated", "terminal_already_registered", "unknown_vehicle",
                                "unknown_vehicle", "vehicle_already_bound", "vehicle_already_bound"]
        assert pings_of(pub) == []
        a.close()
    run_gateway(t, data_dir=str(tmp_path))


def test_codes_are_stored_hashed_survive_a_restart_and_can_be_revoked(tmp_path):
    codes = {}

    async def first(port, pub, gw):
        a = await Terminal(A).open(port)
        codes["a"] = await a.login("粤B12345")
        a.close()
    run_gateway(first, data_dir=str(tmp_path))
    close_all()                 # reading the files below must not drop the POSIX locks of an open connection
    db = tmp_path / "archive.sqlite"
    con = sqlite3.connect(db)
    salt, digest = con.execute("SELECT salt, code_hash FROM terminal_auth WHERE terminal_key = ?",
                               (A.lstrip("0"),)).fetchone()
    con.close()
    assert digest == hashlib.sha256(bytes.fromhex(salt) + codes["a"].encode()).hexdigest()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("archive.sqlite"))
    assert codes["a"].encode() not in raw                     # the code itself is nowhere in the archive

    async def second(port, pub, gw):
        a = await Terminal(A).open(port)                      # a restarted gateway knows the code
        assert (await a.authenticate(codes["a"])).fields["result"] == 0
        env = {**os.environ, "ROADWATCH_SET": f'paths.data_dir="{tmp_path}"'}
        out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "roadwatch.streams.cli", "terminals",
                                                       "revoke", A, "--reason", "stolen"],
                                      env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert await a.closed_within(3.0)                     # gateway.revocation_check_s = 0.1
        b = await Terminal(A).open(port)
        assert (await b.authenticate(codes["a"])).fields["result"] == 1
        new = await b.login("粤B12345")                       # registering again issues a new code
        assert new != codes["a"]
        b.close()
        listed = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "roadwatch.streams.cli", "terminals",
                                                          "list", "--json"], env=env, capture_output=True, text=True)
        rows = [orjson.loads(x) for x in listed.stdout.splitlines()]
        assert [(r["terminal_key"], r["plate"], r["revoked_at"]) for r in rows] == [(A.lstrip("0"), "粤B12345", None)]
        assert pings_of(pub) == []
    run_gateway(second, {"gateway.revocation_check_s": 0.1}, data_dir=str(tmp_path))


def test_newest_authentication_wins_and_deregistration_frees_the_vehicle(tmp_path):
    async def t(port, pub, gw):
        old = await Terminal(A).open(port)
        code = await old.login("粤B12345")
        new = await Terminal(A).open(port)                    # the terminal reconnected; the old socket lingers
        assert (await new.authenticate(code)).fields["result"] == 0
        assert await old.closed_within(2.0)
        s = await new.send(0x0003, b"")                       # deregistration: the code is revoked
        assert (await new.recv()).fields == {"reply_serial": s, "reply_msg_id": 0x0003, "result": 0}
        s = await new.send(0x0200, c.encode_location(_loc(1)))
        assert (await new.recv()).fields["result"] == 1       # no longer authenticated
        new.close()
        x = await Terminal(X).open(port)                      # the vehicle may now take another terminal
        await x.login("粤B12345")
        s = await x.send(0x0200, c.encode_location(_loc(2)))
        assert (await x.recv()).fields["result"] == 0
        await until(lambda: len(pings_of(pub)) == 1)
        assert pings_of(pub)[0][1]["terminal_id"] == "0" + X
        x.close()
    run_gateway(t, data_dir=str(tmp_path))


def test_terminal_store_enforces_one_active_binding_each_way(archive_target):
    auth = TerminalAuth(archive_target)                       # SQLite and PostgreSQL (tests/pg_support.py)
    ok, code = auth.issue("1", "粤B1", 2)
    assert ok == 0 and auth.verify("1", code).plate == "粤B1"
    assert auth.issue("1", "粤B1", 2) == (3, "")               # terminal already registered
    assert auth.issue("2", "粤B1", 2) == (1, "")               # vehicle already bound
    assert auth.verify("1", code + "0") is None and auth.verify("2", code) is None
    assert auth.revoke("1", "test") and not auth.revoke("1", "again")
    assert auth.verify("1", code) is None
    ok, code2 = auth.issue("2", "粤B1", 2)
    assert ok == 0 and auth.verify("2", code2) is not None
    keys, mark = auth.revoked_since("")
    assert keys == ["1"] and auth.revoked_since(mark) == ([], mark)


# --- floods: idle, half-open and distributed sockets must not lock a real terminal out ---------------

async def _flood(port: int, n: int, source: str, payload: bytes = b"") -> list:
    socks = []
    for _ in range(n):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            continue
        if payload:
            w.write(payload)
        socks.append((r, w))
    return socks


async def _closed_count(socks, timeout: float) -> int:
    async def closed(r):
        try:
            return await asyncio.wait_for(r.read(1024), timeout) == b""
        except (asyncio.TimeoutError, ConnectionError):
            return False
    return sum(await asyncio.gather(*(closed(r) for r, _ in socks)))


def test_idle_and_half_open_flood_from_one_address_cannot_lock_out_a_terminal(tmp_path):
    cfg = {"gateway.max_connections": 100, "gateway.max_unauthenticated": 50, "gateway.max_pending_per_address": 10,
           "gateway.auth_timeout_s": 1.0}

    async def t(port, pub, gw):
        idle = await _flood(port, 150, "127.0.0.2")
        half = await _flood(port, 150, "127.0.0.3", b"\x7e\x02\x00\x00")       # a frame begun, never finished
        await until(lambda: len(gw.connections) >= 20)
        assert len(gw.pending) <= 20                          # 10 per address, the rest refused at accept
        a = await Terminal(A).open(port)
        await a.login("粤B12345")
        s = await a.send(0x0200, c.encode_location(_loc(1)))
        assert (await a.recv()).fields == {"reply_serial": s, "reply_msg_id": 0x0200, "result": 0}
        await until(lambda: len(pings_of(pub)) == 1)
        # the authentication deadline closes every silent socket; the authenticated terminal stays
        await until(lambda: len(gw.pending) == 0, timeout=5.0)
        assert await _closed_count(idle + half, 3.0) == 300
        s = await a.send(0x0002, b"")
        assert (await a.recv()).fields["result"] == 0
        for _, w in idle + half:
            w.close()
        a.close()
    run_gateway(t, cfg, data_dir=str(tmp_path))


def test_distributed_idle_flood_evicts_oldest_strangers_and_lets_a_terminal_in(tmp_path):
    cfg = {"gateway.max_connections": 60, "gateway.max_unauthenticated": 30, "gateway.max_pending_per_address": 8,
           "gateway.auth_timeout_s": 60.0}

    async def t(port, pub, gw):
        flood = []
        for k in range(2, 22):                                # 20 addresses × 8 sockets = 160 strangers
            flood += await _flood(port, 8, f"127.0.0.{k}")
        await until(lambda: len(gw.pending) == 30)
        a = await Terminal(A).open(port)                      # evicts the oldest stranger, not refused
        await a.login("粤B12345")
        s = await a.send(0x0200, c.encode_location(_loc(1)))
        assert (await a.recv()).fields["result"] == 0
        assert len(gw.connections) <= 31 and gw.listener.paused is None
        await until(lambda: len(pings_of(pub)) == 1)
        for _, w in flood:
            w.close()
        a.close()
    run_gateway(t, cfg, data_dir=str(tmp_path))


def test_fragment_bytes_are_bounded_per_connection(tmp_path):
    async def t(port, pub, gw):
        a = await Terminal(A).open(port)
        await a.login("粤B12345")
        body = bytes(1000)
        for i in range(1, 4):                                 # 3 × 1000 bytes of a 60-part message
            a.serial += 1
            await a.send_raw(c.build_frame(0x0704, A, a.serial, body, packet=(60, i)))
            if i < 3:
                assert (await a.recv()).fields["result"] == 0
        assert (await a.recv()).fields["result"] == 1
        assert await a.closed_within(2.0)
        await until(lambda: reasons(pub) == ["reassembly_overflow"])
        b = await Terminal(B).open(port)                      # others unaffected
        await b.login("粤B00002")
        b.close()
    run_gateway(t, {"gateway.reassembly_max_bytes": 2500}, data_dir=str(tmp_path))


def test_a_terminal_id_listed_on_two_vehicles_is_refused_before_the_gateway_starts():
    # The registry itself refuses the ambiguity, so no gateway can ever map one terminal's positions to two
    # vehicles (the terminal-auth store also keeps one active binding per terminal: see the tests above).
    from test_gateway_tcp import REGISTRY
    from roadwatch.models.registry import RegistryError, parse_registry
    reg = {"vehicles": REGISTRY["vehicles"] + [{"plate": "粤B77777", "plate_color": 2, "category": "危险货物运输车辆",
                                                "enterprise_id": "", "terminal_id": "13900000009"}]}
    with pytest.raises(RegistryError, match="13900000009.*already belongs to 京A00009"):
        parse_registry(reg)
