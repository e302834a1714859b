"""Fleet/registry generator: determinism, validity, geography, calibration certificates."""
from collections import Counter
from datetime import datetime

from roadwatch.models.records import BEIJING, CATEGORIES, PLATE_RE
from roadwatch.models.registry import load_registry
from roadwatch.simulators.fleet import HUNAN, SITE_KINDS, county_seats, generate_fleet, valid_device
from roadwatch.simulators.gps_terminal import haversine_km


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    generate_fleet(300, 5, seed=42).dump(a)
    generate_fleet(300, 5, seed=42).dump(b)
    generate_fleet(300, 5, seed=43).dump(c)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_registry_loads_and_every_entry_is_valid(tmp_path):
    path = tmp_path / "r.json"
    generate_fleet(1000, 8, seed=7).dump(path)
    reg = load_registry(path)              # the registry loader validates every field
    assert len(reg.vehicles) == 1000 and len(reg.stations) == 8
    cats = Counter(v.category for v in reg.vehicles.values())
    assert set(cats) == set(CATEGORIES)
    for v in reg.vehicles.values():
        assert PLATE_RE.match(v.plate)
        assert v.driver_id in reg.drivers and v.enterprise_id in reg.enterprises
        assert v.terminal_id.isdigit() and len(v.terminal_id) == 12
        if v.category in ("客运班车", "旅游包车"):
            assert v.vehicle_kind == "bus" and v.route_km > 0
            assert v.long_distance == (v.route_km > 100)       # long routes only, by construction
        else:
            assert v.vehicle_kind in ("truck", "train") and v.curb_kg < v.registered_total_kg
            assert v.rated_load_kg > 0
    # Art. 66 denominator: goods vehicles per enterprise are counted, not invented
    goods = Counter(v.enterprise_id for v in reg.vehicles.values() if v.vehicle_kind != "bus")
    for e in reg.enterprises.values():
        assert e.goods_vehicles == goods.get(e.enterprise_id, 0)
    assert sum(v.in_network for v in reg.vehicles.values()) > 0.9 * len(reg.vehicles)


def test_geography_inside_the_province_and_china():
    reg = generate_fleet(200, 10, seed=3)
    pts = [(s.lon, s.lat) for s in reg.stations.values()]
    for poly in [s.polygon for s in reg.source_sites.values()] + [z.polygon for z in reg.zones.values()]:
        assert poly[0] == poly[-1]
        pts += [tuple(p) for p in poly]
    for lon, lat in pts:
        assert HUNAN.lon[0] <= lon <= HUNAN.lon[1] and HUNAN.lat[0] <= lat <= HUNAN.lat[1]
        assert 73.55 <= lon <= 135.0833 and 3.85 <= lat <= 53.55
    # zones (restricted and the expressway) sit in the reserved corner, north of background traffic
    for z in reg.zones.values():
        assert all(p[1] > HUNAN.traffic_lat[1] + 0.1 for p in z.polygon)


def _km(a, b):
    return float(haversine_km(a[0], a[1], b[0], b[1]))


def test_everything_named_after_a_county_is_in_it():
    """Stations, cargo-source sites, zones and enterprises' vehicles are placed at the real seat of the
    county in their name (simulators/data/hunan_county_seats.csv): no 芙蓉区 station 200 km from Changsha."""
    seats = county_seats(HUNAN.seats_file)
    assert seats["芙蓉区"] == (113.032539, 28.185389) and seats["长沙市芙蓉区"] == seats["芙蓉区"]
    assert seats["宁乡市"] == seats["宁乡县"]                        # renamed since the table's edition
    reg = generate_fleet(300, 20, seed=4)
    assert {s.county for s in reg.stations.values()} == set(HUNAN.counties)   # one station per county
    for s in reg.stations.values():
        assert s.name.startswith(s.county) and 2.0 - 0.01 <= _km((s.lon, s.lat), seats[s.county]) <= 8.0 + 0.01
    for site in reg.source_sites.values():
        county = next(c for c in HUNAN.counties if site.name.startswith(c))
        centre = (sum(p[0] for p in site.polygon[:-1]) / 4, sum(p[1] for p in site.polygon[:-1]) / 4)
        assert _km(centre, seats[county]) <= 15.5
        assert site.name.isascii() is False and not any(k in site.name for k in SITE_KINDS)   # Chinese names
    for z in reg.zones.values():
        if z.kind == "restricted":
            county = next(c for c in HUNAN.zone_counties if z.name.startswith(c))
            centre = (sum(p[0] for p in z.polygon[:-1]) / 4, sum(p[1] for p in z.polygon[:-1]) / 4)
            assert _km(centre, seats[county]) < 0.1


def test_expired_calibration_only_where_asked():
    at = datetime(2025, 3, 1, tzinfo=BEIJING)
    reg = generate_fleet(10, 4, seed=5, expired_devices=1, as_of=at)
    st = list(reg.stations.values())
    expired = [d for s in st for d in s.devices
               if not datetime.fromisoformat(d["valid_from"]) <= at <= datetime.fromisoformat(d["valid_to"])]
    assert [d["device_id"] for d in expired] == ["W001-D1"]
    assert all(valid_device(s, at) is not None for s in st)          # every station can still weigh
    assert all(d["cert_no"] for s in st for d in s.devices)
