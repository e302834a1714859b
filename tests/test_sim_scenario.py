"""Scenarios: byte-identical feeds, library builds, derived expectations equal hand-computed ones."""

import pytest

from roadwatch.models.config import Config
from roadwatch.simulators.behaviours import ScenarioError
from roadwatch.simulators.recording import encode_line, read_records, write_records
from roadwatch.simulators.scenario import build, list_library, load_scenario, parse_scenario


def _bytes(built) -> bytes:
    return b"".join(encode_line(r) for r in built.records)


def test_same_seed_gives_byte_identical_feed_and_registry(tmp_path):
    a = build(load_scenario("gps_track"), Config())
    b = build(load_scenario("gps_track"), Config())
    assert _bytes(a) == _bytes(b) and len(a.records) > 100
    a.registry.dump(tmp_path / "a.json")
    b.registry.dump(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    raw = dict(load_scenario("gps_track").raw)
    raw["scenario"] = dict(raw["scenario"], seed=999)
    c = build(parse_scenario(raw), Config())
    assert _bytes(c) != _bytes(a)


def test_feed_file_round_trip(tmp_path):
    b = build(load_scenario("wim_review"), Config())
    for name in ("f.jsonl", "f.jsonl.gz"):
        write_records(tmp_path / name, b.records)
        assert list(read_records(tmp_path / name)) == b.records


@pytest.mark.parametrize("name", sorted(set(list_library()) - {"province"}))
def test_library_scenarios_build(name):
    b = build(load_scenario(name), Config())
    assert b.records and b.expectations
    assert all(r.ts_ms >= b.records[0].ts_ms for r in b.records)


def test_derived_overload_expectations_match_hand_computed_ones():
    scn = load_scenario("wim_limits")
    hand = {e["vehicle"]: e["actions"] for e in scn.raw["expect"]["verdicts"]}
    raw = dict(scn.raw, expect={})
    b = build(parse_scenario(raw), Config())
    derived = {e["plate"]: e["actions"] for e in b.expectations if e["kind"] == "verdicts"}
    assert {b.aliases[a]: [list(x) for x in acts] for a, acts in hand.items()} == derived
    rv = load_scenario("wim_review")
    hand = {e.get("vehicle") or e.get("plate"): e["actions"] for e in rv.raw["expect"]["verdicts"]}
    b = build(parse_scenario(dict(rv.raw, expect={})), Config())
    derived = {e["plate"]: e["actions"] for e in b.expectations if e["kind"] == "verdicts"}
    assert {b.aliases.get(a, a): [list(x) for x in acts] for a, acts in hand.items()} == derived


def test_derived_expectations_follow_config():
    # ceil rounding: 19 010 kg on a 2-axle truck → 1.01 t → 2 t → 1 000 yuan
    scn = load_scenario("wim_limits")
    b = build(parse_scenario(dict(scn.raw, expect={})), Config({"overlimit.tonne_rounding": "ceil"}))
    acts = {e["plate"]: e["actions"] for e in b.expectations if e["kind"] == "verdicts"}
    assert acts[b.aliases["t2_fine_edge"]] == [["fine", 1000]]
    # fatigue limit raised to 5 h → the 4.5 h bus is fine
    f = build(load_scenario("gps_fatigue"), Config({"fatigue.day_continuous_h": 5.0}))
    exp = {(e["type"], e["plate"]): e["count"] for e in f.expectations if e["kind"] == "alert"}
    assert exp[("fatigue", f.aliases["bus_day_long"])] == 0


def test_escalations_follow_the_scripted_decisions():
    """Art. 66 escalations are expected only from decided cases, on the legal dates the officer script gives."""
    b = build(load_scenario("wim_escalation"), Config())
    esc = {(e["target"], e["id"], e["at"]): e["count"] for e in b.expectations if e["kind"] == "escalation"}
    repeat = b.aliases["repeat"]
    drv = b.registry.vehicles[repeat].driver_id
    ent = {a: b.registry.vehicles[b.aliases[a]].enterprise_id for a in ("share_a", "edge")}
    # repeat: passages 03-12 … 03-15, each decided 6 days later: the 4th decision (03-21) makes 4 > 3
    assert esc[("vehicle", repeat, "2025-03-20")] == 0 and esc[("vehicle", repeat, "2025-03-21")] == 4
    assert esc[("driver", drv, "2025-03-21")] == 4          # the officer identified the driver on each case
    assert esc[("vehicle", repeat, "2025-03-25")] == 4      # still inside the 365-day window
    # share_co: 1/10 on 03-18 is not above 10 %; share_b's decision on 03-25 makes 2/10
    assert esc[("enterprise", ent["share_a"], "2025-03-18")] == 0
    assert esc[("enterprise", ent["share_a"], "2025-03-25")] == 2
    assert esc[("enterprise", ent["edge"], "2025-03-18")] == 0
    # explicit statements in the file must agree with the derivation when the file's are dropped
    scn = load_scenario("wim_escalation")
    d = build(parse_scenario(dict(scn.raw, expect={})), Config())
    desc = {(e["target"], e["id"], e["at"]): e["count"] for e in d.expectations if e["kind"] == "escalation"}
    assert desc == esc
    # no decision, no escalation: without the officer script nothing is expected
    n = build(parse_scenario({k: v for k, v in scn.raw.items() if k not in ("case_acts", "expect")}), Config())
    assert not [e for e in n.expectations if e["kind"] == "escalation"]
    # a decision inside the 陈述申辩 period is refused when the scenario is built
    bad = dict(scn.raw, expect={}, case_acts=[{"vehicle": "edge", "acts": [
        {"act": "confirm", "day": 1}, {"act": "file", "day": 1}, {"act": "notify", "day": 2},
        {"act": "decide", "day": 3}]}])
    with pytest.raises(ScenarioError, match="陈述申辩"):
        build(parse_scenario(bad), Config())
    # counted from service instead of decision (art66.counts_from): no case of the script is served
    s = build(load_scenario("wim_escalation"), Config({"art66.counts_from": "served"}))
    assert not [e for e in s.expectations if e["kind"] == "escalation" and not e.get("explicit")]


def test_reference_escalation_boundaries():
    from datetime import date

    from roadwatch.simulators.expectations import reference_escalations

    def case(plate, decided, ent="E", fleet=10, driver=None):
        return {"plate": plate, "driver": driver, "enterprise": ent, "goods_vehicles": fleet,
                "decided": decided, "counts_from": decided}
    cfg = Config()
    four = [case("A", date(2025, 3, d), driver="D") for d in (1, 2, 3, 4)]
    assert reference_escalations(four[:3], cfg, date(2025, 3, 31)) == {}
    got = reference_escalations(four, cfg, date(2025, 3, 31))
    assert got[("vehicle", "A")] == 4 and got[("driver", "D")] == 4
    assert ("vehicle", "A") not in reference_escalations(four, cfg, date(2025, 3, 3))       # not decided yet
    assert reference_escalations(four, cfg, date(2026, 2, 28))[("vehicle", "A")] == 4      # 365 days incl.
    assert ("vehicle", "A") not in reference_escalations(four, cfg, date(2026, 3, 1))       # 03-01 left the window
    assert reference_escalations([case("B", date(2025, 3, 1))], cfg, date(2025, 3, 1)) == {}       # 1/10
    two = [case("B", date(2025, 3, 1)), case("C", date(2025, 3, 2))]
    assert reference_escalations(two, cfg, date(2025, 3, 2)) == {("enterprise", "E"): 2}           # 2/10


@pytest.mark.parametrize("raw,msg", [
    ({}, r"missing \[scenario\]"),
    ({"scenario": {"start": "2025-03-01T00:00:00"}}, "UTC offset"),
    ({"scenario": {"hours": 0}}, "hours"),
    ({"scenario": {}, "behaviour": [{"kind": "teleport"}]}, "unknown behaviour"),
])
def test_bad_scenarios_are_rejected(raw, msg):
    with pytest.raises(ScenarioError, match=msg):
        parse_scenario(raw)


def test_bad_behaviour_references():
    base = {"scenario": {"start": "2025-03-01T00:00:00+08:00", "hours": 24}, "fleet": {"vehicles": 2},
            "vehicle": [{"alias": "a", "category": "客运班车"}]}
    with pytest.raises(ScenarioError, match="unknown vehicle alias"):
        build(parse_scenario(dict(base, behaviour=[{"kind": "fatigue", "vehicle": "b", "at": "08:00", "drive_h": 1}])), Config())
    with pytest.raises(ScenarioError, match="outside the scenario span"):
        build(parse_scenario(dict(base, behaviour=[{"kind": "fatigue", "vehicle": "a", "at": "2025-04-01T08:00:00+08:00",
                                                     "drive_h": 1}])), Config())
    with pytest.raises(ScenarioError, match="spans day and night"):
        build(parse_scenario(dict(base, behaviour=[{"kind": "fatigue", "vehicle": "a", "at": "20:00", "drive_h": 3}])), Config())
    with pytest.raises(ScenarioError, match="overlaps"):
        build(parse_scenario(dict(base, behaviour=[
            {"kind": "fatigue", "vehicle": "a", "at": "08:00", "drive_h": 3},
            {"kind": "fatigue", "vehicle": "a", "at": "09:00", "drive_h": 1}])), Config())
