"""平台连通率 and 查岗响应率 in the monthly report from the JT/T 809 archive tables, with numerator and
denominator, and the enterprise score's 平台查岗响应率 no longer "not assessed" when a platform forwards its
vehicles (docs/legal-basis.md §8)."""
from __future__ import annotations

from datetime import datetime

from roadwatch.models.config import Config
from roadwatch.models.platform_rates import online_seconds
from roadwatch.models.records import BEIJING
from roadwatch.streams.archive import open_archive
from roadwatch.streams.archive import platforms as store
from roadwatch.streams.reports.build import build_monthly_report
from roadwatch.streams.reports.render_csv import render_rates_csv
from roadwatch.streams.reports.render_html import render_html

from report_fixtures import make_registry, plate, vd

MAR = datetime(2025, 3, 1, tzinfo=BEIJING).timestamp()
APR = datetime(2025, 4, 1, tzinfo=BEIJING).timestamp()


def _archive(tmp_path):
    conn = open_archive(tmp_path / "a.sqlite")
    # platform 11: online from the month's start (session opened in February) to 10.51 min before its end
    s = store.open_session(conn, 11, MAR - 3600, 2011, "p")
    store.close_session(conn, s, APR - 630.6, "lost")
    # platform 22: two overlapping sessions (a replaced link) and one next month
    for a, b in ((MAR + 86400, MAR + 2 * 86400), (MAR + 1.5 * 86400, MAR + 3 * 86400), (APR + 10, APR + 20)):
        s = store.open_session(conn, 22, a, 2019, "q")
        store.close_session(conn, s, b, "logout")
    # inspections of platform 11: answered, late, missed; of 22: undeliverable; one in April (other month)
    for ctr, t, ans, delivered in ((11, MAR + 100, 60, True), (11, MAR + 5000, 700, True), (11, MAR + 9000, None, True),
                                   (22, MAR + 200, None, False), (11, APR + 100, 10, True)):
        iid = store.queue_inspection(conn, ctr, "在岗？", t, "t", 10)
        store.mark_sent(conn, iid, t, 1, delivered, t + 600)
        if ans is not None:
            info = conn.execute("SELECT info_id FROM platform_inspections WHERE inspection_id=?", (iid,)).fetchone()[0]
            store.record_answer(conn, ctr, t + ans, "在岗", info_id=info)
    store.note_vehicles(conn, [(plate(0), 2, 11, MAR), (plate(1), 2, 11, MAR), (plate(2), 2, 22, MAR)])
    for p in (plate(0), plate(1), plate(2), plate(3)):
        conn.execute("INSERT INTO vehicle_day (plate, day, pings, qualified, km_total, km_incomplete, drift_points, "
                     "overspeed_count, fatigue_s, curfew_events, offline_events, updated_at) VALUES "
                     "(?, '2025-03-02', 100, 100, 10, 0, 0, 0, 0, 0, 0, 'x')", (p,))
    return conn


def _registry():
    return make_registry([{"plate": plate(0), "category": "客运班车", "enterprise_id": "E1"},
                          {"plate": plate(1), "category": "客运班车", "enterprise_id": "E1"},
                          {"plate": plate(2), "category": "客运班车", "enterprise_id": "E2"},
                          {"plate": plate(3), "category": "客运班车", "enterprise_id": "E3"}])


def test_platform_rates_exact_with_numerator_and_denominator(tmp_path):
    rep = build_monthly_report(_archive(tmp_path), _registry(), "2025-03", Config(), "2025-04-01T08:00:00+08:00")
    pl = {p["center_id"]: p for p in rep["platforms"]["items"]}
    c11 = pl[11]["connectivity_rate"]
    assert (c11["numerator"], c11["denominator"], c11["percent"]) == (44629.49, 44640, 99.98)
    c22 = pl[22]["connectivity_rate"]
    assert (c22["numerator"], c22["denominator"], c22["percent"]) == (2880, 44640, 6.45)   # union: 2 days
    i11, i22 = pl[11]["inspection_response_rate"], pl[22]["inspection_response_rate"]
    assert (i11["numerator"], i11["denominator"], i11["percent"]) == (1, 3, 33.33)
    assert i11["trace"] == {"answered": 1, "late": 1, "missed": 1, "undeliverable": 0, "pending": 0}
    assert (i22["numerator"], i22["denominator"], i22["percent"]) == (0, 1, 0.0)
    assert (pl[11]["vehicles"], pl[22]["vehicles"]) == (2, 1)
    # the enterprise score takes its platform's 查岗响应率; E3's vehicles come through no platform
    comps = {e: s["components"]["check_response_rate"] for e, s in rep["scores"]["by_enterprise"].items()}
    assert (comps["E1"]["points"], comps["E1"]["platform"]) == (3.33, 11)       # 33.33 % × 10
    assert comps["E2"]["points"] == 0.0 and comps["E2"].get("assessed", True)
    assert comps["E3"]["assessed"] is False and "no platform" in comps["E3"]["reason"]
    assert rep["scores"]["by_enterprise"]["E1"]["max_points"] == 100.0
    assert rep["scores"]["by_enterprise"]["E3"]["max_points"] == 90.0
    html = render_html(rep)
    assert "平台考核（JT/T 809）" in html and "44629.49" in html
    csv = render_rates_csv(rep)
    assert "platform,11," in csv and "inspection_response_rate" in csv


def test_month_to_date_uses_the_snapshot_and_pending_inspections_wait(tmp_path):
    conn = _archive(tmp_path)
    snap = datetime(2025, 3, 1, 2, 40, tzinfo=BEIJING)          # 160 min into the month
    iid = store.queue_inspection(conn, 11, "在岗？", snap.timestamp() - 60, "t", 10)
    store.mark_sent(conn, iid, snap.timestamp() - 60, 9, True, snap.timestamp() + 540)
    rep = build_monthly_report(conn, _registry(), "2025-03", Config(), snap)
    p11 = next(p for p in rep["platforms"]["items"] if p["center_id"] == 11)
    assert (p11["connectivity_rate"]["numerator"], p11["connectivity_rate"]["denominator"]) == (160, 160)
    # the one sent at 150 min and the new one are still within their 10 minutes: not counted yet
    assert p11["inspection_response_rate"]["trace"]["pending"] == 2
    assert (p11["inspection_response_rate"]["numerator"], p11["inspection_response_rate"]["denominator"]) == (1, 2)


def test_online_seconds_is_the_union_clipped_to_the_period():
    assert online_seconds([(0, 10), (5, 20), (30, 40), (-5, 2)], 0, 35) == 25


def test_without_an_archive_the_section_says_so():
    reg = _registry()
    rep = build_monthly_report([vd(plate(0), "2025-03-02")], reg, "2025-03", Config(), "2025-04-01T00:00:00+08:00")
    assert rep["platforms"]["available"] is False
    assert rep["scores"]["by_enterprise"]["E1"]["components"]["check_response_rate"]["assessed"] is False
