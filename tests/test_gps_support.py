"""Shared helpers for the GPS engine tests (no tests here)."""
from __future__ import annotations

from datetime import datetime

import numpy as np

from roadwatch.models.config import Config
from roadwatch.models.pingbatch import PingColumns
from roadwatch.models.records import BEIJING
from roadwatch.models.registry import parse_registry

PLATE = "粤B12345"


def bj(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    """Beijing wall time → epoch ms."""
    return int(datetime(y, mo, d, h, mi, s, tzinfo=BEIJING).timestamp() * 1000)


T0 = bj(2026, 3, 2, 10, 0, 0)   # a Monday morning, daytime, outside curfew


def ping(ts: int, lat: float = 22.5, lon: float = 114.0, speed: float = 0.0, plate: str = PLATE, **kw) -> dict:
    p = {"plate": plate, "plate_color": 2, "terminal_id": "T1", "ts": int(ts), "lat": lat, "lon": lon,
         "speed_kmh": speed, "heading": 90, "altitude_m": 20.0, "alarm_flags": 0, "status_flags": 3,
         "reupload": False}
    p.update(kw)
    return p


def cols(pings: list[dict]) -> PingColumns:
    n = len(pings)

    def g(k, d=0):
        return [p.get(k, d) for p in pings]
    recv = np.array(g("recv_ts"), np.int64) if any("recv_ts" in p for p in pings) else None
    return PingColumns(
        plate=g("plate"), terminal_id=g("terminal_id", "T1"), plate_color=np.array(g("plate_color", 2), np.int64),
        ts=np.array(g("ts"), np.int64), lat=np.array(g("lat"), float), lon=np.array(g("lon"), float),
        speed_kmh=np.array(g("speed_kmh"), float), heading=np.array(g("heading"), np.int64),
        altitude_m=np.array(g("altitude_m"), float), alarm_flags=np.array(g("alarm_flags"), np.int64),
        status_flags=np.array(g("status_flags", 3), np.int64), reupload=np.array(g("reupload", False), bool),
        driver_id=[None] * n, mileage_km=[None] * n, recv_ts=recv)


def north(lat: float, km: float) -> float:
    """Latitude ``km`` north of ``lat`` along a meridian (haversine of a pure latitude change = R·Δφ)."""
    from roadwatch.geo.distance import EARTH_RADIUS_KM
    return lat + float(np.degrees(km / EARTH_RADIUS_KM))


def registry(vehicles: list[dict] = (), zones: list[dict] = ()):
    vs = []
    for v in vehicles:
        d = {"plate": PLATE, "plate_color": 2, "category": "普通货车", "enterprise_id": "E1"}
        d.update(v)
        vs.append(d)
    return parse_registry({"enterprises": [{"enterprise_id": "E1", "name": "运输公司"}], "vehicles": vs,
                           "zones": list(zones)})


def cfg(**kv) -> Config:
    return Config({k.replace("__", "."): v for k, v in kv.items()})


def square(lon0: float, lat0: float, size: float) -> list:
    return [[lon0, lat0], [lon0 + size, lat0], [lon0 + size, lat0 + size], [lon0, lat0 + size]]
