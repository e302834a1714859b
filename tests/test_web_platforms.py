"""Console API of the JT/T 809 link: an operator queues 查岗 for one or all platforms (a viewer may not),
the overview shows link state and pending/answered/late inspections, and vehicles show their platform."""
from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient, TestServer

from roadwatch.streams.archive import open_archive
from roadwatch.streams.archive import platforms as store
from roadwatch.streams.jt809.platforms import Platform, render_platforms
from roadwatch.streams.web import auth
from web_support import PASSWORD, make_app, make_cfg, seed_user


def test_operator_queues_inspections_and_sees_their_status(tmp_path):
    pf = tmp_path / "platforms.toml"
    pf.write_text(render_platforms([Platform(11, "甲平台", 1, "pw"), Platform(22, "乙平台", 2, "pw", 2019)]), encoding="utf-8")
    cfg = make_cfg(tmp_path, **{"jt809.platforms_file": str(pf)})
    seed_user(cfg, "ops", "operator")
    seed_user(cfg, "view", "viewer")
    conn = open_archive(cfg.archive_path)
    now = time.time()
    earlier = store.open_session(conn, 11, now - 900, 2011, "127.0.0.1:4999")      # 5 minutes online, then lost
    store.close_session(conn, earlier, now - 600, "lost")
    store.open_session(conn, 11, now - 600, 2011, "127.0.0.1:5000")
    store.record_event(conn, 11, now - 599, "slave_up", "127.0.0.1:6000")
    store.record_event(conn, 22, now - 599, "slave_up", "127.0.0.1:6001")          # stale: 22 never logged in
    store.note_vehicles(conn, [("冀A10001", 2, 11, now)])

    async def main():
        app, hub, fleet = make_app(cfg)
        c = TestClient(TestServer(app, host="127.0.0.1"))
        await c.start_server()
        try:
            r = await c.post("/api/login", json={"username": "view", "password": PASSWORD})
            h = {auth.CSRF_HEADER: (await r.json())["csrf"]}
            r = await c.post("/api/platforms/inspections", json={"platform": "all", "question": "在岗？"}, headers=h)
            assert r.status == 403                                   # viewers cannot send 查岗
            await c.post("/api/logout", headers=h)
            r = await c.post("/api/login", json={"username": "ops", "password": PASSWORD})
            h = {auth.CSRF_HEADER: (await r.json())["csrf"]}
            r = await c.post("/api/platforms/inspections", json={"platform": "all", "question": "请报告值班人员"}, headers=h)
            assert r.status == 201
            assert sorted(q["center_id"] for q in (await r.json())["queued"]) == [11, 22]
            r = await c.post("/api/platforms/inspections", json={"platform": "33", "question": "x"}, headers=h)
            assert r.status == 400                                   # not a configured platform
            r = await c.post("/api/platforms/inspections", json={"platform": "11", "question": ""}, headers=h)
            assert r.status == 400
            # the link server sends them: 11 answers late, 22 is offline
            for q in store.queued_inspections(conn):
                sent = time.time() - 200
                store.mark_sent(conn, q["inspection_id"], sent, 5, q["center_id"] == 11, sent + 60)
                if q["center_id"] == 11:
                    store.record_answer(conn, 11, sent + 61, "在岗", info_id=q["info_id"])
            body = await (await c.get("/api/platforms")).json()
            p = {x["center_id"]: x for x in body["platforms"]}
            assert (p[11]["name"], p[11]["link"]["online"], p[11]["vehicles"]) == ("甲平台", True, 1)
            assert [i["status"] for i in p[11]["inspections"]] == ["late"]
            assert [i["status"] for i in p[22]["inspections"]] == ["undeliverable"]
            assert p[22]["link"] is None and p[22]["slave"] is None
            assert (p[11]["slave"]["online"], p[11]["slave"]["since"]) == (True, now - 599)
            # 平台连通率 of the running month so far: the closed session (5 min) plus the open one up to its
            # last frame (0 min); denominator = minutes since the 1st, Beijing time
            conn11, conn22 = p[11]["connectivity"], p[22]["connectivity"]
            minutes = round((body["now"] - body["month_start"]) / 60, 2)
            if now - 900 >= body["month_start"]:              # (the first 15 minutes of a month cut it)
                assert float(conn11["numerator"]) == 5.0
            assert float(conn11["denominator"]) == float(conn22["denominator"])
            assert abs(float(conn11["denominator"]) - minutes) <= 0.01         # (rounded to 0.01 min)
            assert float(conn22["numerator"]) == 0.0
            assert (conn11["label"], conn11["numerator_label"]) == ("平台连通率", "累计在线时间(分钟)")
            fleet.update("冀A10001", 38.05, 114.50, "2024-05-06T09:00:00+08:00", "moving")
            fleet.update("冀A10002", 38.05, 114.50, "2024-05-06T09:00:00+08:00", "moving")
            vs = {v["plate"]: v for v in (await (await c.get("/api/vehicles")).json())["vehicles"]}
            assert (vs["冀A10001"]["platform"], vs["冀A10002"]["platform"]) == (11, None)   # None: over JT/T 808
            d = await (await c.get("/api/vehicles/冀A10001")).json()
            assert d["vehicle"]["platform"] == 11
        finally:
            await c.close()
    asyncio.run(main())
