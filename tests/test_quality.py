"""Data-quality classification (§5.2 annex notes): every range at and just beyond its boundary."""
from __future__ import annotations

import numpy as np
import pytest

from roadwatch.models.config import Config
from roadwatch.models.quality import NO_WATERMARK, REASONS, classify, plate_valid, reason_names
from test_gps_support import T0, cols, ping

CFG = Config()


def reasons_of(p: dict, cfg: Config = CFG, prev_wm: int = int(NO_WATERMARK), now_ms: int | None = None):
    c = cols([p])
    ok = np.array([plate_valid(x) for x in c.plate])
    r = classify(c, cfg, ok, prev_wm, now_ms)
    return reason_names(r.reasons[0])


def test_clean_ping_is_qualified():
    assert reasons_of(ping(T0, speed=50)) == []


@pytest.mark.parametrize("field,good,bad,reason", [
    ("speed_kmh", 160.0, 160.1, "speed"),
    ("speed_kmh", 0.0, -0.1, "speed"),
    ("lon", 73.55, 73.5499, "lon"),
    ("lon", 135.0833, 135.0834, "lon"),
    ("lat", 3.85, 3.8499, "lat"),
    ("lat", 53.55, 53.5501, "lat"),
    ("heading", 359, 360, "heading"),
    ("heading", 0, -1, "heading"),
    ("altitude_m", -200.0, -200.1, "altitude"),
    ("altitude_m", 6500.0, 6500.1, "altitude"),
    ("plate_color", 9, 6, "plate_color"),
    ("plate_color", 1, 0, "plate_color"),
    ("status_flags", 0xFFFFFFFF, 0x1_0000_0003, "bad_flags"),
    ("alarm_flags", 0xFFFFFFFF, -1, "bad_flags"),
])
def test_range_boundaries(field, good, bad, reason):
    assert reason not in reasons_of(ping(T0, **{field: good}))
    assert reason in reasons_of(ping(T0, **{field: bad}))


@pytest.mark.parametrize("plate,ok", [("粤B12345", True), ("京AD12345", True), ("粤B1234挂", True),
                                      ("粤I12345", False), ("B12345", False), ("粤B123", False), ("", False)])
def test_plate_format(plate, ok):
    assert ("plate" not in reasons_of(ping(T0, plate=plate))) is ok


def test_not_positioned_depends_on_config():
    p = ping(T0, status_flags=1)          # ACC on, no fix
    assert reasons_of(p) == ["not_positioned"]
    assert reasons_of(p, Config({"quality.require_positioned": False})) == []


def test_future_against_receipt_time():
    tol = CFG["quality.future_tolerance_s"] * 1000
    assert "time_future" not in reasons_of(ping(T0 + tol, recv_ts=T0))
    assert "time_future" in reasons_of(ping(T0 + tol + 1000, recv_ts=T0))


def test_future_against_processing_clock_without_receipt():
    assert "time_future" not in reasons_of(ping(T0 + 60_000), now_ms=T0)
    assert "time_future" in reasons_of(ping(T0 + 61_000), now_ms=T0)
    assert "time_future" not in reasons_of(ping(T0 + 10 ** 9))   # no clock given: not checked


def test_too_old_against_watermark():
    lag = 7 * 86400 * 1000
    assert "time_too_old" not in reasons_of(ping(T0 - lag), prev_wm=T0)
    assert "time_too_old" in reasons_of(ping(T0 - lag - 1), prev_wm=T0)
    # the ping's own receipt time counts as well
    assert "time_too_old" in reasons_of(ping(T0 - lag - 1, recv_ts=T0))


def test_watermark_is_running_max_in_input_order_and_ignores_future_pings():
    lag = CFG["quality.max_lag_s"] * 1000
    c = cols([ping(T0), ping(T0 + 10 ** 10), ping(T0 + 5000), ping(T0 + 5000 - lag - 1)])
    r = classify(c, CFG, np.ones(4, bool), int(NO_WATERMARK), now_ms=T0 + 10_000)
    assert r.wm_after.tolist() == [T0, T0, T0 + 5000, T0 + 5000]
    assert reason_names(r.reasons[1]) == ["time_future"]
    assert reason_names(r.reasons[3]) == ["time_too_old"]
    assert r.watermark == T0 + 5000


def test_several_reasons_accumulate():
    names = reasons_of(ping(T0, lon=10.0, lat=80.0, speed=200.0, status_flags=0))
    assert set(names) == {"lon", "lat", "speed", "not_positioned"}
    assert set(REASONS) >= set(names)
