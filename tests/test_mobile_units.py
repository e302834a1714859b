"""Mobile weighing units (issue 17 item 3, 流动治超): registry validation of units and deployments, and a
reading's place and validity from the deployment active at its time — in ``assess``, through batch
`assess wim` and through the real Faust worker. A reading outside every deployment goes to review with
``outside_deployment`` and is never a fine, whatever the configuration."""
from __future__ import annotations

import asyncio
import copy
import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from kafka import KafkaProducer
from stack_support import worker_stack

from roadwatch.models.config import Config
from roadwatch.models.devices import APPROVAL_ITEMS, public_device_list
from roadwatch.models.mobile import active_deployment, deployed_at
from roadwatch.models.overload import MemoryCounters, assess
from roadwatch.models.registry import RegistryError, parse_registry
from roadwatch.simulators.fleet import full_approval
from roadwatch.streams import topics as T
from roadwatch.streams.archive import open_archive
from roadwatch.streams.web.console import create_console_app
from roadwatch.streams.web.live import InMemoryFleet, LiveHub
from test_integration_worker import _collect
from test_overload_cli import line, run_inproc
from test_overload_helpers import T0, iso, ms, reading, registry_dict
from web_support import PASSWORD, seed_user

BEFORE = iso(T0 - timedelta(days=100))


def device_approval(date: str = BEFORE) -> dict:
    a = full_approval(date)
    del a["announcement"]                  # announced per deployment
    return a


def deployment(dep_id: str, start, end, *, lat=34.75, lon=113.70, announced=True, **kw) -> dict:
    d = {"deployment_id": dep_id, "lat": lat, "lon": lon, "road": "S312 K45+200", "direction": "东向西",
         "start": iso(start), "end": iso(end)}
    if announced:
        d["announcement"] = {"date": iso(start - timedelta(days=3)), "reference": f"流动点位通告-{dep_id}",
                             "reviewer": "市交通运输局"}
    d.update(kw)
    return d


def mobile_registry_dict(deployments=None, **unit) -> dict:
    """The overload test registry (fixed station S1) plus mobile unit M1: deployed T0−1 h … T0+2 h (announced)
    and T0+2 h … T0+6 h (touching, not announced); nothing after T0+6 h."""
    reg = registry_dict()
    u = {"unit_id": "M1", "name": "中牟流动治超组", "county": "中牟县", "accuracy_class": "5",
         "device": {"device_id": "MD1", "device_type": "mobile", "cert_no": "豫计检字2025-M1",
                    "valid_from": iso(T0 - timedelta(days=200)), "valid_to": iso(T0 + timedelta(days=200)),
                    "approval": device_approval()},
         "deployments": deployments if deployments is not None else [
             deployment("M1-a", T0 - timedelta(hours=1), T0 + timedelta(hours=2), station="S1"),
             deployment("M1-b", T0 + timedelta(hours=2), T0 + timedelta(hours=6), lat=34.80, lon=113.90,
                        announced=False)]}
    u.update(unit)
    reg["mobile_units"] = [u]
    return reg


def verdict_at(ts, reg=None, cfg=None, gross=60000):
    return assess(reading(gross, ts=ts, station="M1", device="MD1"), parse_registry(reg or mobile_registry_dict()),
                  cfg or Config(), counters=MemoryCounters())


# --- the registry ---------------------------------------------------------------------------------------------

def test_registry_loads_units_and_round_trips():
    reg = parse_registry(mobile_registry_dict())
    assert list(reg.mobile_units) == ["M1"] and reg.point_name("M1") == "中牟流动治超组"
    assert reg.point_names() == {"S1": "G107 治超点", "M1": "中牟流动治超组"}
    assert reg.station_device("M1", "MD1")["cert_no"] == "豫计检字2025-M1"
    assert reg.station_device("M1", "W1") is None
    again = parse_registry(orjson.loads(orjson.dumps(reg.to_dict())))
    assert again.to_dict() == reg.to_dict()
    assert "mobile_units" not in parse_registry(registry_dict()).to_dict()     # older registries keep their bytes


def test_active_deployment_is_half_open_and_touching_spans_are_fine():
    reg = parse_registry(mobile_registry_dict())
    assert active_deployment(reg, "M1", ms(T0 - timedelta(hours=1)))["deployment_id"] == "M1-a"
    assert active_deployment(reg, "M1", ms(T0 + timedelta(hours=2)) - 1)["deployment_id"] == "M1-a"
    assert active_deployment(reg, "M1", ms(T0 + timedelta(hours=2)))["deployment_id"] == "M1-b"
    assert active_deployment(reg, "M1", ms(T0 + timedelta(hours=6))) is None
    assert active_deployment(reg, "M1", ms(T0 - timedelta(hours=1)) - 1) is None
    assert active_deployment(reg, "S1", ms(T0)) is None
    assert [d["deployment_id"] for d in deployed_at(reg, ms(T0))] == ["M1-a"]
    assert deployed_at(reg, ms(T0 + timedelta(hours=7))) == []


def _overlapping():
    return [deployment("M1-a", T0, T0 + timedelta(hours=3)),
            deployment("M1-b", T0 + timedelta(hours=2), T0 + timedelta(hours=4))]


def _mutate(fn):
    reg = mobile_registry_dict()
    fn(reg["mobile_units"][0], reg)
    return reg


BAD = [
    (lambda u, r: u.update(deployments=_overlapping()), "'M1-b' overlaps 'M1-a'"),
    (lambda u, r: u.update(deployments=[deployment("M1-a", T0, T0)]), "end must be after start"),
    (lambda u, r: u["deployments"][0].pop("road"), "missing ['road']"),
    (lambda u, r: u["deployments"][0].update(lat=95.0), "lat must lie in"),
    (lambda u, r: u["deployments"][0].update(start="yesterday"), "deployments[0]"),
    (lambda u, r: u["deployments"][0].update(place="x"), "unknown field(s) ['place']"),
    (lambda u, r: u["deployments"][0].update(station="S9"), "station 'S9' is not a registry station"),
    (lambda u, r: u["deployments"][1].update(deployment_id="M1-a"), "duplicate deployment_id 'M1-a'"),
    (lambda u, r: u["deployments"][0]["announcement"].pop("reference"), "announcement.reference is required"),
    (lambda u, r: u["device"]["approval"].update(announcement=full_approval(BEFORE)["announcement"]),
     "announcement belongs on each deployment"),
    (lambda u, r: u["device"].update(device_type="fixed"), "device_type must be mobile"),
    (lambda u, r: u["device"].update(device_id="W1"), "duplicate device_id 'W1'"),
    (lambda u, r: u.update(unit_id="S1"), "also a station id"),
    (lambda u, r: r["mobile_units"].append(copy.deepcopy(u)), "duplicate unit_id 'M1'"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m for _, m in BAD])
def test_bad_units_and_deployments_are_refused_naming_the_entry(change, message):
    with pytest.raises(RegistryError) as e:
        parse_registry(_mutate(change))
    assert message in str(e.value)
    assert "mobile_units" in str(e.value)


# --- assess: place and validity from the deployment ------------------------------------------------------------

def test_reading_inside_a_deployment_is_placed_there_and_can_be_a_fine():
    v = verdict_at(T0)
    assert v["action"] == "fine" and v["fine_yuan"] > 0 and v["review_reasons"] == []
    assert v["deployment"]["status"] == "deployed" and v["deployment"]["deployment_id"] == "M1-a"
    assert (v["station"]["lat"], v["station"]["lon"]) == (34.75, 113.70)
    assert v["station"]["mobile"] and v["station"]["road"] == "S312 K45+200"
    assert v["calibration"]["status"] == "ok" and v["device_approval"]["status"] == "ok"
    assert "station_note" not in v
    # the next deployment, elsewhere: the same unit is placed there
    v = verdict_at(T0 + timedelta(hours=3))
    assert (v["station"]["lat"], v["station"]["lon"]) == (34.80, 113.90)


def test_evidence_manifest_names_the_deployment_and_its_place():
    from roadwatch.models.evidence import build_manifest
    r = reading(60000, ts=T0, station="M1", device="MD1")
    v = assess(r, parse_registry(mobile_registry_dict()), Config(), counters=MemoryCounters())
    site = build_manifest(v, r)["site"]
    assert (site["station_id"], site["name"], site["lat"], site["lon"]) == ("M1", "中牟流动治超组", 34.75, 113.70)
    assert site["deployment"]["deployment_id"] == "M1-a" and site["deployment"]["road"] == "S312 K45+200"
    assert build_manifest(v, r)["direction"] == "东向西"
    fixed = assess(reading(60000, ts=T0), parse_registry(mobile_registry_dict()), Config(), counters=MemoryCounters())
    assert "deployment" not in build_manifest(fixed, reading(60000, ts=T0))["site"]


def test_unannounced_deployment_sends_its_readings_to_review():
    v = verdict_at(T0 + timedelta(hours=3))
    assert v["action"] == "review" and v["review_reasons"] == ["device_announcement_missing"]
    assert v["device_approval"]["items"]["announcement"] == "missing"
    assert verdict_at(T0)["device_approval"]["items"]["announcement"] == "ok"


EVERY_GATE_OFF = Config({"overlimit.requires_valid_calibration": False,
                         **{key: False for key, _ in APPROVAL_ITEMS.values()}})


@pytest.mark.parametrize("cfg", [Config(), EVERY_GATE_OFF], ids=["default", "every-gate-off"])
@pytest.mark.parametrize("hours", [-2, 6, 30])
def test_reading_outside_every_deployment_is_review_never_a_fine(cfg, hours):
    v = verdict_at(T0 + timedelta(hours=hours), cfg=cfg, gross=80000)
    assert v["over_limit"] and v["action"] == "review" and v["fine_yuan"] == 0 and not v["violation"]
    assert v["review_reason"] == "outside_deployment" and v["review_reasons"][0] == "outside_deployment"
    assert v["deployment"]["status"] == "outside_deployment" and v["station"]["lat"] is None
    # under the limit there is nothing to review
    assert verdict_at(T0 + timedelta(hours=hours), cfg=cfg, gross=40000)["action"] == "none"


def test_unit_without_deployments_never_fines():
    v = verdict_at(T0, reg=mobile_registry_dict(deployments=[]))
    assert v["action"] == "review" and v["review_reasons"][0] == "outside_deployment"


def test_public_device_list_names_each_announced_deployment():
    rows = public_device_list(parse_registry(mobile_registry_dict()), ms(T0), Config())
    mob = [r for r in rows if r["device_type"] == "mobile"]
    assert [(r["deployment_id"], r["approved"]) for r in mob] == [("M1-a", True), ("M1-b", False)]
    assert mob[0]["lat"] == 34.75 and mob[0]["road"] == "S312 K45+200" and mob[1]["missing"] == ["announcement"]
    assert mob[0]["approval"]["announcement"]["reference"] == "流动点位通告-M1-a"


# --- batch `assess wim` -----------------------------------------------------------------------------------------

def test_batch_assess_never_fines_a_reading_outside_the_deployment(tmp_path, monkeypatch, capsysbinary):
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    reg = tmp_path / "registry.json"
    reg.write_bytes(orjson.dumps(mobile_registry_dict()))
    hours = [0, 1, 7, 30]
    stdin = b"\n".join(line(70000, ts=T0 + timedelta(hours=h), station_id="M1", device_id="MD1") for h in hours)
    code, out, err = run_inproc(monkeypatch, capsysbinary, stdin + b"\n", "--registry", str(reg))
    assert code == 0, err
    assert [v["action"] for v in out] == ["fine", "fine", "review", "review"]
    assert [v["review_reason"] for v in out[2:]] == ["outside_deployment"] * 2
    assert all(v["fine_yuan"] == 0 for v in out[2:])


# --- the real worker --------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_worker_places_mobile_readings_and_never_fines_one_outside_its_deployment(tmp_path):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    reg = mobile_registry_dict(deployments=[
        deployment("M1-now", now - timedelta(hours=1), now + timedelta(hours=1), lat=34.76, lon=113.71)])
    reg["vehicles"].append({**reg["vehicles"][0], "plate": "豫A54321"})
    reg["mobile_units"][0]["device"].update(valid_to=iso(now + timedelta(days=30)))
    path = tmp_path / "registry.json"
    path.write_bytes(orjson.dumps(reg))

    def rd(plate, ts):
        d = orjson.loads(line(70000, plate=plate, station_id="M1", device_id="MD1"))
        return orjson.dumps({**d, "ts": ts.isoformat()})
    with worker_stack(tmp_path, path) as (st, cfg):
        p = KafkaProducer(bootstrap_servers=st.bootstrap)
        p.send(T.WIM_READINGS, key="豫A12345".encode(), value=rd("豫A12345", now)).get(10)
        p.send(T.WIM_READINGS, key="豫A54321".encode(), value=rd("豫A54321", now - timedelta(hours=3))).get(10)
        p.close()
        got = _collect(st.bootstrap, [T.OVERLOAD_CASES], lambda g: len(g[T.OVERLOAD_CASES]) >= 2)
        cases = {c["plate"]: c for c in got[T.OVERLOAD_CASES]}
        inside, outside = cases["豫A12345"], cases["豫A54321"]
        assert inside["action"] == "fine" and inside["station"]["lat"] == 34.76, inside["review_reasons"]
        assert inside["deployment"]["deployment_id"] == "M1-now"
        assert outside["action"] == "review" and outside["fine_yuan"] == 0
        assert outside["review_reasons"][0] == "outside_deployment"
        conn = open_archive(cfg.archive_path)
        deadline = time.monotonic() + 10
        rows = []
        while time.monotonic() < deadline and len(rows) < 2:
            rows = conn.execute("SELECT plate, action, fine_yuan FROM cases ORDER BY plate").fetchall()
            time.sleep(0.2)
        assert sorted((r["plate"], r["action"], r["fine_yuan"] > 0) for r in rows) == [
            ("豫A12345", "fine", True), ("豫A54321", "review", False)]
        # the console's case list names the unit; the case view places it where its deployment stood
        seed_user(cfg, "ops", "operator")
        registry = parse_registry(reg)

        async def console():
            app = create_console_app(cfg, archive_path=cfg.archive_path, registry=registry, live=LiveHub(),
                                     fleet=InMemoryFleet())
            c = TestClient(TestServer(app, host="127.0.0.1"))
            await c.start_server()
            try:
                assert (await c.post("/api/login", json={"username": "ops", "password": PASSWORD})).status == 200
                listed = (await (await c.get("/api/cases")).json())["cases"]
                one = await (await c.get(f"/api/cases/{inside['case_id']}")).json()
                return listed, one
            finally:
                await c.close()
        listed, one = asyncio.run(console())
        assert {c["station"] for c in listed} == {"中牟流动治超组"}
        assert one["station"]["mobile"] and (one["station"]["lat"], one["station"]["lon"]) == (34.76, 113.71)
        assert one["station"]["deployment"]["deployment_id"] == "M1-now"
