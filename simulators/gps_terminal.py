"""GPS terminal simulator: vehicle timelines as *legs* (drive / stop), expanded to pings with numpy.

A leg is a straight drive from (lon0, lat0) to (lon1, lat1) in ``dur`` seconds, or a stop at one point,
reported every ``interval`` seconds. ``expand_legs`` turns any number of legs of any number of vehicles
into ping columns in one vectorised pass (no per-ping Python), so a province-month is a few seconds.
Faults (drift, gaps, blind-area re-uploads, out-of-range values, future timestamps, duplicates,
unpositioned fixes, terminal alarms) then edit those columns in place; ``Track`` is the small builder the
scenario behaviours use to script one vehicle.

Times are integer epoch seconds here; ping ``ts``/``recv_ts`` leave as epoch milliseconds
(models/pingbatch.py). ``recv_ts`` is the simulated platform receipt time, so quality rules that compare a
fix with its receipt (future / stale) are deterministic whatever the wall clock is during a test.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EARTH_KM = 6371.0088
STATUS_ACC = 1 << 0
STATUS_POSITIONED = 1 << 1
STATUS_GPS = 1 << 18
ALARM_EMERGENCY = 1 << 0
ALARM_OVERSPEED = 1 << 1

LEG_FIELDS = ("vid", "t0", "dur", "interval", "lon0", "lat0", "lon1", "lat1", "speed", "acc", "jitter",
              "alarm")


def haversine_km(lon0, lat0, lon1, lat1):
    lon0, lat0, lon1, lat1 = map(np.radians, (lon0, lat0, lon1, lat1))
    a = np.sin((lat1 - lat0) / 2) ** 2 + np.cos(lat0) * np.cos(lat1) * np.sin((lon1 - lon0) / 2) ** 2
    return 2 * EARTH_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def bearing_deg(lon0, lat0, lon1, lat1):
    lon0, lat0, lon1, lat1 = map(np.radians, (lon0, lat0, lon1, lat1))
    y = np.sin(lon1 - lon0) * np.cos(lat1)
    x = np.cos(lat0) * np.sin(lat1) - np.sin(lat0) * np.cos(lat1) * np.cos(lon1 - lon0)
    return (np.degrees(np.arctan2(y, x)) + 360.0) % 360.0


def destination(lon, lat, bearing, km):
    """Point ``km`` away on ``bearing`` (equirectangular; fine for < 300 km)."""
    b = np.radians(bearing)
    dlat = km * np.cos(b) / 111.32
    dlon = km * np.sin(b) / (111.32 * np.cos(np.radians(lat)))
    return lon + dlon, lat + dlat


@dataclass
class Legs:
    """Columnar legs. Append with ``add``; ``arrays`` gives numpy columns."""
    cols: dict = field(default_factory=lambda: {k: [] for k in LEG_FIELDS})

    def add(self, vid, t0, dur, interval, lon0, lat0, lon1, lat1, speed, acc, jitter=0.0, alarm=0):
        for k, v in zip(LEG_FIELDS, (vid, t0, dur, interval, lon0, lat0, lon1, lat1, speed, acc, jitter, alarm)):
            self.cols[k].append(v)

    def arrays(self) -> dict:
        dt = {"vid": np.int64, "t0": np.int64, "dur": np.int64, "interval": np.int64, "acc": np.bool_,
              "alarm": np.int64}
        return {k: np.asarray(v, dtype=dt.get(k, np.float64)) for k, v in self.cols.items()}


def expand_legs(legs: dict, rng: np.random.Generator, recv_delay_s: tuple = (1, 3)) -> dict:
    """Legs → ping columns (numpy): vid, ts (s), lon, lat, speed_kmh, heading, altitude_m, status_flags,
    alarm_flags, mileage_km, reupload, recv_ts (s). Pings of a leg are at t0+interval, t0+2·interval, …
    and t0+dur (a zero-length leg gives one ping), plus one at t0+1 when the leg changes the terminal's
    state (``state_changes``). Positions move linearly in time, so the implied speed between
    pings of a drive leg equals the leg's nominal speed."""
    n_leg = len(legs["vid"])
    if n_leg == 0:
        return {k: np.zeros(0) for k in ("vid", "ts", "lon", "lat", "speed_kmh")}
    dur = np.maximum(legs["dur"], 0)
    itv = np.maximum(legs["interval"], 1)
    change = state_changes(legs) & (dur > 1) & (itv > 1)
    counts = np.maximum(1, -(-dur // itv)) + change     # ceil, ≥ 1, plus the state-change fix
    total = int(counts.sum())
    leg_of = np.repeat(np.arange(n_leg), counts)
    first = np.cumsum(counts) - counts
    k = np.arange(total) - np.repeat(first, counts) + 1 - change[leg_of]
    # (t0, t0+dur]: the last fix is at the leg's end; a state change adds a fix 1 s after t0 (k = 0)
    off = np.where(k == 0, 1, np.minimum(k * itv[leg_of], dur[leg_of]))
    frac = np.where(dur[leg_of] > 0, off / np.maximum(dur[leg_of], 1), 0.0)
    lon0, lat0, lon1, lat1 = (legs[c][leg_of] for c in ("lon0", "lat0", "lon1", "lat1"))
    lon = lon0 + frac * (lon1 - lon0)
    lat = lat0 + frac * (lat1 - lat0)
    speed_nom = legs["speed"][leg_of]
    jit = legs["jitter"][leg_of]
    speed = np.where(speed_nom > 0, speed_nom * (1.0 + jit * rng.standard_normal(total)), 0.0)
    speed = np.clip(np.round(speed, 1), 0.0, None)
    leg_km = haversine_km(legs["lon0"], legs["lat0"], legs["lon1"], legs["lat1"])
    head_leg = np.where(leg_km > 0, bearing_deg(legs["lon0"], legs["lat0"], legs["lon1"], legs["lat1"]), 0.0)
    # Odometer: cumulative distance per vehicle (legs are per-vehicle chronological in input order).
    order = np.lexsort((legs["t0"], legs["vid"]))
    cum = np.zeros(n_leg)
    km_sorted = leg_km[order]
    vid_sorted = legs["vid"][order]
    csum = np.cumsum(km_sorted) - km_sorted
    starts = np.r_[0, np.flatnonzero(np.diff(vid_sorted)) + 1]
    base = np.repeat(csum[starts], np.diff(np.r_[starts, n_leg]))
    cum[order] = csum - base
    vid = legs["vid"][leg_of]
    mileage = np.round(1000.0 + vid * 37.0 + cum[leg_of] + frac * leg_km[leg_of], 1)
    acc = legs["acc"][leg_of]
    status = np.where(acc, STATUS_ACC, 0) | STATUS_POSITIONED | STATUS_GPS
    ts = legs["t0"][leg_of] + off
    return {
        "vid": vid, "ts": ts.astype(np.int64), "lon": np.round(lon, 6), "lat": np.round(lat, 6),
        "speed_kmh": speed, "heading": np.round(head_leg[leg_of]).astype(np.int64) % 360,
        "altitude_m": np.round(60.0 + 40.0 * np.sin(lon * 7.0) + 30.0 * np.cos(lat * 5.0), 0),
        "status_flags": status.astype(np.int64), "alarm_flags": legs["alarm"][leg_of].astype(np.int64),
        "mileage_km": mileage, "reupload": np.zeros(total, dtype=np.uint8),
        "recv_ts": ts + rng.integers(recv_delay_s[0], recv_delay_s[1] + 1, size=total),
    }


def state_changes(legs: dict) -> np.ndarray:
    """Legs that start a new terminal state (moving ↔ stopped, ACC on ↔ off) right where the vehicle's
    previous leg ended. JT/T 808 terminals report a fix at such a change (ACC off, stop, start) besides
    their periodic interval, so a rest shorter than the parked interval still begins with a stopped fix and
    the platform never sees a moving vehicle fall silent."""
    n = len(legs["vid"])
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    order = np.lexsort((legs["t0"], legs["vid"]))
    vid, t0 = legs["vid"][order], legs["t0"][order]
    end = t0 + np.maximum(legs["dur"][order], 0)
    moving = legs["speed"][order] > 0
    acc = legs["acc"][order].astype(bool)
    same = (vid[1:] == vid[:-1]) & (t0[1:] == end[:-1])
    differs = (moving[1:] != moving[:-1]) | (acc[1:] != acc[:-1])
    out[order[1:]] = same & differs
    return out


def concat(parts: list[dict]) -> dict:
    parts = [p for p in parts if len(p.get("vid", [])) > 0]
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def take(cols: dict, idx) -> dict:
    return {k: v[idx] for k, v in cols.items()}


# --- the per-vehicle builder used by behaviours ---------------------------------------------------------

class Track:
    """Scripts one vehicle: ``drive_to``/``drive_for``/``stop`` append legs; ``t``/``lon``/``lat`` follow."""

    def __init__(self, vid: int, t: int, lon: float, lat: float, interval: int = 30,
                 parked_interval: int = 600):
        self.vid, self.t, self.lon, self.lat = vid, int(t), float(lon), float(lat)
        self.interval, self.parked_interval = interval, parked_interval
        self.legs = Legs()
        self.marks: dict[str, int] = {}

    def mark(self, name: str) -> "Track":
        self.marks[name] = self.t
        return self

    def drive_to(self, lon: float, lat: float, speed_kmh: float, interval: int | None = None,
                 jitter: float = 0.0, alarm: int = 0) -> "Track":
        km = float(haversine_km(self.lon, self.lat, lon, lat))
        dur = max(1, int(round(km / speed_kmh * 3600)))
        self.legs.add(self.vid, self.t, dur, interval or self.interval, self.lon, self.lat, lon, lat,
                      speed_kmh, True, jitter, alarm)
        self.t += dur
        self.lon, self.lat = float(lon), float(lat)
        return self

    def drive_for(self, seconds: int, speed_kmh: float, bearing: float, interval: int | None = None,
                  jitter: float = 0.0, alarm: int = 0) -> "Track":
        lon, lat = destination(self.lon, self.lat, bearing, speed_kmh * seconds / 3600.0)
        self.legs.add(self.vid, self.t, int(seconds), interval or self.interval, self.lon, self.lat,
                      float(lon), float(lat), speed_kmh, True, jitter, alarm)
        self.t += int(seconds)
        self.lon, self.lat = float(lon), float(lat)
        return self

    def stop(self, seconds: int, acc_on: bool = False, interval: int | None = None) -> "Track":
        itv = interval or (self.interval if acc_on else self.parked_interval)
        self.legs.add(self.vid, self.t, int(seconds), itv, self.lon, self.lat, self.lon, self.lat, 0.0,
                      acc_on, 0.0, 0)
        self.t += int(seconds)
        return self

    def silent(self, seconds: int, speed_kmh: float = 0.0, bearing: float = 0.0) -> "Track":
        """No reports for ``seconds`` (terminal off-line); the vehicle keeps moving at ``speed_kmh``."""
        if speed_kmh > 0:
            self.lon, self.lat = (float(x) for x in destination(self.lon, self.lat, bearing,
                                                                speed_kmh * seconds / 3600.0))
        self.t += int(seconds)
        return self


# --- faults (edit ping columns of one vehicle) ----------------------------------------------------------

def window(cols: dict, vid: int, t_from: int, t_to: int) -> np.ndarray:
    return np.flatnonzero((cols["vid"] == vid) & (cols["ts"] >= t_from) & (cols["ts"] < t_to))


def drop(cols: dict, idx: np.ndarray) -> dict:
    keep = np.ones(len(cols["vid"]), dtype=bool)
    keep[idx] = False
    return take(cols, keep)


def reupload(cols: dict, idx: np.ndarray, at: int) -> None:
    """Blind-area pings kept by the terminal and re-uploaded (0x0704, type 1) at ``at``."""
    cols["reupload"][idx] = 1
    cols["recv_ts"][idx] = at


def drift(cols: dict, idx: np.ndarray, km: float = 30.0, bearing: float = 45.0) -> None:
    lon, lat = destination(cols["lon"][idx], cols["lat"][idx], bearing, km)
    cols["lon"][idx] = np.round(lon, 6)
    cols["lat"][idx] = np.round(lat, 6)


def duplicate(cols: dict, idx: np.ndarray) -> dict:
    return concat([cols, take(cols, idx)])


def sort_by_receipt(cols: dict) -> dict:
    return take(cols, np.lexsort((cols["ts"], cols["vid"], cols["recv_ts"])))
