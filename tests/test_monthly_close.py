"""The worker closes a month on its own: after the month (plus a grace hour) has passed on the data's clock,
the report is written to <data_dir>/reports/YYYY-MM and published once; before that, nothing happens."""
from __future__ import annotations

import asyncio
from datetime import datetime
from types import SimpleNamespace

import orjson

from roadwatch.models.config import Config
from roadwatch.models.records import BEIJING, Enterprise, Vehicle
from roadwatch.models.registry import Registry
from roadwatch.streams import topics as T
from roadwatch.streams.archive import close_all, open_archive
from roadwatch.streams.archive import upsert_vehicle_days as save_day_rows
from roadwatch.streams.monthly import close_months, previous_month


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=BEIJING).timestamp() * 1000)


def test_previous_month_waits_for_the_grace_hour():
    grace = float(Config()["report.close_grace_h"])
    assert previous_month(ms(2026, 11, 1, 0, 59), grace) is None
    assert previous_month(ms(2026, 11, 1, 1, 0), grace) == "2026-10"
    assert previous_month(ms(2026, 1, 15, 12, 0), grace) == "2025-12"
    assert previous_month(ms(2026, 11, 1, 1, 0), 2.5) is None
    assert previous_month(ms(2026, 11, 1, 3, 30), 2.5) == "2026-10"


class _Topic:
    """Stands in for the Faust topic: records what the worker would publish."""

    def __init__(self):
        self.sent = []

    async def send(self, key, value):
        self.sent.append((key, value))


def test_close_months_writes_and_publishes_once(tmp_path, archive_target):
    cfg = Config({"paths.data_dir": str(tmp_path), "paths.archive": str(archive_target)})
    reg = Registry()
    reg.enterprises["E1"] = Enterprise(enterprise_id="E1", name="甲客运", county="望城区")
    reg.vehicles["湘A10001"] = Vehicle(plate="湘A10001", plate_color=2, category="客运班车", enterprise_id="E1")
    reg.vehicles["湘A10002"] = Vehicle(plate="湘A10002", plate_color=2, category="客运班车", enterprise_id="E1")
    conn = open_archive(cfg.archive_path)
    save_day_rows(conn, [{"plate": "湘A10001", "day": "2026-10-05", "pings": 100, "qualified": 98, "km_total": 50.0,
                          "km_incomplete": 5.0, "drift_points": 0, "overspeed_count": 1, "fatigue_s": 0.0,
                          "curfew_events": 0, "offline_events": 0}])
    proc = SimpleNamespace(watermark_ms=ms(2026, 11, 2, 8, 0))          # the data has moved into November
    topic = _Topic()
    ctx = SimpleNamespace(cfg=cfg, registry=reg, data_dir=tmp_path, topics={T.REPORTS: topic},
                          gps_state=SimpleNamespace(entries={0: SimpleNamespace(proc=proc)}))
    assert asyncio.run(close_months(ctx)) == "2026-10"
    report = orjson.loads((tmp_path / "reports" / "2026-10" / "report.json").read_bytes())
    online = report["rates"]["online_rate"]
    assert (online["numerator"], online["denominator"]) == (1, 2)      # one of the two buses reported
    assert report["rates"]["data_qualified_rate"]["numerator"] == 98
    assert [k for k, _ in topic.sent] == [b"2026-10"]
    assert asyncio.run(close_months(ctx)) is None                       # already closed: not again
    assert len(topic.sent) == 1
    close_all()


def test_nothing_to_close_without_data(tmp_path):
    cfg = Config({"paths.data_dir": str(tmp_path)})
    proc = SimpleNamespace(watermark_ms=ms(2026, 11, 2, 8, 0))
    ctx = SimpleNamespace(cfg=cfg, registry=Registry(), data_dir=tmp_path, topics={T.REPORTS: _Topic()},
                          gps_state=SimpleNamespace(entries={0: SimpleNamespace(proc=proc)}))
    assert asyncio.run(close_months(ctx)) is None
    assert not (tmp_path / "reports").exists()
    close_all()


# --- month close as one unit (streams/reports/write.py) ------------------------------------------------

def _october_ctx(tmp_path):
    cfg = Config({"paths.data_dir": str(tmp_path)})
    reg = Registry()
    reg.enterprises["E1"] = Enterprise(enterprise_id="E1", name="甲客运", county="望城区")
    reg.vehicles["湘A10001"] = Vehicle(plate="湘A10001", plate_color=2, category="客运班车", enterprise_id="E1")
    conn = open_archive(cfg.archive_path)
    save_day_rows(conn, [{"plate": "湘A10001", "day": "2026-10-05", "pings": 100, "qualified": 98, "km_total": 50.0,
                          "km_incomplete": 5.0, "drift_points": 0, "overspeed_count": 1, "fatigue_s": 0.0,
                          "curfew_events": 0, "offline_events": 0}])
    proc = SimpleNamespace(watermark_ms=ms(2026, 11, 2, 8, 0))
    topic = _Topic()
    ctx = SimpleNamespace(cfg=cfg, registry=reg, data_dir=tmp_path, topics={T.REPORTS: topic},
                          gps_state=SimpleNamespace(entries={0: SimpleNamespace(proc=proc)}))
    return ctx, topic


def _whole_set(out) -> bool:
    from roadwatch.streams.reports import REPORT_FILES
    from roadwatch.streams.reports.write import report_complete
    return report_complete(out) and all((out / n).stat().st_size > 0 for n in REPORT_FILES)


def test_a_report_json_alone_is_not_a_closed_month_and_is_rebuilt(tmp_path):
    """What a kill -9 left under the old layout: report.json without html/xlsx/csv counted as done forever."""
    ctx, topic = _october_ctx(tmp_path)
    out = tmp_path / "reports" / "2026-10"
    out.mkdir(parents=True)
    (out / "report.json").write_bytes(b'{"partial": true}')
    assert asyncio.run(close_months(ctx)) == "2026-10"
    assert _whole_set(out)
    assert orjson.loads((out / "report.json").read_bytes())["rates"]["online_rate"]["numerator"] == 1
    assert [k for k, _ in topic.sent] == [b"2026-10"]
    assert asyncio.run(close_months(ctx)) is None
    close_all()


def test_a_failure_mid_write_leaves_no_set_and_the_next_run_builds_it(tmp_path, monkeypatch):
    from roadwatch.streams.reports import write as W
    ctx, _ = _october_ctx(tmp_path)
    real = W.render_xlsx

    def disk_full(report):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(W, "render_xlsx", disk_full)
    try:
        asyncio.run(close_months(ctx))
        raise AssertionError("the injected failure did not surface")
    except OSError:
        pass
    reports = tmp_path / "reports"
    assert not (reports / "2026-10").exists()                  # no half set in place
    assert [p.name for p in reports.iterdir()] == []           # and no temporary directory left behind
    monkeypatch.setattr(W, "render_xlsx", real)
    assert asyncio.run(close_months(ctx)) == "2026-10"
    assert _whole_set(reports / "2026-10")
    close_all()


KILL_MID_WRITE = r"""
import os, signal, sys, orjson
from roadwatch.streams.reports import write as W
def die(report):
    os.kill(os.getpid(), signal.SIGKILL)
W.render_xlsx = die                      # html and json are already on disk when this runs
W.write_report_set(orjson.loads(open(sys.argv[2], "rb").read()), sys.argv[1])
"""


def test_kill_9_mid_write_then_the_next_run_rebuilds_the_whole_set(tmp_path):
    import subprocess
    import sys
    ctx, topic = _october_ctx(tmp_path)
    out = tmp_path / "reports" / "2026-10"
    from roadwatch.streams.reports import build_monthly_report
    rep = build_monthly_report(open_archive(ctx.cfg.archive_path), ctx.registry, "2026-10", ctx.cfg,
                               snapshot_ts="2026-11-02T08:00:00+08:00")
    (tmp_path / "rep.json").write_bytes(orjson.dumps(rep, option=orjson.OPT_NON_STR_KEYS))
    r = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(out), str(tmp_path / "rep.json")],
                       capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    left = [p.name for p in out.parent.iterdir()]
    assert left and all(n.startswith(".2026-10.tmp-") for n in left)   # only the killed writer's temp dir
    assert not out.exists()
    assert asyncio.run(close_months(ctx)) == "2026-10"
    assert _whole_set(out)
    assert [p.name for p in out.parent.iterdir()] == ["2026-10"]      # the stale temp dir is cleaned up
    assert len(topic.sent) == 1
    close_all()
