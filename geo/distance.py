"""Great-circle distances (haversine on a sphere), vectorised and scalar.

The 总里程 of the monthly report is a sum of straight-line distances between consecutive qualified,
non-drift points (docs/legal-basis.md §6, project decision: "sphere distance"). One radius everywhere keeps the
vectorised engine and any pure-Python check byte-for-byte comparable.
"""
from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius R1


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Element-wise distance in km between (lat1, lon1) and (lat2, lon2), degrees; broadcasts."""
    p1 = np.radians(lat1)
    p2 = np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.subtract(lon2, lon1))
    a = np.sin(dphi * 0.5) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb * 0.5) ** 2
    return (2.0 * EARTH_RADIUS_KM) * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def haversine_km_scalar(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Same formula on Python floats (the rare per-point paths: gap filling, tests)."""
    return float(haversine_km(np.float64(lat1), np.float64(lon1), np.float64(lat2), np.float64(lon2)))
