"""The JT/T 809 link server over real TCP with simulated lower platforms: login rules (credentials, refusals
answered and dead-lettered, nothing before login, auth deadline, idle timeout), positions into the ping
batches, slave link, inspections and the online sessions behind 平台连通率."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.models.pingbatch import decode_batch
from roadwatch.simulators.lower_platform import Event, LowerPlatform, PlatformSpec, SimClock, play
from roadwatch.streams.batcher import MemoryPublisher
from roadwatch.streams.jt809 import codec as c
from roadwatch.streams.jt809 import messages as m
from roadwatch.streams.archive import platforms as store
from roadwatch.streams.jt809.link import RULES, LinkServer
from roadwatch.streams.jt809.platforms import Platform

CIPHER = c.Cipher(30000000, 20000000, 20000000)
T0 = 1_741_104_000.0          # 2025-03-05 00:00 +08:00


def _cfg(tmp_path, **kw) -> Config:
    return Config({"paths.data_dir": str(tmp_path), "stream.batch_max_ms": 0, **kw})


def _pings(n: int, t0: float, plate: str = "湘A12345") -> list[dict]:
    return [{"plate": plate, "plate_color": 2, "ts": int((t0 + 30 * i) * 1000), "lat": 28.2 + 0.001 * i, "lon": 112.9,
             "speed_kmh": 50.0 + i, "heading": 90, "altitude_m": 40.0, "alarm_flags": 0, "status_flags": 3,
             "mileage_km": 100.0 + i} for i in range(n)]


async def _server(tmp_path, platforms, clock, **kw):
    pub = MemoryPublisher()
    srv = LinkServer(_cfg(tmp_path, **kw), {p.center_id: p for p in platforms}, pub, clock)
    await srv.start("127.0.0.1", 0)
    return srv, pub


def _dead(pub) -> list[str]:
    return [orjson.loads(v)["reason"] for _, v, _ in pub.topic("dead-letter")]


def _published_pings(pub) -> list[dict]:
    out = []
    for _, v, _ in pub.topic("gps-pings"):
        cols = decode_batch(v)
        out += [{"plate": cols.plate[i], "ts": int(cols.ts[i]), "lat": float(cols.lat[i]), "speed": float(cols.speed_kmh[i]),
                 "reupload": bool(cols.reupload[i]), "terminal_id": cols.terminal_id[i]} for i in range(len(cols))]
    return out


@pytest.mark.parametrize("proto,encrypt,escape", [(2011, False, True), (2019, True, True), (2019, False, False),
                                                  (2011, True, False)])
def test_a_day_of_a_lower_platform(tmp_path, proto, encrypt, escape):
    async def main():
        plat = Platform(20180920, "某平台", 1001, "pw123456", proto, CIPHER if encrypt else None, encrypt)
        clock = SimClock(T0)
        srv, pub = await _server(tmp_path, [plat], clock)
        lower = LowerPlatform(PlatformSpec(plat.center_id, 1001, "pw123456", proto, CIPHER if encrypt else None, encrypt,
                                           escape, answer_delay_s=300), clock)
        live, late = _pings(40, T0 + 600), _pings(7, T0 + 9000)
        raw_before = RULES.labels(rule="raw")._value.get()
        events = [Event(T0 + 60, 0, "login"), Event(T0 + 1900, 1, "pings", live), Event(T0 + 2000, 2, "inspect"),
                  Event(T0 + 3600, 3, "drop"), Event(T0 + 7200, 4, "login"),
                  Event(T0 + 9500, 5, "reupload", late), Event(T0 + 10000, 6, "inspect"), Event(T0 + 86000, 7, "logout")]
        answer_minutes = 10

        def queue(t):
            store.queue_inspection(srv.conn, plat.center_id, "请报告值班人员", t, "test", answer_minutes)
        stats = await play(srv, clock, lower, events, "127.0.0.1", srv.port, queue)
        await lower.close()
        await srv.aclose()
        assert stats["answered"] == 2 and lower.slave_logins == 2
        assert 2 <= lower.slave_heartbeats <= 4          # one per jt809.slave_heartbeat_s (60 s), not a busy loop
        assert _dead(pub) == []
        got = _published_pings(pub)
        assert [(p["ts"], p["reupload"]) for p in got] == [(p["ts"], False) for p in live] + [(p["ts"], True) for p in late]
        assert {p["terminal_id"] for p in got} == {"809:20180920"}
        assert [p["speed"] for p in got] == [p["speed_kmh"] for p in live + late]
        # online exactly from login to the drop, and from the second login to the logout
        assert store.sessions_between(srv.conn, 0, 2e9, clock()) == {
            plat.center_id: [(T0 + 60, T0 + 3600), (T0 + 7200, T0 + 86000)]}
        ins = sorted(store.inspections_between(srv.conn, 0, 2e9, clock()), key=lambda i: i["sent_ts"])
        assert [(i["status"], i["answered_ts"] - i["sent_ts"]) for i in ins] == [("answered", 300.0), ("answered", 300.0)]
        assert store.vehicle_platforms(srv.conn) == {"湘A12345": plat.center_id}
        if not escape:          # the frames held bytes to escape: accepted by the raw rule, and counted
            assert RULES.labels(rule="raw")._value.get() > raw_before
    asyncio.run(main())


def test_refused_logins_are_answered_dead_lettered_and_counted_then_a_good_one_works(tmp_path):
    async def main():
        plat = Platform(77, "P", 5, "secret", 2011)
        clock = SimClock(T0)
        srv, pub = await _server(tmp_path, [plat], clock, **{"jt809.slave_link": False})
        results = []
        lower = LowerPlatform(PlatformSpec(77, 5, "secret"), clock)
        results.append(await lower.connect("127.0.0.1", srv.port, password="wrong"))
        lower.send_positions(_pings(2, T0))          # not logged in: refused
        await asyncio.sleep(0.05)
        lower.send(m.LOGIN, m.encode_login(6, "secret", "127.0.0.1", 1, 2011))
        results.append((await lower._expect(m.LOGIN_RESP)).fields["result"])
        stranger = LowerPlatform(PlatformSpec(78, 5, "secret"), clock)
        results.append(await stranger.connect("127.0.0.1", srv.port))
        results.append(await lower.connect("127.0.0.1", srv.port))      # a new connection, right credentials
        await lower.barrier()
        await lower.close()
        await stranger.close()
        await srv.aclose()
        assert results == [m.LOGIN_BAD_PASSWORD, m.LOGIN_NO_USER, m.LOGIN_BAD_CENTER, m.LOGIN_OK]
        assert _dead(pub) == ["login_refused", "not_logged_in", "not_logged_in", "login_refused", "login_refused"]
        assert _published_pings(pub) == []
        details = [r[0] for r in srv.conn.execute("SELECT detail FROM platform_events WHERE event='login_refused' ORDER BY ts, rowid")]
        assert any("refusal #2" in d for d in details)       # counted per connection
        assert len(store.sessions_between(srv.conn, 0, 2e9, clock())[77]) == 1
    asyncio.run(main())


def test_auth_deadline_and_idle_timeout_close_the_link(tmp_path):
    async def main():
        plat = Platform(77, "P", 5, "secret", 2019)
        clock = SimClock(T0)
        srv, pub = await _server(tmp_path, [plat], clock, **{"jt809.auth_timeout_s": 1.0, "jt809.idle_timeout_s": 5.0,
                                                             "jt809.slave_link": False})
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        assert await asyncio.wait_for(r.read(), 15) == b""          # closed: no login within 1 s
        w.close()
        lower = LowerPlatform(PlatformSpec(77, 5, "secret", 2019), clock)
        assert await lower.connect("127.0.0.1", srv.port) == 0
        clock.set(T0 + 100)
        await lower.barrier()
        for _ in range(400):                                        # silent past jt809.idle_timeout_s
            if 77 not in srv.online:
                break
            await asyncio.sleep(0.05)
        assert 77 not in srv.online
        await lower.close()
        await srv.aclose()
        row = srv.conn.execute("SELECT end_ts, end_reason FROM platform_sessions").fetchone()
        assert (row[0], row[1]) == (T0 + 100, "idle")             # online until its last frame
    asyncio.run(main())


def test_inspection_outcomes_late_missed_and_undeliverable(tmp_path):
    async def main():
        plat = Platform(9, "P", 1, "pw", 2019)
        clock = SimClock(T0)
        srv, pub = await _server(tmp_path, [plat], clock)
        late = LowerPlatform(PlatformSpec(9, 1, "pw", 2019, answer_delay_s=11 * 60), clock)

        def queue(t):
            store.queue_inspection(srv.conn, 9, "在岗吗", t, "test", 10)
        await play(srv, clock, late, [Event(T0, 0, "login"), Event(T0 + 100, 1, "inspect"), Event(T0 + 5000, 2, "drop"),
                                      Event(T0 + 6000, 3, "inspect")], "127.0.0.1", srv.port, queue)
        missing = LowerPlatform(PlatformSpec(9, 1, "pw", 2019, miss_rate=1.0), clock)
        await play(srv, clock, missing, [Event(T0 + 7000, 0, "login"), Event(T0 + 7100, 1, "inspect"),
                                         Event(T0 + 9000, 2, "logout")], "127.0.0.1", srv.port, queue)
        await late.close()
        await missing.close()
        await srv.aclose()
        ins = sorted(store.inspections_between(srv.conn, 0, 2e9, clock()), key=lambda i: i["requested_ts"])
        assert [i["status"] for i in ins] == ["late", "undeliverable", "missed"]
        assert srv.conn.execute("SELECT COUNT(*) FROM platform_inspection_answers").fetchone()[0] == 1
    asyncio.run(main())


def test_a_restarted_server_closes_sessions_at_their_last_frame(tmp_path):
    async def main():
        plat = Platform(9, "P", 1, "pw", 2011)
        clock = SimClock(T0)
        srv, pub = await _server(tmp_path, [plat], clock, **{"jt809.slave_link": False})
        lower = LowerPlatform(PlatformSpec(9, 1, "pw"), clock)
        await lower.connect("127.0.0.1", srv.port)
        clock.set(T0 + 50)
        await lower.barrier()                    # heartbeats are written through at once
        srv.server.close()                       # the process dies: nothing closes the session
        srv2 = LinkServer(_cfg(tmp_path), {9: plat}, MemoryPublisher(), clock)
        await srv2.start("127.0.0.1", 0)
        row = srv2.conn.execute("SELECT end_ts, end_reason FROM platform_sessions").fetchone()
        assert (row[0], row[1]) == (T0 + 50, "server_restart")
        await lower.close()
        await srv2.aclose()
        for t in srv._tasks:
            t.cancel()
    asyncio.run(main())


def test_garbage_is_dead_lettered_and_an_oversized_frame_closes_only_its_connection(tmp_path):
    async def main():
        import random
        plat = Platform(9, "P", 1, "pw", 2011)
        clock = SimClock(T0)
        srv, pub = await _server(tmp_path, [plat], clock, **{"jt809.slave_link": False, "jt809.max_frame_bytes": 512})
        good = LowerPlatform(PlatformSpec(9, 1, "pw"), clock)
        assert await good.connect("127.0.0.1", srv.port) == 0
        rnd = random.Random(5)
        good.writer.write(bytes(rnd.getrandbits(8) for _ in range(3000)).replace(b"\x5b", b"\x00"))   # noise
        bad_crc = bytearray(good.frame(m.HEARTBEAT, b""))
        bad_crc[-2] ^= 1
        good.writer.write(bytes(bad_crc))
        good.send_positions(_pings(3, T0))
        await good.barrier()
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"\x5b" + b"\x00\x00\x10\x00" + b"\x11" * 600)        # unterminated, larger than the limit
        assert await asyncio.wait_for(r.read(), 10) == b""             # that connection is closed …
        w.close()
        good.send_positions(_pings(2, T0 + 600))
        await good.barrier()                                           # … the logged-in platform is not
        await good.close()
        await srv.aclose()
        assert _dead(pub) == ["bad_crc", "frame_too_large"]
        assert len(_published_pings(pub)) == 5
    asyncio.run(main())


def test_a_connection_is_closed_after_too_many_refused_logins(tmp_path):
    async def main():
        clock = SimClock(T0)
        srv, pub = await _server(tmp_path, [Platform(77, "P", 5, "secret")], clock, **{"jt809.max_refused_logins": 2})
        lower = LowerPlatform(PlatformSpec(77, 5, "guess1"), clock)
        assert await lower.connect("127.0.0.1", srv.port) == m.LOGIN_BAD_PASSWORD
        lower.send(m.LOGIN, m.encode_login(5, "guess2", "127.0.0.1", 1, 2011))
        lower.send(m.LOGIN, m.encode_login(5, "secret", "127.0.0.1", 1, 2011))     # too late: not read
        assert (await lower._expect(m.LOGIN_RESP)).fields["result"] == m.LOGIN_BAD_PASSWORD
        assert await asyncio.wait_for(lower._reader_task, 10) is None             # the server closed it
        await lower.close()
        await srv.aclose()
        assert _dead(pub) == ["login_refused", "login_refused"]
        assert store.sessions_between(srv.conn, 0, 2e9, clock()) == {}
    asyncio.run(main())


def test_a_position_the_worker_would_refuse_is_dead_lettered_not_batched(tmp_path):
    """A 2011 position is a valid frame whose values the ping schema may refuse (mileage is a DWORD of whole
    km, beyond the 0.1 km DWORD range of a ping; the year is a WORD). Batched, it would make the worker
    dead-letter the whole batch, other platforms' pings included (found by scripts/fuzz.py, jt809_link)."""
    async def main():
        plat = Platform(9, "P", 1, "pw", 2011)
        clock = SimClock(T0)
        srv, pub = await _server(tmp_path, [plat], clock, **{"jt809.slave_link": False})
        lower = LowerPlatform(PlatformSpec(9, 1, "pw"), clock)
        assert await lower.connect("127.0.0.1", srv.port) == 0
        good = _pings(3, T0)
        far = dict(good[0], mileage_km=500_000_000.0, plate="湘A99999")                  # > 429 496 729.5 km
        late = dict(good[0], ts=int(T0 * 1000) + 130 * 365 * 86_400_000, plate="湘A88888")  # the year 2155
        lower.send_positions([good[0], far, good[1]])
        lower.send_positions([late, good[2]], reupload=True)      # one bad position in a 0x1203 group
        lower.send_positions([late])
        await lower.barrier()
        await lower.close()
        await srv.aclose()
        assert _dead(pub) == ["out_of_range", "bad_timestamp", "bad_timestamp"]
        assert [p["ts"] for p in _published_pings(pub)] == [good[0]["ts"], good[1]["ts"]]
    asyncio.run(main())
