"""Cargo-source tracing (货运源头, 一超四罚 target 4): where did an overloaded truck load?

The truck's stop events (``vehicle_stops``, detected by the GPS engine: speed ≤ ``source.stop_speed_kmh``
within ``source.stop_max_move_m`` of where it stopped) in the ``source.lookback_h`` before the weighing are
searched for the LAST stop of at least ``source.min_stop_min`` whose position lies inside a registered
source-site polygon. Point-in-polygon is vectorised (shapely 2 STRtree bulk query). Pure: arrays in, dict out.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import shapely

from roadwatch.models.config import Config
from roadwatch.models.records import SourceSite, epoch_ms_to_iso

MAX_EXCERPT_POINTS = 500   # evidence track excerpts are thinned to this many points


class SiteIndex:
    """Source-site polygons in an STRtree. ``locate`` maps points to a site position (or −1)."""

    def __init__(self, sites: Iterable[SourceSite]):
        self.sites = [s for s in sites if len(s.polygon) >= 3]
        self._polys = [shapely.make_valid(shapely.Polygon(s.polygon)) for s in self.sites]
        self._tree = shapely.STRtree(self._polys) if self._polys else None

    def __len__(self) -> int:
        return len(self.sites)

    def locate(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        out = np.full(len(lon), -1, dtype=np.int64)
        if self._tree is None or len(lon) == 0:
            return out
        pts = shapely.points(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
        pi, si = self._tree.query(pts, predicate="intersects")   # boundary counts as inside
        if len(pi):
            # overlapping sites: the lowest registry position wins (deterministic)
            best = np.full(len(lon), np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(best, pi, si)
            hit = best != np.iinfo(np.int64).max
            out[hit] = best[hit]
        return out


def excerpt(ts: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> dict:
    """GeoJSON LineString through the given positions (time order), thinned to ``MAX_EXCERPT_POINTS``."""
    idx = np.arange(len(ts))
    if len(idx) > MAX_EXCERPT_POINTS:
        keep = np.unique(np.linspace(0, len(idx) - 1, MAX_EXCERPT_POINTS).round().astype(int))
        idx = idx[keep]
    coords = [[round(float(lon[i]), 6), round(float(lat[i]), 6)] for i in idx]
    if len(coords) == 1:
        coords = coords * 2   # a LineString needs two positions
    return {"type": "Feature",
            "geometry": {"type": "LineString", "coordinates": coords},
            "properties": {"ts_ms": [int(ts[i]) for i in idx]}}


def find_loading_site(index: SiteIndex, start_ms: np.ndarray, end_ms: np.ndarray, lat: np.ndarray,
                      lon: np.ndarray, reading_ts_ms: int, cfg: Config) -> dict:
    """The last qualifying stop inside a source site before ``reading_ts_ms``, from stop events (first and
    last stopped fix, where the vehicle stopped).

    Returns ``{"site_id", "name", "kind", "stop_start", "stop_end", "stop_min"}`` and the stop's index ``_i``, or
    ``{"site_id": None, "reason": no_sites | no_stop_in_site}`` (no stop event can say whether the track
    itself was missing: the case's late-data watermark reads ``track_points``). Only the part of a stop
    inside the lookback window counts, so a stop that began before the window is measured from the window
    start.
    """
    if len(index) == 0:
        return {"site_id": None, "reason": "no_sites"}
    start_ms = np.asarray(start_ms, dtype=np.int64)
    end_ms = np.asarray(end_ms, dtype=np.int64)
    since = reading_ts_ms - int(round(cfg["source.lookback_h"] * 3_600_000))
    s0 = np.maximum(start_ms, since)
    s1 = np.minimum(end_ms, reading_ts_ms)
    sel = s1 >= s0
    la = np.asarray(lat, dtype=float)
    lo = np.asarray(lon, dtype=float)
    site = index.locate(lo, la)
    ok = sel & (site >= 0) & ((s1 - s0) >= cfg["source.min_stop_min"] * 60_000)
    if not ok.any():
        return {"site_id": None, "reason": "no_stop_in_site"}
    cand = np.flatnonzero(ok)
    j = int(cand[np.lexsort((s0[cand], s1[cand]))[-1]])      # the stop that ended last
    s = index.sites[int(site[j])]
    return {"site_id": s.site_id, "name": s.name, "kind": s.kind,
            "stop_start": epoch_ms_to_iso(int(s0[j])), "stop_end": epoch_ms_to_iso(int(s1[j])),
            "stop_min": round((int(s1[j]) - int(s0[j])) / 60_000, 1), "_i": j}
