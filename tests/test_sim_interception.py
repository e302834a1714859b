"""The simulator's road graph, mobile deployments and field teams (issue 17 item 5) and the shipped
``interception`` scenario end to end: simulate through the embedded broker and the real worker, the field
teams record their outcomes, ``scenario check`` passes — and fails when any derived expectation is
perturbed (a task's targets, an ETA beyond its tolerance, the 拦截率, the 查处率)."""
from __future__ import annotations

import asyncio
import copy
import re
import shutil
from datetime import datetime

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from roadwatch.models.config import Config
from roadwatch.models.mobile import active_deployment
from roadwatch.models.records import iso_to_epoch_ms
from roadwatch.simulators.fleet import HUNAN, generate_fleet, seat
from roadwatch.simulators.gps_terminal import haversine_km
from roadwatch.simulators.roadgraph import WINDING, road_km
from roadwatch.simulators.scenario import build, load_scenario
from roadwatch.models.registry import load_registry
from roadwatch.streams.archive import close_all
from roadwatch.streams.cli import main
from roadwatch.streams.web.console import create_console_app
from roadwatch.streams.web.live import InMemoryFleet, LiveHub
from web_support import FAST_HASH, PASSWORD, seed_user

COUNTIES = ("宁乡市", "望城区", "长沙县", "浏阳市", "湘潭县", "韶山市")


def km(a, b) -> float:
    return float(haversine_km(a.lon, a.lat, b.lon, b.lat))


# --- geography ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, seed, counties", [(6, 1717, COUNTIES), (20, 3, None), (40, 11, None)])
def test_stations_sit_in_their_county_and_links_are_roads(n, seed, counties):
    reg = generate_fleet(10, n, seed, station_counties=counties)
    st = reg.stations
    for s in st.values():
        assert s.county and s.name.startswith(s.county)
        lon, lat = seat(HUNAN, s.county)
        # 2–8 km from the seat of the county it is named after (no other seat is nearer than its own by much)
        assert 1.9 <= float(haversine_km(lon, lat, s.lon, s.lat)) <= 8.1, s.station_id
    links = 0
    for s in st.values():
        assert s.downstream, f"{s.station_id} has no neighbour"
        for e in s.downstream:
            b = st[e["station"]]
            straight = km(s, b)
            # a road is never shorter than the straight line, and winds within the generator's bounds
            assert straight * WINDING[0] - 0.06 <= e["km"] <= straight * WINDING[1] + 0.06
            back = [x for x in b.downstream if x["station"] == s.station_id]
            assert back == [{"station": s.station_id, "km": e["km"]}]          # both directions, same road
            links += 1
    assert links >= n                                  # every station has at least one road


def test_route_passages_keep_time_with_distance_and_speed():
    b = build(load_scenario("interception"), Config())
    st = b.registry.stations
    by_plate: dict[str, list] = {}
    for r in b.readings:
        if r["station_id"] in st:
            by_plate.setdefault(r["plate"], []).append(r)
    ring = by_plate[b.aliases["no_terminal_ring"]]
    assert [r["station_id"] for r in ring] == ["W001", "W002", "W003"]
    for a, z in zip(ring, ring[1:]):
        road = next(e["km"] for e in st[a["station_id"]].downstream if e["station"] == z["station_id"])
        hours = (datetime.fromisoformat(z["ts"]) - datetime.fromisoformat(a["ts"])).total_seconds() / 3600
        assert hours == pytest.approx(road / a["speed_kmh"], abs=1 / 3600)
        assert road / hours >= km(st[a["station_id"]], st[z["station_id"]]) / hours   # never faster than the crow
    # the truck with a terminal reports the same drive: its fixes pass each station at the passage second
    south = b.aliases["terminal_south"]
    vid = next(i for i, v in enumerate(b.registry.vehicles.values()) if v.plate == south)
    t_pass = int(datetime.fromisoformat(by_plate[south][0]["ts"]).timestamp())
    i = (b.pings["vid"] == vid) & (abs(b.pings["ts"] - t_pass) <= 30)
    w006 = st["W006"]
    assert i.any() and min(float(haversine_km(lo, la, w006.lon, w006.lat))
                           for lo, la in zip(b.pings["lon"][i], b.pings["lat"][i])) < 0.6


def test_mobile_deployments_stand_on_their_road_in_their_county():
    b = build(load_scenario("interception"), Config())
    reg = b.registry
    assert set(reg.mobile_units) == {"M01", "M02"}
    for u in reg.mobile_units.values():
        assert u.name.startswith(u.county)
        for d in u.deployments:
            near = min(reg.stations.values(), key=lambda s: float(haversine_km(s.lon, s.lat, d["lon"], d["lat"])))
            assert near.county == u.county                     # placed just out of its county's station
            assert float(haversine_km(near.lon, near.lat, d["lon"], d["lat"])) < 5.0
            assert d["announcement"]["date"] < d["start"]
        assert u.device["device_type"] == "mobile" and "announcement" not in u.device["approval"]
    # the registry the simulator writes loads through the real validation
    from roadwatch.models.registry import parse_registry
    again = parse_registry(orjson.loads(orjson.dumps(reg.to_dict())))
    m02 = again.mobile_units["M02"].deployments[0]
    assert active_deployment(again, "M02", iso_to_epoch_ms(m02["end"])) is None


def test_derived_expectations_follow_the_script():
    b = build(load_scenario("interception"), Config())
    exp = [e for e in b.expectations if e["kind"] == "intercept_task"]
    assert b.expectations == build(load_scenario("interception"), Config()).expectations    # deterministic
    late = b.aliases["mobile_late"]
    assert next(e for e in b.expectations if e["kind"] == "verdicts" and e["plate"] == late)["actions"] == [["review", 0]]
    assert late not in {e["plate"] for e in exp}                      # a review opens no task
    ring = next(e for e in exp if e["plate"] == b.aliases["no_terminal_ring"])
    assert ring["passages"] == 3 and ring["basis"] == "road_graph"    # one task, updated twice
    dist = road_km(b.registry.stations, "W003")                       # targets from its newest passage
    assert ring["eta_min"][ring["targets"].index("W004")] == pytest.approx(dist["W004"] / 60 * 60, abs=0.05)
    assert next(e for e in exp if e["plate"] == b.aliases["terminal_south"])["basis"] == "gps"
    assert next(e for e in exp if e["plate"] == b.aliases["mobile_caught"])["station_id"] == "M01"
    rate = next(e for e in b.expectations if e["kind"] == "interception")
    assert rate["denominator"] == len(exp)
    assert rate["numerator"] == sum(e["outcome"] == "intercepted" for e in exp)
    # the field team's probability drives the outcomes: nobody caught at 0, every targeted truck at 1
    for p, want in ((0.0, 0), (1.0, None)):
        def change(raw, p=p):
            raw["field_team"]["intercept_probability"] = p
            raw["behaviour"] = [x for x in raw["behaviour"] if "outcome" not in x]
        r = next(e for e in build(_variant(change), Config()).expectations if e["kind"] == "interception")
        targeted = sum(1 for e in exp if e["targets"] and e["plate"] != b.aliases["terminal_west"])
        assert r["intercepted"] == (targeted if want is None else want)


def _variant(change) -> object:
    scn = load_scenario("interception")
    raw = copy.deepcopy(scn.raw)
    change(raw)
    return type(scn)(scn.name, scn.description, scn.seed, scn.start, scn.hours, raw, scn.path)


BAD_SCRIPTS = [
    (lambda r: r["behaviour"][0].update(via=["W001", "W004"]), "is not a road link"),
    (lambda r: r["behaviour"][0].update(at="23:50"), "after the scenario ends"),
    (lambda r: r["mobile_unit"][0]["deployment"][0].update(between=["W001", "W004"]), "is not a road link"),
    (lambda r: r["mobile_unit"][0]["deployment"][0].update(km=400.0), "km must lie inside the link"),
    (lambda r: r["mobile_unit"][0]["deployment"][0].update(hours=3), "needs from, and to or hours"),
    (lambda r: r["field_team"].update(intercept_probability=1.5), "probabilities in [0, 1]"),
    (lambda r: r["fleet"].update(checkpoints=["W009"]), "not among the generated stations"),
]


@pytest.mark.parametrize("change, message", BAD_SCRIPTS, ids=[m for _, m in BAD_SCRIPTS])
def test_inconsistent_scripts_are_refused(change, message):
    from roadwatch.simulators.behaviours import ScenarioError
    with pytest.raises(ScenarioError, match=re.escape(message)):
        build(_variant(change), Config())


# --- end to end --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interception")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp / "var"}";web.port=0')
    mp.delenv("ROADWATCH_CONFIG", raising=False)
    assert main(["simulate", "interception", "--out", str(tmp / "out")]) == 0
    yield tmp
    close_all()
    mp.undo()


@pytest.mark.integration
def test_simulated_scenario_passes_its_check_strictly(simulated, capsys, monkeypatch):
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{simulated / "var"}";web.port=0')
    assert main(["scenario", "check", "interception", "--all"]) == 0
    out = capsys.readouterr()
    assert "DIFF" not in out.out and "intercept_task" in out.out
    for what in ("拦截率", "查处率"):
        assert f"{what} 2025-03 (console)" in out.out and f"{what} 2025-03 (report)" in out.out


@pytest.mark.integration
def test_console_lists_the_tasks_the_scenario_derives(simulated):
    """The phone page's API (operators dispatch, officers record): every derived task with its targets and
    the team's outcome; a mobile reading outside its deployment appears nowhere as a task."""
    cfg = Config({"paths.data_dir": str(simulated / "var"), **FAST_HASH})
    seed_user(cfg, "ops", "operator")
    reg = load_registry(simulated / "out" / "registry.json")
    exps = orjson.loads((simulated / "out" / "expectations.json").read_bytes())
    want = {(e["plate"], e["detected_at"]): e for e in exps if e["kind"] == "intercept_task"}

    async def fetch():
        app = create_console_app(cfg, archive_path=cfg.archive_path, registry=reg, live=LiveHub(),
                                 fleet=InMemoryFleet())
        c = TestClient(TestServer(app, host="127.0.0.1"))
        await c.start_server()
        try:
            r = await c.post("/api/login", json={"username": "ops", "password": PASSWORD})
            assert r.status == 200
            return (await (await c.get("/api/intercept/tasks?limit=1000")).json())["tasks"]
        finally:
            await c.close()
    tasks = asyncio.run(fetch())
    got = {(t["plate"], t["detected_at"]): t for t in tasks}
    assert set(got) == set(want)
    for key, e in want.items():
        t = got[key]
        assert [x["point_id"] for x in t["targets"]] == e["targets"]
        assert t["status"] == (e["outcome"] or "expired")
        kinds = {x["point_id"]: x["kind"] for x in t["targets"]}
        assert all(kinds[p] == ("mobile" if p in reg.mobile_units else "fixed") for p in kinds)


def _set(e: dict, **kw) -> bool:
    e.update(kw)
    return True


# each changes the first expectation it applies to; True when it did
PERTURB = {
    "targets": lambda e: e["kind"] == "intercept_task" and len(e["targets"]) > 1 and _set(
        e, targets=e["targets"][::-1], eta_min=e["eta_min"][::-1]),
    "eta": lambda e: e["kind"] == "intercept_task" and bool(e["targets"]) and _set(
        e, eta_min=[x + 2 * e["eta_tolerance_min"] for x in e["eta_min"]]),
    "outcome": lambda e: e["kind"] == "intercept_task" and e["outcome"] == "intercepted" and _set(e, outcome="not_found"),
    "interception_rate": lambda e: e["kind"] == "interception" and _set(e, numerator=e["numerator"] + 1),
    "enforcement_rate": lambda e: e["kind"] == "enforcement_rate" and _set(e, numerator=e["numerator"] + 1),
    "missing_task": None,
}


@pytest.mark.integration
@pytest.mark.parametrize("what", list(PERTURB))
def test_a_perturbed_expectation_fails_the_check(simulated, what, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{simulated / "var"}";web.port=0')
    src = simulated / "out"
    d = tmp_path / "from"
    d.mkdir()
    shutil.copy(src / "registry.json", d / "registry.json")
    exps = orjson.loads((src / "expectations.json").read_bytes())
    if what == "missing_task":      # an archived task the scenario does not derive is a difference too
        drop = next(i for i, e in enumerate(exps) if e["kind"] == "intercept_task")
        exps.pop(drop)
    else:
        assert any(PERTURB[what](e) for e in exps), what
    (d / "expectations.json").write_bytes(orjson.dumps(exps))
    assert main(["scenario", "check", "interception", "--from", str(d)]) == 1
    out = capsys.readouterr()
    # a task differs once; a rate differs as the console shows it and as the report prints it
    n = 2 if what.endswith("_rate") else 1
    assert out.out.count("DIFF") == n and f"{n} difference" in out.err
