"""Live-monitoring rules that do not hold state: speed limits, time windows, alert records, alarm names.

The stateful parts (overspeed episodes, driving clocks, curfew nights, offline, geofence edges) run inside
``models.ping_state.PingProcessor`` on arrays; this module gives them their parameters and builds the
alert dicts (``models.records.Alert`` shape) for the few hits.

Rule choices (docs/legal-basis.md §7; values are config keys):
- Speed limit by category and road: 危险货物运输车辆 80/60 (expressway/other), buses (客运班车, 旅游包车)
  ``speeding.bus_*`` × ``speeding.bus_night_factor`` at night, every other vehicle (普通货车 and plates
  missing from the registry) ``speeding.truck_*``. "Expressway" = inside a registry zone of kind expressway.
- Night = [night.start, night.end) Beijing time, wrapping midnight; curfew = [curfew.start, curfew.end).
- ``alert_id`` = blake2b(type|plate|start ms|discriminator): a replay or an update (end_ts) of the same
  episode carries the same id, so the archive upserts one row.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import numpy as np

from .config import Config, ConfigError
from .records import format_ts

CATEGORY_CODES = {"客运班车": 0, "旅游包车": 1, "危险货物运输车辆": 2, "普通货车": 3}
UNKNOWN_CATEGORY = 4
BUS_CODES = (0, 1)
GOODS_CODES = (2, 3)          # sampled into track_points for source tracing
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
BEIJING_OFFSET_MS = 8 * HOUR_MS

# Minimal JT/T 808-2013 alarm-bit table (JT/T 808-2013 Table 24); streams/jt808/alarms.py is the full one.
_ALARM_NAMES_FALLBACK = {
    0: "紧急报警", 1: "超速报警", 2: "疲劳驾驶", 3: "危险预警", 4: "GNSS模块发生故障", 5: "GNSS天线未接或被剪断",
    6: "GNSS天线短路", 7: "终端主电源欠压", 8: "终端主电源掉电", 9: "终端LCD或显示器故障", 10: "TTS模块故障",
    11: "摄像头故障", 12: "道路运输证IC卡模块故障", 13: "超速预警", 14: "疲劳驾驶预警", 18: "当天累计驾驶超时",
    19: "超时停车", 20: "进出区域", 21: "进出路线", 22: "路段行驶时间不足/过长", 23: "路线偏离报警",
    24: "车辆VSS故障", 25: "车辆油量异常", 26: "车辆被盗", 27: "车辆非法点火", 28: "车辆非法位移",
    29: "碰撞预警", 30: "侧翻预警", 31: "非法开门报警",
}
HIGH_SEVERITY_ALARM_BITS = frozenset({0, 26, 27, 28, 29, 30})


def alarm_bit_name(bit: int, version: int = 0) -> str:
    """Standard name of a JT/T 808 alarm bit in the terminal's protocol version (2019 renamed bits 2/3 and
    gave bits 15–17 meanings; 0 or 2011/2013 = the 2013 table)."""
    try:  # the gateway engineer's full tables, when present
        from roadwatch.streams.jt808.alarms import ALARM_BITS_2013, ALARM_BITS_2019
        name = (ALARM_BITS_2019 if version >= 2019 else ALARM_BITS_2013).get(bit)
    except ImportError:  # pragma: no cover - depends on build
        name = None
    return name or _ALARM_NAMES_FALLBACK.get(bit, f"保留位{bit}")


def hhmm_ms(value: str, key: str) -> int:
    """"HH:MM" → milliseconds after midnight (24:00 allowed as end of day)."""
    try:
        h, m = value.split(":")
        h, m = int(h), int(m)
    except (ValueError, AttributeError):
        raise ConfigError(f"{key}: expected HH:MM, got {value!r}") from None
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ConfigError(f"{key}: expected HH:MM, got {value!r}")
    return (h * 60 + m) * 60_000


def in_window(tod_ms: np.ndarray, start_ms: int, end_ms: int) -> np.ndarray:
    """Time of day in [start, end), the window wrapping midnight when start > end."""
    if start_ms <= end_ms:
        return (tod_ms >= start_ms) & (tod_ms < end_ms)
    return (tod_ms >= start_ms) | (tod_ms < end_ms)


def night_overlap_ms(start_ms: np.ndarray, end_ms: np.ndarray, win_start: int, win_end: int) -> np.ndarray:
    """Milliseconds of [start, end] (epoch ms, start ≤ end) inside the daily Beijing-time window
    [win_start, win_end) (ms after midnight; a window with win_end ≤ win_start wraps past midnight).
    ``start`` may be ``NONE``-like (very negative): the result is then 0."""
    s = np.asarray(start_ms, dtype=np.int64)
    e = np.asarray(end_ms, dtype=np.int64)
    ok = (s > 0) & (e > s)
    s = np.where(ok, s, 0)
    e = np.where(ok, e, 0)

    def cum(x):                         # window time in [epoch, x]
        loc = x + BEIJING_OFFSET_MS
        days, tod = loc // DAY_MS, loc % DAY_MS
        if win_end >= win_start:        # same convention as in_window: start == end is an empty window
            per_day = win_end - win_start
            part = np.clip(tod - win_start, 0, per_day)
        else:
            per_day = win_end + DAY_MS - win_start
            part = np.minimum(tod, win_end) + np.maximum(tod - win_start, 0)
        return days * per_day + part
    return np.where(ok, cum(e) - cum(s), 0)


def local_day_tod(ts_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Beijing day number (days since 1970-01-01 local) and time of day in ms."""
    local = ts_ms + BEIJING_OFFSET_MS
    return local // DAY_MS, local % DAY_MS


def day_string(day: int) -> str:
    return datetime.fromtimestamp(int(day) * 86400, tz=timezone.utc).date().isoformat()


class SpeedLimits:
    """Limit lookup table indexed [category code, on expressway, night] → km/h, plus the key names."""

    def __init__(self, cfg: Config):
        f = float(cfg["speeding.bus_night_factor"])
        self.table = np.zeros((UNKNOWN_CATEGORY + 1, 2, 2), dtype=np.float64)
        self.keys: dict[tuple[int, int, int], str] = {}
        for cat in range(UNKNOWN_CATEGORY + 1):
            for exp, road in ((1, "expressway"), (0, "other")):
                for night in (0, 1):
                    if cat == 2:
                        key = f"speeding.dg_{road}_kmh"
                        val = cfg[key]
                    elif cat in BUS_CODES:
                        key = f"speeding.bus_{road}_kmh"
                        val = cfg[key]
                        if night:
                            val, key = val * f, key + " × speeding.bus_night_factor"
                    else:
                        key = f"speeding.truck_{road}_kmh"
                        val = cfg[key]
                    self.table[cat, exp, night] = val
                    self.keys[(cat, exp, night)] = key

    def limits(self, cat: np.ndarray, on_exp: np.ndarray, night: np.ndarray) -> np.ndarray:
        return self.table[cat, on_exp.astype(np.int64), night.astype(np.int64)]


def alert_id(type_: str, plate: str, start_ms: int, discriminator: str = "") -> str:
    h = hashlib.blake2b(f"{type_}|{plate}|{int(start_ms)}|{discriminator}".encode(), digest_size=12)
    return h.hexdigest()


_DAY_TEXT: dict[int, str] = {}


def beijing_iso(ms: int) -> str:
    """``format_ts`` of an epoch-ms instant (Beijing time, seconds, "+08:00") without a datetime per call:
    alerts are built by the thousand per second, and the date part is the same for a whole day."""
    day, sec = divmod(int(ms) // 1000 + BEIJING_OFFSET_MS // 1000, 86_400)
    date = _DAY_TEXT.get(day)
    if date is None:
        if len(_DAY_TEXT) >= 4096:
            _DAY_TEXT.clear()
        date = _DAY_TEXT[day] = format_ts(datetime.fromtimestamp(day * 86_400 - BEIJING_OFFSET_MS // 1000,
                                                                 tz=timezone.utc))[:10]
    hour, rest = divmod(sec, 3600)
    return f"{date}T{hour:02d}:{rest // 60:02d}:{rest % 60:02d}+08:00"


def make_alert(type_: str, plate: str, start_ms: int, *, end_ms: int | None = None, severity: str = "medium",
               lat: float | None = None, lon: float | None = None, late: bool = False,
               discriminator: str = "", details: dict | None = None) -> dict:
    """An alert dict in the ``models.records.Alert`` shape (times ISO-8601 Beijing)."""
    return {
        "alert_id": alert_id(type_, plate, start_ms, discriminator),
        "type": type_, "plate": plate, "start_ts": beijing_iso(start_ms),
        "end_ts": beijing_iso(end_ms) if end_ms is not None else None,
        "severity": severity,
        "lat": None if lat is None else round(float(lat), 6),
        "lon": None if lon is None else round(float(lon), 6),
        "late": bool(late), "details": details or {},
    }


def overspeed_severity(max_kmh: float, limit_kmh: float, cfg: Config) -> str:
    return "high" if max_kmh > limit_kmh * float(cfg["alerts.overspeed_high_ratio"]) else "medium"


def alarm_severity(bit: int) -> str:
    return "high" if bit in HIGH_SEVERITY_ALARM_BITS else "medium"
