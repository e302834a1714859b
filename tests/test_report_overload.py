"""Overload section: station statistics, review queue, 一超四罚 escalations, case funnel — from a real
archive (streams/archive/ schema) on SQLite and on PostgreSQL, expectations counted by hand."""
import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.streams.archive import open_archive
from roadwatch.streams.reports import build_monthly_report
from roadwatch.streams.reports.overload import case_stages, target_info
from report_fixtures import fleet, make_registry, plate

SNAP = "2020-08-01T00:00:00+08:00"
P = [plate(i, "苏E") for i in range(10)]


def verdict(pid, station, day, action, over, fine=0, reason=None, case_id=None):
    return (pid, station, P[0], f"{day}T10:00:00+08:00", day, action, over, 1500.0 if over else 0.0, fine,
            reason, case_id, "{}")


def case(cid, pl, station, action, fine, status, esc=None, enterprise="E1", driver="D1", site=None,
         day="2020-07-10", manifest=None):
    m = manifest if manifest is not None else orjson.dumps({"escalations": esc or []}).decode()
    return (cid, pl, station, f"{day}T10:00:00+08:00", day, action, 1, 1500.0, fine, enterprise, driver, site,
            status, None, m)


VEHICLE_ESC = {"target": "vehicle", "count": 4, "recommendation": "吊销道路运输证"}


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
    conn.executemany("INSERT INTO wim_verdicts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", verdicts)
    cases = [
        case("C1", P[0], "S1", "warning", 0, "notified"),
        case("C2", P[1], "S1", "fine", 500, "confirmed",
             [VEHICLE_ESC, {"target": "driver", "count": 4, "recommendation": "吊销从业资格证"}]),
        case("C3", P[1], "S1", "fine", 1500, "detected",
             [VEHICLE_ESC, {"target": "enterprise", "count": 3, "recommendation": "停业整顿"}]),
        case("C4", P[2], "S1", "review", 0, "dismissed"),
        case("C5", P[3], "S1", "review", 0, "detected", manifest="not json"),
        case("C6", P[4], "S2", "fine", 3000, "notified", [VEHICLE_ESC], day="2020-07-31"),
        case("C9", P[5], "S2", "fine", 9000, "notified", [VEHICLE_ESC], day="2020-08-01"),
    ]
    conn.executemany("INSERT INTO cases VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", cases)
    actions = [("C1", "review", "op1", None, "2020-07-03T09:00:00+08:00"),
               ("C1", "confirm", "op1", None, "2020-07-03T09:01:00+08:00"),
               ("C1", "notify", "op2", None, "2020-07-04T09:00:00+08:00"),
               ("C2", "review", "op1", None, "2020-07-05T09:00:00+08:00"),
               ("C2", "confirm", "op1", None, "2020-07-05T09:01:00+08:00"),
               ("C4", "review", "op1", None, "2020-07-06T09:00:00+08:00"),
               ("C4", "dismiss", "op1", "plate misread", "2020-07-06T09:01:00+08:00"),
               ("C9", "notify", "op1", None, "2020-08-02T09:00:00+08:00")]
    conn.executemany("INSERT INTO case_actions (case_id, action, operator, reason, ts) VALUES (?,?,?,?,?)", actions)
    return conn


def registry():
    return make_registry(fleet({"危险货物运输车辆": 2}), stations=[
        {"station_id": "S1", "name": "黄石东站", "lat": 30.2, "lon": 115.0},
        {"station_id": "S2", "name": "大冶站", "lat": 30.1, "lon": 114.9}])


def test_station_statistics(archive):
    ov = build_monthly_report(archive, registry(), "2020-07", Config(), SNAP)["overload"]
    s1, s2 = ov["stations"]
    assert (s1["station_id"], s1["name"], s1["readings"], s1["over_limit"]) == ("S1", "黄石东站", 8, 4)
    assert s1["over_limit_percent"] == 50.0
    assert (s1["warnings"], s1["fines"], s1["fine_yuan"], s1["reviews"]) == (1, 2, 2000, 2)
    assert (s2["readings"], s2["over_limit"], s2["over_limit_percent"]) == (3, 1, 33.33)
    t = ov["total"]
    assert (t["readings"], t["over_limit"], t["over_limit_percent"]) == (11, 5, 45.45)   # 45.4545…
    assert (t["fines"], t["fine_yuan"], t["warnings"], t["reviews"]) == (3, 5000, 1, 2)


def test_review_queue_by_reason(archive):
    ov = build_monthly_report(archive, registry(), "2020-07", Config(), SNAP)["overload"]
    assert ov["review_queue"] == {"calibration_expired": {"count": 1, "open": 1},
                                  "low_plate_confidence": {"count": 1, "open": 0}}


def test_case_funnel(archive):
    cases = build_monthly_report(archive, registry(), "2020-07", Config(), SNAP)["overload"]["cases"]
    # C1 notified via trail; C2 confirmed; C3 untouched; C4 dismissed; C5 untouched; C6 notified (status only)
    assert cases["funnel"] == {"detected": 6, "reviewed": 4, "confirmed": 3, "dismissed": 1, "notified": 2,
                               "open": 2}
    assert cases["confirmed_fine_yuan"] == 500 + 3000
    assert cases["by_action"]["fine"] == {"detected": 3, "reviewed": 2, "confirmed": 2, "dismissed": 0,
                                          "notified": 1}


def test_escalations_by_target(archive):
    esc = build_monthly_report(archive, registry(), "2020-07", Config(), SNAP)["overload"]["escalations"]
    t = esc["targets"]
    assert t["vehicle"]["cases"] == 3 and t["vehicle"]["subjects"] == 2      # C2, C3 same plate; C6
    assert t["vehicle"]["recommendations"] == {"吊销道路运输证": 3}
    assert (t["driver"]["cases"], t["driver"]["subjects"]) == (1, 1)
    assert (t["enterprise"]["cases"], t["enterprise"]["subjects"]) == (1, 1)
    assert esc["bad_manifests"] == 1                                           # C5


def test_escalation_subject_ids_from_the_case_builder():
    from roadwatch.streams.reports.overload import escalations
    cases = [{"case_id": "A", "plate": "x", "driver_id": "D1", "enterprise_id": "E1", "source_site_id": None,
              "manifest": orjson.dumps({"escalations": [
                  {"target": "source_site", "id": "SITE1", "count": 2, "recommendation": "r"}]}).decode()},
             {"case_id": "B", "plate": "y", "driver_id": "D1", "enterprise_id": "E1", "source_site_id": None,
              "manifest": {"escalations": [{"target": "source_site", "id": "SITE2", "count": 1}]}}]
    t = escalations(cases)["targets"]["source_site"]
    assert (t["cases"], t["subjects"], t["label"]) == (2, 2, "货运源头单位")


def test_confirm_then_dismiss_latest_action_wins():
    cases = [{"case_id": "A", "status": "reviewed"}, {"case_id": "B", "status": "confirmed"}]
    acts = [{"case_id": "A", "action": "confirm", "ts": "2020-07-01T10:00:00+08:00"},
            {"case_id": "A", "action": "dismiss", "ts": "2020-07-02T10:00:00+08:00"},
            {"case_id": "B", "action": "dismiss", "ts": "2020-07-01T10:00:00+08:00"}]
    st = case_stages(cases, acts)
    assert st["A"] == {"detected", "reviewed", "dismissed"}
    assert st["B"] == {"detected", "reviewed", "confirmed"}     # final status outranks an older dismiss


@pytest.mark.parametrize("target,column", [("vehicle", "plate"), ("驾驶人", "driver_id"),
                                           ("运输企业", "enterprise_id"), ("货运源头单位", "source_site_id"),
                                           ("other", None)])
def test_target_names(target, column):
    assert target_info(target)[0] == column


def test_rows_only_input_has_no_overload_section():
    ov = build_monthly_report([], registry(), "2020-07", Config(), SNAP)["overload"]
    assert ov["available"] is False and ov["reason"]
