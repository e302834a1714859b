"""models/scoring.py: §5.3 tables at and around every threshold, A / 2A curve, province weights."""
from decimal import Decimal as D

import pytest

from roadwatch.models.config import Config
from roadwatch.models.scoring import agency_score, drift_points, enterprise_score, linear_points, relative_points

CFG = Config()


def rec(name, n, d, pct=None, value=None):
    r = {"name": name, "numerator": n, "denominator": d, "reason": None if d else "zero"}
    if name.startswith("avg_"):
        r["value"] = value
    else:
        r["percent"] = pct
    return r


def rates(network=(100, 100, 100.0), online=(100, 100, 100.0), track=(100, 100, 100.0),
          quality=(100, 100, 100.0), drift=(0, 100, 0.0), overspeed=(0, 100, 0.0), fatigue=(0, 100, 0.0)):
    return {
        "network_rate": rec("network_rate", *network), "online_rate": rec("online_rate", *online),
        "track_integrity_rate": rec("track_integrity_rate", *track),
        "data_qualified_rate": rec("data_qualified_rate", *quality), "drift_rate": rec("drift_rate", *drift),
        "avg_overspeed_count": rec("avg_overspeed_count", overspeed[0], overspeed[1], value=overspeed[2]),
        "avg_fatigue_seconds": rec("avg_fatigue_seconds", fatigue[0], fatigue[1], value=fatigue[2]),
    }


def points(score, name):
    return score["components"][name]["points"]


# --- agency table (道路运输管理机构) ---------------------------------------------------------------------

@pytest.mark.parametrize("n,pct,expected", [
    (90, 90.0, 4.5),      # exactly 90 %: "< 90 % → 0" is strict, scores 0.90 × 5
    (8999, 89.99, 0.0),   # just below
    (9001, 90.01, 4.5),   # 0.9001 × 5 = 4.5005 → 4.50
    (100, 100.0, 5.0),
])
def test_agency_network_threshold(n, pct, expected):
    d = 100 if n <= 100 else 10000
    s = agency_score(rates(network=(n, d, pct)), CFG)
    assert points(s, "network_rate") == expected


@pytest.mark.parametrize("n,pct,expected", [
    (5, 5.0, 14.25),      # exactly 5 %: 15 − 0.05 × 15
    (501, 5.01, 0.0),     # just above → 0
    (499, 4.99, 14.25),   # 15 − 0.7485 = 14.2515 → 14.25
    (0, 0.0, 15.0),
])
def test_agency_drift_threshold(n, pct, expected):
    d = 100 if n <= 5 else 10000
    s = agency_score(rates(drift=(n, d, pct)), CFG)
    assert points(s, "drift_rate") == expected


@pytest.mark.parametrize("name,kw,pct,expected", [
    ("track_integrity_rate", "track", 70.0, 28.0), ("track_integrity_rate", "track", 69.99, 0.0),
    ("track_integrity_rate", "track", 70.01, 28.0),   # 0.7001 × 40 = 28.004
    ("data_qualified_rate", "quality", 80.0, 24.0), ("data_qualified_rate", "quality", 79.99, 0.0),
    ("data_qualified_rate", "quality", 80.01, 24.0),  # 24.003
    ("online_rate", "online", 0.5, 0.05),              # no threshold on 上线率
])
def test_agency_zero_thresholds(name, kw, pct, expected):
    n = int(round(pct * 100))
    s = agency_score(rates(**{kw: (n, 10000, pct)}), CFG)
    assert points(s, name) == expected


def test_agency_total_is_sum_of_components():
    s = agency_score(rates(network=(99, 100, 99.0), online=(85, 100, 85.0), track=(88, 100, 88.0),
                           quality=(98, 100, 98.0), drift=(2, 100, 2.0)), CFG)
    # by hand: 4.95 + 8.5 + (15 − 0.3) + 35.2 + 29.4 = 92.75
    assert s["total"] == 92.75 and s["max_points"] == 100.0


def test_rounded_versus_exact_basis():
    # 7999.6/10000 displays as 80.00 % (rounded) but the exact ratio 0.79996 is below 80 %
    r = rates(quality=(79996, 100000, 80.0))
    assert points(agency_score(r, CFG), "data_qualified_rate") == 24.0
    assert points(agency_score(r, Config({"score.rate_basis": "exact"})), "data_qualified_rate") == 0.0


def test_huangshi_province_weights():
    # Huangshi used 上线 × 15 and 轨迹 × 30: 99.48 % × 15 = 14.92; 98.51 % × 30 = 29.55
    cfg = Config({"score.online_weight": 15.0, "score.track_weight": 30.0})
    s = agency_score(rates(online=(191, 192, 99.48), track=(278890.63, 283116.51, 98.51)), cfg)
    assert points(s, "online_rate") == 14.92
    assert points(s, "track_integrity_rate") == 29.55


def test_null_component_scores_zero_and_empty_population_has_no_score():
    s = agency_score(rates(drift=(0, 0, None), quality=(0, 0, None), track=(0, 0, None)), CFG)
    assert points(s, "drift_rate") == 0.0 and s["components"]["drift_rate"]["reason"]
    assert agency_score(rates(network=(0, 0, None)), CFG) is None


# --- the A / 2A curve ---------------------------------------------------------------------------------

@pytest.mark.parametrize("x,expected", [
    ("0", "20"),        # 10 + (2−0)/2×10
    ("1", "15"),
    ("2", "10"),        # x = A
    ("3", "5"),         # (4−3)/2×10
    ("3.9", "0.5"),
    ("4", "0"),         # x = 2A
    ("5", "0"),
])
def test_relative_points(x, expected):
    assert relative_points(D(x), D(2), D(20)) == D(expected)


def test_relative_points_zero_region_average():
    assert relative_points(D(0), D(0), D(20)) == D(20)
    assert relative_points(D("0.01"), D(0), D(20)) == D(0)


def test_linear_and_drift_helpers():
    assert linear_points(D("0.9"), D(5), D("0.9")) == D("4.5")
    assert linear_points(D("0.8999"), D(5), D("0.9")) == 0
    assert drift_points(D("0.05"), D(10), D("0.05")) == D("9.5")
    assert drift_points(D("0.0500001"), D(10), D("0.05")) == 0


# --- enterprise table (道路运输企业) ---------------------------------------------------------------------

def test_enterprise_score_against_region_average():
    region = rates(overspeed=(200, 100, 2.0), fatigue=(60000, 100, 600.0))
    ent = rates(network=(9, 10, 90.0), online=(8, 10, 80.0), track=(75, 100, 75.0), quality=(90, 100, 90.0),
                drift=(1, 20, 5.0), overspeed=(30, 10, 3.0), fatigue=(3000, 10, 300.0))
    s = enterprise_score(ent, region, CFG)
    c = s["components"]
    # by hand: 入网 0.9×5 = 4.5; 上线 0.8×5 = 4; 轨迹 0.75×15 = 11.25; 合格 0.9×15 = 13.5;
    # 漂移 10 − 0.05×10 = 9.5; 超速 x=3, A=2 → (4−3)/2×10 = 5; 疲劳 x=300 ≤ A=600 → 10 + 300/600×10 = 15
    assert [c[n]["points"] for n in ("network_rate", "online_rate", "track_integrity_rate",
                                     "data_qualified_rate", "drift_rate", "avg_overspeed_count",
                                     "avg_fatigue_seconds")] == [4.5, 4.0, 11.25, 13.5, 9.5, 5.0, 15.0]
    assert s["total"] == 62.75
    assert c["avg_overspeed_count"]["region_average"] == 2.0
    # 查岗响应率 has no data: not assessed, not in max_points
    assert c["check_response_rate"]["assessed"] is False
    assert s["max_points"] == 90.0


@pytest.mark.parametrize("x,expected", [(2.0, 10.0), (4.0, 0.0), (3.99, 0.05), (0.0, 20.0)])
def test_enterprise_overspeed_at_a_and_2a(x, expected):
    region = rates(overspeed=(200, 100, 2.0))
    ent = rates(overspeed=(x * 10, 10, x))
    assert points(enterprise_score(ent, region, CFG), "avg_overspeed_count") == expected


def test_enterprise_thresholds_and_weights_are_keys():
    region = rates()
    ent = rates(network=(89, 100, 89.0), track=(69, 100, 69.0), quality=(79, 100, 79.0), drift=(6, 100, 6.0))
    c = enterprise_score(ent, region, CFG)["components"]
    assert [c[n]["points"] for n in ("network_rate", "track_integrity_rate", "data_qualified_rate",
                                     "drift_rate")] == [0.0, 0.0, 0.0, 0.0]
    cfg = Config({"score.ent_network_zero_below": 0.85, "score.ent_track_weight": 20.0})
    c = enterprise_score(ent, region, cfg)["components"]
    assert c["network_rate"]["points"] == 4.45 and c["track_integrity_rate"]["points"] == 0.0
