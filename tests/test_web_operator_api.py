"""The operator endpoints behind the map workflows, against a real archive: track playback, 区域查车, partial
plate / enterprise search, the vehicle tree, alarm handling notes, report months and generation, vendored
static files, the CSP with a tile source, and "today" by the feed's clock."""
from __future__ import annotations

from datetime import datetime

import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.models.records import BEIJING
from roadwatch.streams.archive import open_archive
from roadwatch.streams.web.console import csp_for
from roadwatch.streams.web.tracks import BadParam, parse_bbox, parse_time_ms
from test_web_console import session_test
from web_support import make_cfg, seed_alert, seed_user


def ms(s: str) -> int:
    return int(datetime.fromisoformat(s).timestamp() * 1000)


@pytest.fixture()
def cfg(tmp_path):
    cfg = make_cfg(tmp_path)
    seed_user(cfg, "ops", "operator")
    seed_user(cfg, "view", "viewer")
    seed_alert(cfg, "a1")
    conn = open_archive(cfg.archive_path)
    t0 = ms("2024-05-06T14:00:00+08:00")
    rows = [("冀A10001", t0 + i * 120_000, 38.00 + i * 0.01, 114.40 + i * 0.01, 40.0 + i) for i in range(10)]
    rows += [("冀A20001", t0 + i * 120_000, 38.50, 114.90, 0.0) for i in range(5)]          # elsewhere
    rows += [("冀A30001", t0 - 86_400_000, 38.02, 114.42, 30.0)]                          # the day before
    conn.executemany("INSERT INTO track_points(plate, ts_ms, lat, lon, speed_kmh) VALUES (?,?,?,?,?)", rows)
    return cfg


def test_time_and_bbox_parameters():
    assert parse_time_ms("2024-05-06T14:00", "from") == ms("2024-05-06T14:00:00+08:00")     # bare = Beijing
    assert parse_time_ms("2024-05-06T06:00:00Z", "from") == ms("2024-05-06T14:00:00+08:00")
    assert parse_time_ms("", "from") is None
    for bad in ("yesterday", "2024-05-06 14:00:00.123456789"):
        with pytest.raises(BadParam):
            parse_time_ms(bad, "from")
    assert parse_bbox("114.4,38.0,114.5,38.1") == (114.4, 38.0, 114.5, 38.1)
    for bad in ("1,2,3", "114.5,38,114.4,38.1", "nan,1,2,3", "0,0,200,1"):
        with pytest.raises(BadParam):
            parse_bbox(bad)


def test_track_playback_range_and_kept_span(cfg):
    @session_test(cfg)
    async def _(c, hub, fleet, h):
        r = await (await c.get("/api/tracks/冀A10001?from=2024-05-06T14:05&to=2024-05-06T14:10")).json()
        assert [p["ts"] for p in r["points"]] == ["2024-05-06T14:06:00+08:00", "2024-05-06T14:08:00+08:00",
                                                  "2024-05-06T14:10:00+08:00"]
        assert r["points"][0]["speed_kmh"] == 43.0
        assert (r["kept_from"], r["kept_to"], r["kept_points"]) == (
            "2024-05-06T14:00:00+08:00", "2024-05-06T14:18:00+08:00", 10)
        span = await (await c.get("/api/tracks/冀A10001?span=1")).json()
        assert span["points"] == [] and span["kept_points"] == 10
        assert (await c.get("/api/tracks/冀A10001?from=soon")).status == 400
        assert (await (await c.get("/api/tracks/冀Z99999")).json())["points"] == []


def test_area_search_lists_vehicles_inside_in_the_time_range(cfg):
    @session_test(cfg)
    async def _(c, hub, fleet, h):
        q = "bbox=114.39,37.99,114.45,38.05&from=2024-05-06T12:00&to=2024-05-06T18:00"
        r = await (await c.get("/api/area?" + q)).json()
        assert [v["plate"] for v in r["vehicles"]] == ["冀A10001"]         # 冀A30001 was there the day before
        v = r["vehicles"][0]
        assert (v["points"], v["first"], v["last"], v["enterprise"]) == (
            6, "2024-05-06T14:00:00+08:00", "2024-05-06T14:10:00+08:00", "平安客运")   # edges count as inside
        r = await (await c.get("/api/area?bbox=114.39,37.99,114.45,38.05&from=2024-05-05T00:00"
                                "&to=2024-05-06T23:59")).json()
        assert [v["plate"] for v in r["vehicles"]] == ["冀A10001", "冀A30001"]
        for bad in ("bbox=1,2,3&from=2024-05-06T12:00&to=2024-05-06T18:00",
                    "bbox=114.39,37.99,114.45,38.05&from=2024-05-06T18:00&to=2024-05-06T12:00",
                    "bbox=114.39,37.99,114.45,38.05&from=2024-01-01T00:00&to=2024-05-06T12:00"):
            assert (await c.get("/api/area?" + bad)).status == 400


def test_search_by_partial_plate_enterprise_and_county_and_the_tree(cfg):
    @session_test(cfg)
    async def _(c, hub, fleet, h):
        fleet.update("冀A10001", 38.05, 114.50, "2024-05-06T09:00:00+08:00", "moving")
        fleet.update("粤B57J9X", 38.00, 114.40, "2024-05-06T09:00:00+08:00", "stopped")     # not registered
        plates = lambda r: [v["plate"] for v in r["vehicles"]]                         # noqa: E731
        assert plates(await (await c.get("/api/search?q=b57j9x")).json()) == ["粤B57J9X"]
        assert plates(await (await c.get("/api/search?q=粤")).json()) == ["粤B57J9X"]
        assert plates(await (await c.get("/api/search?q=A2000")).json()) == ["冀A20001", "冀A20002"]
        r = await (await c.get("/api/search?q=平安")).json()
        assert plates(r) == ["冀A10001", "冀A10002"] and r["vehicles"][0]["state"] == "moving"
        assert plates(await (await c.get("/api/search?q=长安区")).json()) == ["冀A10001", "冀A10002"]
        assert (await c.get("/api/search?q=")).status == 400
        tree = (await (await c.get("/api/tree")).json())["enterprises"]
        assert [(e["county"], e["name"]) for e in tree] == [("桥西区", "安达危货"), ("桥西区", "顺通物流"),
                                                            ("长安区", "平安客运")]     # by county, then name
        assert tree[2]["counts"] == {"moving": 1, "no_data": 1}


def test_alarm_handling_notes_are_archived_with_who_and_when(cfg):
    @session_test(cfg)
    async def _(c, hub, fleet, h):
        assert (await c.post("/api/alerts/a1/notes", json={"note": "  "}, headers=h)).status == 400
        assert (await c.post("/api/alerts/nope/notes", json={"note": "x"}, headers=h)).status == 404
        r = await c.post("/api/alerts/a1/notes", json={"note": "已联系企业安全员"}, headers=h)
        assert r.status == 200
        body = await r.json()
        assert body["ack_by"] == "ops" and body["notes"][0]["note"] == "已联系企业安全员"
        await c.post("/api/alerts/a1/notes", json={"note": "驾驶员已停车休息"}, headers=h)
        notes = (await (await c.get("/api/alerts/a1/notes")).json())["notes"]
        assert [n["note"] for n in notes] == ["已联系企业安全员", "驾驶员已停车休息"]       # append-only history
        assert all(n["operator"] == "ops" and n["ts"].endswith("+08:00") for n in notes)
        alerts = (await (await c.get("/api/alerts")).json())["alerts"]
        assert alerts[0]["ack_note"] == "驾驶员已停车休息"

    @session_test(cfg, user="view")
    async def _(c, hub, fleet, h):
        assert (await c.post("/api/alerts/a1/notes", json={"note": "x"}, headers=h)).status == 403


def test_report_months_and_generation(cfg):
    conn = open_archive(cfg.archive_path)
    conn.execute("INSERT INTO vehicle_day(plate, day, pings, qualified, km_total, km_incomplete, drift_points,"
                 " overspeed_count, fatigue_s, curfew_events, offline_events, updated_at)"
                 " VALUES ('冀A10001', '2024-05-06', 10, 10, 5.0, 0.0, 0, 0, 0, 0, 0, '2024-05-07T00:00:00+08:00')")

    @session_test(cfg)
    async def _(c, hub, fleet, h):
        months = (await (await c.get("/api/reports/months")).json())["months"]
        assert months == [{"month": "2024-05", "over": True, "files": [], "preview": []}]
        assert (await c.post("/api/reports/2024-04/generate", json={}, headers=h)).status == 404   # no data
        assert (await c.post("/api/reports/2024-13/generate", json={}, headers=h)).status == 400
        r = await c.post("/api/reports/2024-05/generate", json={}, headers=h)
        assert r.status == 200 and "report.html" in (await r.json())["files"]
        assert (cfg.data_dir / "reports" / "2024-05" / "report.json").is_file()
        assert (await c.post("/api/reports/2024-05/generate", json={}, headers=h)).status == 409  # official: once
        f = await c.get("/api/reports/2024-05/report.html")
        html = await f.text()
        assert f.status == 200 and "依据：rounded" not in html

    @session_test(cfg)
    async def _(c, hub, fleet, h):
        # a replay still in May: May is the running month, so it only gets a preview
        fleet.update("冀A10001", 38.05, 114.50, "2024-05-20T09:00:00+08:00", "moving")
        assert (await (await c.get("/api/reports/months")).json())["current_month"] == "2024-05"
        r = await c.post("/api/reports/2024-05/generate", json={}, headers=h)
        assert r.status == 200 and (await r.json())["official"] is False
        assert (cfg.data_dir / "reports" / "preview" / "2024-05" / "report.json").is_file()
        months = (await (await c.get("/api/reports/months")).json())["months"]
        assert months[0]["preview"] and months[0]["files"]                       # the official one stays
        assert (await c.get("/api/report-previews/2024-05/report.html")).status == 200

    @session_test(cfg, user="view")
    async def _(c, hub, fleet, h):
        assert (await c.post("/api/reports/2024-05/generate", json={}, headers=h)).status == 403


def test_vendored_static_files_and_no_traversal(cfg):
    @session_test(cfg)
    async def _(c, hub, fleet, h):
        r = await c.get("/static/vendor/leaflet/leaflet.js")
        assert r.status == 200 and "max-age" in r.headers["Cache-Control"]
        b = await c.get("/static/vendor/boundaries/hunan.json")
        fc = orjson.loads(await b.read())
        levels = {f["properties"]["level"] for f in fc["features"]}
        assert levels == {"province", "city", "county"}
        for bad in ("/static/vendor/../console.py", "/static/vendor/%2e%2e/%2e%2e/console.py", "/static/.hidden",
                    "/static/vendor/leaflet/../../../console.py"):
            assert (await c.get(bad)).status == 404, bad
        me = await (await c.get("/api/me")).json()
        assert me["map"] == {"tile_url": "", "tile_crs": "wgs84", "attribution": "", "boundaries": "hunan",
                             "track_sample_s": Config()["track.sample_s"]}


def test_csp_lets_only_the_tile_origin_in():
    assert "img-src 'self' data:;" in csp_for("")
    csp = csp_for("https://t{s}.tianditu.gov.cn/vec_w/wmts?tk=KEY&x={x}&y={y}&l={z}")
    assert "img-src 'self' data: https://t*.tianditu.gov.cn;" in csp
    assert csp_for("javascript:alert(1)") == csp_for("")


def test_fleet_day_follows_the_feed_clock(cfg):
    @session_test(cfg)
    async def _(c, hub, fleet, h):
        fleet.update("冀A10001", 38.05, 114.50, "2031-01-02T09:00:00+08:00", "moving")
        assert (await (await c.get("/api/fleet/status")).json())["day"] == "2031-01-02"

    @session_test(cfg)
    async def _(c, hub, fleet, h):
        today = datetime.now(BEIJING).strftime("%Y-%m-%d")
        assert (await (await c.get("/api/fleet/status")).json())["day"] == today           # no vehicle yet


def test_signed_out_print_page_redirects_to_the_login_page(cfg):
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from web_support import make_app

    async def main():
        app, _, _ = make_app(cfg)
        c = TestClient(TestServer(app, host="127.0.0.1"))
        await c.start_server()
        try:
            r = await c.get("/case/C-1/print", allow_redirects=False)
            assert r.status == 302 and r.headers["Location"] == "../../login"
            r = await c.get("/", allow_redirects=False)
            assert r.status == 302 and r.headers["Location"] == "login"
        finally:
            await c.close()
    asyncio.run(main())
