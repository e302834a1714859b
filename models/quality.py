"""Per-ping data-quality classification (数据合格率), vectorised over a batch.

Rules (docs/legal-basis.md §6, ranges as config keys): plate format and JT/T 415 colour;
time not later than the reference time + ``quality.future_tolerance_s`` and not older than
``quality.max_lag_s``; lon/lat inside China's ranges; speed, heading, altitude inside their ranges;
status bit 1 "positioned" when ``quality.require_positioned``; alarm/status words that are not 32-bit.
Every failed rule sets one bit of a per-ping reason mask; a ping is qualified when its mask is 0. The last
reason, ``duplicate`` (a second copy of a vehicle's fix: same fix time within
``quality.duplicate_tolerance_s``), needs the vehicle's history: the engine's dedupe step sets it
(``models.ping_state``), and a duplicate is counted once in every statistic.

Time reference (event time, so a replay gives the same answer as live):
- "future": against the gateway receipt time ``recv_ts`` when the batch carries it, else against the
  processing clock ``now_ms`` (only a broken terminal clock can be later than the wall clock);
- "too old": against the watermark at the ping = running maximum of the (non-future) ping times and
  receipt times seen so far, in input order, including the ping's own receipt time. This is a cumulative max over the batch, so the result
  does not depend on how the input is split into batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Config
from .records import PLATE_COLORS, PLATE_RE

REASONS: tuple[str, ...] = ("plate", "plate_color", "time_future", "time_too_old", "lon", "lat", "speed",
                            "heading", "altitude", "not_positioned", "bad_flags", "duplicate")
BIT = {name: np.uint16(1 << i) for i, name in enumerate(REASONS)}
# Defects that still let the ping be attributed to a vehicle at a trustworthy time (terminal alarms such
# as "GNSS antenna cut" arrive precisely with unpositioned fixes).
POSITION_DEFECTS = np.uint16(sum(1 << REASONS.index(r) for r in
                                 ("lon", "lat", "speed", "heading", "altitude", "not_positioned")))
TIME_DEFECTS = np.uint16((1 << REASONS.index("time_future")) | (1 << REASONS.index("time_too_old")))
NO_WATERMARK = np.iinfo(np.int64).min
STATUS_POSITIONED = 1 << 1
_COLORS = np.array(sorted(PLATE_COLORS), dtype=np.int64)
# the same set as a table over every uint8 value (Arrow batches carry plate_color as uint8): one gather per
# batch instead of ``np.isin``'s sort
_COLOR_OK_U8 = np.isin(np.arange(256), _COLORS)


def plate_valid(plate: str) -> bool:
    return isinstance(plate, str) and PLATE_RE.match(plate) is not None


def reason_names(mask: int) -> list[str]:
    return [name for i, name in enumerate(REASONS) if int(mask) >> i & 1]


@dataclass
class QualityResult:
    reasons: np.ndarray       # uint16 per ping, 0 = qualified
    wm_before: np.ndarray     # int64 watermark just before each ping (NO_WATERMARK if none yet)
    wm_after: np.ndarray      # int64 watermark including the ping
    watermark: int            # watermark after the whole batch

    @property
    def qualified(self) -> np.ndarray:
        return self.reasons == 0


def _out(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (x < lo) | (x > hi)


def classify(cols, cfg: Config, plate_ok: np.ndarray, prev_watermark: int = int(NO_WATERMARK),
             now_ms: int | None = None) -> QualityResult:
    """Reason masks for one ``PingColumns`` batch. ``plate_ok[i]``: plate i matches ``PLATE_RE``."""
    n = len(cols)
    r = np.zeros(n, dtype=np.uint16)
    r[~plate_ok] |= BIT["plate"]
    pc = cols.plate_color
    color_ok = _COLOR_OK_U8[pc] if isinstance(pc, np.ndarray) and pc.dtype == np.uint8 else np.isin(pc, _COLORS)
    r[~color_ok] |= BIT["plate_color"]
    ts = cols.ts
    tol = int(cfg["quality.future_tolerance_s"]) * 1000
    recv = cols.recv_ts
    if recv is not None:
        future = ts > recv + tol
    elif now_ms is not None:
        future = ts > now_ms + tol
    else:
        future = np.zeros(n, dtype=bool)
    r[future] |= BIT["time_future"]
    # Watermark: running max of accepted event times and receipt times, in input order.
    marks = np.where(future, NO_WATERMARK, ts)
    if recv is not None:
        marks = np.maximum(marks, recv)
    wm_after = np.maximum.accumulate(np.maximum(marks, np.int64(prev_watermark)))
    wm_before = np.empty(n, dtype=np.int64)
    if n:
        wm_before[0] = prev_watermark
        wm_before[1:] = wm_after[:-1]
    lag = int(cfg["quality.max_lag_s"]) * 1000
    # wm_after includes the ping's own receipt time; its own ts cannot make it "too old".
    has_ref = wm_after != NO_WATERMARK
    too_old = has_ref & (ts < np.where(has_ref, wm_after, 0) - lag)
    r[too_old] |= BIT["time_too_old"]
    lo, hi = cfg["quality.lon_range"]
    r[_out(cols.lon, lo, hi)] |= BIT["lon"]
    lo, hi = cfg["quality.lat_range"]
    r[_out(cols.lat, lo, hi)] |= BIT["lat"]
    lo, hi = cfg["quality.speed_range_kmh"]
    r[_out(cols.speed_kmh, lo, hi)] |= BIT["speed"]
    lo, hi = cfg["quality.heading_range"]
    r[_out(cols.heading, lo, hi)] |= BIT["heading"]
    lo, hi = cfg["quality.alt_range_m"]
    r[_out(cols.altitude_m, lo, hi)] |= BIT["altitude"]
    if cfg["quality.require_positioned"]:
        r[(cols.status_flags & STATUS_POSITIONED) == 0] |= BIT["not_positioned"]
    r[_out(cols.status_flags, 0, 0xFFFFFFFF) | _out(cols.alarm_flags, 0, 0xFFFFFFFF)] |= BIT["bad_flags"]
    wm = int(wm_after[-1]) if n else int(prev_watermark)
    return QualityResult(r, wm_before, wm_after, wm)
