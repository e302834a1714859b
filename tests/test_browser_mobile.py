"""Mobile weighing units on the console map (issue 17 item 3), in real headless Chromium: ``api/map`` lists
each unit's deployments; the map draws a unit (orange triangle, labelled, with a tooltip) only while one of
its deployments is active, at that deployment's place. Screenshot: test-artifacts/map-mobile-units.png."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta

import orjson
import pytest

import test_browser_map as tbm
from roadwatch.models.config import Config
from roadwatch.models.records import BEIJING
from roadwatch.simulators.fleet import full_approval
from web_support import FAST_HASH, ConsoleThread

pytestmark = tbm.pytestmark

NOW = datetime.now(BEIJING).replace(microsecond=0)


def _dep(dep_id, lat, lon, start, end, road):
    return {"deployment_id": dep_id, "lat": lat, "lon": lon, "road": road, "direction": "南向北",
            "start": start.isoformat(), "end": end.isoformat(),
            "announcement": {"date": (start - timedelta(days=2)).isoformat(), "reference": f"通告-{dep_id}",
                             "reviewer": "市交通运输局"}}


def registry_with_units() -> dict:
    reg = copy.deepcopy(tbm.HUNAN)
    approval = full_approval((NOW - timedelta(days=90)).isoformat())
    del approval["announcement"]
    dev = {"device_id": "M1-D", "device_type": "mobile", "cert_no": "湘计检字M1",
           "valid_from": (NOW - timedelta(days=60)).isoformat(), "valid_to": (NOW + timedelta(days=300)).isoformat(),
           "approval": approval}
    reg["mobile_units"] = [
        # in 望城区 now, in 长沙县 from +4 h
        {"unit_id": "M1", "name": "望城流动治超组", "county": "望城区", "device": dev, "deployments": [
            _dep("M1-a", 28.33, 112.86, NOW - timedelta(hours=2), NOW + timedelta(hours=2), "G107 K1532"),
            _dep("M1-b", 28.22, 113.12, NOW + timedelta(hours=4), NOW + timedelta(hours=8), "S207 K18")]},
        # deployed yesterday only: not on the map now
        {"unit_id": "M2", "name": "雨花流动治超组", "county": "雨花区", "device": {**dev, "device_id": "M2-D"},
         "deployments": [_dep("M2-a", 28.10, 113.00, NOW - timedelta(days=1, hours=3), NOW - timedelta(days=1),
                              "S103 K5")]},
    ]
    return reg


@pytest.fixture
def console(tmp_path, monkeypatch):
    monkeypatch.setattr(tbm, "HUNAN", registry_with_units())
    cfg = Config({"paths.data_dir": str(tmp_path / "var"), **FAST_HASH, "web.fleet_refresh_s": 1.0})
    return tbm._console(cfg, n_background=20)


def test_mobile_units_show_on_the_map_only_while_deployed(console):
    _cfg, app = console
    with ConsoleThread(app) as srv:
        b = tbm.Browser(srv.url)
        try:
            page = b.login()
            data = page.evaluate("(async () => (await (await fetch('api/map')).json()).mobile_units)()")
            assert [u["id"] for u in data] == ["M1", "M2"]
            assert [d["id"] for d in data[0]["deployments"]] == ["M1-a", "M1-b"]
            assert data[0]["deployments"][0]["road"] == "G107 K1532"
            page.evaluate("window.rwMap.map.setView([28.27, 112.98], 10, {animate: false}) && null")
            page.wait_for_function("() => document.getElementById('map').dataset.mobile === '1'")
            units = page.evaluate("rwMap.deployedUnits().map((u) => [u.id, u.dep.id, u.dep.lat, u.dep.lon])")
            assert units == [["M1", "M1-a", 28.33, 112.86]]
            labels = page.evaluate("window.rwMap.placedLabels.map((b) => b.text)")
            assert "望城流动治超组" in labels and "雨花流动治超组" not in labels
            # hover the triangle: its tooltip names the unit, the road and the end of the deployment
            pt = page.evaluate("(() => { const h = rwMap.hits.find((x) => x.kind === 'mobile'); return {x: h.x, y: h.y}; })()")
            box = page.locator("#map").bounding_box()
            page.mouse.move(box["x"] + pt["x"], box["y"] + pt["y"])
            tip = page.locator(".map-tip")
            tip.wait_for(state="visible")
            text = tip.inner_text()
            assert "流动治超" in text and "望城流动治超组" in text and "G107 K1532" in text
            b.shot("map-mobile-units.png", page.locator(".map-wrap"))
            # five hours later the unit stands in 长沙县 (its second deployment); between deployments it is gone
            page.clock.set_fixed_time(NOW + timedelta(hours=5))
            page.wait_for_function("() => rwMap.deployedUnits().length === 1 && rwMap.deployedUnits()[0].dep.id === 'M1-b'"
                                   " && document.getElementById('map').dataset.mobile === '1'")
            page.clock.set_fixed_time(NOW + timedelta(hours=3))
            page.wait_for_function("() => document.getElementById('map').dataset.mobile === '0'")
            assert b.errors == []
        finally:
            b.close()


def test_map_api_without_units_keeps_an_empty_list(tmp_path):
    from roadwatch.models.registry import parse_registry
    from roadwatch.streams.web.places import Places
    assert Places(parse_registry(orjson.loads(orjson.dumps(tbm.HUNAN)))).map_data()["mobile_units"] == []
