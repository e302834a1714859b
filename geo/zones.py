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

from models.records import Zone


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
        self._r_tree = STRtree([_polygon(z) for z in self.restricted]) if self.restricted else None
        self._e_tree = STRtree([_polygon(z) for z in self.expressway]) if self.expressway else None
        self._cat_masks: dict[str, np.ndarray] = {}

    @classmethod
    def from_registry(cls, registry) -> "ZoneIndex":
        return cls(registry.zones.values() if registry is not None else ())

    def __bool__(self) -> bool:
        return bool(self.restricted or self.expressway)

    @staticmethod
    def _points(lon: np.ndarray, lat: np.ndarray):
        return shapely.points(np.column_stack((np.asarray(lon, dtype=np.float64),
                                               np.asarray(lat, dtype=np.float64))))

    def lookup(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(restricted bit words (n, words) uint64, on-expressway bool (n,)) for n points."""
        n = len(lon)
        bits = np.zeros((n, self.words), dtype=np.uint64)
        on_exp = np.zeros(n, dtype=bool)
        if n == 0 or not self:
            return bits, on_exp
        pts = self._points(lon, lat)
        if self._r_tree is not None:
            pi, zi = self._r_tree.query(pts, predicate="within")
            if len(pi):
                np.bitwise_or.at(bits, (pi, zi // 64), np.left_shift(np.uint64(1), (zi % 64).astype(np.uint64)))
        if self._e_tree is not None:
            pi, _ = self._e_tree.query(pts, predicate="within")
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
