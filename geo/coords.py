"""Map datums: WGS-84 (what JT/T 808 terminals report) and GCJ-02 (what most Chinese web tile sources use).

Positions are stored and judged in WGS-84 everywhere in roadwatch. A GCJ-02 base map (``web.tile_crs =
"gcj02"``) needs the published, deterministic WGS-84 → GCJ-02 offset applied *for display only*, or every
vehicle sits 100–700 m off its road. The inverse has no closed form; ``gcj02_to_wgs84`` iterates the forward
transform (converges to < 1e-7° in a few steps), which the console uses to turn a rectangle drawn on such a
map back into WGS-84 for the area search. Outside mainland China's rough bounding box there is no offset.

The console's browser code (static/app.js ``wgsToGcj``) implements the same formula; tests compare both on
the same published value pairs.
"""
from __future__ import annotations

import math

_A = 6378245.0                   # Krasovsky 1940 semi-major axis, as in the published algorithm
_EE = 0.00669342162296594323     # its first eccentricity squared


def outside_china(lat: float, lon: float) -> bool:
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _offset(lat: float, lon: float) -> tuple[float, float]:
    x, y = lon - 105.0, lat - 35.0
    common = (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x)) + common
            + (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
            + (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x)) + common
            + (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
            + (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0)
    rad = lat / 180.0 * math.pi
    magic = 1.0 - _EE * math.sin(rad) ** 2
    sq = math.sqrt(magic)
    dlat = dlat * 180.0 / ((_A * (1.0 - _EE)) / (magic * sq) * math.pi)
    dlon = dlon * 180.0 / (_A / sq * math.cos(rad) * math.pi)
    return dlat, dlon


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """(lat, lon) in WGS-84 → (lat, lon) in GCJ-02."""
    if outside_china(lat, lon):
        return lat, lon
    dlat, dlon = _offset(lat, lon)
    return lat + dlat, lon + dlon


def gcj02_to_wgs84(lat: float, lon: float, tol_deg: float = 1e-8) -> tuple[float, float]:
    """(lat, lon) in GCJ-02 → WGS-84 by fixed-point iteration of the forward transform."""
    if outside_china(lat, lon):
        return lat, lon
    wlat, wlon = lat, lon
    for _ in range(30):
        glat, glon = wgs84_to_gcj02(wlat, wlon)
        elat, elon = glat - lat, glon - lon
        wlat, wlon = wlat - elat, wlon - elon
        if max(abs(elat), abs(elon)) < tol_deg:
            break
    return wlat, wlon
