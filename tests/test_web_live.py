"""LiveHub pub/sub (bounded queues, drop of slow clients, resume by Last-Event-ID) and the SSE endpoint."""
from __future__ import annotations

import asyncio
import threading

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from roadwatch.streams.web.live import InMemoryFleet, LiveHub
from web_support import PASSWORD, make_app, make_cfg, seed_user


def alert(i: int, **kw) -> dict:
    return {"alert_id": f"overspeed|冀A10001|{i}", "type": "overspeed", "plate": "冀A10001",
            "start_ts": f"2024-05-06T09:{i:02d}:00+08:00", "severity": "medium", **kw}


def parse_frame(wire: bytes) -> tuple[str | None, str, dict]:
    lines = wire.decode().strip("\n").split("\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return fields.get("id"), fields["event"], orjson.loads(fields["data"])


def test_publish_reaches_every_subscriber_as_one_sse_frame():
    async def main():
        hub = LiveHub(queue_max=10)
        a, b = hub.subscribe(), hub.subscribe()
        hub.publish_alert(alert(1, details={"speed_kmh": 97.5}))
        for sub in (a, b):
            ev = await sub.get(timeout=1)
            eid, kind, data = parse_frame(ev.wire)
            assert kind == "alert" and eid == f"{hub.epoch}-1" and eid == hub.event_id
            assert data == alert(1, details={"speed_kmh": 97.5})
        with pytest.raises(TimeoutError):
            await a.get(timeout=0.01)
    asyncio.run(main())


def test_slow_client_is_dropped_without_blocking_the_publisher_or_others():
    async def main():
        hub = LiveHub(queue_max=3)
        slow, fast = hub.subscribe(), hub.subscribe()
        closed = []
        slow.on_drop = lambda: closed.append(True)
        got = []
        for i in range(3):                      # exactly queue_max: still fine
            hub.publish_alert(alert(i))
            got.append(await fast.get(timeout=1))
        assert not slow.dropped and slow.queue.qsize() == 3
        hub.publish_alert(alert(3))             # the 4th overflows the slow client's queue
        got.append(await fast.get(timeout=1))
        assert slow.dropped and closed == [True]
        assert await slow.get(timeout=1) is None
        assert [parse_frame(e.wire)[2]["alert_id"] for e in got] == [alert(i)["alert_id"] for i in range(4)]
        hub.unsubscribe(slow)
        assert hub.subscribers == 1
    asyncio.run(main())


def test_resume_from_event_id_replays_the_missed_events():
    async def main():
        hub = LiveHub(queue_max=100, ring_size=4)
        for i in range(1, 6):
            hub.publish_alert(alert(i))          # seqs 1..5; the ring keeps 2..5
        sub = hub.subscribe(hub.parse_event_id(f"{hub.epoch}-3"))
        assert not sub.reset
        seqs = [(await sub.get(timeout=1)).seq for _ in range(2)]
        assert seqs == [4, 5]
        # seq 1 is still reachable (the client has it; the ring starts at 2)
        sub = hub.subscribe(1)
        assert not sub.reset and sub.queue.qsize() == 4
        # seq 0 → the client misses seq 1, which left the ring: reload
        assert hub.subscribe(0).reset
        # a restarted worker (other epoch), garbage, or an id from the future: reload
        assert hub.parse_event_id("deadbeef-2") == -1 and hub.subscribe(-1).reset
        assert hub.parse_event_id(f"{hub.epoch}-x") == -1
        assert hub.subscribe(99).reset
        assert hub.parse_event_id("") is None and not hub.subscribe(None).reset
        # up to date: nothing to replay
        sub = hub.subscribe(5)
        assert not sub.reset and sub.queue.empty()
    asyncio.run(main())


def test_resume_larger_than_the_queue_resets():
    async def main():
        hub = LiveHub(queue_max=2, ring_size=10)
        for i in range(5):
            hub.publish_alert(alert(i))
        assert hub.subscribe(2).reset                # 3 missed > queue of 2
        assert not hub.subscribe(3).reset            # 2 missed fit
    asyncio.run(main())


def test_replayed_alert_keeps_one_entry_per_alert_id():
    hub = LiveHub()
    hub.publish_alert(alert(1))
    hub.publish_alert(alert(2))
    hub.publish_alert(alert(1, end_ts="2024-05-06T09:05:00+08:00"))
    latest = hub.recent_alerts()
    assert [a["alert_id"] for a in latest] == [alert(2)["alert_id"], alert(1)["alert_id"]]
    assert latest[1]["end_ts"] == "2024-05-06T09:05:00+08:00"


def test_enrichment_failure_does_not_lose_the_alert():
    async def main():
        def broken(_a):
            raise KeyError("boom")
        hub = LiveHub(enrich=broken)
        sub = hub.subscribe()
        hub.publish_alert(alert(1))
        assert parse_frame((await sub.get(timeout=1)).wire)[2]["alert_id"] == alert(1)["alert_id"]
    asyncio.run(main())


def test_publish_from_another_thread_is_delivered_on_the_hub_loop():
    async def main():
        hub = LiveHub()
        sub = hub.subscribe()
        t = threading.Thread(target=hub.publish_alert, args=(alert(7),))
        t.start()
        t.join()
        ev = await sub.get(timeout=2)
        assert ev.data["alert_id"] == alert(7)["alert_id"]
    asyncio.run(main())


def test_records_are_accepted_as_well_as_dicts():
    from roadwatch.models.records import Alert
    hub = LiveHub()
    hub.publish_alert(Alert(alert_id="a", type="offline", plate="冀A10001", start_ts="2024-05-06T09:00:00+08:00"))
    assert hub.recent_alerts()[0]["type"] == "offline"
    with pytest.raises(TypeError):
        hub.publish_alert(["not", "a", "dict"])


def test_in_memory_fleet():
    f = InMemoryFleet(track_max=2)
    f.update("冀A10001", 38.0, 114.5, "2024-05-06T09:00:00+08:00", "moving", speed_kmh=50, category="客运班车")
    f.update("冀A10001", 38.1, 114.6, "2024-05-06T09:01:00+08:00", "stopped")
    f.update("冀A10001", 38.2, 114.7, "2024-05-06T09:02:00+08:00", "stopped")
    (v,) = f.vehicles()
    assert v["state"] == "stopped" and v["lat"] == 38.2 and v["category"] == "客运班车"
    assert [p["lat"] for p in f.track("冀A10001")] == [38.1, 38.2]
    assert f.track("none") == []
    with pytest.raises(ValueError):
        f.update("冀A10001", 0, 0, "t", "flying")


async def _read_events(resp, n: int, timeout: float = 5) -> list[tuple[str | None, str, dict]]:
    """Read SSE frames until n events (comments and retry lines skipped)."""
    out, buf = [], b""
    while len(out) < n:
        chunk = await asyncio.wait_for(resp.content.readany(), timeout)
        assert chunk, "stream closed"
        buf += chunk
        while b"\n\n" in buf:
            frame, buf = buf.split(b"\n\n", 1)
            if b"event: " in frame:
                out.append(parse_frame(frame + b"\n\n"))
    return out


def test_sse_endpoint_streams_enriched_alerts_and_resumes(tmp_path):
    cfg = make_cfg(tmp_path)
    seed_user(cfg, "view", "viewer")

    async def main():
        app, hub, _ = make_app(cfg)
        c = TestClient(TestServer(app, host="127.0.0.1"))
        await c.start_server()
        try:
            r = await c.post("/api/login", json={"username": "view", "password": PASSWORD})
            assert r.status == 200
            first = await (await c.get("/api/alerts")).json()
            resp = await c.get(f"/api/stream?since={first['event_id']}")
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            await asyncio.sleep(0.05)
            hub.publish_alert(alert(1, lat=38.05, lon=114.50))
            hub.publish_alert(alert(2))
            evs = await _read_events(resp, 2)
            assert [e[2]["alert_id"] for e in evs] == [alert(1)["alert_id"], alert(2)["alert_id"]]
            a1 = evs[0][2]
            # registry enrichment: 冀A10001 belongs to E1 平安客运 in 长安区; (38.05, 114.50) lies inside Z1
            assert (a1["enterprise"], a1["county"], a1["category"], a1["location"]) == \
                   ("平安客运", "长安区", "客运班车", "市区禁行区")
            resp.close()
            hub.publish_alert(alert(3))          # published while disconnected
            resp = await c.get("/api/stream", headers={"Last-Event-ID": evs[1][0]})
            (ev,) = await _read_events(resp, 1)
            assert ev[2]["alert_id"] == alert(3)["alert_id"]
            resp.close()
            resp = await c.get("/api/stream", headers={"Last-Event-ID": "otherepoch-1"})
            (ev,) = await _read_events(resp, 1)
            assert ev[1] == "reset"
            resp.close()
        finally:
            await c.close()
    asyncio.run(main())


def test_sse_heartbeat_ends_a_stream_whose_session_expired(tmp_path):
    cfg = make_cfg(tmp_path, **{"web.sse_heartbeat_s": 0.05})
    seed_user(cfg, "view", "viewer")

    async def main():
        app, hub, _ = make_app(cfg)
        c = TestClient(TestServer(app, host="127.0.0.1"))
        await c.start_server()
        try:
            await c.post("/api/login", json={"username": "view", "password": PASSWORD})
            resp = await c.get("/api/stream")
            from roadwatch.streams.archive import open_archive
            open_archive(cfg.archive_path).execute("DELETE FROM sessions")
            (ev,) = await _read_events(resp, 1)
            assert ev[1] == "logout"
            for _ in range(50):                  # the handler unsubscribes as it returns
                if hub.subscribers == 0:
                    break
                await asyncio.sleep(0.01)
            assert hub.subscribers == 0
        finally:
            await c.close()
    asyncio.run(main())


# --- issue 13.5: a live stream lives only as long as its session ---------------------------------------------

async def _stream_for(server, user: str):
    """A separate browser (own cookie jar) signed in as ``user`` with its live stream open."""
    import aiohttp
    s = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    r = await s.post(server.make_url("/api/login"), json={"username": user, "password": PASSWORD})
    assert r.status == 200
    csrf = (await r.json())["csrf"]
    resp = await s.get(server.make_url("/api/stream"))
    assert resp.status == 200
    return s, csrf, resp


async def _closes_with_logout(resp, hub, n_subs: int) -> None:
    (ev,) = await _read_events(resp, 1)
    assert ev[1] == "logout"
    assert await asyncio.wait_for(resp.content.read(), 5) == b""      # and the stream ends
    for _ in range(100):
        if hub.subscribers == n_subs:
            break
        await asyncio.sleep(0.01)
    assert hub.subscribers == n_subs


def test_stream_is_closed_on_logout_user_deletion_and_role_change(tmp_path):
    """Before: a stream kept delivering alerts after logout or deletion for as long as events arrived.
    The heartbeat is long here, so only the session hooks can close the streams."""
    cfg = make_cfg(tmp_path, **{"web.sse_heartbeat_s": 600.0})
    for user, role in (("boss", "admin"), ("view", "viewer"), ("gone", "viewer"), ("demoted", "operator")):
        seed_user(cfg, user, role)

    async def main():
        from aiohttp.test_utils import TestServer as TS
        app, hub, _ = make_app(cfg)
        server = TS(app, host="127.0.0.1")
        await server.start_server()
        sessions = []
        try:
            admin, admin_csrf, _admin_stream = await _stream_for(server, "boss")
            sessions.append(admin)
            view, view_csrf, view_stream = await _stream_for(server, "view")
            gone, _, gone_stream = await _stream_for(server, "gone")
            demoted, _, demoted_stream = await _stream_for(server, "demoted")
            sessions += [view, gone, demoted]
            assert hub.subscribers == 4
            r = await view.post(server.make_url("/api/logout"), json={}, headers={"X-CSRF-Token": view_csrf})
            assert r.status == 200
            await _closes_with_logout(view_stream, hub, 3)
            r = await admin.delete(server.make_url("/api/users/gone"), headers={"X-CSRF-Token": admin_csrf})
            assert r.status == 200
            await _closes_with_logout(gone_stream, hub, 2)
            r = await admin.post(server.make_url("/api/users"), json={"username": "demoted", "role": "viewer"},
                                 headers={"X-CSRF-Token": admin_csrf})
            assert r.status == 200
            await _closes_with_logout(demoted_stream, hub, 1)
            hub.publish_alert(alert(7))                       # the admin's own stream is untouched
            (ev,) = await _read_events(_admin_stream, 1)
            assert ev[2]["alert_id"] == alert(7)["alert_id"]
        finally:
            for s in sessions:
                await s.close()
            await server.close()
    asyncio.run(main())


def test_session_is_rechecked_before_every_event(tmp_path):
    """A user removed by another process (`roadwatch users remove`) has no hook into this console: the next
    event re-checks the session and closes the stream instead of delivering it."""
    cfg = make_cfg(tmp_path, **{"web.sse_heartbeat_s": 600.0})
    seed_user(cfg, "view", "viewer")

    async def main():
        app, hub, _ = make_app(cfg)
        c = TestClient(TestServer(app, host="127.0.0.1"))
        await c.start_server()
        try:
            await c.post("/api/login", json={"username": "view", "password": PASSWORD})
            resp = await c.get("/api/stream")
            await asyncio.sleep(0.05)
            hub.publish_alert(alert(1))
            (ev,) = await _read_events(resp, 1)
            assert ev[2]["alert_id"] == alert(1)["alert_id"]
            from roadwatch.streams.archive import open_archive
            from roadwatch.streams.web import auth
            auth.delete_user(open_archive(cfg.archive_path), "view")     # as the CLI would, elsewhere
            hub.publish_alert(alert(2))
            (ev,) = await _read_events(resp, 1)
            assert ev[1] == "logout"                      # alert 2 is not delivered
            assert await asyncio.wait_for(resp.content.read(), 5) == b""
        finally:
            await c.close()
    asyncio.run(main())


def test_enrichment_and_framing_only_when_someone_reads_and_once_for_all():
    """Without a console client nothing is enriched (place names cost a lookup per alert); with clients the
    enriched event is made once and shared; a client resuming from the ring gets the enriched version."""
    calls = []

    def enrich(a: dict) -> dict:
        calls.append(a["alert_id"])
        return dict(a, location="宁连公路 K12")

    async def main():
        hub = LiveHub(queue_max=10, enrich=enrich)
        for i in range(5):
            hub.publish_alert(alert(i))
        assert calls == []
        a, b = hub.subscribe(), hub.subscribe()
        hub.publish_alert(alert(5))
        for sub in (a, b):
            assert parse_frame((await sub.get(timeout=1)).wire)[2]["location"] == "宁连公路 K12"
        assert calls == [alert(5)["alert_id"]]
        late = hub.subscribe(since=2)               # resumes after event 2: replays 3, 4, 5 from the ring
        got = [parse_frame((await late.get(timeout=1)).wire)[2] for _ in range(3)]
        assert [g["alert_id"] for g in got] == [alert(i)["alert_id"] for i in (2, 3, 4)]
        assert all(g["location"] == "宁连公路 K12" for g in got)
        assert sorted(calls) == sorted(alert(i)["alert_id"] for i in (2, 3, 4, 5))     # each once
        assert [r["location"] for r in hub.recent_alerts()] == ["宁连公路 K12"] * 6
    asyncio.run(main())
