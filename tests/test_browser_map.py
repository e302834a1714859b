"""The console's operator workflows in real headless Chromium, on a Hunan registry: the map with its base layer
(offline boundaries; a tile source with the GCJ-02 display offset), clustering and plate labels; track
playback; 区域查车; an alarm handling note; the printable case form; report generation; and the frame time
with 20 000 vehicles. Screenshots go to test-artifacts/ (kept by CI)."""
from __future__ import annotations

import http.server
import json
import math
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from roadwatch.geo.coords import wgs84_to_gcj02
from roadwatch.models.config import Config
from roadwatch.models.records import BEIJING
from roadwatch.models.registry import parse_registry
from roadwatch.streams.archive import open_archive
from roadwatch.streams.web.console import STATE, create_console_app
from roadwatch.streams.web.live import InMemoryFleet, LiveHub
from web_support import FAST_HASH, PASSWORD, PNG, ConsoleThread, seed_user

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# the map's redraw of 18 728 vehicles at most this many times the bare canvas work (the frame-time test)
RENDER_OVERHEAD_MAX = 6
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")]


def _square(lon, lat, half_deg):
    return [[lon - half_deg, lat - half_deg], [lon + half_deg, lat - half_deg], [lon + half_deg, lat + half_deg],
            [lon - half_deg, lat + half_deg], [lon - half_deg, lat - half_deg]]


# Changsha and around: places sit in the county they are named after
HUNAN = {
    "region": "湖南省",
    "enterprises": [
        {"enterprise_id": "E1", "name": "长沙星沙客运有限公司", "county": "长沙县"},
        {"enterprise_id": "E2", "name": "湘潭安达危货运输有限公司", "county": "雨湖区"},
        {"enterprise_id": "E3", "name": "望城顺通物流有限公司", "county": "望城区", "goods_vehicles": 20},
    ],
    "vehicles": [
        {"plate": "湘A10001", "plate_color": 2, "category": "客运班车", "enterprise_id": "E1", "county": "长沙县",
         "vehicle_kind": "bus"},
        {"plate": "湘A10002", "plate_color": 2, "category": "旅游包车", "enterprise_id": "E1", "vehicle_kind": "bus"},
        {"plate": "湘C20001", "plate_color": 2, "category": "危险货物运输车辆", "enterprise_id": "E2"},
        {"plate": "湘A30001", "plate_color": 2, "category": "普通货车", "enterprise_id": "E3", "axle_count": 6},
    ],
    "source_sites": [{"site_id": "S1", "name": "望城砂石场", "kind": "sand", "polygon": _square(112.82, 28.35, 0.004)}],
    "zones": [{"zone_id": "Z1", "name": "五一广场禁行区", "kind": "restricted", "categories": ["危险货物运输车辆"],
               "polygon": _square(112.977, 28.196, 0.006)}],
    "stations": [{"station_id": "W1", "name": "望城治超站", "lat": 28.37, "lon": 112.80, "county": "望城区"},
                 {"station_id": "W2", "name": "长沙县治超站", "lat": 28.25, "lon": 113.08, "county": "长沙县"}],
}

YESTERDAY = (datetime.now(BEIJING) - timedelta(days=1)).date()


def _ms(h: int, m: int = 0) -> int:
    return int(datetime(YESTERDAY.year, YESTERDAY.month, YESTERDAY.day, h, m, tzinfo=BEIJING).timestamp() * 1000)


def _route(plate: str, start_ms: int, a: tuple, b: tuple, n: int = 60):
    """n sampled points every 2 min from a to b, speeds rising then falling (0 … 90 km/h)."""
    for i in range(n):
        f = i / (n - 1)
        yield (plate, start_ms + i * 120_000, a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f,
               round(90 * math.sin(math.pi * f), 1))


@pytest.fixture
def console(tmp_path):
    cfg = Config({"paths.data_dir": str(tmp_path / "var"), **FAST_HASH, "web.fleet_refresh_s": 1.0})
    return _console(cfg)


def _console(cfg, n_background: int = 300):
    seed_user(cfg, "ops", "operator")
    conn = open_archive(cfg.archive_path)
    # yesterday afternoon: the coach crosses Changsha from 望城 to 长沙县, the truck stays in the west
    rows = list(_route("湘A10001", _ms(13), (28.37, 112.80), (28.25, 113.08)))
    rows += list(_route("湘A30001", _ms(14), (28.35, 112.82), (28.30, 112.85), 40))
    rows += list(_route("湘C20001", _ms(20), (27.86, 112.90), (27.90, 112.95), 20))   # evening, elsewhere
    conn.executemany("INSERT INTO track_points(plate, ts_ms, lat, lon, speed_kmh) VALUES (?,?,?,?,?)", rows)
    conn.execute(
        "INSERT INTO alerts(alert_id, type, plate, start_ts, end_ts, severity, lat, lon, late, details, day,"
        " emitted_at) VALUES (?,?,?,?,NULL,?,?,?,0,?,?,?)",
        ("fatigue|湘A10001|1", "fatigue", "湘A10001", "2024-05-06T15:00:00+08:00", "high", 28.30, 112.95,
         orjson.dumps({"kind": "continuous_day", "driving_h": 4.2, "limit": 4.0, "config_key": "fatigue.day_continuous_h",
                       "night": False}).decode(), "2024-05-06", "2024-05-06T15:00:00+08:00"))
    _seed_case(cfg, conn)
    registry = parse_registry(orjson.loads(orjson.dumps(HUNAN)))
    fleet = InMemoryFleet()
    now = datetime.now(BEIJING).replace(microsecond=0).isoformat()
    fleet.update("湘A10001", 28.25, 113.08, now, "moving", speed_kmh=62.0)
    fleet.update("湘A10001", 28.26, 113.09, now, "moving", speed_kmh=64.0)
    fleet.update("湘C20001", 28.196, 112.977, now, "alerting", speed_kmh=35.0)
    fleet.update("湘A10002", 28.21, 112.99, now, "stopped", speed_kmh=0.0)
    fleet.update("湘A30001", 28.30, 112.85, now, "offline")
    for i in range(n_background):                     # unregistered background traffic around Changsha
        fleet.update(f"湘A{90000 + i}", 28.0 + (i * 37 % 101) / 200, 112.6 + (i * 53 % 97) / 160, now,
                     ("moving", "stopped", "offline")[i % 3])
    app = create_console_app(cfg, archive_path=cfg.archive_path, registry=registry, live=LiveHub(), fleet=fleet)
    return cfg, app


def _seed_case(cfg, conn):
    ev = cfg.data_dir / "evidence" / "case1"
    ev.mkdir(parents=True, exist_ok=True)
    (ev / "plate.png").write_bytes(PNG)
    manifest = {
        "case_id": "C-W1-1", "plate": {"number": "湘A30001", "color": 2, "color_name": "黄"},
        "time": {"ts": "2024-05-06T08:30:00+08:00"}, "lane": 2, "speed_kmh": 58.0,
        "site": {"station_id": "W1", "name": "望城治超站", "county": "望城区", "device_id": "W1-D1",
                 "accuracy_class": "5", "certificate_no": "湘计检字001", "certificate_valid_from": "2024-01-01",
                 "certificate_valid_to": "2025-01-01", "calibration_status": "ok"},
        "vehicle": {"category": "普通货车", "axle_count": 6, "axle_loads_kg": [7000, 9000, 9000, 10000, 10200, 10100]},
        "measurement": {"gross_kg": 55300.0, "assessed_gross_kg": 55300.0},
        "limit": {"limit_kg": 49000, "basis": "《超限运输车辆行驶公路管理规定》第三条第一款第四项 六轴汽车列车",
                  "version": "交通运输部令2016年第62号", "adjustments": []},
        "tolerance": {"value": 0.05, "filing_threshold_kg": 51450.0, "mode": "threshold"},
        "excess": {"kg": 6300.0, "pct": 12.86, "over_limit": True},
        "penalties": {"road_administration": {"action": "fine", "fine_yuan": 3000, "tonnes": 6,
                                              "basis": "《超限运输车辆行驶公路管理规定》第四十三条第（二）项",
                                              "computation": "excess 6300 kg → 6 t × 500 = 3000"},
                      "police": {"fine_min_yuan": 200, "fine_max_yuan": 500, "points": 1, "over_rated_load_pct": 20.1,
                                 "basis": "《道路交通安全法》第九十二条"}},
        "decision": {"action": "fine", "fine_yuan": 3000, "review_reasons": []},
        "counters": {"vehicle": 2, "driver": 1, "enterprise_share": 0.05, "enterprise_violating_vehicles": 1,
                     "enterprise_goods_vehicles": 20, "window_days": 365, "basis": "《公路安全保护条例》第六十六条"},
        "targets": {"vehicle": {"owner": "望城顺通物流有限公司", "transport_cert_no": "湘交运管430100001号",
                                "rated_load_kg": 31000},
                    "enterprise": {"name": "望城顺通物流有限公司", "licence_no": "湘交运管许可430100号"},
                    "driver": {"name": "李建国", "qualification_no": "430100199001011234"}},
        "signing": {"alg": "Ed25519", "key_id": "ab" * 32}, "chain": {"seq": 7}, "created_at": "2024-05-06T08:30:05+08:00",
    }
    row = {"case_id": "C-W1-1", "plate": "湘A30001", "station_id": "W1", "ts": "2024-05-06T08:30:00+08:00",
           "day": "2024-05-06", "action": "fine", "violation": 1, "excess_kg": 6300.0, "fine_yuan": 3000,
           "enterprise_id": "E3", "driver_id": None, "source_site_id": "S1", "status": "reviewed",
           "evidence_path": str(ev.relative_to(cfg.data_dir)), "manifest": orjson.dumps(manifest).decode()}
    conn.execute(f"INSERT INTO cases({','.join(row)}) VALUES ({','.join('?' * len(row))})", list(row.values()))
    conn.execute("INSERT INTO case_actions(case_id, action, operator, reason, ts) VALUES (?,?,?,?,?)",
                 ("C-W1-1", "review", "ops", "图片与称重一致", "2024-05-06T09:00:00+08:00"))


class Browser:
    def __init__(self, url):
        from playwright.sync_api import sync_playwright
        self.url = url
        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        self.errors: list[str] = []
        self.page = self.browser.new_page(viewport={"width": 1366, "height": 768}, locale="zh-CN",
                                          timezone_id="Asia/Shanghai")
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.set_default_timeout(15_000)

    def login(self):
        p = self.page
        p.goto(self.url + "login")
        p.fill("#username", "ops")
        p.fill("#password", PASSWORD)
        p.click("#login-btn")
        p.wait_for_selector("body[data-ready='1']")
        return p

    def shot(self, name, locator=None, full_page=False):
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        if locator is None:
            self.page.screenshot(path=str(path), full_page=full_page)
        else:
            locator.screenshot(path=str(path))
        assert path.stat().st_size > 5_000
        return path

    def close(self):
        self.browser.close()
        self._pw.stop()


def _map(page) -> dict:
    return page.evaluate("({...document.getElementById('map').dataset})")


def _click_vehicle(page, plate):
    page.wait_for_function(f"() => window.rwMap.screenPoint({json.dumps(plate)}) !== null")
    pt = page.evaluate(f"window.rwMap.screenPoint({json.dumps(plate)})")
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + pt["x"], box["y"] + pt["y"])


def test_map_offline_base_clusters_labels_and_search(console):
    from playwright.sync_api import expect
    _cfg, app = console
    with ConsoleThread(app) as srv:
        b = Browser(srv.url)
        try:
            page = b.login()
            m = _map(page)
            assert m["base"] == "offline" and int(m["boundaries"]) > 100          # province + cities + counties
            assert int(m["vehicles"]) == 304
            page.evaluate("window.rwMap.map.setView([28.2, 112.9], 8, {animate: false}) && null")
            page.wait_for_function("() => +document.getElementById('map').dataset.clusters > 0")
            m = _map(page)
            assert int(m["clusters"]) > 0 and int(m["drawn"]) < 304                # clustered when zoomed out
            b.shot("map-clusters.png", page.locator(".map-wrap"))
            # zoomed in: single vehicles, heading arrows, plate labels, zone / site labels without overlap
            page.evaluate("window.rwMap.map.setView([28.245, 113.07], 14, {animate: false}) && null")
            page.wait_for_function("() => document.getElementById('map').dataset.zoom === '14'")
            assert int(_map(page)["clusters"]) == 0 and int(_map(page)["labels"]) > 0
            labels = page.evaluate("window.rwMap.placedLabels.map((b) => [b[0], b[1], b[2], b[3], b.text])")
            texts = [x[4] for x in labels]
            assert "湘A10001" in texts and texts.count("长沙县治超站") == 1
            for i, a in enumerate(labels):                   # no two labels overlap
                for z in labels[i + 1:]:
                    assert not (a[0] < z[2] and a[2] > z[0] and a[1] < z[3] and a[3] > z[1]), (a, z)
            # the coach moves north-east: its arrow points that way (bearing from successive positions)
            app[STATE].fleet.update("湘A10001", 28.27, 113.10, datetime.now(BEIJING).isoformat(), "moving",
                                    speed_kmh=66.0)
            page.wait_for_function("() => { const v = rwMap.vehicles.find((x) => x.plate === '湘A10001');"
                                   " return v && v.lat > 28.265; }")
            heading = page.evaluate("rwMap.vehicles.find((x) => x.plate === '湘A10001').heading")
            assert 35 < heading < 48, heading
            _click_vehicle(page, "湘A10001")
            expect(page.locator("#vehicle-body")).to_contain_text("长沙星沙客运有限公司")
            expect(page.locator("#vehicle-body")).to_contain_text("行驶")
            b.shot("map-vehicle.png", page.locator(".map-wrap"))
            # search by any part of the plate, by enterprise
            page.fill("#veh-search", "c2000")
            expect(page.locator("#search-results .result")).to_have_count(1)
            expect(page.locator("#search-results")).to_contain_text("湘C20001")
            page.fill("#veh-search", "星沙客运")
            expect(page.locator("#search-results .result")).to_have_count(2)
            page.fill("#veh-search", "湘A1")
            expect(page.locator("#search-results .result[data-plate='湘A10002']")).to_have_count(1)
            page.click("#search-results .result[data-plate='湘A10002']")
            expect(page.locator("#vehicle-body h3").first).to_contain_text("湘A10002")
            # the vehicle tree by enterprise
            page.click("#tree-toggle")
            expect(page.locator("#tree-body details")).to_have_count(3)
            page.click("#tree-body details[data-ent='E2'] summary")
            page.click("#tree-body .leaf[data-plate='湘C20001']")
            expect(page.locator("#vehicle-body h3").first).to_contain_text("湘C20001")
            b.shot("map-tree.png", page.locator(".map-wrap"))
            assert b.errors == []
        finally:
            b.close()


class _Tiles(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):     # noqa: N802 - http.server's name
        _Tiles.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *a):
        pass


def test_tile_base_layer_with_gcj02_display_offset(tmp_path):
    """A GCJ-02 tile source: tiles load from it (the CSP lets its origin in) and vehicles are drawn where the
    WGS-84 → GCJ-02 offset puts them on such tiles — the stored positions stay WGS-84."""
    srv_t = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Tiles)
    threading.Thread(target=srv_t.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv_t.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
    cfg = Config({"paths.data_dir": str(tmp_path / "var"), **FAST_HASH, "web.tile_url": url,
                  "web.tile_crs": "gcj02", "web.tile_attribution": "测试底图"})
    _cfg, app = _console(cfg, n_background=0)
    try:
        with ConsoleThread(app) as srv:
            b = Browser(srv.url)
            try:
                page = b.login()
                assert _map(page)["base"] == "tiles"
                page.evaluate("window.rwMap.map.setView([28.25, 113.08], 15, {animate: false}) && null")
                page.wait_for_function("() => document.getElementById('map').dataset.zoom === '15'")
                page.wait_for_timeout(300)
                assert any(h.startswith("/15/") for h in _Tiles.hits)
                drawn = page.evaluate("window.rwMap.screenPoint('湘A10001')")
                glat, glon = wgs84_to_gcj02(28.26, 113.09)
                want = page.evaluate(f"window.rwMap.map.latLngToContainerPoint([{glat}, {glon}])")
                raw = page.evaluate("window.rwMap.map.latLngToContainerPoint([28.26, 113.09])")
                assert abs(drawn["x"] - want["x"]) < 1.5 and abs(drawn["y"] - want["y"]) < 1.5
                assert math.hypot(drawn["x"] - raw["x"], drawn["y"] - raw["y"]) > 50   # ~0.5 km at zoom 15
                assert "测试底图" in page.inner_text(".leaflet-control-attribution")
                # the browser's formula gives the published pairs too (tests/test_geo_coords.py)
                from test_geo_coords import PAIRS
                for wlat, wlon, glat, glon in PAIRS:
                    got = page.evaluate(f"import('./static/map.js').then((m) => m.wgsToGcj({wlat}, {wlon}))")
                    assert abs(got[0] - glat) < 1e-9 and abs(got[1] - glon) < 1e-9
                    back = page.evaluate(f"import('./static/map.js').then((m) => m.gcjToWgs({glat}, {glon}))")
                    assert abs(back[0] - wlat) < 1e-7 and abs(back[1] - wlon) < 1e-7
                assert b.errors == []
            finally:
                b.close()
    finally:
        srv_t.shutdown()


def test_track_playback_with_speed_colours(console):
    from playwright.sync_api import expect
    _cfg, app = console
    with ConsoleThread(app) as srv:
        b = Browser(srv.url)
        try:
            page = b.login()
            page.fill("#veh-search", "湘A10001")
            page.click("#search-results .result[data-plate='湘A10001']")
            page.click("#pb-open")
            # yesterday 12:00–18:00
            day = YESTERDAY.isoformat()
            page.fill("#pb-from", f"{day}T12:00")
            page.fill("#pb-to", f"{day}T18:00")
            page.click("#pb-load")
            expect(page.locator("#playback")).to_have_attribute("data-points", "60")
            assert int(_map(page)["trackSegments"]) >= 5              # one polyline per speed band run
            expect(page.locator("#pb-readout")).to_contain_text(f"{day[5:]} 13:00:00")
            page.locator("#pb-slider").fill("30")
            expect(page.locator("#pb-readout")).to_contain_text("14:00:00")      # one point every 2 min
            expect(page.locator("#pb-readout")).to_contain_text("km/h")
            page.select_option("#pb-speed", "16")
            page.click("#pb-play")
            expect(page.locator("#pb-readout")).to_contain_text("第 60 / 60 点", timeout=10_000)
            b.shot("playback.png", page.locator(".map-wrap"))
            assert b.errors == []
        finally:
            b.close()


def test_a_late_answer_to_the_panels_first_load_does_not_replace_the_users_query(console):
    """The playback panel loads its default range at once; an operator who queries another range before that
    answer comes keeps their own. The first answer is held back here until the operator's has been shown (under
    CI load it came last and reset the panel to the default range's first point)."""
    from playwright.sync_api import expect
    _cfg, app = console
    with ConsoleThread(app) as srv:
        b = Browser(srv.url)
        try:
            page = b.login()
            held = []

            def hold_the_first_range_query(route):
                if "span=1" not in route.request.url and not held:
                    held.append(route)                 # the panel's own first load: answered below
                else:
                    route.continue_()
            page.route("**/api/tracks/**", hold_the_first_range_query)
            page.fill("#veh-search", "湘A10001")
            page.click("#search-results .result[data-plate='湘A10001']")
            page.click("#pb-open")
            deadline = time.monotonic() + 15
            while not held and time.monotonic() < deadline:
                page.wait_for_timeout(20)              # (route handlers run while Playwright waits)
            assert held, "the panel did not load its default range"
            day = YESTERDAY.isoformat()
            page.fill("#pb-from", f"{day}T13:00")
            page.fill("#pb-to", f"{day}T13:30")
            page.click("#pb-load")
            expect(page.locator("#playback")).to_have_attribute("data-points", "16")   # one point every 2 min
            with page.expect_response(lambda r: "api/tracks" in r.url and "span=1" not in r.url) as late:
                held[0].continue_()
            late.value.finished()
            page.evaluate("() => new Promise((r) => setTimeout(r, 300))")    # its handler has run by now
            assert page.locator("#playback").get_attribute("data-points") == "16"
            expect(page.locator("#pb-readout")).to_contain_text(f"{day[5:]} 13:00:00")
            b.shot("playback-late-answer.png", page.locator("#playback"))
            assert b.errors == []
        finally:
            b.close()


def test_area_search_yesterday_afternoon(console):
    from playwright.sync_api import expect
    _cfg, app = console
    with ConsoleThread(app) as srv:
        b = Browser(srv.url)
        try:
            page = b.login()
            page.evaluate("window.rwMap.map.setView([28.31, 112.94], 10, {animate: false}) && null")
            page.wait_for_function("() => document.getElementById('map').dataset.zoom === '10'")
            page.click("#area-start")
            box = page.locator("#map").bounding_box()
            a = page.evaluate("window.rwMap.map.latLngToContainerPoint([28.40, 112.75])")
            z = page.evaluate("window.rwMap.map.latLngToContainerPoint([28.28, 112.90])")
            page.mouse.move(box["x"] + a["x"], box["y"] + a["y"])
            page.mouse.down()
            page.mouse.move(box["x"] + (a["x"] + z["x"]) / 2, box["y"] + (a["y"] + z["y"]) / 2, steps=4)
            page.mouse.move(box["x"] + z["x"], box["y"] + z["y"], steps=4)
            page.mouse.up()
            expect(page.locator("#area-panel")).to_be_visible()
            day = YESTERDAY.isoformat()
            page.fill("#area-from", f"{day}T12:00")
            page.fill("#area-to", f"{day}T18:00")
            page.click("#area-go")
            # the coach passed through the west part of the box, the truck stayed in it; 湘C20001 was elsewhere
            expect(page.locator("#area-table tbody tr")).to_have_count(2)
            expect(page.locator("#area-table tbody tr[data-plate='湘A10001']")).to_contain_text("长沙星沙客运有限公司")
            expect(page.locator("#area-table tbody tr[data-plate='湘A30001']")).to_have_count(1)
            b.shot("area-search.png", page.locator(".map-wrap"))
            page.fill("#area-from", f"{day}T19:00")
            page.fill("#area-to", f"{day}T23:00")
            page.click("#area-go")
            expect(page.locator("#area-table tbody")).to_contain_text("无车辆")
            assert b.errors == []
        finally:
            b.close()


def test_alarm_handling_note(console):
    from playwright.sync_api import expect
    cfg, app = console
    with ConsoleThread(app) as srv:
        b = Browser(srv.url)
        try:
            page = b.login()
            page.click(".alert[data-id='fatigue|湘A10001|1']")
            detail = page.locator("[data-alert-detail='fatigue|湘A10001|1']")
            expect(detail).to_contain_text("日间连续驾驶")
            expect(detail).to_contain_text("4.20 小时")
            expect(detail).not_to_contain_text("config_key")
            expect(detail).to_contain_text("尚未处理")
            page.fill("#note-text", "已电话联系驾驶员，要求在下一服务区停车休息 20 分钟")
            page.click("#note-submit")
            expect(detail.locator(".notes-table")).to_contain_text("ops")
            expect(detail.locator(".notes-table")).to_contain_text("下一服务区停车休息")
            b.shot("alarm-note.png", page.locator(".map-wrap"))
            rows = open_archive(cfg.archive_path).execute(
                "SELECT operator, note, ts FROM alert_notes WHERE alert_id = ?", ("fatigue|湘A10001|1",)).fetchall()
            assert len(rows) == 1 and rows[0][0] == "ops" and rows[0][2].endswith("+08:00")
            assert b.errors == []
        finally:
            b.close()


def test_printable_case_form(console):
    from playwright.sync_api import expect
    _cfg, app = console
    with ConsoleThread(app) as srv:
        b = Browser(srv.url)
        try:
            page = b.login()
            page.goto(srv.url + "case/C-W1-1/print")
            page.wait_for_selector("body[data-ready='1']")
            expect(page.locator("#gross")).to_have_text("55,300 kg")
            expect(page.locator("#limit")).to_have_text("49,000 kg")
            expect(page.locator("#basis")).to_contain_text("第三条")
            expect(page.locator("#road-penalty")).to_contain_text("超限 6 吨 × 500 元/吨 = 3,000 元")
            expect(page.locator("#road-penalty")).to_contain_text("第四十三条")
            expect(page.locator("#police-penalty")).to_contain_text("记 1 分")
            expect(page.locator("#status")).to_have_text("审核中")
            expect(page.locator("#history")).to_contain_text("图片与称重一致")
            page.wait_for_function("() => { const i = document.querySelector('#images img');"
                                   " return i && i.complete && i.naturalWidth === 1; }")
            text = page.inner_text("main")
            expect(page.locator("main")).to_contain_text("本车违法次数")
            for code in ("fine", "reviewed", "calibration", "null", "undefined", "road_administration", "[object"):
                assert code not in text, code
            b.shot("case-form.png", full_page=True)
            assert b.errors == []
        finally:
            b.close()


def test_console_case_panel_reads_as_a_case(console):
    """The case panel in the console (not only the print form): Chinese labels, the reading, the limit and its
    basis, both penalty computations, who is liable, the history in Beijing time, links — no JSON, no codes."""
    from playwright.sync_api import expect
    _cfg, app = console
    with ConsoleThread(app) as srv:
        b = Browser(srv.url)
        try:
            page = b.login()
            page.click("button[data-view='cases']")
            page.click("tr[data-case='C-W1-1']")
            box = page.locator("#case-detail")
            expect(box).to_contain_text("实测总质量")
            expect(box).to_contain_text("55,300 kg")
            expect(box).to_contain_text("49,000 kg")
            expect(box).to_contain_text("第三条第一款第四项")
            expect(box.locator("#case-penalties")).to_contain_text("超限 6 吨 × 500 元/吨 = 3,000 元")
            expect(box.locator("#case-penalties")).to_contain_text("记 1 分")
            expect(box).to_contain_text("望城顺通物流有限公司")
            expect(box).to_contain_text("驾驶人")
            expect(box).to_contain_text("望城砂石场")
            history = box.locator("#audit")
            expect(history).to_contain_text("审核")
            expect(history).to_contain_text("图片与称重一致")
            expect(history).to_contain_text("2024-05-06 09:00:00")          # Beijing time, not the ISO string
            expect(box.locator("#case-print-link")).to_have_attribute("href", "case/C-W1-1/print")
            expect(box.locator("button[data-action='confirm']")).to_have_text("确认")
            text = box.inner_text()
            assert "{" not in text and '"' not in text, "a JSON dump in the case panel"
            for code in ("fine", "reviewed", "road_administration", "calibration", "null", "undefined", "[object",
                         "+08:00", "coal", "manifest"):
                assert code not in text, code
            # no English word inside the Chinese panel (units and the case number are not words)
            words = set(re.findall(r"[A-Za-z]{3,}", text)) - {"kg", "ops"}     # ops: the operator's user name
            assert not words, words
            b.shot("case-panel.png", box)
            history.scroll_into_view_if_needed()
            b.shot("case-panel-history.png", box)
            page.click("#case-vehicle-link")                                # the link to the vehicle
            expect(page.locator("#vehicle-panel")).to_be_visible()
            expect(page.locator("#vehicle-body")).to_contain_text("湘A30001")
            assert b.errors == []
        finally:
            b.close()


def test_report_page_lists_months_and_generates_one(console):
    from playwright.sync_api import expect
    cfg, app = console
    conn = open_archive(cfg.archive_path)
    for plate in ("湘A10001", "湘A10002", "湘C20001"):
        conn.execute("INSERT INTO vehicle_day(plate, day, pings, qualified, km_total, km_incomplete, drift_points,"
                     " overspeed_count, fatigue_s, curfew_events, offline_events, updated_at)"
                     " VALUES (?, '2024-05-06', 100, 98, 120.0, 2.0, 0, 1, 0, 0, 0, '2024-05-07T00:00:00+08:00')",
                     (plate,))
    with ConsoleThread(app) as srv:
        b = Browser(srv.url)
        try:
            page = b.login()
            page.click("button[data-view='reports']")
            row = page.locator("#report-months tr[data-month='2024-05']")
            expect(row).to_contain_text("未生成")
            page.click("button[data-generate='2024-05']")
            expect(row).to_contain_text("已生成")
            expect(row.locator("a")).to_have_count(7)             # the report files (REPORT_FILES)
            expect(row).to_contain_text("报告（网页）")
            b.shot("reports.png")
            assert (cfg.data_dir / "reports" / "2024-05" / "report.html").is_file()
            assert b.errors == []
        finally:
            b.close()


def test_frame_time_with_20000_vehicles(tmp_path):
    """20 000 vehicles on the map: time to redraw the vehicle canvas (clusters at province zoom, single vehicles
    with arrows and plates at street zoom) and the frame interval while panning. The figures are written to
    test-artifacts/map-frame-time.json; the bound asserted is a ratio against the bare canvas work in the same run."""
    cfg = Config({"paths.data_dir": str(tmp_path / "var"), **FAST_HASH})
    _cfg, app = _console(cfg, n_background=0)
    fleet = app[STATE].fleet
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for i in range(20_000):       # spread over Hunan (24.7–30.1 N, 108.8–114.2 E)
        fleet.update(f"湘X{i:05d}", 24.8 + (i * 7919 % 20000) / 20000 * 5.2, 108.9 + (i * 104729 % 20000) / 20000 * 5.2,
                     now, ("moving", "stopped", "offline", "alerting")[i % 4])
    with ConsoleThread(app) as srv:
        b = Browser(srv.url)
        try:
            page = b.login()
            assert int(_map(page)["vehicles"]) >= 20_000
            figures = page.evaluate("""async () => {
                const m = window.rwMap, out = {};
                const time = (n) => { const t = []; for (let i = 0; i < n; i++) t.push(m.redraw()); t.sort((a, b) => a - b);
                                      return {median_ms: t[n >> 1], max_ms: t[n - 1]}; };
                m.map.setView([27.4, 111.5], 7, {animate: false}); out.province = time(15); out.province.clusters = +m.el.dataset.clusters;
                m.map.setView([27.4, 111.5], 13, {animate: false}); out.street = time(15); out.street.drawn = +m.el.dataset.drawn;
                const t0 = performance.now(); m.setVehicles([...m.vehicles]); out.reindex_ms = performance.now() - t0;
                // worst case: all 20 000 drawn one by one (squeezed into one city, street zoom, no clusters)
                const all = m.vehicles;
                m.setVehicles(all.map((v) => ({...v, lat: 27.4 + (v.lat - 27.4) / 40, lon: 111.5 + (v.lon - 111.5) / 40})));
                m.map.setView([27.4, 111.5], 13, {animate: false}); out.dense_street = {drawn: +m.el.dataset.drawn};
                // each redraw followed by its baseline, so both see the same moment of a shared machine: the canvas
                // work alone for the same vehicles at the same points (no clustering, projection, hit list or labels)
                const ctx = m.canvas.getContext("2d"), full = [], bare = [];
                for (let i = 0; i < 15; i++) {
                  full.push(m.redraw());
                  const drawn = m.hits.filter((h) => h.kind === "vehicle"), t1 = performance.now();
                  ctx.clearRect(0, 0, m.canvas.width, m.canvas.height);
                  for (const h of drawn) m._drawVehicle(ctx, h.ref, h, 13);
                  bare.push(performance.now() - t1);
                }
                full.sort((a, b) => a - b); bare.sort((a, b) => a - b);
                Object.assign(out.dense_street, {median_ms: full[7], max_ms: full[14], bare_median_ms: bare[7]});
                m.setVehicles(all);
                // panning: frame intervals while the map moves 40 px per frame
                m.map.setView([27.4, 111.5], 9, {animate: false});
                const gaps = []; let last = performance.now();
                await new Promise((done) => { let k = 0; const step = () => {
                    const now = performance.now(); gaps.push(now - last); last = now;
                    m.map.panBy([40, 0], {animate: false});
                    if (++k < 40) requestAnimationFrame(step); else done(); }; requestAnimationFrame(step); });
                gaps.sort((a, b) => a - b);
                out.pan_frame_ms = {median: gaps[gaps.length >> 1], p90: gaps[Math.floor(gaps.length * 0.9)]};
                return out; }""")
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "map-frame-time.json").write_text(json.dumps(figures, indent=2))
            print("map frame time, 20 000 vehicles:", json.dumps(figures))
            page.evaluate("window.rwMap.map.setView([27.4, 111.5], 7, {animate: false}) && null")
            page.wait_for_timeout(200)
            b.shot("map-20000.png", page.locator(".map-wrap"))
            assert figures["province"]["clusters"] > 0 and figures["street"]["drawn"] > 0
            assert figures["dense_street"]["drawn"] > 10_000
            # a ratio against the bare drawing of the same vehicles, measured alternately in the same page: what the
            # map adds around the drawing (clusters, projection, hit list, labels) stays a small multiple of it
            # whatever the machine's speed. Measured 2.1–2.5 on a quiet machine and up to 3.6 with three CPU burners
            # and three copies of this test at once; plate labels drawn at every zoom made it 6.3. (An absolute
            # bound of 250 ms failed under the suite's own contention: 292 ms.)
            dense = figures["dense_street"]
            assert dense["median_ms"] <= RENDER_OVERHEAD_MAX * dense["bare_median_ms"], dense
            assert b.errors == []
        finally:
            b.close()
