"""Overload section: station statistics with 查处率, review queue, the Art. 66 escalations the lifecycle
derives, and a funnel over every status — from a real archive whose cases went through the one
workflow (streams/cases.py), expectations counted by hand. The archive is SQLite and PostgreSQL
(``archive_target``, tests/pg_support.py)."""
import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.streams.archive import open_archive
from roadwatch.streams.cases import CaseStore
from roadwatch.streams.reports import build_monthly_report
from roadwatch.streams.reports.overload import case_stages, target_info
from report_fixtures import fleet, make_registry, plate

SNAP = "2020-08-01T00:00:00+08:00"
P = [plate(i, "苏E") for i in range(10)]


def verdict(pid, station, day, action, over, fine=0, reason=None, case_id=None):
    return (pid, station, P[0], f"{day}T10:00:00+08:00", day, action, over, 1500.0 if over else 0.0, fine,
            reason, case_id, "{}")


def case(cid, pl, station, action, fine, enterprise="E1", driver="D1", site=None, day="2020-07-10"):
    return (cid, pl, station, f"{day}T10:00:00+08:00", day, action, 1, 1500.0, fine, enterprise, driver, site,
            "detected", None, "{}")


FULL = [("confirm", "2020-07-11"), ("file", "2020-07-11"), ("notify", "2020-07-12"), ("decide", "2020-07-20")]


def act(store, cid, steps):
    for action, at in steps:
        store.act(cid, action, "op1", "r", at=at)


@pytest.fixture
def archive(archive_target):
    conn = open_archive(archive_target)
    verdicts = [
        # S1: 8 passages, over-limit 4 (warning, 2 fines, 1 review)
        verdict("v1", "S1", "2020-07-01", "none", 0), verdict("v2", "S1", "2020-07-01", "none", 0),
        verdict("v3", "S1", "2020-07-02", "none", 0),
        verdict("v4", "S1", "2020-07-02", "warning", 1, case_id="C1"),
        verdict("v5", "S1", "2020-07-03", "fine", 1, 500, case_id="C2"),
        verdict("v6", "S1", "2020-07-03", "fine", 1, 1500, case_id="C3"),
        verdict("v7", "S1", "2020-07-04", "review", 1, reason="low_plate_confidence", case_id="C4"),
        verdict("v8", "S1", "2020-07-04", "review", 0, reason="calibration_expired", case_id="C5"),
        # S2: 3 passages, over-limit 1
        verdict("v9", "S2", "2020-07-05", "none", 0), verdict("v10", "S2", "2020-07-05", "none", 0),
        verdict("v11", "S2", "2020-07-31", "fine", 1, 3000, case_id="C6"),
        # other months: ignored
        verdict("v12", "S2", "2020-08-01", "fine", 1, 9000, case_id="C9"),
        verdict("v13", "S1", "2020-06-30", "fine", 1, 9000),
    ]
    conn.executemany("INSERT INTO wim_verdicts (passage_id, station_id, plate, ts, day, action, over_limit, "
                     "excess_kg, fine_yuan, review_reason, case_id, verdict) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                     verdicts)
    cases = [
        case("C1", P[0], "S1", "warning", 0), case("C2", P[1], "S1", "fine", 500),
        case("C3", P[1], "S1", "fine", 1500), case("C4", P[2], "S1", "review", 0),
        case("C5", P[3], "S1", "review", 0), case("C6", P[4], "S2", "fine", 3000, day="2020-07-31"),
        case("C9", P[5], "S2", "fine", 9000, day="2020-08-01"),
    ]
    conn.executemany("INSERT INTO cases VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", cases)
    store = CaseStore(conn, Config())
    act(store, "C1", FULL)                                                  # decided
    act(store, "C2", FULL + [("withdraw", "2020-07-25")])                   # decided, then withdrawn
    act(store, "C4", [("review", "2020-07-05"), ("dismiss", "2020-07-06")])
    act(store, "C6", [("confirm", "2020-07-31"), ("file", "2020-07-31"), ("notify", "2020-08-01"),
                      ("decide", "2020-08-05"), ("serve", "2020-08-06"), ("close", "2020-08-20")])
    act(store, "C9", [("confirm", "2020-08-02")])
    return conn


def registry():
    return make_registry(fleet({"危险货物运输车辆": 2}), stations=[
        {"station_id": "S1", "name": "黄石东站", "lat": 30.2, "lon": 115.0},
        {"station_id": "S2", "name": "大冶站", "lat": 30.1, "lon": 114.9}])


def test_station_statistics_and_enforcement_rate(archive):
    ov = build_monthly_report(archive, registry(), "2020-07", Config(), SNAP)["overload"]
    s1, s2 = ov["stations"]
    assert (s1["station_id"], s1["name"], s1["readings"], s1["over_limit"]) == ("S1", "黄石东站", 8, 4)
    assert s1["over_limit_percent"] == 50.0
    assert (s1["warnings"], s1["fines"], s1["fine_yuan"], s1["reviews"]) == (1, 2, 2000, 2)
    assert (s2["readings"], s2["over_limit"], s2["over_limit_percent"]) == (3, 1, 33.33)
    t = ov["total"]
    assert (t["readings"], t["over_limit"], t["over_limit_percent"]) == (11, 5, 45.45)   # 45.4545…
    assert (t["fines"], t["fine_yuan"], t["warnings"], t["reviews"]) == (3, 5000, 1, 2)
    # 查处率 = decided (and not withdrawn) / cases: S1 C1 of C1–C5 (C2 withdrawn); S2 C6 (closed)
    q = {s["station_id"]: s["enforcement_rate"] for s in ov["stations"] + [t]}
    assert (q["S1"]["numerator"], q["S1"]["denominator"], q["S1"]["percent"]) == (1, 5, 20.0)
    assert (q["S2"]["numerator"], q["S2"]["denominator"], q["S2"]["percent"]) == (1, 1, 100.0)
    assert (q[None]["numerator"], q[None]["denominator"], q[None]["percent"]) == (2, 6, 33.33)


def test_review_queue_by_reason(archive):
    ov = build_monthly_report(archive, registry(), "2020-07", Config(), SNAP)["overload"]
    assert ov["review_queue"] == {"calibration_expired": {"count": 1, "open": 1},
                                  "low_plate_confidence": {"count": 1, "open": 0}}


def test_case_funnel_shows_every_status(archive):
    cases = build_monthly_report(archive, registry(), "2020-07", Config(), SNAP)["overload"]["cases"]
    assert cases["stages"] == ["detected", "reviewed", "confirmed", "dismissed", "filed", "notified", "decided",
                               "served", "closed", "withdrawn"]
    assert cases["funnel"] == {"detected": 6, "reviewed": 1, "confirmed": 3, "dismissed": 1, "filed": 3,
                               "notified": 3, "decided": 3, "served": 1, "closed": 1, "withdrawn": 1, "open": 2}
    assert cases["current"] == {"detected": 2, "reviewed": 0, "confirmed": 0, "dismissed": 1, "filed": 0,
                                "notified": 0, "decided": 1, "served": 0, "closed": 1, "withdrawn": 1}
    assert cases["decided_fine_yuan"] == 3000                    # C6; C2 was withdrawn, C1 a warning
    assert cases["by_action"]["fine"]["decided"] == 2 and cases["by_action"]["fine"]["withdrawn"] == 1


def test_escalations_are_the_derived_ones_with_the_statutory_sanctions(tmp_path):
    """Four cases of one truck detected in June and decided in July; its registry driver is only presumed."""
    conn = open_archive(tmp_path / "archive.sqlite")
    store = CaseStore(conn, Config())
    for i in range(4):
        ts = f"2020-06-0{i + 1}T10:00:00+08:00"
        v = {"passage_id": f"p{i}", "station_id": "S1", "plate": P[6], "ts": ts, "ts_ms": 1590976800000 + i,
             "action": "fine", "over_limit": True, "excess_kg": 3000.0, "fine_yuan": 1500, "case_id": f"K{i}",
             "violation": True, "enterprise_id": "E1", "driver": {"id": "D1", "source": "registry"},
             "enterprise": {"goods_vehicles": 100}}
        store.record(v)
        act(store, f"K{i}", [("confirm", "2020-07-01"), ("file", "2020-07-01"), ("notify", "2020-07-02"),
                             ("decide", f"2020-07-{10 + i}")])
    esc = build_monthly_report(conn, registry(), "2020-07", Config(), SNAP)["overload"]["escalations"]
    assert esc["at"] == "2020-07-31" and "第六十六条" in esc["basis"]
    assert list(esc["targets"]) == ["vehicle"]                   # no driver: D1 is presumed; 1 of 100 vehicles
    v = esc["targets"]["vehicle"]
    assert v["label"] == "货运车辆（吊销车辆营运证）" and v["sanction"] == "吊销车辆营运证"
    assert (v["subjects"], v["cases"], v["recommendations"]) == (1, 4, {"吊销车辆营运证": 1})
    assert v["items"][0]["subject"] == P[6] and v["items"][0]["count"] == 4 and v["items"][0]["proposal_id"]
    # the month before, none of them was decided: nothing
    assert build_monthly_report(conn, registry(), "2020-06", Config(), SNAP)["overload"]["escalations"][
        "targets"] == {}


def test_stages_follow_the_lifecycle_rules():
    cases = [{"case_id": "A"}, {"case_id": "B"}]
    acts = [{"case_id": "A", "seq": 2, "action": "confirm"}, {"case_id": "A", "seq": 3, "action": "dismiss"},
            {"case_id": "B", "seq": 2, "action": "notify"}]           # illegal orders are not stages
    st = case_stages(cases, acts)
    assert st["A"] == {"detected", "confirmed"} and st["B"] == {"detected"}


@pytest.mark.parametrize("target,column", [("vehicle", "plate"), ("驾驶人", "driver_id"),
                                           ("运输企业", "enterprise_id"), ("货运源头单位", "source_site_id"),
                                           ("other", None)])
def test_target_names(target, column):
    assert target_info(target)[0] == column


def test_rows_only_input_has_no_overload_section():
    ov = build_monthly_report([], registry(), "2020-07", Config(), SNAP)["overload"]
    assert ov["available"] is False and ov["reason"]
