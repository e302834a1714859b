"""``assess``: tolerance, validity, de-duplication, 一超四罚 counters, driver and source attribution."""
import hashlib
from datetime import timedelta

import pytest

from roadwatch.models.config import Config
from roadwatch.models.overload import MemoryCounters, MemoryDrivers, MemoryPassages, MemoryTracks, assess
from test_overload_helpers import PLATE, T0, ms, reading, registry, vehicle

TOL0 = Config({"overlimit.filing_tolerance": 0.0})


def run(r, reg=None, cfg=None, **kw):
    kw.setdefault("counters", MemoryCounters())
    return assess(r, reg or registry(), cfg or Config(), **kw)


# --- threshold mode, 6-axle train (49 t) -------------------------------------------------------------------

@pytest.mark.parametrize("gross,over,action,fine", [
    (49000, False, "none", 0),
    (51450, False, "none", 0),          # exactly 105 % of 49 t: not over
    (51451, True, "fine", 1000),        # excess 2451 kg → 2 t (floor) × 500
])
def test_threshold_tolerance_edges(gross, over, action, fine):
    v = run(reading(gross))
    assert v["over_limit"] is over and v["action"] == action and v["fine_yuan"] == fine
    assert v["limit_kg"] == 49000 and v["excess_kg"] == gross - 49000
    assert v["tolerance"] == 0.05 and "overlimit.filing_tolerance" in v["tolerance_source"]


@pytest.mark.parametrize("gross,action,fine", [(49000, "none", 0), (49001, "warning", 0), (50000, "warning", 0),
                                              (50001, "fine", 500)])
def test_without_tolerance_limit_and_warning_edges(gross, action, fine):
    v = run(reading(gross), cfg=TOL0)
    assert v["action"] == action and v["fine_yuan"] == fine
    assert v["case_id"] is (None if action == "none" else v["case_id"])


def test_excess_pct():
    v = run(reading(53900), cfg=TOL0)
    assert v["excess_pct"] == 10.0


def test_deduct_mode():
    cfg = Config({"overlimit.tolerance_mode": "deduct", "overlimit.filing_tolerance": 0.05})
    # 5-axle train, 43 t: 46000 × 0.95 = 43700 → 700 kg over → warning
    v = run(reading(46000, axles=5), cfg=cfg)
    assert v["assessed_gross_kg"] == 43700 and v["excess_kg"] == 700 and v["action"] == "warning"
    # 45263 × 0.95 = 42999.85 → not over
    assert run(reading(45263, axles=5), cfg=cfg)["action"] == "none"
    # 50000 × 0.95 = 47500 → 4500 over → 4 t × 500
    v = run(reading(50000, axles=5), cfg=cfg)
    assert v["excess_kg"] == 4500 and v["fine_yuan"] == 2000


def test_station_tolerance_overrides_config_and_is_recorded():
    reg = registry(station_tolerance=0.02, tolerance_source="检定证书 动态2级")
    assert run(reading(49980), reg)["action"] == "none"             # 49 t × 1.02 = 49980
    v = run(reading(49981), reg)                                     # 981 kg over → warning
    assert v["action"] == "warning" and v["tolerance"] == 0.02 and v["tolerance_source"] == "检定证书 动态2级"


def test_registry_facts_drive_the_limit():
    reg = registry(vehicles=[vehicle(single_drive_axle=True)])
    v = run(reading(46001), reg, TOL0)
    assert v["limit_kg"] == 46000 and v["action"] == "warning"
    reg = registry(vehicles=[vehicle(vehicle_kind="truck", axle_count=2, registered_total_kg=16000)])
    v = run(reading(16001, axles=2, kind="truck", loads=[6000, 10001]), reg, TOL0)
    assert v["limit_kg"] == 16000 and v["limit_adjustments"][0]["kind"] == "registered_total_cap"


# --- validity -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("valid_to_offset,action,reason", [
    (timedelta(seconds=-1), "review", "calibration_invalid"),   # expired one second before the reading
    (timedelta(0), "fine", None),                                # valid through the reading's instant
    (timedelta(seconds=1), "fine", None),
])
def test_certificate_valid_to_edges(valid_to_offset, action, reason):
    v = run(reading(60000), registry(valid_to=T0 + valid_to_offset))
    assert v["action"] == action and v["review_reason"] == reason
    assert v["fine_yuan"] == (0 if action == "review" else 5500)     # 11 000 kg over → 11 × 500


def test_certificate_not_yet_valid_missing_and_unknown_device():
    assert run(reading(60000), registry(valid_from=T0 + timedelta(seconds=1)))["review_reason"] == "calibration_invalid"
    assert run(reading(60000), registry(cert_no=""))["review_reason"] == "calibration_missing"
    assert run(reading(60000), registry(valid_to=None))["review_reason"] == "calibration_missing"
    v = run(reading(60000, device="W9"))
    assert v["action"] == "review" and v["review_reason"] == "calibration_missing"


def test_calibration_requirement_can_be_switched_off():
    v = run(reading(60000), registry(valid_to=T0 - timedelta(days=1)),
            Config({"overlimit.requires_valid_calibration": False}))
    assert v["action"] == "fine" and v["calibration"]["status"] == "invalid"


@pytest.mark.parametrize("conf,action", [(0.9, "fine"), (0.89, "review"), (1.0, "fine")])
def test_plate_confidence_edge(conf, action):
    v = run(reading(60000, confidence=conf))
    assert v["action"] == action
    assert v["review_reason"] == (None if action == "fine" else "low_plate_confidence")


def test_unknown_plate_goes_to_review_and_under_limit_is_none_whatever_the_problems():
    v = run(reading(60000, plate="豫B99999"))
    assert v["action"] == "review" and v["review_reason"] == "unknown_plate" and v["fine_yuan"] == 0
    assert v["police"]["fine_reason"] == "unknown_plate"
    v = run(reading(40000, plate="豫B99999", confidence=0.5), registry(valid_to=T0 - timedelta(days=1)))
    assert v["action"] == "none" and v["case_id"] is None


def test_review_keeps_the_proposed_fine_for_the_reviewer():
    v = run(reading(60000, confidence=0.5))
    assert v["road_penalty"]["fine_yuan"] == 5500 and v["fine_yuan"] == 0 and v["violation"] is False
    assert "escalations" not in v


# --- de-duplication --------------------------------------------------------------------------------------

def test_passage_ids_are_deterministic_and_dedup_window_edges():
    p = MemoryPassages()
    c = MemoryCounters()
    first = run(reading(60000), counters=c, passages=p)
    expected = hashlib.sha256(f"S1|{PLATE}|{ms(T0)}".encode()).hexdigest()[:32]
    assert first["passage_id"] == expected and first["duplicate_of"] is None and first["case_id"]
    at_edge = run(reading(60000, ts=T0 + timedelta(seconds=120)), counters=c, passages=p)
    assert at_edge["duplicate_of"] == expected and at_edge["case_id"] is None and at_edge["action"] == "none"
    after = run(reading(60000, ts=T0 + timedelta(seconds=121)), counters=c, passages=p)
    assert after["duplicate_of"] is None and after["passage_id"] != expected and after["case_id"] != first["case_id"]
    # replaying the very first reading maps to the same passage and case, not a duplicate
    again = run(reading(60000), counters=c, passages=p)
    assert (again["passage_id"], again["case_id"], again["duplicate_of"]) == (expected, first["case_id"], None)


def test_other_station_or_plate_is_another_passage():
    p = MemoryPassages()
    reg = registry(vehicles=[vehicle(), vehicle(plate="豫A54321")])
    a = run(reading(60000), reg, passages=p)
    b = run(reading(60000, plate="豫A54321", ts=T0 + timedelta(seconds=5)), reg, passages=p)
    assert b["duplicate_of"] is None and b["passage_id"] != a["passage_id"]


# --- 一超四罚 counters -------------------------------------------------------------------------------------

def violations(n, reg=None, cfg=None, start=T0, step=timedelta(days=10), plate=PLATE, **kw):
    c = kw.pop("counters", MemoryCounters())
    out = []
    for i in range(n):
        v = run(reading(60000, plate=plate, ts=start + i * step), reg, cfg, counters=c, **kw)
        c.record(v)
        out.append(v)
    return out, c


def test_counters_are_informational_and_nothing_is_escalated_at_detection():
    """Four fines of one truck: the verdict counts the detections (informational) but stamps no Art. 66
    escalation — those are derived from decided cases (tests/test_art66.py, tests/test_case_escalations.py)."""
    out, _ = violations(4)
    assert [v["counters"]["vehicle"] for v in out] == [1, 2, 3, 4]
    assert all("escalations" not in v for v in out)
    assert out[3]["counters"]["driver"] is None            # D1 is only the registry's presumed driver
    assert out[3]["driver"]["presumed"] is True


def test_rolling_window_edge():
    # three violations, then a fourth exactly 365 days after the first: the first has left the window
    c = MemoryCounters()
    for d in (0, 100, 200):
        c.record(run(reading(60000, ts=T0 + timedelta(days=d)), counters=c))
    v = run(reading(60000, ts=T0 + timedelta(days=365)), counters=c)
    assert v["counters"]["vehicle"] == 3
    v = run(reading(60000, ts=T0 + timedelta(days=365) - timedelta(seconds=1)), counters=c)
    assert v["counters"]["vehicle"] == 4


def test_replaying_a_case_does_not_count_it_twice():
    out, c = violations(3)
    again = run(reading(60000, ts=T0 + 2 * timedelta(days=10)), counters=c)
    assert again["case_id"] == out[2]["case_id"] and again["counters"]["vehicle"] == 3


def test_enterprise_counts_distinct_vehicles_not_violations():
    out, _ = violations(5, registry(goods_vehicles=10))     # one vehicle, five violations
    assert out[-1]["counters"]["enterprise_violating_vehicles"] == 1
    assert out[-1]["counters"]["enterprise_share"] == 0.1


# --- driver attribution and cargo source -------------------------------------------------------------------

def test_driver_from_ic_card_beats_registry_and_logout_falls_back():
    d = MemoryDrivers()
    d.add(PLATE, ms(T0 - timedelta(hours=2)), "D2")
    v = run(reading(60000), driver=d)
    assert v["driver"]["id"] == "D2" and v["driver"]["source"] == "ic_card" and v["driver"]["name"] == "李四"
    d.add(PLATE, ms(T0 - timedelta(hours=1)), None)       # logout
    v = run(reading(60000), driver=d)
    assert v["driver"] == {"id": "D1", "source": "registry", "presumed": True, "name": "张三",
                           "qualification_no": "410100000001", "enterprise_id": "E1"}
    reg = registry(vehicles=[vehicle(driver_id="")])
    assert run(reading(60000), reg, driver=d)["driver"]["source"] == "unknown"


def test_a_compliant_passage_names_no_driver():
    d = MemoryDrivers()
    d.add(PLATE, ms(T0 - timedelta(hours=2)), "D2")       # a card logged in, and a registry driver (D1)
    v = run(reading(30000), driver=d)
    assert not v["over_limit"] and v["driver"] == {"id": None, "source": "unknown"}
    assert run(reading(60000), driver=d)["driver"]["id"] == "D2"


def test_source_site_found_from_track_and_counts_as_target():
    tr = MemoryTracks()
    start = ms(T0 - timedelta(hours=3))                   # 19 min stopped inside the quarry, 3 h before
    tr.add_stop(PLATE, start, start + 19 * 60_000, 34.61, 113.51)
    tr.add(PLATE, ms(T0 - timedelta(minutes=5)), 34.69, 113.59, 60.0)
    v = run(reading(60000), track=tr)
    assert v["source_site"]["site_id"] == "Q1" and v["source_site"]["stop_min"] == 19.0
    # the evidence excerpt: where it stopped, then its sampled points up to the weighing
    assert v["track_excerpt"]["geometry"] == {"type": "LineString", "coordinates": [[113.51, 34.61], [113.59, 34.69]]}
    assert v["track_excerpt"]["properties"]["ts_ms"] == [start, ms(T0 - timedelta(minutes=5))]
    assert v["counters"]["source_site"] == 1
    assert run(reading(60000))["source_site"] == {"site_id": None, "reason": "no_track_source"}


def test_axle_findings_never_change_the_fine():
    loads = [7000, 9000, 9000, 12000, 12000, 11000]         # tandem 18 000 at 1.35 m spacing: not over
    v = run(reading(60000, loads=loads, spacings=[3.0, 1.35, 5.0, 1.3, 1.3]), cfg=TOL0)
    heavy = [7000, 9000, 12000, 10000, 11000, 11000]        # tandem 21 000 over 18 000
    w = run(reading(60000, loads=heavy, spacings=[3.0, 1.35, 5.0, 1.3, 1.3]), cfg=TOL0)
    assert v["fine_yuan"] == w["fine_yuan"] == 5500
    assert any(f["axles"] == [2, 3] for f in w["axle_findings"])
    assert not any(f["axles"] == [2, 3] for f in v["axle_findings"])
