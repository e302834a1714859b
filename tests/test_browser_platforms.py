"""The console's 平台 view in real headless Chromium against the real JT/T 809 link server: a simulated lower
platform logs in over TCP (main and slave link); an operator sends a 查岗 from the page to all platforms; the
online one receives the 0x9301 and the page shows it 待应答, then 已按时应答 once the platform answers; the
offline one shows 未送达; an older late answer shows 超时应答; a viewer sees no send form; the vehicle panel
shows the platform that forwards the vehicle. Saves test-artifacts/console-platforms.png."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from roadwatch.simulators.lower_platform import LowerPlatform, PlatformSpec
from roadwatch.streams.archive import open_archive
from roadwatch.streams.batcher import MemoryPublisher
from roadwatch.streams.archive import platforms as store
from roadwatch.streams.jt809.link import LinkServer
from roadwatch.streams.jt809.platforms import Platform, render_platforms
from web_support import PASSWORD, ConsoleThread, make_app, make_cfg, seed_user

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ONLINE, OFFLINE = 20180920, 33000001

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")]


def _wait(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _sign_in(page, url, user):
    page.goto(url)
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("#login-btn")
    page.wait_for_selector("body[data-ready='1']")


def test_platform_view_sends_inspections_and_shows_their_outcome(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    plats = [Platform(ONLINE, "星沙运输企业平台", 1001, "pw123456", 2011), Platform(OFFLINE, "湘运服务商平台", 1002, "pw654321", 2019)]
    pf = tmp_path / "platforms.toml"
    pf.write_text(render_platforms(plats), encoding="utf-8")
    cfg = make_cfg(tmp_path, **{"jt809.platforms_file": str(pf), "jt809.queue_poll_s": 0.2})
    seed_user(cfg, "ops", "operator")
    seed_user(cfg, "view", "viewer")
    conn = open_archive(cfg.archive_path)
    now = time.time()
    # history: an inspection answered after its deadline, and a past session of the offline platform
    old = store.queue_inspection(conn, ONLINE, "请报告昨日值班人员", now - 7200, "ops", 5)
    store.mark_sent(conn, old, now - 7200, 9, True, now - 7200 + 300)
    store.record_answer(conn, ONLINE, now - 7200 + 420, "值班员李四", info_id=1)
    sid = store.open_session(conn, OFFLINE, now - 5400, 2019, "127.0.0.1:4000")
    store.close_session(conn, sid, now - 3600, "lost")
    store.note_vehicles(conn, [("冀A10001", 2, ONLINE, now)])

    app, hub, fleet = make_app(cfg)
    fleet.update("冀A10001", 38.05, 114.50, "2024-05-06T09:00:00+08:00", "moving")
    errors: list[str] = []
    with ConsoleThread(app) as srv, sync_playwright() as p:
        def on_loop(coro, timeout=15):
            return asyncio.run_coroutine_threadsafe(coro, srv.loop).result(timeout)

        async def start_link():
            link = LinkServer(cfg, {q.center_id: q for q in plats}, MemoryPublisher(), time.time)
            await link.start("127.0.0.1", 0)
            lower = LowerPlatform(PlatformSpec(ONLINE, 1001, "pw123456", 2011))
            assert await lower.connect("127.0.0.1", link.port) == 0
            return link, lower
        link, lower = on_loop(start_link())
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        try:
            assert _wait(lambda: lower.slave_logins >= 1), "the link server did not open the slave link"
            page = browser.new_page(viewport={"width": 1440, "height": 800})
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.set_default_timeout(10_000)
            _sign_in(page, srv.url, "ops")

            # the vehicle panel names the platform that forwards the vehicle
            page.fill("#veh-search", "10001")
            page.locator("#search-results .result").first.click()
            expect(page.locator("#vehicle-body")).to_contain_text("星沙运输企业平台（20180920）")

            page.click("button[data-view='platforms']")
            online = page.locator(f"#platform-table tr[data-center='{ONLINE}']")
            expect(online).to_contain_text("星沙运输企业平台")
            expect(online.locator("td").nth(2)).to_contain_text("在线")          # main link
            expect(online.locator("td").nth(3)).to_contain_text("在线")          # slave link
            expect(online.locator("td").nth(5)).to_contain_text("分钟")          # connectivity: num / den
            offline = page.locator(f"#platform-table tr[data-center='{OFFLINE}']")
            expect(offline.locator("td").nth(2)).to_contain_text("离线")
            expect(offline.locator("td").nth(2)).to_contain_text("连接中断")
            expect(page.locator(f"#inspection-table tr[data-inspection='{old}']")).to_contain_text("超时应答")

            # send one to all platforms from the page
            page.select_option("#insp-target", "all")
            page.fill("#insp-question", "请报告当前值班人员姓名")
            page.fill("#insp-minutes", "10")
            page.click("#insp-send")
            asked = page.locator("#inspection-table tr", has_text="请报告当前值班人员姓名")
            expect(asked).to_have_count(2)
            req = on_loop(asyncio.wait_for(lower.inspections.get(), 10))          # the 0x9301 reached the platform
            assert req.fields["question"] == "请报告当前值班人员姓名"
            page.click("button[data-view='platforms']")
            mine = asked.filter(has_text="星沙运输企业平台")
            expect(mine).to_have_attribute("data-status", "pending")
            expect(mine).to_contain_text("待应答")
            expect(asked.filter(has_text="湘运服务商平台")).to_contain_text("未送达")

            srv.loop.call_soon_threadsafe(lower.answer, req, "值班员张三在岗")
            expect(mine).to_have_attribute("data-status", "answered", timeout=15_000)   # the periodic refresh
            expect(mine).to_contain_text("已按时应答")
            expect(mine).to_contain_text("值班员张三在岗")
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "console-platforms.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5_000
            row = conn.execute("SELECT answer, requested_by FROM platform_inspections WHERE center_id = ? AND "
                               "question = ?", (ONLINE, "请报告当前值班人员姓名")).fetchone()
            assert tuple(row) == ("值班员张三在岗", "ops")

            # a viewer reads, but gets no send form
            viewer = browser.new_page()
            _sign_in(viewer, srv.url, "view")
            viewer.click("button[data-view='platforms']")
            expect(viewer.locator("#inspection-table")).to_contain_text("值班员张三在岗")
            expect(viewer.locator("#insp-form")).to_be_hidden()
            expect(viewer.locator("#insp-readonly")).to_be_visible()
            assert errors == []
        finally:
            browser.close()
            on_loop(lower.close())
            on_loop(link.aclose())
