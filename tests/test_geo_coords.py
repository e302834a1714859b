"""WGS-84 → GCJ-02 display offset: published value pairs, the inverse, and no offset outside China."""
import pytest

from roadwatch.geo.coords import gcj02_to_wgs84, outside_china, wgs84_to_gcj02

# (wgs lat, wgs lon, gcj lat, gcj lon): the pairs published with the widely used open implementations of the
# algorithm (Shanghai, Shenzhen, Beijing)
PAIRS = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),
]


@pytest.mark.parametrize("wlat,wlon,glat,glon", PAIRS)
def test_forward_matches_published_pairs(wlat, wlon, glat, glon):
    lat, lon = wgs84_to_gcj02(wlat, wlon)
    assert lat == pytest.approx(glat, abs=1e-9) and lon == pytest.approx(glon, abs=1e-9)


@pytest.mark.parametrize("wlat,wlon,glat,glon", PAIRS)
def test_inverse_returns_the_wgs84_point(wlat, wlon, glat, glon):
    lat, lon = gcj02_to_wgs84(glat, glon)
    assert lat == pytest.approx(wlat, abs=1e-7) and lon == pytest.approx(wlon, abs=1e-7)


def test_offset_in_hunan_is_hundreds_of_metres():
    from roadwatch.geo.distance import haversine_km
    lat, lon = wgs84_to_gcj02(28.19, 112.98)          # Changsha
    assert 0.1 < haversine_km(28.19, 112.98, lat, lon) < 0.8


def test_no_offset_outside_china():
    assert outside_china(48.85, 2.35)
    assert wgs84_to_gcj02(48.85, 2.35) == (48.85, 2.35)
    assert gcj02_to_wgs84(48.85, 2.35) == (48.85, 2.35)
