"""Track metrics between consecutive qualified points: distance, drift, gaps, and gap filling.

Per vehicle the engine keeps a "last good fix". For each new qualified point p that is newer than the
fix (all rules configurable, docs/legal-basis.md §6, project decision):

1. d = haversine(fix, p), dt = p.ts − fix.ts (> 0), implied speed v = d / dt.
2. Drift: v > ``drift.v_max_kmh``, or d > ``drift.stationary_jump_km`` while p reports speed ≤
   ``drift.stationary_speed_kmh`` and dt ≤ ``drift.stationary_jump_max_s`` (time bound, docs/legal-basis.md
   §6: a vehicle that parks after one unqualified arrival fix reports its parked position much later than
   the last qualified fix; that jump is the trip it made, not drift; 0 = no bound, the literal rule). A drift point adds no km and does not become the fix — except that
   after ``drift.reanchor_after`` consecutive drift points the latest one becomes the fix (without
   distance), so a wrong first fix or a real relocation cannot freeze a vehicle's track forever.
3. Stationary hold (``drift.stationary_hold``): when p and the fix both report speed ≤ the stationary
   speed, the fix keeps its position (only its time and speed advance): GNSS wander of a parked vehicle
   (jt808-frames entry 11: 8 points, speed 0, ~110 m of wander) adds no phantom kilometres.
4. Otherwise d goes to km_total; when dt > ``track.gap_s`` AND d > ``track.gap_km`` the segment is a gap
   and d also goes to km_incomplete; p becomes the fix.

Gap filling (blind-area re-uploads, 0x0704 / ``reupload``): every gap is kept open per vehicle as the
sorted list of its known points (start and end first). A qualified point older than the fix that falls
strictly inside an open gap is inserted between its neighbours a < p < b: it is drift when it fails rule 2
against a; otherwise the segment a–b is replaced by a–p and p–b, each re-tested with rule 4, and the
difference goes to km_total / km_incomplete of the days of p and b (a segment's km belong to the day of
its later point). A gap whose segments are all complete is closed. Bounds: ``track.fill_max_gaps`` gaps
per vehicle (oldest dropped), ``track.fill_max_points`` points per gap, gaps ending more than
``track.fill_window_h`` before the watermark are dropped. Older points outside any open gap only count as
pings (no km, no drift check): their neighbours are unknown.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from roadwatch.models.config import Config

from .distance import haversine_km, haversine_km_scalar


@dataclass(frozen=True)
class TrackParams:
    v_max_kmh: float
    jump_km: float
    stationary_kmh: float
    hold: bool
    reanchor_after: int
    gap_ms: int
    gap_km: float
    max_gaps: int
    window_ms: int
    max_points: int
    jump_max_ms: int = 0          # stationary-jump rule only within this time (0 = unbounded)

    @classmethod
    def from_config(cls, cfg: Config) -> "TrackParams":
        return cls(float(cfg["drift.v_max_kmh"]), float(cfg["drift.stationary_jump_km"]),
                   float(cfg["drift.stationary_speed_kmh"]), bool(cfg["drift.stationary_hold"]),
                   int(cfg["drift.reanchor_after"]), int(cfg["track.gap_s"]) * 1000, float(cfg["track.gap_km"]),
                   int(cfg["track.fill_max_gaps"]), int(round(float(cfg["track.fill_window_h"]) * 3_600_000)),
                   int(cfg["track.fill_max_points"]), int(cfg["drift.stationary_jump_max_s"]) * 1000)


@dataclass
class StepResult:
    drift: np.ndarray        # bool: drift point (counted, not a fix unless reanchor)
    reanchor: np.ndarray     # bool: drift point that becomes the new fix
    hold: np.ndarray         # bool: stationary hold (fix time/speed advance, position kept)
    move: np.ndarray         # bool: normal point, becomes the fix
    km: np.ndarray           # km added to km_total
    gap: np.ndarray          # bool: segment is a gap
    km_incomplete: np.ndarray


def is_drift(d_km, dt_ms, speed_kmh, p: TrackParams):
    """Rule 2 (works on arrays and on scalars). dt_ms > 0."""
    implied = d_km / (dt_ms / 3_600_000.0)
    jump = (speed_kmh <= p.stationary_kmh) & (d_km > p.jump_km)
    if p.jump_max_ms > 0:
        jump = jump & (dt_ms <= p.jump_max_ms)
    return (implied > p.v_max_kmh) | jump


def is_gap(d_km, dt_ms, p: TrackParams):
    return (dt_ms > p.gap_ms) & (d_km > p.gap_km)


def track_step(fix_ts, fix_lat, fix_lon, fix_speed, drift_run, ts, lat, lon, speed, p: TrackParams) -> StepResult:
    """Rules 1–4 for points that all have a fix older than them (one point per vehicle)."""
    d = haversine_km(fix_lat, fix_lon, lat, lon)
    dt = ts - fix_ts
    drift = is_drift(d, dt, speed, p)
    reanchor = drift & (p.reanchor_after > 0) & (drift_run + 1 >= p.reanchor_after)
    if p.hold:
        hold = ~drift & (speed <= p.stationary_kmh) & (fix_speed <= p.stationary_kmh)
    else:
        hold = np.zeros(len(d), dtype=bool)
    move = ~drift & ~hold
    km = np.where(move, d, 0.0)
    gap = move & is_gap(d, dt, p)
    return StepResult(drift, reanchor, hold, move, km, gap, np.where(gap, d, 0.0))


class GapBook:
    """Open gaps per vehicle: {vehicle index: [gap, …]}; gap = [number of incomplete segments, points],
    points = sorted list of [ts, lat, lon, day]."""

    def __init__(self, p: TrackParams):
        self.p = p
        self.gaps: dict[int, list[list[list]]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self.gaps.values())

    def open(self, vi: int, a: list, b: list) -> None:
        lst = self.gaps.setdefault(vi, [])
        lst.append([1, [a, b]])
        if len(lst) > self.p.max_gaps:
            del lst[0]

    def prune(self, watermark_ms: int) -> None:
        limit = watermark_ms - self.p.window_ms
        for vi in list(self.gaps):
            keep = [g for g in self.gaps[vi] if g[1][-1][0] >= limit]
            if keep:
                self.gaps[vi] = keep
            else:
                del self.gaps[vi]

    def _seg(self, a: list, b: list) -> tuple[float, float]:
        d = haversine_km_scalar(a[1], a[2], b[1], b[2])
        return d, (d if bool(is_gap(d, b[0] - a[0], self.p)) else 0.0)

    def fill(self, vi: int, ts: int, lat: float, lon: float, speed: float, day: int, before: int | None = None):
        """Insert an older point. Returns None (not inside an open gap / duplicate / gap full),
        ("drift", day) or ("fill", [(day, d_km_total, d_km_incomplete), …]). ``before``: only gaps that end
        at or before this time (the engine's replay checkpoint: a replay finds the later gaps again)."""
        for gi, gap in enumerate(self.gaps.get(vi, ())):
            g = gap[1]
            if not g[0][0] < ts < g[-1][0] or (before is not None and g[-1][0] > before):
                continue
            k = bisect_left([pt[0] for pt in g], ts)
            if g[k][0] == ts or len(g) >= self.p.max_points + 2:
                return None
            a, b = g[k - 1], g[k]
            pt = [int(ts), float(lat), float(lon), int(day)]
            d_ap = haversine_km_scalar(a[1], a[2], lat, lon)
            if bool(is_drift(d_ap, ts - a[0], speed, self.p)):
                return ("drift", int(day))
            d_ab, inc_ab = self._seg(a, b)
            inc_ap = d_ap if bool(is_gap(d_ap, ts - a[0], self.p)) else 0.0
            d_pb, inc_pb = self._seg(pt, b)
            g.insert(k, pt)
            gap[0] += (inc_ap > 0) + (inc_pb > 0) - (inc_ab > 0)
            if gap[0] <= 0:
                del self.gaps[vi][gi]
                if not self.gaps[vi]:
                    del self.gaps[vi]
            return ("fill", [(int(day), d_ap, inc_ap), (b[3], d_pb - d_ab, inc_pb - inc_ab)])
        return None

    def to_json(self) -> list:
        return [[vi, gs] for vi, gs in sorted(self.gaps.items())]

    def load_json(self, data: list) -> None:
        self.gaps = {int(vi): gs for vi, gs in data}
