"""Console JSON API against a real archive: alerts, acks, cases + evidence, fleet status, reports, places."""
from __future__ import annotations

import asyncio
import math
import os
from datetime import datetime

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from roadwatch.models.config import Config
from roadwatch.models.records import BEIJING
from roadwatch.streams.archive import open_archive
from roadwatch.streams.web import auth
from roadwatch.streams.web.places import Places
from web_support import PASSWORD, PNG, make_app, make_cfg, registry, seed_alert, seed_case, seed_user

CASE = "C-ST1-冀A30001-1"


@pytest.fixture()
def cfg(tmp_path):
    cfg = make_cfg(tmp_path)
    seed_user(cfg, "ops", "operator")
    seed_user(cfg, "view", "viewer")
    seed_case(cfg, CASE)
    seed_alert(cfg, "a1")
    return cfg


def session_test(cfg, user="ops", **app_kw):
    """Decorator: run ``fn(client, hub, fleet, headers)`` against a fresh console, signed in as ``user``."""
    def deco(fn):
        async def main():
            app, hub, fleet = make_app(cfg, **app_kw)
            c = TestClient(TestServer(app, host="127.0.0.1"))
            await c.start_server()
            try:
                r = await c.post("/api/login", json={"username": user, "password": PASSWORD})
                assert r.status == 200
                await fn(c, hub, fleet, {auth.CSRF_HEADER: (await r.json())["csrf"]})
            finally:
                await c.close()
        asyncio.run(main())
        return fn
    return deco


def test_alert_list_merges_archive_and_live_and_filters(cfg):
    @session_test(cfg)
    async def _(c, hub, fleet, h):
        hub.publish_alert({"alert_id": "x1", "type": "fatigue", "plate": "冀A20001", "severity": "high",
                           "start_ts": "2024-05-06T10:00:00+08:00", "lat": 38.11, "lon": 114.41})
        body = await (await c.get("/api/alerts")).json()
        assert [a["alert_id"] for a in body["alerts"]] == ["x1", "a1"]        # newest first
        x1, a1 = body["alerts"]
        assert (x1["enterprise"], x1["county"], x1["location"]) == ("安达危货", "桥西区", "鑫源煤场")
        assert (a1["enterprise"], a1["details"], a1["late"]) == ("平安客运", {"speed_kmh": 95}, False)
        assert body["event_id"] == hub.event_id
        only = await (await c.get("/api/alerts?type=fatigue")).json()
        assert [a["alert_id"] for a in only["alerts"]] == ["x1"]
        only = await (await c.get("/api/alerts?plate=冀A10001")).json()
        assert [a["alert_id"] for a in only["alerts"]] == ["a1"]
        assert (await (await c.get("/api/alerts?day=2024-05-07")).json())["alerts"] == []
        assert (await c.get("/api/alerts?day=May")).status == 400
        assert (await c.get("/api/alerts?limit=abc")).status == 400
        assert len((await (await c.get("/api/alerts?limit=1")).json())["alerts"]) == 1
        # a live update of an archived alert (same alert_id) replaces it: one row, newest version
        hub.publish_alert({"alert_id": "a1", "type": "overspeed", "plate": "冀A10001", "severity": "high",
                           "start_ts": "2024-05-06T09:00:00+08:00", "end_ts": "2024-05-06T09:03:00+08:00"})
        body = await (await c.get("/api/alerts")).json()
        a1s = [a for a in body["alerts"] if a["alert_id"] == "a1"]
        assert len(a1s) == 1 and a1s[0]["end_ts"] == "2024-05-06T09:03:00+08:00"


def test_operator_acknowledges_an_alert(cfg):
    @session_test(cfg)
    async def _(c, hub, fleet, h):
        sub = hub.subscribe()
        r = await c.post("/api/alerts/a1/ack", json={"note": "已电话联系"}, headers=h)
        assert r.status == 200 and (await r.json())["ack_by"] == "ops"
        ev = await sub.get(timeout=1)
        assert ev.kind == "ack" and ev.data["alert_id"] == "a1"
        a1 = (await (await c.get("/api/alerts")).json())["alerts"][0]
        assert a1["ack_by"] == "ops"
        assert (await c.post("/api/alerts/nope/ack", json={}, headers=h)).status == 404
        assert (await c.post("/api/alerts/a1/ack", json={"note": "x" * 501}, headers=h)).status == 400
        assert (await c.post("/api/alerts/a1/ack", json={"note": "x" * 500}, headers=h)).status == 200


def test_case_list_detail_and_evidence(cfg):
    @session_test(cfg, user="view")
    async def _(c, hub, fleet, h):
        body = await (await c.get("/api/cases")).json()
        assert body["total"] == 1 and body["status_counts"] == {"detected": 1}
        (row,) = body["cases"]
        assert (row["plate"], row["station"], row["enterprise"]) == ("冀A30001", "石安治超站", "顺通物流")
        assert (await (await c.get("/api/cases?status=confirmed")).json())["total"] == 0
        d = await (await c.get(f"/api/cases/{CASE}")).json()
        assert d["evidence_files"] == ["front.png"]
        assert d["allowed_actions"] == ["review", "confirm", "dismiss", "withdraw"]
        assert d["status"] == "detected" and [h["act"] for h in d["history"]] == ["detect"]
        assert d["source_site"]["name"] == "鑫源煤场" and d["station"]["name"] == "石安治超站"
        assert d["manifest"]["gross_kg"] == 55300 and d["actions"] == []
        r = await c.get(f"/api/cases/{CASE}/evidence/front.png")
        assert r.status == 200 and r.headers["Content-Type"] == "image/png" and await r.read() == PNG
        assert (await c.get("/api/cases/none")).status == 404


def test_evidence_path_checks(cfg):
    ev = cfg.data_dir / "evidence" / "2024-05-06" / "case1"
    (cfg.data_dir / "evidence" / "2024-05-06" / "secret.png").write_bytes(PNG)     # outside the case dir
    (cfg.data_dir / "outside.png").write_bytes(PNG)                                 # outside the evidence root
    (ev / "manifest.json").write_text("{}")
    os.symlink(cfg.data_dir / "outside.png", ev / "link.png")
    # a case whose evidence_path escapes the evidence root
    seed_case(cfg, "C2", with_image=False)
    open_archive(cfg.archive_path).execute("UPDATE cases SET evidence_path = '.' WHERE case_id = 'C2'")

    @session_test(cfg, user="view")
    async def _(c, hub, fleet, h):
        d = await (await c.get(f"/api/cases/{CASE}")).json()
        assert "link.png" not in d["evidence_files"] and "manifest.json" not in d["evidence_files"]
        base = f"/api/cases/{CASE}/evidence/"
        for name in ("..%2Fsecret.png", "%2e%2e/secret.png", "..%2F..%2F..%2Foutside.png", "link.png",
                     "manifest.json", "front.png%00.txt", ".hidden.png"):
            r = await c.get(URL(base + name, encoded=True))
            assert r.status in (400, 404), name        # aiohttp itself refuses some encodings with 400
            assert await r.read() != PNG
        assert (await (await c.get("/api/cases/C2")).json())["evidence_files"] == []
        assert (await c.get("/api/cases/C2/evidence/outside.png")).status == 404


def test_evidence_written_on_another_host_is_shown_from_the_archive(cfg):
    """A case whose package folder is on another host (its path does not exist here): the console shows the
    files the archive holds (streams/archive/evidence.py), from a copy under <data_dir>/evidence-archive."""
    from roadwatch.streams.archive import evidence as evidence_db
    seed_case(cfg, "C3", with_image=False)
    conn = open_archive(cfg.archive_path)
    conn.execute("UPDATE cases SET evidence_path = ? WHERE case_id = 'C3'", ("/other-host/var/evidence/C3",))
    evidence_db.store_package_files(conn, "C3", [("manifest.json", b"{}"), ("images/front.png", PNG)], "t")

    @session_test(cfg, user="view")
    async def _(c, hub, fleet, h):
        d = await (await c.get("/api/cases/C3")).json()
        assert d["evidence_files"] == ["images/front.png"]
        r = await c.get("/api/cases/C3/evidence/images/front.png")
        assert r.status == 200 and await r.read() == PNG
        assert (cfg.data_dir / "evidence-archive" / "C3" / "images" / "front.png").read_bytes() == PNG
        assert (await c.get("/api/cases/C3/evidence/manifest.json")).status == 404


def test_case_workflow_through_the_api_with_audit_trail(cfg):
    @session_test(cfg)
    async def _(c, hub, fleet, h):
        sub = hub.subscribe()
        url = f"/api/cases/{CASE}/actions"
        r = await c.post(url, json={"action": "notify"}, headers=h)
        assert r.status == 409 and (await r.json())["error"] == "bad_transition"      # confirm and 立案 first
        r = await c.post(url, json={"action": "review"}, headers=h)
        assert r.status == 200
        d = await r.json()
        assert d["status"] == "reviewed" and d["allowed_actions"] == ["confirm", "dismiss", "withdraw"]
        r = await c.post(url, json={"action": "dismiss", "reason": "  "}, headers=h)
        assert r.status == 400 and (await r.json())["error"] == "reason_required"
        r = await c.post(url, json={"action": "notify"}, headers=h)
        assert r.status == 409
        r = await c.post(url, json={"action": "confirm", "reason": "称重数据与图片一致"}, headers=h)
        assert (await r.json())["status"] == "confirmed"
        r = await c.post(url, json={"action": "file"}, headers=h)
        assert (await r.json())["status"] == "filed"
        r = await c.post(url, json={"action": "notify"}, headers=h)
        d = await r.json()
        assert d["status"] == "notified" and d["allowed_actions"] == ["decide", "withdraw"]
        r = await c.post(url, json={"action": "decide"}, headers=h)          # inside the 陈述申辩 period
        assert r.status == 400 and (await r.json())["error"] == "too_early"
        assert [(a["action"], a["operator"], a["reason"]) for a in d["actions"]] == [
            ("review", "ops", None), ("confirm", "ops", "称重数据与图片一致"), ("file", "ops", None),
            ("notify", "ops", None)]
        assert [(x["act"], x["by"]) for x in d["history"]][-1] == ("notify", "ops")
        assert all(datetime.fromisoformat(a["ts"]).utcoffset().total_seconds() == 8 * 3600 for a in d["actions"])
        assert (await c.post(url, json={"action": "launch"}, headers=h)).status == 400
        assert (await c.post(url, json={"action": 3}, headers=h)).status == 400
        assert (await c.post("/api/cases/none/actions", json={"action": "review"}, headers=h)).status == 404
        r = await c.post(url, data=b"{not json", headers={**h, "Content-Type": "application/json"})
        assert r.status == 400
        statuses = []
        while not sub.queue.empty():
            ev = sub.queue.get_nowait()
            if ev.kind == "case":
                statuses.append(ev.data["status"])
        assert statuses == ["reviewed", "confirmed", "filed", "notified"]


def test_the_leads_case_callable_is_used_when_given(cfg):
    calls = []

    async def act(case_id, action, operator, reason):       # stands in for CaseStore.act
        calls.append((case_id, action, operator, reason))
        if action == "dismiss":
            raise ValueError("dismiss refused by the store")
        open_archive(cfg.archive_path).execute("UPDATE cases SET status = 'reviewed' WHERE case_id = ?", (case_id,))

    @session_test(cfg, case_actions=act)
    async def _(c, hub, fleet, h):
        r = await c.post(f"/api/cases/{CASE}/actions", json={"action": "review", "reason": "ok"}, headers=h)
        assert r.status == 200 and (await r.json())["status"] == "reviewed"
        r = await c.post(f"/api/cases/{CASE}/actions", json={"action": "dismiss", "reason": "x"}, headers=h)
        assert r.status == 409 and "refused" in (await r.json())["detail"]
    assert calls == [(CASE, "review", "ops", "ok"), (CASE, "dismiss", "ops", "x")]


def test_vehicle_endpoints(cfg):
    @session_test(cfg, user="view")
    async def _(c, hub, fleet, h):
        fleet.update("冀A10001", 38.05, 114.50, "2024-05-06T09:00:00+08:00", "moving")
        fleet.update("冀A10001", 38.06, 114.52, "2024-05-06T09:01:00+08:00", "alerting")
        fleet.update("冀B77777", 38.00, 114.00, "2024-05-06T09:01:00+08:00", "stopped")   # not registered
        vs = {v["plate"]: v for v in (await (await c.get("/api/vehicles")).json())["vehicles"]}
        assert vs["冀A10001"]["state"] == "alerting" and vs["冀A10001"]["enterprise"] == "平安客运"
        assert vs["冀B77777"]["enterprise"] == ""
        d = await (await c.get("/api/vehicles/冀A10001")).json()
        assert [p["lat"] for p in d["track"]] == [38.05, 38.06]
        assert [a["alert_id"] for a in d["alerts"]] == ["a1"]
        assert d["vehicle"]["transport_cert_no"] == "130100001"
        assert (await c.get("/api/vehicles/冀B77777")).status == 200
        assert (await c.get("/api/vehicles/冀Z00000")).status == 404
        m = await (await c.get("/api/map")).json()
        assert {s["id"] for s in m["stations"]} == {"ST1", "ST2"}
        assert m["bbox"] == [114.40, 38.00, 114.60, 38.15]


def _day_row(plate, day, pings, qualified, km, inc, drift, over, fatigue):
    return {"plate": plate, "day": day, "pings": pings, "qualified": qualified, "km_total": km,
            "km_incomplete": inc, "drift_points": drift, "overspeed_count": over, "fatigue_s": fatigue,
            "curfew_events": 0, "offline_events": 0, "updated_at": day + "T12:00:00+08:00"}


def test_fleet_status_rates_by_hand(cfg):
    today = datetime.now(BEIJING).strftime("%Y-%m-%d")
    conn = open_archive(cfg.archive_path)
    rows = [_day_row("冀A10001", today, 100, 90, 50.0, 5.0, 1, 2, 600.0),
            _day_row("冀A10002", today, 0, 0, 0.0, 0.0, 0, 0, 0.0),
            _day_row("冀A20001", today, 50, 50, 20.0, 0.0, 0, 1, 0.0),
            _day_row("冀A30001", today, 10, 10, 5.0, 0.0, 3, 0, 0.0),     # 普通货车: not 两客一危
            _day_row("冀Z99999", today, 5, 5, 1.0, 0.0, 0, 0, 0.0),       # not in the registry
            _day_row("冀A10001", "2000-01-01", 7, 7, 1.0, 0.0, 0, 0, 0.0)]  # another day
    for r in rows:
        conn.execute(f"INSERT INTO vehicle_day({','.join(r)}) VALUES ({','.join('?' * len(r))})", list(r.values()))
    seed_alert(cfg, "t1", start_ts=today + "T08:00:00+08:00")
    seed_alert(cfg, "t2", start_ts=today + "T08:30:00+08:00", type_="fatigue")

    @session_test(cfg, user="view")
    async def _(c, hub, fleet, h):
        fleet.update("冀A10001", 38.05, 114.50, today + "T09:00:00+08:00", "moving")
        fleet.update("冀A20001", 38.05, 114.50, today + "T09:00:00+08:00", "offline")
        d = await (await c.get("/api/fleet/status")).json()
        t = d["totals"]
        assert d["day"] == today
        # 3 monitored vehicles in the network: 冀A10001, 冀A10002 (E1), 冀A20001 (E2); 冀A20002 is not 入网
        assert (t["vehicles"], t["online_today"], t["online_now"]) == (3, 2, 1)
        assert t["online_rate"] == pytest.approx(2 / 3)
        assert t["quality_rate"] == pytest.approx(140 / 150)
        assert t["track_rate"] == pytest.approx(65 / 70)
        assert t["drift_rate"] == pytest.approx(1 / 2)
        assert t["avg_overspeed"] == pytest.approx(3 / 2) and t["avg_fatigue_s"] == pytest.approx(300)
        assert (t["alerts_today"], t["open_cases"], d["unregistered_online"]) == (2, 1, 1)
        e1 = next(e for e in d["enterprises"] if e["enterprise_id"] == "E1")
        assert (e1["vehicles"], e1["online_today"], e1["alerts_today"]) == (2, 1, 2)
        assert e1["online_rate"] == pytest.approx(0.5) and e1["track_rate"] == pytest.approx(45 / 50)
        e3 = next(e for e in d["enterprises"] if e["enterprise_id"] == "E3")
        assert e3["vehicles"] == 0 and e3["online_rate"] is None and e3["open_cases"] == 1
        old = await (await c.get("/api/fleet/status?day=2000-01-01")).json()
        assert old["totals"]["online_today"] == 1 and old["totals"]["quality_rate"] == 1.0
        assert (await c.get("/api/fleet/status?day=yesterday")).status == 400


def test_fleet_status_drift_threshold_boundary(cfg):
    from roadwatch.streams.web.fleet_status import today_status
    row = _day_row("冀A10001", "2024-05-06", 10, 10, 1.0, 0.0, 2, 0, 0.0)
    for min_points, expected in ((1, 1.0), (2, 1.0), (3, 0.0)):
        c = Config({"drift.min_points": min_points})
        d = today_status(c, registry(), "2024-05-06", [row], [], {}, {})
        assert d["totals"]["drift_rate"] == expected, min_points


def test_reports_list_and_download(cfg):
    month = cfg.data_dir / "reports" / "2024-05"
    month.mkdir(parents=True)
    (month / "report-2024-05.json").write_bytes(b'{"ok": true}')
    (month / "report-2024-05.xlsx").write_bytes(b"PK\x03\x04xlsx")
    (cfg.data_dir / "reports" / "notes").mkdir()
    (cfg.data_dir / "reports" / "notes" / "x.txt").write_text("x")
    (cfg.data_dir / "archive-copy.json").write_text("{}")

    @session_test(cfg, user="view")
    async def _(c, hub, fleet, h):
        d = await (await c.get("/api/reports")).json()
        assert [m["month"] for m in d["months"]] == ["2024-05"]
        assert [f["name"] for f in d["months"][0]["files"]] == ["report-2024-05.json", "report-2024-05.xlsx"]
        r = await c.get("/api/reports/2024-05/report-2024-05.xlsx")
        assert r.status == 200 and await r.read() == b"PK\x03\x04xlsx"
        assert r.headers["Content-Disposition"].startswith("attachment;")
        for bad in ("/api/reports/2024-05/..%2F..%2Farchive-copy.json", "/api/reports/notes/x.txt",
                    "/api/reports/2024-13/report-2024-05.json", "/api/reports/2024-05/missing.json"):
            assert (await c.get(URL(bad, encoded=True))).status in (400, 404), bad


def test_security_headers(cfg):
    @session_test(cfg, user="view")
    async def _(c, hub, fleet, h):
        for path in ("/", "/api/me"):
            r = await c.get(path)
            assert r.status == 200
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
        assert (await c.get("/api/me")).headers["Cache-Control"] == "no-store"
        me = await (await c.get("/api/me")).json()
        assert me["role"] == "viewer" and "平安客运" in {e["name"] for e in me["enterprises"]}
        assert me["counties"] == ["桥西区", "长安区"]


# --- places ------------------------------------------------------------------------------------------------

def _north_of(lat: float, km: float) -> float:
    return lat + km / (6371.0088 * math.pi / 180)       # a meridian degree on the mean sphere


def test_places_zone_site_station_and_coordinates():
    p = Places(registry())
    assert p.describe(38.05, 114.50) == "市区禁行区"
    assert p.describe(38.11, 114.41) == "鑫源煤场"
    assert p.describe(38.08, 114.56) == "市区禁行区"                 # on the corner: boundary counts as inside
    assert p.describe(None, 114.5) == ""
    assert p.describe(38.0, 114.0, station_id="ST2") == "北郊治超站"
    near = p.describe(_north_of(38.0, 1.99), 114.40)
    assert near.startswith("石安治超站附近")
    far_lat = _north_of(38.0, 2.01)
    assert p.describe(far_lat, 114.40) == f"{far_lat:.5f}, 114.40000"
    assert Places(registry().__class__()).describe(38.0, 114.0) == "38.00000, 114.00000"
    assert orjson.loads(orjson.dumps(p.map_data()))["zones"][0]["name"] == "市区禁行区"


def test_mounted_under_a_prefix_as_the_worker_does(cfg):
    from aiohttp import web

    async def main():
        console, hub, _ = make_app(cfg)
        parent = web.Application()
        async def metrics(_request):
            return web.Response(text="# metrics")
        parent.router.add_get("/metrics", metrics)
        parent.add_subapp("/console/", console)
        c = TestClient(TestServer(parent, host="127.0.0.1"))
        await c.start_server()
        try:
            r = await c.get("/console/", allow_redirects=False)
            assert r.status == 302 and r.headers["Location"] == "login"     # → /console/login
            assert (await c.get("/console/login")).status == 200
            assert (await c.get("/metrics")).status == 200                  # the parent's routes are untouched
            r = await c.post("/console/api/login", json={"username": "ops", "password": PASSWORD})
            assert r.status == 200
            csrf = (await r.json())["csrf"]
            assert (await c.get("/console/")).status == 200
            r = await c.post(f"/console/api/cases/{CASE}/actions", json={"action": "review"},
                             headers={auth.CSRF_HEADER: csrf})
            assert r.status == 200 and (await r.json())["status"] == "reviewed"
        finally:
            await c.close()
    asyncio.run(main())


def test_routes_the_host_adds_stay_public_and_worker_fleet_fields_are_accepted(cfg):
    """The worker adds /metrics and /healthz to the console app itself (streams/web_server.py), and its
    FleetView reports ``last_ts`` and track rows with ``ts_ms``."""
    from aiohttp import web

    class WorkerLikeFleet:
        def vehicles(self):
            return [{"plate": "冀A10001", "lat": 38.05, "lon": 114.5, "speed_kmh": 40.0, "state": "moving",
                     "last_ts": "2024-05-06T09:00:00+08:00"}]

        def track(self, plate):
            return [{"ts_ms": 1714957200000, "lat": 38.05, "lon": 114.5, "speed_kmh": 40.0}]

    async def main():
        app, hub, _ = make_app(cfg, fleet=WorkerLikeFleet())

        async def metrics(_request):
            return web.Response(text="# metrics")
        app.router.add_get("/metrics", metrics)
        c = TestClient(TestServer(app, host="127.0.0.1"))
        await c.start_server()
        try:
            r = await c.get("/metrics")
            assert r.status == 200 and await r.text() == "# metrics"
            assert (await c.get("/api/vehicles")).status == 401          # the console's own routes stay guarded
            await c.post("/api/login", json={"username": "view", "password": PASSWORD})
            (v,) = (await (await c.get("/api/vehicles")).json())["vehicles"]
            assert v["ts"] == "2024-05-06T09:00:00+08:00" and v["enterprise"] == "平安客运"
            d = await (await c.get("/api/vehicles/冀A10001")).json()
            assert d["track"][0]["ts"] == "2024-05-06T09:00:00+08:00"   # 1714957200000 ms = 01:00Z
        finally:
            await c.close()
    asyncio.run(main())
