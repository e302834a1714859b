"""The report as files: report.json shape, narrative, CSV, XLSX (re-opened), trend/month-on-month from the
archive, rankings, and the ``roadwatch report monthly`` command."""
import csv
import io

import openpyxl
import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.models.rates import RATE_NAMES
from roadwatch.streams.archive import open_archive
from roadwatch.streams.cli import main
from roadwatch.streams.reports import REPORT_FILES, build_monthly_report, write_report
from report_fixtures import fleet, make_registry, vd

SNAP = "2020-08-01T00:00:00+08:00"
CATS = {"客运班车": 361, "旅游包车": 206, "危险货物运输车辆": 850}


def seed_fleet():
    """The seed report's population: 1417 vehicles (361/206/850), 54 enterprises, 1216 online; every
    online vehicle drives 1000 km of which 119 incomplete (88.1 %) and sends 1000 pings, 981 qualified."""
    vs = fleet(CATS, enterprise=lambda i: f"E{i % 54:02d}", county=lambda i: ("黄石港区", "下陆区")[i % 2])
    rows = [vd(v["plate"], "2020-07-15", pings=1000, qualified=981, km_total=1000.0, km_incomplete=119.0)
            for v in vs[:1216]]
    return vs, rows


@pytest.fixture(scope="module")
def seed_report():
    vs, rows = seed_fleet()
    return build_monthly_report(rows, make_registry(vs), "2020-07", Config(), SNAP)


def test_json_shape(seed_report, tmp_path):
    paths = write_report(seed_report, tmp_path)
    assert [p.name for p in paths] == list(REPORT_FILES)
    rep = orjson.loads((tmp_path / "report.json").read_bytes())
    on = rep["rates"]["online_rate"]
    assert (on["numerator"], on["denominator"], on["percent"]) == (1216, 1417, 85.82)
    assert set(rep["rates"]) == set(RATE_NAMES)
    # the same record shape under the breakdowns; category counts by hand: plates 0–360 are 客运班车
    bus = rep["by_category"]["客运班车"]["online_rate"]
    assert (bus["numerator"], bus["denominator"], bus["percent"]) == (361, 361, 100.0)
    dg = rep["by_category"]["危险货物运输车辆"]["online_rate"]
    assert (dg["numerator"], dg["denominator"]) == (1216 - 361 - 206, 850)     # 649/850 = 76.35 %
    assert dg["percent"] == 76.35
    e00 = rep["by_enterprise"]["E00"]["network_rate"]
    assert e00["denominator"] == len(range(0, 1417, 54))                       # 27 vehicles
    assert rep["population"]["enterprises"] == 54
    assert rep["snapshot"] == SNAP and rep["trace"]["rows_used"] == 1216


def test_narrative_in_the_published_style(seed_report):
    text = seed_report["narrative"]
    assert text.startswith("2020年7月市级监督平台共有'两客一危'车辆1417辆，其中客运班车361辆，旅游包车206辆，"
                           "危险货物运输车辆850辆，经营业户54家。车辆入网率达100%，七月上线车辆1216辆，"
                           "月上线率为85.82%")
    assert "轨迹完整率达88.1%" in text and "数据合格率为98.1%" in text


def test_csv_one_row_per_rate_per_population(seed_report, tmp_path):
    write_report(seed_report, tmp_path)
    raw = (tmp_path / "report.csv").read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(raw)))
    n_pop = 1 + 3 + 54 + 2
    assert len(rows) == n_pop * len(RATE_NAMES)
    r = next(r for r in rows if r["population_type"] == "all" and r["rate"] == "online_rate")
    assert (r["numerator"], r["denominator"], r["percent"]) == ("1216", "1417", "85.82")
    # the vehicle trace reproduces the numerator: count the online flags
    tv = list(csv.DictReader(io.StringIO((tmp_path / "trace_vehicles.csv").read_text(encoding="utf-8-sig"))))
    assert len(tv) == 1417 and sum(int(v["online"]) for v in tv) == 1216


def test_xlsx_has_the_figures_as_numbers(seed_report, tmp_path):
    write_report(seed_report, tmp_path)
    wb = openpyxl.load_workbook(tmp_path / "report.xlsx")
    assert {"汇总", "按类别", "按企业", "按区县", "考核", "超限", "追溯"} <= set(wb.sheetnames)
    ws = wb["汇总"]
    found = {row[1]: row for row in ws.iter_rows(min_row=6, max_row=12, values_only=True)}
    assert found["online_rate"][2:5] == (1216, 1417, 85.82)
    assert isinstance(found["track_integrity_rate"][4], float) and found["track_integrity_rate"][4] == 88.1
    cat = {row[0]: row for row in wb["按类别"].iter_rows(min_row=2, values_only=True)}
    # columns: id, name, then (分子, 分母, 结果) per rate; online_rate is the second rate
    assert cat["危险货物运输车辆"][5:8] == (649, 850, 76.35)
    assert wb["按企业"].max_row == 1 + 54


def test_trend_and_month_on_month_from_the_archive(archive_target):
    vs = fleet({"客运班车": 192})
    conn = open_archive(archive_target)
    cols = ("plate", "day", "pings", "qualified", "km_total", "km_incomplete", "drift_points", "overspeed_count",
            "fatigue_s", "curfew_events", "offline_events", "updated_at")
    rows = ([vd(v["plate"], "2020-07-02") for v in vs[:191]] +      # 99.48 %
            [vd(v["plate"], "2020-06-02") for v in vs[:190]] +      # 98.96 %
            [vd(v["plate"], "2020-04-30") for v in vs[:96]])        # 50.00 %; May has no rows
    conn.executemany(f"INSERT INTO vehicle_day ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [tuple(r[c] for c in cols) for r in rows])
    rep = build_monthly_report(conn, make_registry(vs), "2020-07", Config({"report.trend_months": 4}), SNAP)
    assert rep["trend"]["months"] == ["2020-04", "2020-05", "2020-06", "2020-07"]
    assert rep["trend"]["series"]["online_rate"] == [50.0, None, 98.96, 99.48]
    mom = rep["month_on_month"]
    assert mom["available"] and mom["previous_month"] == "2020-06"
    assert mom["rates"]["online_rate"]["delta"] == 0.52
    assert mom["by_category"]["客运班车"]["online_rate"]["delta"] == 0.52
    assert "较上月上升0.52个百分点" in rep["narrative"]
    # September: the previous month (August) has no rows → no delta
    sep = build_monthly_report(conn, make_registry(vs), "2020-09", Config(), SNAP)
    assert sep["month_on_month"]["available"] is False
    assert sep["month_on_month"]["rates"]["online_rate"]["delta"] is None


def test_rankings_order_and_size():
    # enterprise Ek has k+1 of its 3 vehicles online → online rate and score rise with k
    vs = fleet({"客运班车": 9}, enterprise=lambda i: f"E{i // 3}")
    rows = [vd(v["plate"], "2020-07-01") for i, v in enumerate(vs) if i % 3 <= i // 3]
    rep = build_monthly_report(rows, make_registry(vs), "2020-07", Config({"report.ranking_size": 2}), SNAP)
    rk = rep["rankings"]["enterprises"]
    assert [i["id"] for i in rk["top"]] == ["E2", "E1"]
    assert [i["id"] for i in rk["bottom"]] == ["E0", "E1"]
    assert rk["top"][0]["online_rate"] == 100.0 and rk["bottom"][0]["online_rate"] == 33.33


def test_excluded_rows_are_listed(tmp_path):
    vs = fleet({"客运班车": 1, "普通货车": 1})
    rows = [vd(vs[0]["plate"], "2020-07-01", qualified=200), vd(vs[1]["plate"], "2020-07-01")]
    rep = build_monthly_report(rows, make_registry(vs), "2020-07", Config(), SNAP)
    assert rep["trace"]["rows_excluded"] == {"inconsistent_row": 1, "not_in_population": 1}
    write_report(rep, tmp_path)
    ex = list(csv.DictReader(io.StringIO((tmp_path / "trace_excluded.csv").read_text(encoding="utf-8-sig"))))
    assert {e["code"] for e in ex} == {"inconsistent_row", "not_in_population"}


def test_html_is_self_contained(seed_report):
    from roadwatch.streams.reports.render_html import render_html
    html = render_html(seed_report)
    assert html.count("<svg") >= 6 and "<script" not in html
    for attr in ("src=", "href=", "@import", "url("):
        assert attr not in html
    assert "月上线率为85.82%" in html and "车辆上线率" in html


# --- the command ------------------------------------------------------------------------------------

@pytest.fixture
def cli_inputs(tmp_path):
    vs = fleet({"客运班车": 4, "危险货物运输车辆": 4})
    reg = make_registry(vs)
    reg_path = tmp_path / "registry.json"
    reg.dump(reg_path)
    conn = open_archive(tmp_path / "archive.sqlite")
    cols = ("plate", "day", "pings", "qualified", "km_total", "km_incomplete", "drift_points", "overspeed_count",
            "fatigue_s", "curfew_events", "offline_events", "updated_at")
    rows = [vd(v["plate"], "2020-07-03", km_total=10.0) for v in vs[:6]]
    conn.executemany(f"INSERT INTO vehicle_day ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [tuple(r[c] for c in cols) for r in rows])
    return reg_path, tmp_path / "archive.sqlite"


def test_cli_writes_every_file(cli_inputs, tmp_path, capsys):
    reg_path, arch = cli_inputs
    out = tmp_path / "out"
    rc = main(["report", "monthly", "--month", "2020-07", "--registry", str(reg_path), "--archive", str(arch),
               "--out", str(out), "--snapshot", SNAP])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    rep = orjson.loads((out / "report.json").read_bytes())
    assert rep["rates"]["online_rate"]["percent"] == 75.0 and rep["snapshot"] == SNAP
    assert rep["overload"]["available"] is True and rep["overload"]["total"]["readings"] == 0


@pytest.mark.parametrize("change,msg", [
    ({"--month": "2020-13"}, "month"),
    ({"--archive": "/nonexistent/a.sqlite"}, "archive not found"),
    ({"--registry": "/nonexistent/r.json"}, "registry"),
    ({"--snapshot": "2020-08-01 00:00"}, "offset"),
])
def test_cli_bad_usage_exits_2(cli_inputs, tmp_path, capsys, change, msg):
    reg_path, arch = cli_inputs
    args = {"--month": "2020-07", "--registry": str(reg_path), "--archive": str(arch), "--out": str(tmp_path / "o")}
    args.update(change)
    argv = ["report", "monthly"] + [x for kv in args.items() for x in kv]
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_cli_pings_file_missing_exits_2(cli_inputs, tmp_path, capsys):
    reg_path, _ = cli_inputs
    rc = main(["report", "monthly", "--month", "2020-07", "--registry", str(reg_path),
               "--pings", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")])
    assert rc == 2


def test_cli_from_pings_through_the_gps_engine(tmp_path):
    pytest.importorskip("roadwatch.streams.assess_gps")
    vs = fleet({"客运班车": 2})
    reg_path = tmp_path / "registry.json"
    make_registry(vs).dump(reg_path)
    lines = []
    for k in range(20):   # one vehicle, 10 minutes of 30 s pings in July
        lines.append(orjson.dumps({
            "plate": vs[0]["plate"], "plate_color": 2, "terminal_id": "T1",
            "ts": f"2020-07-10T08:{k // 2:02d}:{(k % 2) * 30:02d}+08:00", "lat": 30.2, "lon": 115.0 + k * 0.002,
            "speed_kmh": 40.0, "heading": 90, "altitude_m": 20.0, "status_flags": 3}).decode())
    pings = tmp_path / "pings.jsonl"
    pings.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["report", "monthly", "--month", "2020-07", "--registry", str(reg_path), "--pings", str(pings),
                 "--out", str(out), "--snapshot", SNAP]) == 0
    rep = orjson.loads((out / "report.json").read_bytes())
    assert (rep["rates"]["online_rate"]["numerator"], rep["rates"]["online_rate"]["denominator"]) == (1, 2)
    assert rep["rates"]["data_qualified_rate"]["denominator"] == 20
    assert rep["overload"]["available"] is False


def test_the_worker_starts_without_the_spreadsheet_library(tmp_path):
    """openpyxl is a fifth of a second of every worker's start: it is imported when a report is written
    (``test_xlsx_has_the_figures_as_numbers`` writes one), not while the worker is built."""
    import os
    import subprocess
    import sys
    code = ("import sys; from roadwatch.models.config import load_config; from roadwatch.streams import worker; "
            "worker.build_worker(load_config(None), '127.0.0.1:9', None); print('openpyxl' in sys.modules)")
    env = dict(os.environ, ROADWATCH_SET=f'paths.data_dir="{tmp_path / "data"}"')
    env.pop("ROADWATCH_CONFIG", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
