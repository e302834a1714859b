"""Ordering and time rules, against the pure engine (models/ping_state.py) and the batch CLI
(`roadwatch assess gps`). Each rule is written down in RELIABILITY.md ("Ordering and time").

Expectations are computed by hand: the test vehicles drive due north along one meridian, so the distance
between any two of their points is Δlat × π/180 × R (R = 6371.0088 km, the IUGG mean radius), and a path
that skips points of such a straight line has the same length as the full path.
"""
from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.models.overload import MemoryCounters, MemoryPassages, assess
from roadwatch.models.ping_state import PingProcessor
from roadwatch.models.pingbatch import decode_batch, encode_batch
from roadwatch.models.records import Vehicle, parse_wim_reading
from roadwatch.models.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
BJ = timezone(timedelta(hours=8))
R_KM = 6371.0088
PLATE = "苏A12345"
T0 = int(datetime(2026, 11, 10, 10, 0, tzinfo=BJ).timestamp() * 1000)
STEP_DEG = 0.002                               # ≈ 0.222 km per 20 s ≈ 40 km/h


def km(dlat: float) -> float:
    return abs(dlat) * math.pi / 180 * R_KM


def ping(k: int, *, ts: int | None = None, plate: str = PLATE, speed: float = 40.0, **kw) -> dict:
    return {"plate": plate, "plate_color": 2, "terminal_id": "013300000001", "ts": T0 + k * 20_000 if ts is None else ts,
            "lat": 32.0 + k * STEP_DEG, "lon": 118.8, "speed_kmh": speed, "heading": 0, "altitude_m": 10.0,
            "alarm_flags": 0, "status_flags": 3, "reupload": False, **kw}


def registry(category: str = "危险货物运输车辆") -> Registry:
    reg = Registry()
    reg.vehicles[PLATE] = Vehicle(plate=PLATE, plate_color=2, category=category, enterprise_id="")
    return reg


def engine(cfg: Config | None = None, reg: Registry | None = None) -> PingProcessor:
    return PingProcessor(cfg or Config(), reg or registry())


def feed(proc: PingProcessor, pings: list[dict], now_ms: int | None = None, per_batch: int | None = None):
    alerts = []
    step = per_batch or len(pings)
    for i in range(0, len(pings), step):
        alerts += proc.process(decode_batch(encode_batch(pings[i:i + step])), now_ms=now_ms).alerts
    return alerts


def day_rows(proc: PingProcessor) -> dict:
    return {(r["plate"], r["day"]): r for r in proc.day_rows(dirty_only=False)}


# --- duplicates -------------------------------------------------------------------------------------------

def test_duplicate_pings_add_no_distance_no_alert_and_are_counted_once():
    pings = [ping(k) for k in range(10)]
    single, double = engine(), engine()
    a1 = feed(single, pings)
    a2 = feed(double, pings + pings)                          # the whole feed delivered twice
    a2 += feed(double, [pings[4]])                             # and one ping a third time, alone
    r1, r2 = day_rows(single)[(PLATE, "2026-11-10")], day_rows(double)[(PLATE, "2026-11-10")]
    assert r1["km_total"] == pytest.approx(km(9 * STEP_DEG), abs=1e-6)      # rows are rounded to 1e-6 km
    assert r2["km_total"] == r1["km_total"]   # no distance from duplicates
    assert r2["km_incomplete"] == r1["km_incomplete"] == 0
    assert [a["alert_id"] for a in a2] == [a["alert_id"] for a in a1]
    assert (r1["pings"], r1["qualified"]) == (10, 10)
    # 数据总条数 / 合格条数 count a fix once however often it was delivered (issue 14, legal-basis §6)
    assert (r2["pings"], r2["qualified"]) == (10, 10)


def test_duplicate_overspeed_pings_raise_the_episode_once():
    pings = [ping(k, speed=75.0) for k in range(6)]          # dangerous goods, 75 > 60 km/h for 100 s
    proc = engine()
    alerts = feed(proc, pings) + feed(proc, pings)
    assert proc.process(decode_batch(encode_batch(pings[:2]))).reasons == {"duplicate": 2}
    ids = {a["alert_id"] for a in alerts if a["type"] == "overspeed"}
    assert len(ids) == 1
    assert day_rows(proc)[(PLATE, "2026-11-10")]["overspeed_count"] == 1


def test_duplicates_are_found_among_fix_times_months_apart_and_after_a_restore():
    """The last fix times of a vehicle are held as int32 offsets (ms) from a base; times further apart than
    that (≈ 24.8 days, here a terminal back after 40 days and then a re-upload of its old fixes, accepted
    with a one-year ``quality.max_lag_s``) are held whole: a duplicate is still a duplicate, before and after
    a snapshot, and a vehicle whose times come close again goes back to the offsets."""
    cfg = Config({"quality.max_lag_s": 31_622_400})
    day = 86_400_000
    old = [ping(k) for k in range(3)]
    back = [ping(k, ts=T0 + 40 * day + k * 20_000) for k in range(3, 6)]
    proc = engine(cfg)
    feed(proc, old + back)
    assert proc._recent_wide                          # 40 days apart: held whole
    assert proc.process(decode_batch(encode_batch(old[1:] + back[:1]))).reasons == {"duplicate": 3}
    again = PingProcessor.restore(cfg, registry(), None, proc.snapshot())
    assert again.snapshot() == proc.snapshot()
    assert again.process(decode_batch(encode_batch(old[:1] + back[2:]))).reasons == {"duplicate": 2}
    assert again.process(decode_batch(encode_batch([ping(9, ts=T0 + 20 * day)]))).reasons == {}
    feed(again, [ping(k, ts=T0 + 41 * day + k * 20_000) for k in range(20)])
    assert not again._recent_wide                     # the old times overwritten: offsets again
    assert again.process(decode_batch(encode_batch([ping(19, ts=T0 + 41 * day + 19 * 20_000)]))).reasons == {
        "duplicate": 1}


# --- out-of-order -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("per_batch", [1, 3, None])
def test_out_of_order_pings_are_counted_but_do_not_move_the_track_back(per_batch):
    order = [0, 1, 2, 5, 3, 4, 6, 9, 7, 8]                    # 3, 4, 7, 8 arrive after a newer fix
    proc = engine()
    feed(proc, [ping(k) for k in order], per_batch=per_batch)
    r = day_rows(proc)[(PLATE, "2026-11-10")]
    assert (r["pings"], r["qualified"]) == (10, 10)
    assert r["km_total"] == pytest.approx(km(9 * STEP_DEG), abs=1e-6)   # straight line: skipped points add 0
    assert r["drift_points"] == 0 and r["km_incomplete"] == 0


def test_out_of_order_ping_never_opens_or_closes_an_alert():
    proc = engine()
    feed(proc, [ping(k) for k in range(5)])
    late_fast = ping(2, ts=T0 + 2 * 20_000 + 5_000, speed=150.0)      # older than the fix, far over the limit
    alerts = feed(proc, [late_fast, ping(5)])
    assert alerts == []


# --- late blind-area re-upload ----------------------------------------------------------------------------

def test_blind_area_reupload_fills_the_gap_and_its_alerts_are_late():
    cfg = Config()
    proc = engine(cfg)
    live = [ping(k) for k in range(0, 5)] + [ping(k) for k in range(65, 70)]   # 20 min blind area
    feed(proc, live)
    r = day_rows(proc)[(PLATE, "2026-11-10")]
    gap_km = km(61 * STEP_DEG)                                 # from point 4 to point 65
    assert r["km_total"] == pytest.approx(km(69 * STEP_DEG), abs=1e-6)
    # 1200 s > track.gap_s=300 and 13.3 km > track.gap_km=1: the whole jump is incomplete mileage
    assert gap_km > cfg["track.gap_km"] and 61 * 20 > cfg["track.gap_s"]
    assert r["km_incomplete"] == pytest.approx(gap_km, abs=1e-6)
    # the terminal re-uploads what it stored in the blind area (0x0704 type 1), one point per minute
    backlog = [ping(k, reupload=True) for k in range(7, 65, 3)]
    alerts = feed(proc, backlog)
    r = day_rows(proc)[(PLATE, "2026-11-10")]
    assert r["km_total"] == pytest.approx(km(69 * STEP_DEG), abs=1e-6)     # same total (straight line)
    assert r["km_incomplete"] == pytest.approx(0.0, abs=1e-9)              # every segment now < 300 s
    assert r["pings"] == len(live) + len(backlog)
    assert alerts == []                                                     # old pings drive no state machine


def test_reuploaded_fresh_ping_raises_a_late_alert():
    proc = engine()
    feed(proc, [ping(k) for k in range(3)])
    # a re-uploaded batch that is newer than the fix still drives the rules, but its alerts say "late"
    alerts = feed(proc, [ping(k, speed=75.0, reupload=True) for k in range(3, 6)])
    os_ = [a for a in alerts if a["type"] == "overspeed"]
    assert len(os_) == 1 and os_[0]["late"] is True


# --- clock skew: future tolerance -------------------------------------------------------------------------

@pytest.mark.parametrize("skew_s,qualified", [(59, 1), (60, 1), (61, 0), (3600, 0)])
def test_future_tolerance_boundary_with_receipt_time(skew_s, qualified):
    cfg = Config()
    assert cfg["quality.future_tolerance_s"] == 60
    recv = T0
    proc = engine(cfg)
    feed(proc, [ping(0, ts=recv + skew_s * 1000, recv_ts=recv)])
    assert day_rows(proc)[(PLATE, "2026-11-10")]["qualified"] == qualified


@pytest.mark.parametrize("skew_s,qualified", [(60, 1), (61, 0)])
def test_future_tolerance_boundary_against_the_processing_clock(skew_s, qualified):
    proc = engine()
    feed(proc, [ping(0, ts=T0 + skew_s * 1000)], now_ms=T0)
    assert day_rows(proc)[(PLATE, "2026-11-10")]["qualified"] == qualified


def test_future_ping_does_not_advance_the_watermark():
    proc = engine()
    feed(proc, [ping(0)], now_ms=T0)
    feed(proc, [ping(1, plate="苏B00001", ts=T0 + 2 * 3_600_000)], now_ms=T0 + 20_000)  # 2 h fast clock
    assert proc.watermark_ms == T0
    alerts = feed(proc, [ping(1)], now_ms=T0 + 20_000)        # the honest vehicle is not "offline"
    assert alerts == [] and proc.check_offline() == []


@pytest.mark.parametrize("age_days,qualified", [(6.99, 1), (7.0, 1), (7.01, 0)])
def test_max_lag_boundary(age_days, qualified):
    cfg = Config({"track.day_slots": 10})                      # keep a week of days in memory (default 2)
    assert cfg["quality.max_lag_s"] == 7 * 86400
    proc = engine(cfg)
    feed(proc, [ping(0, plate="苏B00001")])                  # watermark = T0
    feed(proc, [ping(0, ts=T0 - int(age_days * 86_400_000))])
    own_day = datetime.fromtimestamp((T0 - int(age_days * 86_400_000)) / 1000, BJ).date().isoformat()
    rows = {k[1]: r for k, r in day_rows(proc).items() if k[0] == PLATE}
    # a ping refused for its time is counted (unqualified) on the day it was received (the watermark's)
    assert rows == {own_day if qualified else "2026-11-10": rows[own_day if qualified else "2026-11-10"]}
    assert (rows[own_day if qualified else "2026-11-10"]["pings"], sum(r["qualified"] for r in rows.values())) \
        == (1, qualified)


# --- Beijing calendar days --------------------------------------------------------------------------------

def _instant(s: str) -> int:
    return int(datetime.fromisoformat(s).timestamp() * 1000)


def test_beijing_midnight_splits_days_and_utc_forms_of_the_same_instant_agree():
    proc = engine()
    before, after = _instant("2026-11-09T23:59:59+08:00"), _instant("2026-11-10T00:00:00+08:00")
    assert after - before == 1000
    feed(proc, [ping(0, ts=before), ping(1, ts=after)])
    rows = day_rows(proc)
    assert rows[(PLATE, "2026-11-09")]["pings"] == 1 and rows[(PLATE, "2026-11-10")]["pings"] == 1
    # the same two instants written in UTC: 15:59:59Z and 16:00:00Z fall on the same Beijing days
    utc = engine()
    feed(utc, [ping(0, ts=_instant("2026-11-09T15:59:59Z")), ping(1, ts=_instant("2026-11-09T16:00:00Z"))])
    assert {k: r["pings"] for k, r in day_rows(utc).items()} == {k: r["pings"] for k, r in rows.items()}


def _cli(lines: list[bytes], tmp: Path) -> tuple[list[dict], dict]:
    stats = tmp / "stats.jsonl"
    stats.unlink(missing_ok=True)                 # a refused input writes no rows: never read an earlier run's
    r = subprocess.run([sys.executable, "-m", "roadwatch.streams.cli", "assess", "gps", "--stats", str(stats)],
                       input=b"\n".join(lines) + b"\n", capture_output=True, cwd=ROOT, timeout=60)
    assert r.returncode in (0, 2), r.stderr.decode()
    rows = {(x["plate"], x["day"]): x for x in map(orjson.loads, stats.read_bytes().splitlines())} \
        if stats.exists() else {}
    return [orjson.loads(x) for x in r.stdout.splitlines()], rows


def test_batch_cli_days_for_beijing_and_utc_timestamps(tmp_path):
    def line(ts: str, k: int) -> bytes:
        return orjson.dumps(dict(ping(k), ts=ts))
    _, bj = _cli([line("2026-11-09T23:59:59+08:00", 0), line("2026-11-10T00:00:00+08:00", 1)], tmp_path)
    _, utc = _cli([line("2026-11-09T15:59:59Z", 0), line("2026-11-09T16:00:00+00:00", 1)], tmp_path)
    assert {k: r["pings"] for k, r in bj.items()} == {(PLATE, "2026-11-09"): 1, (PLATE, "2026-11-10"): 1}
    assert {k: r["pings"] for k, r in utc.items()} == {k: r["pings"] for k, r in bj.items()}
    _, naive = _cli([line("2026-11-09T23:59:59", 0)], tmp_path)   # no offset: refused, never guessed
    assert naive == {}


def test_batch_cli_duplicates_out_of_order_and_future(tmp_path):
    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    base = now - 3_600_000
    pts = [dict(ping(k), ts=base + k * 20_000) for k in range(10)]
    order = [0, 1, 2, 5, 3, 4, 6, 9, 7, 8, 9]                 # out of order, and 9 twice
    future = dict(ping(20), plate="苏B00001", ts=now + 3_600_000)
    alerts, rows = _cli([orjson.dumps(pts[k]) for k in order] + [orjson.dumps(future)], tmp_path)
    day = datetime.fromtimestamp(base / 1000, BJ).date().isoformat()
    r = rows[(PLATE, day)] if (PLATE, day) in rows else next(v for k, v in rows.items() if k[0] == PLATE)
    assert (r["pings"], r["qualified"]) == (10, 10)                # ping 9 twice: counted once
    assert sum(v["km_total"] for k, v in rows.items() if k[0] == PLATE) == pytest.approx(km(9 * STEP_DEG), abs=1e-6)
    f = [v for k, v in rows.items() if k[0] == "苏B00001"]
    assert len(f) == 1 and (f[0]["pings"], f[0]["qualified"]) == (1, 0)   # 1 h ahead of the wall clock
    assert alerts == []


def test_wim_reading_days_follow_beijing_time():
    reg = registry("普通货车")
    reg.vehicles[PLATE] = Vehicle(plate=PLATE, plate_color=2, category="普通货车", enterprise_id="", axle_count=2)

    def verdict(ts: str) -> dict:
        r = {"station_id": "S1", "lane": 1, "ts": ts, "plate": PLATE, "plate_color": 2, "plate_confidence": 0.97,
             "vehicle_kind": "truck", "axle_count": 2, "axle_loads_kg": [9000, 12000], "axle_spacings_m": [4.0],
             "gross_kg": 21000, "speed_kmh": 60, "device_id": "D1"}
        return assess(parse_wim_reading(orjson.dumps(r)), reg, Config(), counters=MemoryCounters(),
                      passages=MemoryPassages())
    assert verdict("2026-11-09T23:59:59+08:00")["ts"][:10] == "2026-11-09"
    assert verdict("2026-11-09T15:59:59Z")["ts"] == "2026-11-09T23:59:59+08:00"
    assert verdict("2026-11-09T16:00:00Z")["ts"][:10] == "2026-11-10"
