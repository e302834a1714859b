"""Lawful devices (issue 21 item 1): the approval records, the gate in ``assess`` (batch CLI and models), the
public device list (`roadwatch devices publish`, console API). The real-worker path is in
test_integration_worker.py (a reading from the unannounced station S2)."""
from __future__ import annotations

import asyncio
import csv
import io
from datetime import timedelta

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from roadwatch.models.config import Config
from roadwatch.models.devices import APPROVAL_ITEMS, approval_status
from roadwatch.models.overload import MemoryCounters, assess
from roadwatch.models.registry import RegistryError, parse_registry
from roadwatch.simulators.fleet import full_approval, generate_fleet, valid_device
from roadwatch.streams.cli import main as cli_main
from roadwatch.streams.web import auth
from roadwatch.streams.web.console import create_console_app
from roadwatch.streams.web.live import InMemoryFleet, LiveHub
from test_overload_cli import line, run_inproc
from test_overload_helpers import T0, iso, ms, reading, registry_dict
from web_support import PASSWORD, make_cfg, seed_user

BEFORE = iso(T0 - timedelta(days=100))


def without(item: str, date: str = BEFORE) -> dict:
    a = full_approval(date)
    del a[item]
    return a


def verdict(reg_dict: dict, gross=60000, cfg=None, ts=T0) -> dict:
    return assess(reading(gross, ts=ts), parse_registry(reg_dict), cfg or Config(), counters=MemoryCounters())


# --- the gate in assess ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("item", list(APPROVAL_ITEMS))
def test_device_lacking_any_item_sends_an_over_limit_reading_to_review(item):
    v = verdict(registry_dict(approval=without(item)))
    assert v["over_limit"] and v["action"] == "review" and v["fine_yuan"] == 0 and not v["violation"]
    assert v["review_reasons"] == [f"device_{item}_missing"] and v["review_reason"] == f"device_{item}_missing"
    assert v["device_approval"]["status"] == "not_approved" and v["device_approval"]["missing"] == [item]
    assert v["device_approval"]["items"][item] == "missing"
    # the same reading from a fully approved device is a fine
    ok = verdict(registry_dict())
    assert ok["action"] == "fine" and ok["device_approval"]["status"] == "ok" and ok["review_reasons"] == []


def test_item_dated_after_the_reading_is_not_yet_in_force():
    a = full_approval(BEFORE)
    a["announcement"]["date"] = iso(T0 + timedelta(seconds=1))
    v = verdict(registry_dict(approval=a))
    assert v["action"] == "review" and v["review_reasons"] == ["device_announcement_missing"]
    assert v["device_approval"]["items"]["announcement"] == "pending"
    a["announcement"]["date"] = iso(T0)                  # dated at the reading's time: in force
    assert verdict(registry_dict(approval=a))["action"] == "fine"


def test_which_items_are_required_is_configuration():
    reg = registry_dict(approval={})                      # a registry from before the approval records
    v = verdict(reg)
    assert v["action"] == "review"
    assert v["review_reasons"] == [f"device_{i}_missing" for i in APPROVAL_ITEMS]
    off = Config({key: False for key, _ in APPROVAL_ITEMS.values()})
    v = verdict(reg, cfg=off)
    assert v["action"] == "fine" and v["device_approval"] == {
        "status": "ok", "required": [], "missing": [], "items": {i: "missing" for i in APPROVAL_ITEMS}}
    only = Config({"devices.require_legal_review": False, "devices.require_technical_review": False,
                   "devices.require_signage": False})
    assert verdict(reg, cfg=only)["review_reasons"] == ["device_announcement_missing"]


def test_under_the_limit_nothing_changes_and_calibration_reason_comes_first():
    v = verdict(registry_dict(approval={}), gross=40000)
    assert v["action"] == "none" and v["review_reasons"] == []
    v = verdict(registry_dict(approval={}, cert_no=""))
    assert v["review_reason"] == "calibration_missing" and "device_announcement_missing" in v["review_reasons"]


def test_unknown_device_lacks_every_item():
    st = approval_status(parse_registry(registry_dict()), "S1", "nope", ms(T0), Config())
    assert st["status"] == "not_approved" and st["missing"] == list(APPROVAL_ITEMS)
    assert st["detail"] == "device not in the registry"


# --- registry format -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(approval={"legal": {}}), "unknown item"),
    (lambda d: d.update(approval={"signage": {"date": BEFORE, "reference": "R"}}), "signage.reviewer is required"),
    (lambda d: d.update(approval={"signage": {"date": "2025-01-01", "reference": "R", "reviewer": "X"}}), "offset"),
    (lambda d: d.update(approval={"signage": {"date": BEFORE, "reference": "R", "reviewer": "X", "by": 1}}),
     "unknown field"),
    (lambda d: d.update(device_type="drone"), "device_type"),
    (lambda d: d.update(road=7), "road must be text"),
    (lambda d: d.update(aproval={}), "unknown field(s) ['aproval']"),
])
def test_bad_device_entries_are_refused_naming_the_device(change, message):
    reg = registry_dict()
    change(reg["stations"][0]["devices"][0])
    with pytest.raises(RegistryError) as e:
        parse_registry(reg)
    assert "stations[0].devices[0] (W1)" in str(e.value) and message in str(e.value)


def test_generated_and_example_registries_have_approved_devices(tmp_path):
    reg = generate_fleet(20, 4, seed=3)
    at = T0
    for st in reg.stations.values():
        dev = valid_device(st, at)
        if dev is not None:
            assert approval_status(reg, st.station_id, dev["device_id"], ms(at), Config())["status"] == "ok"
        for d in st.devices:        # every item dated no later than the first calibration certificate
            assert all(a["date"] <= min(x["valid_from"] for x in st.devices) for a in d["approval"].values())
    again = tmp_path / "r.json"
    reg.dump(again)
    assert parse_registry(orjson.loads(again.read_bytes())).to_dict() == reg.to_dict()


# --- batch `assess wim` ------------------------------------------------------------------------------------------

def test_batch_assess_never_fines_a_reading_from_an_unannounced_device(tmp_path, monkeypatch, capsysbinary):
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    reg = tmp_path / "registry.json"
    reg.write_bytes(orjson.dumps(registry_dict(approval=without("announcement"))))
    stdin = b"\n".join(line(g, ts=T0 + timedelta(hours=i)) for i, g in enumerate([52000, 60000, 80000])) + b"\n"
    code, out, err = run_inproc(monkeypatch, capsysbinary, stdin, "--registry", str(reg))
    assert code == 0, err
    assert [v["action"] for v in out] == ["review"] * 3
    assert all(v["review_reasons"] == ["device_announcement_missing"] and v["fine_yuan"] == 0 for v in out)
    reg.write_bytes(orjson.dumps(registry_dict()))
    code, out, err = run_inproc(monkeypatch, capsysbinary, stdin, "--registry", str(reg))
    assert [v["action"] for v in out] == ["fine"] * 3


# --- the public list ---------------------------------------------------------------------------------------------

def two_device_registry() -> dict:
    reg = registry_dict()
    st = reg["stations"][0]
    st["devices"][0].update(road="G107 K712+300", direction="北向南", device_type="fixed",
                            approval=full_approval(BEFORE))
    st["devices"].append({"device_id": "M1", "device_type": "mobile", "road": "S311", "direction": "东向西",
                          "location": "S311 某路口（移动）", "cert_no": "豫计检字2024-9", "valid_from": BEFORE,
                          "valid_to": iso(T0 + timedelta(days=300)), "approval": without("announcement")})
    return reg


def test_devices_publish_writes_html_csv_json(tmp_path, capsys):
    reg = tmp_path / "registry.json"
    reg.write_bytes(orjson.dumps(two_device_registry()))
    out = tmp_path / "pub"
    assert cli_main(["devices", "publish", "--registry", str(reg), "--out", str(out), "--at", iso(T0)]) == 0
    assert "2 devices, 1 approved" in capsys.readouterr().err
    doc = orjson.loads((out / "devices.json").read_bytes())
    assert doc["as_of"] == iso(T0) and doc["total"] == 2 and doc["approved"] == 1
    w1, m1 = doc["devices"]
    assert (w1["device_id"], w1["location"], w1["road"], w1["direction"], w1["device_type"], w1["approved"]) == \
        ("W1", "G107 治超点", "G107 K712+300", "北向南", "fixed", True)
    assert w1["approval"]["announcement"] == {"label": "向社会公布设置地点", "status": "ok", "date": BEFORE,
                                              "reference": "TEST-announcement"}
    assert (m1["device_type"], m1["location"], m1["approved"], m1["missing"]) == \
        ("mobile", "S311 某路口（移动）", False, ["announcement"])
    assert "reviewer" not in orjson.dumps(doc).decode()           # the public list names no reviewer
    rows = list(csv.DictReader(io.StringIO((out / "devices.csv").read_bytes().decode("utf-8-sig"))))
    assert [(r["device_id"], r["approved"], r["announcement_status"], r["road"]) for r in rows] == \
        [("W1", "yes", "ok", "G107 K712+300"), ("M1", "no", "missing", "S311")]
    page = (out / "devices.html").read_text()
    assert "公路治超非现场执法设备公示" in page and "G107 K712+300" in page and "移动式" in page
    assert page.count("未完成") == 1 and "第四十一条" in page
    # before the items' dates every item is "not yet in force"
    assert cli_main(["devices", "publish", "--registry", str(reg), "--out", str(out),
                     "--at", iso(T0 - timedelta(days=101))]) == 0
    assert orjson.loads((out / "devices.json").read_bytes())["approved"] == 0
    assert cli_main(["devices", "publish", "--registry", str(reg), "--out", str(out), "--at", "yesterday"]) == 2


def test_console_serves_the_device_list(tmp_path):
    cfg = make_cfg(tmp_path)
    seed_user(cfg, "view", "viewer")
    reg = parse_registry(two_device_registry())

    async def main():
        app = create_console_app(cfg, archive_path=cfg.archive_path, registry=reg, live=LiveHub(),
                                 fleet=InMemoryFleet())
        c = TestClient(TestServer(app, host="127.0.0.1"))
        await c.start_server()
        try:
            assert (await c.get("/api/devices")).status == 401
            r = await c.post("/api/login", json={"username": "view", "password": PASSWORD})
            assert r.status == 200 and auth.CSRF_HEADER
            doc = await (await c.get("/api/devices")).json()
            assert [(d["device_id"], d["approved"]) for d in doc["devices"]] == [("W1", True), ("M1", False)]
            r = await c.get("/api/devices/devices.csv")
            assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
            assert "M1,S311 某路口（移动）" in (await r.read()).decode("utf-8-sig")
            r = await c.get("/api/devices/devices.html")
            assert r.headers["Content-Type"].startswith("text/html") and "G107 K712+300" in await r.text()
            assert (await c.get("/api/devices/other.txt")).status == 404
        finally:
            await c.close()
    asyncio.run(main())


@pytest.mark.browser
@pytest.mark.skipif(not __import__("pathlib").Path("/usr/bin/chromium").exists(), reason="no /usr/bin/chromium")
def test_console_devices_page_in_the_browser(tmp_path):
    from pathlib import Path

    from playwright.sync_api import expect, sync_playwright

    from web_support import ConsoleThread, logged_in_page
    cfg = make_cfg(tmp_path)
    seed_user(cfg, "view", "viewer")
    app = create_console_app(cfg, archive_path=cfg.archive_path, registry=parse_registry(two_device_registry()),
                             live=LiveHub(), fleet=InMemoryFleet())
    errors: list[str] = []
    with ConsoleThread(app) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        try:
            page = logged_in_page(browser, srv.url, "view", errors, height=700)
            page.click("button[data-view='devices']")
            expect(page.locator("#device-table tr[data-device]")).to_have_count(2)
            expect(page.locator("#device-table tr[data-device='M1']")).to_contain_text("未完成")
            expect(page.locator("#device-table tr[data-device='M1'] td").last).to_have_text("否 no")
            expect(page.locator("#device-table tr[data-device='W1'] td").last).to_have_text("是 yes")
            expect(page.locator("#dev-summary")).to_contain_text("1 of 2 usable")
            art = Path(__file__).resolve().parents[1] / "test-artifacts"
            art.mkdir(exist_ok=True)
            page.locator("#view-devices").screenshot(path=str(art / "devices.png"))
        finally:
            browser.close()
    assert errors == []
