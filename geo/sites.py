"""Cargo-source tracing (货运源头, 一超四罚 target 4): where did an overloaded truck load?

The truck's GPS track in the ``source.lookback_h`` before the weighing is searched for the LAST stop of at
least ``source.min_stop_min`` (speed ≤ ``source.stop_speed_kmh``) inside a registered source-site polygon.
Point-in-polygon is vectorised (shapely 2 STRtree bulk query); run detection is numpy. Pure: arrays in,
dict out.
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


def _excerpt(ts: np.ndarray, lat: np.ndarray, lon: np.ndarray, i0: int) -> dict:
    """GeoJSON LineString of the track from index ``i0`` to the end (the weighing), thinned."""
    idx = np.arange(i0, len(ts))
    if len(idx) > MAX_EXCERPT_POINTS:
        keep = np.unique(np.linspace(0, len(idx) - 1, MAX_EXCERPT_POINTS).round().astype(int))
        idx = idx[keep]
    coords = [[round(float(lon[i]), 6), round(float(lat[i]), 6)] for i in idx]
    if len(coords) == 1:
        coords = coords * 2   # a LineString needs two positions
    return {"type": "Feature",
            "geometry": {"type": "LineString", "coordinates": coords},
            "properties": {"ts_ms": [int(ts[i]) for i in idx]}}


def find_loading_site(index: SiteIndex, ts_ms: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                      speed_kmh: np.ndarray, reading_ts_ms: int, cfg: Config) -> dict:
    """The last qualifying stop inside a source site before ``reading_ts_ms``.

    Returns ``{"site_id", "name", "kind", "stop_start", "stop_end", "stop_min", "track"}`` or
    ``{"site_id": None, "reason": no_sites | no_track | no_stop_in_site}``. A stop lasts from its first to
    its last stopped point inside the same site; only points inside the lookback window count, so a stop
    that began before the window is measured from the window start.
    """
    if len(index) == 0:
        return {"site_id": None, "reason": "no_sites"}
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    since = reading_ts_ms - int(round(cfg["source.lookback_h"] * 3_600_000))
    sel = (ts_ms >= since) & (ts_ms <= reading_ts_ms)
    if not sel.any():
        return {"site_id": None, "reason": "no_track"}
    order = np.argsort(ts_ms[sel], kind="stable")
    t = ts_ms[sel][order]
    la = np.asarray(lat, dtype=float)[sel][order]
    lo = np.asarray(lon, dtype=float)[sel][order]
    sp = np.asarray(speed_kmh, dtype=float)[sel][order]
    site = index.locate(lo, la)
    key = np.where(sp <= cfg["source.stop_speed_kmh"], site, -1)
    # runs of equal key; a run with key ≥ 0 is a stop inside that site
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:] - 1, len(key) - 1]
    min_ms = cfg["source.min_stop_min"] * 60_000
    ok = (key[starts] >= 0) & ((t[ends] - t[starts]) >= min_ms)
    if not ok.any():
        return {"site_id": None, "reason": "no_stop_in_site"}
    j = np.flatnonzero(ok)[-1]
    s0, s1 = int(starts[j]), int(ends[j])
    s = index.sites[int(key[s0])]
    return {"site_id": s.site_id, "name": s.name, "kind": s.kind,
            "stop_start": epoch_ms_to_iso(int(t[s0])), "stop_end": epoch_ms_to_iso(int(t[s1])),
            "stop_min": round((int(t[s1]) - int(t[s0])) / 60_000, 1),
            "track": _excerpt(t, la, lo, s0)}
