"""End to end in real headless Chromium: sign in, a live alert appears in the feed and on the map, a case is
reviewed and confirmed with its audit trail visible. Saves test-artifacts/console-map.png."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from roadwatch.streams.archive import open_archive
from web_support import PASSWORD, ConsoleThread, make_app, make_cfg, seed_alert, seed_case, seed_user

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CASE = "C-ST1-冀A30001-1"

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")]


def _wait(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_console_end_to_end(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    cfg = make_cfg(tmp_path)
    seed_user(cfg, "ops", "operator")
    seed_case(cfg, CASE)
    seed_alert(cfg, "a1")
    app, hub, fleet = make_app(cfg)
    fleet.update("冀A10001", 38.05, 114.50, "2024-05-06T09:00:00+08:00", "moving")
    fleet.update("冀A10001", 38.06, 114.52, "2024-05-06T09:01:00+08:00", "moving")
    fleet.update("冀A20001", 38.11, 114.41, "2024-05-06T09:00:00+08:00", "stopped")
    fleet.update("冀A10002", 38.14, 114.58, "2024-05-06T09:00:00+08:00", "offline")
    errors: list[str] = []
    with ConsoleThread(app) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.set_default_timeout(10_000)

            # no session → the login page
            page.goto(srv.url)
            assert page.url.endswith("/login")
            page.fill("#username", "ops")
            page.fill("#password", "wrong password")
            page.click("#login-btn")
            expect(page.locator("#login-error")).to_contain_text("Wrong user name or password")
            errors.clear()                              # the 401 of the failed sign-in is logged by Chromium
            page.fill("#password", PASSWORD)
            page.click("#login-btn")
            page.wait_for_selector("body[data-ready='1']")
            expect(page.locator("#who")).to_have_text("ops (operator)")
            expect(page.locator(".alert[data-id='a1']")).to_contain_text("冀A10001")
            expect(page.locator("#map")).to_have_attribute("data-vehicles", "3")       # canvas-drawn (map.js)
            assert page.evaluate("rwMap.vehicles.find((v) => v.plate === '冀A20001').state") == "stopped"

            # a live alert: published by the worker side, shown in the feed and on the map
            assert _wait(lambda: hub.subscribers >= 1), "the page did not open the live stream"
            alert = {"alert_id": "geofence_enter|冀A20001|1", "type": "geofence_enter", "plate": "冀A20001",
                     "start_ts": "2024-05-06T09:05:00+08:00", "severity": "high", "lat": 38.03, "lon": 114.52,
                     "details": {"zone_id": "Z1"}}
            hub.publish_alert(alert)
            row = page.locator(".alert[data-id='geofence_enter|冀A20001|1']")
            expect(row).to_contain_text("冀A20001")
            expect(row).to_contain_text("安达危货")
            expect(row).to_contain_text("市区禁行区")
            page.wait_for_function("() => rwMap.alerts.some((a) => a.alert_id === 'geofence_enter|冀A20001|1')")
            expect(page.locator("#high-banner")).to_be_visible()
            # a replay with the same id updates the row in place
            hub.publish_alert({**alert, "end_ts": "2024-05-06T09:09:00+08:00"})
            page.wait_for_timeout(300)
            expect(row).to_have_count(1)
            expect(page.locator(".alert")).to_have_count(2)

            # filters: only overspeed
            page.select_option("#f-type", "overspeed")
            expect(page.locator(".alert")).to_have_count(1)
            page.select_option("#f-type", "")
            expect(page.locator(".alert")).to_have_count(2)

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "console-map.png"
            page.locator(".map-wrap").screenshot(path=str(shot))
            assert shot.stat().st_size > 5_000

            # click a vehicle → its track and recent alerts
            pt = page.evaluate("rwMap.screenPoint('冀A10001')")
            box = page.locator("#map").bounding_box()
            page.mouse.click(box["x"] + pt["x"], box["y"] + pt["y"])
            expect(page.locator("#vehicle-panel")).to_be_visible()
            expect(page.locator("#vehicle-body")).to_contain_text("平安客运")
            expect(page.locator("#map")).to_have_attribute("data-track-segments", "1")   # its recent track

            # overload case: open, review, confirm, audit trail
            page.click("button[data-view='cases']")
            page.click(f"tr[data-case='{CASE}']")
            expect(page.locator("#case-detail")).to_contain_text("鑫源煤场")
            expect(page.locator("#case-detail .images img")).to_have_count(1)
            page.wait_for_function("() => { const i = document.querySelector('#case-detail .images img');"
                                   " return i && i.complete && i.naturalWidth === 1; }")   # the 1×1 PNG decoded
            page.click("button[data-action='review']")
            expect(page.locator("#audit tr[data-audit='review']")).to_contain_text("ops")
            page.fill("#case-reason", "称重与图片一致")
            page.click("button[data-action='confirm']")
            audit = page.locator("#audit tr[data-audit='confirm']")
            expect(audit).to_contain_text("ops")
            expect(audit).to_contain_text("称重与图片一致")
            expect(page.locator(f"tr[data-case='{CASE}'] .badge")).to_contain_text("confirmed")
            conn = open_archive(cfg.archive_path)
            assert conn.execute("SELECT status FROM cases WHERE case_id = ?", (CASE,)).fetchone()[0] == "confirmed"
            assert [r[0] for r in conn.execute("SELECT action FROM case_acts WHERE case_id = ? ORDER BY seq",
                                               (CASE,))] == ["detect", "review", "confirm"]

            page.click("button[data-view='fleet']")
            # E1 and E2 run 两客一危 vehicles; E3 (普通货车 only) has no open case any more
            expect(page.locator("#fleet-table tbody tr")).to_have_count(2)
            expect(page.locator("#fleet-table tbody")).to_contain_text("平安客运")
            assert errors == []
        finally:
            browser.close()
