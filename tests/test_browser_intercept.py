"""The 布控 page at a phone's viewport in real headless Chromium: the dispatch list from the archive, a new
task arriving by server push, an officer recording an interception with the form; no sideways scrolling;
the fleet/status API then shows this month's 拦截率. Saves test-artifacts/intercept-phone.png."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
import requests

from roadwatch.models.records import BEIJING, epoch_ms_to_iso
from roadwatch.models.registry import parse_registry
from roadwatch.streams.archive import intercept as A
from roadwatch.streams.archive import open_archive
from roadwatch.streams.intercept import InterceptStore
from roadwatch.streams.web.console import create_console_app
from roadwatch.streams.web.live import InMemoryFleet, LiveHub
from web_support import (PASSWORD, REGISTRY, ConsoleThread, collect_errors, launch_chromium, make_cfg, seed_case,
                         seed_user)

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
PHONE = {"width": 390, "height": 844}

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")]


def _registry():
    d = orjson.loads(orjson.dumps(REGISTRY))
    d["stations"][0]["downstream"] = [{"station": "K1", "km": 24.0}]
    d["stations"].append({"station_id": "K1", "name": "北外环超限检测站", "lat": 38.21, "lon": 114.40,
                          "kind": "checkpoint"})
    return parse_registry(d)


def _verdict(plate, case_id, ts_ms):
    return {"plate": plate, "plate_color": 2, "case_id": case_id, "station_id": "ST1", "ts": epoch_ms_to_iso(ts_ms),
            "ts_ms": ts_ms, "action": "fine", "excess_pct": 28.5, "vehicle_kind": "train", "axle_count": 6,
            "gross_kg": 63000.0, "excess_kg": 14000.0, "fine_yuan": 1000}


def test_intercept_page_on_a_phone(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    cfg = make_cfg(tmp_path)
    seed_user(cfg, "field1", "operator")
    seed_case(cfg, "CA1", plate="冀A30001")
    reg = _registry()
    conn = open_archive(cfg.archive_path)
    store = InterceptStore(conn, cfg, reg)
    now_ms = int(time.time() * 1000)
    first = store.on_verdict(_verdict("冀A30001", "CA1", now_ms - 10 * 60_000), speed_kmh=48.0)
    assert [t["point_id"] for t in first["targets"]] == ["K1"]
    hub = LiveHub()
    app = create_console_app(cfg, archive_path=cfg.archive_path, registry=reg, live=hub, fleet=InMemoryFleet())
    errors: list[str] = []
    with ConsoleThread(app) as srv, sync_playwright() as p:
        browser = launch_chromium(p, CHROMIUM)
        try:
            page = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
            collect_errors(page, errors)
            page.set_default_timeout(10_000)
            page.goto(srv.url + "intercept")                          # not signed in: to the login page
            page.fill("#username", "field1")
            page.fill("#password", PASSWORD)
            page.click("#login-btn")
            page.wait_for_url("**/")
            page.goto(srv.url + "intercept")
            card = page.locator(f"article[data-task='{first['task_id']}']")
            expect(card).to_contain_text("冀A30001")
            expect(card).to_contain_text("布控中")
            expect(card.locator(".targets li[data-point='K1']")).to_contain_text("北外环超限检测站 · 24 km")
            expect(page.locator("#conn")).to_have_class("conn on")

            # a second truck: its task arrives by server push, no reload
            second = store.on_verdict(_verdict("冀B40002", "CB1", now_ms - 60_000), speed_kmh=60.0)
            srv.loop.call_soon_threadsafe(hub.publish, "intercept", second)
            pushed = page.locator(f"article[data-task='{second['task_id']}']")
            expect(pushed).to_contain_text("冀B40002")
            expect(pushed).to_contain_text("石安治超站")
            expect(page.locator("#n-open")).to_have_text("2")

            # the officer records the interception of the first truck
            card.locator("button.record").click()
            expect(page.locator("#sheet")).to_be_visible()
            page.fill("#unloaded", "12500")
            page.check("input[name='spot'][value='yes']")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "intercept-phone-form.png"))
            page.click("#submit")
            expect(page.locator("#sheet")).to_be_hidden()
            page.click(".filters button[data-status='done']")
            done = page.locator(f"article[data-task='{first['task_id']}']")
            expect(done).to_have_attribute("data-status", "intercepted")
            expect(done).to_contain_text("已拦截 · field1")
            expect(done).to_contain_text("卸载 12500 kg · 现场处理：是")
            page.click(".filters button[data-status='open']")
            expect(page.locator("#n-open")).to_have_text("1")
            # nothing wider than the phone
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            ARTIFACTS.mkdir(exist_ok=True)
            page.click(".filters button[data-status='']")
            shot = ARTIFACTS / "intercept-phone.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5_000

            # the form refuses an interception without the unloaded mass (server rule shown in the form)
            page.click(".filters button[data-status='open']")
            page.locator(f"article[data-task='{second['task_id']}'] button.record").click()
            page.click("#submit")
            expect(page.locator("#form-error")).to_contain_text("卸载")
            page.click("#cancel")

            stored = A.get_task(conn, first["task_id"])["outcome"]
            assert (stored["by"], stored["unloaded_kg"], stored["on_the_spot"], stored["case_id"], stored["point_id"]) \
                == ("field1", 12500.0, True, "CA1", "K1")
            cookies = {c["name"]: c["value"] for c in page.context.cookies()}
            status = requests.get(srv.url + "api/fleet/status", cookies=cookies, timeout=10).json()
            q = status["interception"]["total"]["interception_rate"]
            assert (q["numerator"], q["denominator"]) == (1, 2)
            # the case (operators' screen) names the task and its outcome
            desk = browser.new_page(viewport={"width": 1366, "height": 768})
            collect_errors(desk, errors)
            desk.context.add_cookies(page.context.cookies())
            desk.goto(srv.url)
            desk.click("button[data-view='cases']")
            desk.click("tr[data-case='CA1']")
            expect(desk.locator("#case-detail")).to_contain_text("布控拦截")
            expect(desk.locator("#case-detail")).to_contain_text("已拦截（field1")
            expect(desk.locator("#case-detail")).to_contain_text("卸载 12,500 kg；现场处理：是")
            linked = requests.get(srv.url + "api/cases/CA1", cookies=cookies, timeout=10).json()["intercept"]
            assert linked["task_id"] == first["task_id"] and linked["outcome"]["outcome"] == "intercepted"
            assert status["interception"]["month"] == datetime.now(timezone.utc).astimezone(BEIJING).strftime("%Y-%m")
        finally:
            browser.close()
    assert errors == []
