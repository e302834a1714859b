"""Haversine distances and batch zone membership."""
from __future__ import annotations

import math

import numpy as np

from roadwatch.geo.distance import EARTH_RADIUS_KM, haversine_km, haversine_km_scalar
from roadwatch.geo.zones import ZoneIndex
from roadwatch.models.records import Zone
from test_gps_support import square


def test_meridian_distance_is_radius_times_angle():
    # 1° of latitude = R·π/180
    assert math.isclose(float(haversine_km(22.0, 114.0, 23.0, 114.0)), EARTH_RADIUS_KM * math.pi / 180, rel_tol=1e-12)


def test_equator_longitude_and_known_city_pair():
    assert math.isclose(float(haversine_km(0.0, 0.0, 0.0, 90.0)), EARTH_RADIUS_KM * math.pi / 2, rel_tol=1e-12)
    # Beijing (39.9042, 116.4074) – Shanghai (31.2304, 121.4737): ~1 067 km great-circle
    d = haversine_km_scalar(39.9042, 116.4074, 31.2304, 121.4737)
    assert 1060 < d < 1075


def test_vectorised_matches_scalar_and_zero():
    rng = np.random.default_rng(3)
    la1, lo1, la2, lo2 = (rng.uniform(20, 40, 50), rng.uniform(100, 120, 50),
                          rng.uniform(20, 40, 50), rng.uniform(100, 120, 50))
    v = haversine_km(la1, lo1, la2, lo2)
    for i in range(50):
        a, b = math.radians(la1[i]), math.radians(la2[i])
        h = math.sin((b - a) / 2) ** 2 + math.cos(a) * math.cos(b) * math.sin(math.radians(lo2[i] - lo1[i]) / 2) ** 2
        assert math.isclose(v[i], 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h)), rel_tol=1e-9)
    assert haversine_km_scalar(22.5, 114.0, 22.5, 114.0) == 0.0


def zone(zid, kind, poly, cats=()):
    return Zone(zone_id=zid, name=zid, kind=kind, polygon=poly, categories=list(cats))


def test_membership_bits_expressway_and_boundary():
    zi = ZoneIndex([zone("R1", "restricted", square(114.0, 22.0, 0.1)),
                    zone("R2", "restricted", square(114.05, 22.05, 0.1)),
                    zone("X1", "expressway", square(113.0, 22.0, 0.5))])
    lon = np.array([114.02, 114.07, 114.12, 113.2, 114.0, 115.0])
    lat = np.array([22.02, 22.07, 22.12, 22.2, 22.05, 22.0])
    bits, exp = zi.lookup(lon, lat)
    assert zi.restricted_ids == ["R1", "R2"]
    assert [zi.zone_ids(b) for b in bits] == [["R1"], ["R1", "R2"], ["R2"], [], [], []]  # 114.0 is on R1's edge
    assert exp.tolist() == [False, False, False, True, False, False]


def test_category_filter_and_many_zones_use_the_tree_path():
    zs = [zone(f"R{i:03d}", "restricted", square(100 + i * 0.2, 30.0, 0.1), cats=["危险货物运输车辆"] if i % 2 else [])
          for i in range(70)]
    zi = ZoneIndex(zs)
    assert zi.words == 2
    lon = np.array([100 + i * 0.2 + 0.05 for i in range(70)])
    bits, _ = zi.lookup(lon, np.full(70, 30.05))
    assert [zi.zone_ids(b) for b in bits] == [[f"R{i:03d}"] for i in range(70)]
    m = zi.category_mask("普通货车")
    masked = bits & m
    assert [bool(zi.zone_ids(b)) for b in masked] == [i % 2 == 0 for i in range(70)]
    assert all(zi.zone_ids(b) for b in bits & zi.category_mask("危险货物运输车辆"))


def test_no_zones_is_cheap_and_empty():
    zi = ZoneIndex([])
    assert not zi
    bits, exp = zi.lookup(np.array([114.0]), np.array([22.0]))
    assert bits.shape == (1, 1) and not bits.any() and not exp.any()
