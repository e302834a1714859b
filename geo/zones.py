"""Zone membership for whole batches: restricted zones (geofence alerts) and expressway zones (speed limits).

Zones come from the registry (``models.records.Zone``: ``kind`` restricted | expressway, ``polygon``
[[lon, lat], …], optional ``categories``). Membership is computed once per batch with one shapely 2
STRtree query over all points (``predicate="within"``: a point on the boundary is outside), never per ping.
Restricted-zone membership is returned as bit words (64 zones per uint64 word) so the engine can keep
per-vehicle membership in a fixed-size array and find enter/exit edges with bit operations.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import shapely
from shapely import STRtree

from roadwatch.models.records import Zone


def _polygon(z: Zone):
    poly = shapely.Polygon([(float(x), float(y)) for x, y in z.polygon])
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
    return poly


class ZoneIndex:
    """Point-in-zone lookups for batches of points (lon, lat in degrees)."""

    def __init__(self, zones: Iterable[Zone] = ()):
        zones = sorted(zones, key=lambda z: z.zone_id)      # stable bit positions across restarts
        self.restricted: list[Zone] = [z for z in zones if z.kind == "restricted"]
        self.expressway: list[Zone] = [z for z in zones if z.kind == "expressway"]
        self.restricted_ids = [z.zone_id for z in self.restricted]
        self.words = max(1, (len(self.restricted) + 63) // 64)
        self._r = _Layer([_polygon(z) for z in self.restricted])
        self._e = _Layer([_polygon(z) for z in self.expressway])
        self._cat_masks: dict[str, np.ndarray] = {}

    @classmethod
    def from_registry(cls, registry) -> "ZoneIndex":
        return cls(registry.zones.values() if registry is not None else ())

    def __bool__(self) -> bool:
        return bool(self.restricted or self.expressway)

    def lookup(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(restricted bit words (n, words) uint64, on-expressway bool (n,)) for n points."""
        n = len(lon)
        bits = np.zeros((n, self.words), dtype=np.uint64)
        on_exp = np.zeros(n, dtype=bool)
        if n == 0 or not self:
            return bits, on_exp
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        pi, zi = self._r.pairs(lon, lat)
        if len(pi):
            np.bitwise_or.at(bits, (pi, zi // 64), np.left_shift(np.uint64(1), (zi % 64).astype(np.uint64)))
        pi, _ = self._e.pairs(lon, lat)
        on_exp[pi] = True
        return bits, on_exp

    def category_mask(self, category: str) -> np.ndarray:
        """Bit words of the restricted zones that apply to ``category`` (empty ``categories`` = all)."""
        m = self._cat_masks.get(category)
        if m is None:
            m = np.zeros(self.words, dtype=np.uint64)
            for i, z in enumerate(self.restricted):
                if not z.categories or category in z.categories:
                    m[i // 64] |= np.uint64(1) << np.uint64(i % 64)
            self._cat_masks[category] = m
        return m

    def zone_ids(self, word_bits: np.ndarray) -> list[str]:
        """Zone ids whose bits are set in one row of bit words."""
        out = []
        for w, word in enumerate(word_bits):
            word = int(word)
            while word:
                low = word & -word
                out.append(self.restricted_ids[w * 64 + low.bit_length() - 1])
                word ^= low
        return out


_TREE_ABOVE = 32
_EMPTY = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


class _Layer:
    """Polygons of one kind; ``pairs`` → (point index, polygon index) for every point inside a polygon."""

    def __init__(self, polys: list):
        self.polys = polys
        for p in polys:
            shapely.prepare(p)
        self.bounds = np.array([p.bounds for p in polys], dtype=np.float64).reshape(-1, 4)
        self.tree = STRtree(polys) if len(polys) > _TREE_ABOVE else None
        if polys:
            self.total = (self.bounds[:, 0].min(), self.bounds[:, 1].min(),
                          self.bounds[:, 2].max(), self.bounds[:, 3].max())

    def pairs(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.polys:
            return _EMPTY
        x0, y0, x1, y1 = self.total
        cand = np.flatnonzero((lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1))
        if len(cand) == 0:
            return _EMPTY
        if self.tree is not None:
            pts = shapely.points(np.column_stack((lon[cand], lat[cand])))
            pi, zi = self.tree.query(pts, predicate="within")
            return cand[pi], zi.astype(np.int64)
        out_p, out_z = [], []
        cl, ca = lon[cand], lat[cand]
        for i, poly in enumerate(self.polys):
            bx0, by0, bx1, by1 = self.bounds[i]
            sub = np.flatnonzero((cl >= bx0) & (cl <= bx1) & (ca >= by0) & (ca <= by1))
            if len(sub) == 0:
                continue
            sub = sub[shapely.contains_xy(poly, cl[sub], ca[sub])]
            if len(sub):
                out_p.append(cand[sub])
                out_z.append(np.full(len(sub), i, dtype=np.int64))
        if not out_p:
            return _EMPTY
        return np.concatenate(out_p), np.concatenate(out_z)
