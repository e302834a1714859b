"""models/rates.py: every §5.2 indicator at hand-computed values, rounding, zero denominators, breakdowns."""
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, strategies as st

from roadwatch.models.config import Config
from roadwatch.models.rates import (RATE_NAMES, aggregate_month, month_on_month, monthly_rates, parse_month, percent,
                          shift_month)
from roadwatch.models.records import InvalidRecord
from report_fixtures import fleet, make_registry, plate, vd

CFG = Config()
SNAP = "2020-08-01T00:00:00+08:00"


def rates_for(vehicles, rows, month="2020-07", cfg=CFG):
    return monthly_rates(rows, make_registry(vehicles), month, cfg, SNAP)


def online_fleet(n_total, n_online, category="危险货物运输车辆", day="2020-07-15"):
    vs = fleet({category: n_total})
    rows = [vd(v["plate"], day) for v in vs[:n_online]]
    return vs, rows


# --- 上线率: published figures reproduced exactly (§5.2, §5.4) ------------------------------------------

@pytest.mark.parametrize("n_total,n_online,expected", [
    (192, 191, 99.48),     # Huangshi Aug report
    (267, 262, 98.13),
    (373, 366, 98.12),
    (1417, 1216, 85.82),   # seed report counts: 85.815 → 85.82 half-up (not 85.81, not 85.98)
])
def test_online_rate_published_figures(n_total, n_online, expected):
    vs, rows = online_fleet(n_total, n_online)
    r = rates_for(vs, rows).rates["online_rate"]
    assert (r["numerator"], r["denominator"], r["percent"]) == (n_online, n_total, expected)
    assert r["snapshot"] == SNAP and "两客一危" in r["population"]
    assert r["trace"] == {"vehicles": n_total, "rows": n_online}


def test_online_needs_a_ping_and_counts_each_vehicle_once():
    vs = fleet({"客运班车": 4})
    rows = [vd(vs[0]["plate"], "2020-07-01"), vd(vs[0]["plate"], "2020-07-02"),   # two days, one vehicle
            vd(vs[1]["plate"], "2020-07-03", pings=0, qualified=0),               # a row without pings
            vd(vs[2]["plate"], "2020-06-30")]                                      # previous month
    r = rates_for(vs, rows).rates["online_rate"]
    assert (r["numerator"], r["denominator"], r["percent"]) == (1, 4, 25.0)


# --- 入网率 and the population -----------------------------------------------------------------------

def test_network_rate_and_population_excludes_ordinary_trucks():
    vs = fleet({"客运班车": 5, "危险货物运输车辆": 3, "普通货车": 7}, in_network=lambda i: i not in (1, 6))
    rows = [vd(v["plate"], "2020-07-10") for v in vs]
    mr = rates_for(vs, rows)
    net = mr.rates["network_rate"]
    assert (net["numerator"], net["denominator"]) == (6, 8)        # 普通货车 not in 应入网
    assert net["percent"] == 75.0
    on = mr.rates["online_rate"]
    assert (on["numerator"], on["denominator"]) == (6, 6)          # not-入网 vehicles are never online
    assert mr.excluded_counts == {"not_in_network": 2, "not_in_population": 7}
    # their pings do not enter the data rates
    assert mr.rates["data_qualified_rate"]["denominator"] == 6 * 100


def test_unknown_plates_are_excluded_with_a_reason():
    vs = fleet({"客运班车": 2})
    rows = [vd(vs[0]["plate"], "2020-07-01"), vd(plate(999, "湘A"), "2020-07-01")]
    mr = rates_for(vs, rows)
    assert mr.excluded_counts == {"unknown_plate": 1}
    assert mr.rates["online_rate"]["numerator"] == 1


# --- 轨迹完整率, 数据合格率 ----------------------------------------------------------------------------

def test_track_integrity_huangshi_mileage():
    # 278 890.63 / 283 116.51 = 98.51 % (Huangshi) — split over several rows of float km
    vs = fleet({"客运班车": 2})
    p0, p1 = vs[0]["plate"], vs[1]["plate"]
    rows = [vd(p0, "2020-07-01", km_total=100000.17, km_incomplete=1000.5),
            vd(p0, "2020-07-02", km_total=100000.17, km_incomplete=2000.25),
            vd(p1, "2020-07-02", km_total=83116.17, km_incomplete=1225.13)]
    r = rates_for(vs, rows).rates["track_integrity_rate"]
    assert r["denominator"] == 283116.51 and r["numerator"] == 278890.63   # exact decimal sums
    assert r["percent"] == 98.51
    assert r["trace"] == {"vehicles": 2, "rows": 3}


def test_track_integrity_second_huangshi_figure():
    vs = fleet({"旅游包车": 1})
    rows = [vd(vs[0]["plate"], "2020-07-01", km_total=1776784.18, km_incomplete=1776784.18 - 1684177.18)]
    assert rates_for(vs, rows).rates["track_integrity_rate"]["percent"] == 94.79


def test_data_qualified_rate():
    vs = fleet({"客运班车": 3})
    rows = [vd(vs[0]["plate"], "2020-07-01", pings=1000, qualified=981),
            vd(vs[1]["plate"], "2020-07-01", pings=500, qualified=490),
            vd(vs[2]["plate"], "2020-07-09", pings=0, qualified=0)]
    r = rates_for(vs, rows).rates["data_qualified_rate"]
    assert (r["numerator"], r["denominator"]) == (1471, 1500)
    assert r["percent"] == 98.07      # 98.0666… half-up


# --- 漂移率 at drift.min_points, averages ----------------------------------------------------------------

@pytest.mark.parametrize("points,is_drift", [(2, False), (3, True), (4, True)])
def test_drift_vehicle_threshold(points, is_drift):
    cfg = Config({"drift.min_points": 3})
    vs = fleet({"危险货物运输车辆": 20})
    rows = [vd(v["plate"], "2020-07-01") for v in vs]
    # points spread over two days: the threshold is on the month's total
    rows[0] = vd(vs[0]["plate"], "2020-07-01", drift_points=points - 1)
    rows.append(vd(vs[0]["plate"], "2020-07-02", drift_points=1))
    r = rates_for(vs, rows, cfg=cfg).rates["drift_rate"]
    assert r["denominator"] == 20
    assert r["numerator"] == (1 if is_drift else 0)
    assert r["percent"] == (5.0 if is_drift else 0.0)


def test_drift_denominator_is_online_vehicles():
    vs = fleet({"危险货物运输车辆": 10})
    rows = [vd(vs[0]["plate"], "2020-07-01", drift_points=1), vd(vs[1]["plate"], "2020-07-01"),
            vd(vs[2]["plate"], "2020-07-01")]
    r = rates_for(vs, rows).rates["drift_rate"]
    assert (r["numerator"], r["denominator"], r["percent"]) == (1, 3, 33.33)


def test_averages_per_online_vehicle():
    vs = fleet({"客运班车": 5})
    rows = [vd(vs[0]["plate"], "2020-07-01", overspeed_count=3, fatigue_s=1800.5),
            vd(vs[0]["plate"], "2020-07-02", overspeed_count=1),
            vd(vs[1]["plate"], "2020-07-02", overspeed_count=0, fatigue_s=600.0),
            vd(vs[2]["plate"], "2020-07-02", overspeed_count=0)]
    mr = rates_for(vs, rows)
    o, f = mr.rates["avg_overspeed_count"], mr.rates["avg_fatigue_seconds"]
    assert (o["numerator"], o["denominator"], o["value"]) == (4, 3, 1.33)
    assert (f["numerator"], f["denominator"], f["value"]) == (2400.5, 3, 800.17)   # 800.1666…
    assert "percent" not in o and o["unit"] == "次/车"


# --- rounding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,d,dec,expected", [
    (2469, 20000, 2, "12.35"),    # 12.345 exactly: half-up (banker's would give 12.34)
    (24689, 200000, 2, "12.34"),  # 12.3445
    (1, 800, 2, "0.13"),          # 0.125
    (201, 20000, 2, "1.01"),      # 1.005 — float round(1.005, 2) gives 1.0
    (1, 8, 0, "13"),              # 12.5
    (1, 3, 2, "33.33"),
    (2, 3, 2, "66.67"),
    (5, 5, 2, "100.00"),
    (0, 5, 2, "0.00"),
])
def test_half_up_rounding(n, d, dec, expected):
    assert percent(n, d, dec) == Decimal(expected)


def test_half_up_through_the_rate_records():
    vs = fleet({"客运班车": 1})
    rows = [vd(vs[0]["plate"], "2020-07-01", pings=20000, qualified=2469)]
    assert rates_for(vs, rows).rates["data_qualified_rate"]["percent"] == 12.35
    cfg = Config({"report.decimals": 1})
    rows = [vd(vs[0]["plate"], "2020-07-01", pings=800, qualified=1)]   # 0.125 % → 0.1
    assert rates_for(vs, rows, cfg=cfg).rates["data_qualified_rate"]["percent"] == 0.1
    rows = [vd(vs[0]["plate"], "2020-07-01", pings=400, qualified=1)]   # 0.25 % → 0.3 half-up
    assert rates_for(vs, rows, cfg=cfg).rates["data_qualified_rate"]["percent"] == 0.3


@given(st.integers(0, 10**9), st.integers(1, 10**9), st.integers(0, 4))
def test_percent_matches_a_fraction_reference(n, d, dec):
    # reference: half-up with exact rationals, floor(x·10^dec + 1/2)
    x = Fraction(n * 100, d) * 10**dec
    ref = Fraction((x + Fraction(1, 2)).__floor__(), 10**dec)
    got = percent(n, d, dec)
    assert Fraction(got) == ref


# --- zero denominators ------------------------------------------------------------------------------

def test_empty_population_gives_null_rates_with_reasons():
    mr = rates_for([{"plate": plate(1), "category": "普通货车"}], [])
    for name in RATE_NAMES:
        r = mr.rates[name]
        assert r["denominator"] == 0
        assert r.get("percent", r.get("value")) is None
        assert r["reason"]


def test_no_pings_in_month():
    vs = fleet({"客运班车": 3})
    mr = rates_for(vs, [])
    assert mr.rates["network_rate"]["percent"] == 100.0
    assert mr.rates["online_rate"]["percent"] == 0.0 and mr.rates["online_rate"]["reason"] is None
    for name in ("track_integrity_rate", "data_qualified_rate", "drift_rate"):
        assert mr.rates[name]["percent"] is None and "上线" in mr.rates[name]["reason"]
    assert mr.rates["avg_overspeed_count"]["value"] is None


def test_zero_mileage_is_null_not_zero_percent():
    vs = fleet({"客运班车": 1})
    mr = rates_for(vs, [vd(vs[0]["plate"], "2020-07-01", km_total=0.0)])
    r = mr.rates["track_integrity_rate"]
    assert r["percent"] is None and "里程" in r["reason"]


def test_empty_category_breakdown_is_null():
    vs = fleet({"客运班车": 2})
    mr = rates_for(vs, [vd(vs[0]["plate"], "2020-07-01")])
    assert set(mr.by_category) == {"客运班车", "旅游包车", "危险货物运输车辆"}
    assert mr.by_category["旅游包车"]["network_rate"]["percent"] is None


# --- breakdowns sum to the whole ----------------------------------------------------------------------

def test_breakdowns_sum_consistently():
    import random
    rnd = random.Random(7)
    vs = fleet({"客运班车": 30, "旅游包车": 20, "危险货物运输车辆": 50, "普通货车": 10},
               in_network=lambda i: i % 17 != 0, enterprise=lambda i: f"E{i % 7}",
               county=lambda i: ("甲县", "乙县", "丙区")[i % 3])
    rows = []
    for v in vs:
        for d in range(1, 6):
            if rnd.random() < 0.7:
                pings = rnd.randint(0, 500)
                km = round(rnd.uniform(0, 400), 2)
                rows.append(vd(v["plate"], f"2020-07-{d:02d}", pings=pings, qualified=rnd.randint(0, pings),
                               km_total=km, km_incomplete=round(km * rnd.random(), 2),
                               drift_points=rnd.choice([0, 0, 0, 1, 2]), overspeed_count=rnd.randint(0, 3),
                               fatigue_s=float(rnd.randint(0, 900))))
    mr = rates_for(vs, rows)
    for breakdown in (mr.by_category, mr.by_enterprise, mr.by_county):
        for name in RATE_NAMES:
            for part in ("numerator", "denominator"):
                total = sum(Decimal(str(g[name][part])) for g in breakdown.values())
                assert total == Decimal(str(mr.rates[name][part])), (name, part)
    # and the overall figure equals a direct count over the registry (reference computation)
    members = [v for v in vs if v["category"] != "普通货车"]
    online = {r["plate"] for r in rows if r["pings"] > 0} & {v["plate"] for v in members if v["in_network"]}
    assert mr.rates["online_rate"]["numerator"] == len(online)
    assert mr.rates["online_rate"]["denominator"] == sum(v["in_network"] for v in members)


# --- bad rows never crash ------------------------------------------------------------------------------

def test_bad_rows_are_excluded_with_codes():
    vs = fleet({"客运班车": 2})
    p = vs[0]["plate"]
    good = vd(p, "2020-07-01")
    rows = [good, dict(good),                                    # duplicate
            {**vd(p, "2020-07-02"), "pings": "many"},
            {**vd(p, "2020-07-03"), "km_total": float("nan")},
            {**vd(p, "2020-07-04"), "qualified": 101},           # qualified > pings
            {**vd(p, "2020-07-05"), "km_total": 1.0, "km_incomplete": 2.0},
            {**vd(p, "2020-07-06"), "overspeed_count": -1},
            {**vd(p, "2020-07-07"), "pings": True},
            vd(p, "2020-07-32"), vd(p, "20200708"), {"plate": None}, 42, None]
    mr = rates_for(vs, rows)
    # bad_day: 07-32, 20200708; bad_row: "many", nan, -1, True, plate None, 42, None
    assert mr.excluded_counts == {"bad_day": 2, "bad_row": 7, "duplicate_row": 1, "inconsistent_row": 2}
    assert mr.rows.rows_valid == 1
    assert mr.rates["data_qualified_rate"]["denominator"] == 100


def test_other_months_rows_are_ignored_not_excluded():
    vs = fleet({"客运班车": 1})
    rows = [vd(vs[0]["plate"], "2020-06-30"), {**vd(vs[0]["plate"], "2020-08-01"), "pings": -5}]
    mr = aggregate_month(rows, "2020-07")
    assert mr.rows_valid == 0 and mr.excluded == []


# --- months, month-on-month ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["2020-13", "2020-00", "2020-7", "July", "", None, "2020-07-01"])
def test_bad_month(bad):
    with pytest.raises(InvalidRecord) as e:
        parse_month(bad)
    assert e.value.code == "bad_month"


def test_shift_month_across_years():
    assert shift_month("2020-01", -1) == "2019-12"
    assert shift_month("2020-12", 1) == "2021-01"
    assert shift_month("2020-07", -6) == "2020-01"


def test_month_on_month_delta_in_points():
    vs, rows_jul = online_fleet(192, 191)                 # 99.48 %
    rows_jun = [vd(v["plate"], "2020-06-10") for v in vs[:190]]   # 98.96 %
    cur = rates_for(vs, rows_jul).rates
    prev = monthly_rates(rows_jun, make_registry(vs), "2020-06", CFG, SNAP).rates
    mom = month_on_month(cur, prev, 2)
    assert mom["online_rate"] == {"previous": 98.96, "delta": 0.52, "reason": None}
    assert mom["network_rate"]["delta"] is None and mom["network_rate"]["reason"]
    none = month_on_month(cur, None, 2)
    assert none["online_rate"]["delta"] is None and none["online_rate"]["reason"]
