"""Synthetic registry: enterprises, vehicles, drivers, cargo-source sites, zones and WIM stations.

Everything is drawn from one seeded ``numpy.random.Generator`` so the same seed gives the same registry
(and, through ``Registry.dump``, the same bytes). Geography is one province's bounding box (Hunan by
default) split into a *traffic area*, where background vehicles drive, and a *reserved corner* holding the
restricted zones, so that only the vehicles a scenario sends there ever enter a zone.

Everything named after a county is placed in it, from real county seat coordinates
(``simulators/data/hunan_county_seats.csv``, source in its header): enterprises' depots, WIM stations
(2–8 km from the seat, on the roads out of town), cargo-source sites (3–15 km) and the restricted zones.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np

from roadwatch.models.records import BEIJING, PLATE_RE, Driver, Enterprise, SourceSite, Station, Vehicle, Zone, format_ts
from roadwatch.models.registry import Registry

from .roadgraph import link_stations


@dataclass(frozen=True)
class Province:
    name: str
    plate_prefix: str           # province character
    city_letters: str           # plate city letters in use
    counties: tuple
    lon: tuple                  # whole-province bounding box
    lat: tuple
    traffic_lon: tuple          # where background vehicles drive (no restricted zones here)
    traffic_lat: tuple
    reserved_lon: tuple         # restricted zones and the simulated expressway live here
    reserved_lat: tuple
    seats_file: str = ""        # county seat coordinates (simulators/data/, with its source)
    zone_counties: tuple = ()   # the county each restricted zone Z001… is placed in (and named after)
    expressway: str = ""        # name of the simulated expressway corridor X001


DATA_DIR = Path(__file__).parent / "data"
# Counties renamed after the seat table's edition (simulators/data/hunan_county_seats.csv): current → table.
ALIASES = {"宁乡市": "宁乡县", "邵东市": "邵东县", "渌口区": "株洲县"}


@lru_cache(maxsize=None)
def county_seats(seats_file: str) -> dict:
    """County name → (lon, lat) of its seat; a county is also found under "<prefecture><county>"."""
    out: dict = {}
    lines = (DATA_DIR / seats_file).read_text(encoding="utf-8").splitlines()
    for row in csv.DictReader(x for x in lines if not x.startswith("#")):
        pt = (float(row["lon"]), float(row["lat"]))
        out[row["county"]] = pt
        out[row["prefecture"] + row["county"]] = pt
    for new, old in ALIASES.items():
        if old in out:
            out[new] = out[old]
    return out


def seat(prov: "Province", county: str) -> tuple:
    try:
        return county_seats(prov.seats_file)[county]
    except KeyError:
        raise ValueError(f"no seat coordinates for county {county!r} in {prov.seats_file}") from None


def near(prov: "Province", county: str, rng: np.random.Generator, km_lo: float, km_hi: float,
         box: tuple | None = None) -> tuple:
    """A point ``km_lo``–``km_hi`` km from the county seat in a random direction (inside ``box`` =
    (lon range, lat range) when given, by retrying the direction)."""
    lon0, lat0 = seat(prov, county)
    for _ in range(32):
        b, km = rng.uniform(0, 360), rng.uniform(km_lo, km_hi)
        dlat = km * np.cos(np.radians(b)) / 111.32
        dlon = km * np.sin(np.radians(b)) / (111.32 * np.cos(np.radians(lat0)))
        lon, lat = lon0 + dlon, lat0 + dlat
        if box is None or (box[0][0] <= lon <= box[0][1] and box[1][0] <= lat <= box[1][1]):
            return float(lon), float(lat)
    return float(np.clip(lon0, *box[0])), float(np.clip(lat0, *box[1]))


# Changsha's districts first (most enterprises), then one county per prefecture. Stations cycle through
# them, so a province with 20 stations has one in each; the restricted zones sit in Yueyang's north
# (云溪区: the chemical industry park; 临湘市; 君山区), away from where background traffic drives.
HUNAN = Province(
    "湖南省", "湘", "ABCDEFGHJKLMNU",
    ("芙蓉区", "天心区", "岳麓区", "开福区", "雨花区", "望城区", "长沙县", "浏阳市", "宁乡市", "渌口区",
     "湘潭县", "衡阳县", "邵东市", "岳阳县", "常德市鼎城区", "益阳市赫山区", "郴州市北湖区", "永州市冷水滩区",
     "怀化市鹤城区", "娄底市娄星区"),
    lon=(108.8, 114.2), lat=(24.7, 30.1),
    traffic_lon=(109.3, 113.9), traffic_lat=(25.3, 29.2),
    reserved_lon=(112.95, 114.2), reserved_lat=(29.35, 29.9),
    seats_file="hunan_county_seats.csv",
    zone_counties=("云溪区", "临湘市", "君山区"),
    expressway="G56杭瑞高速岳阳段(模拟)",
)

# Category mix of a typical prefecture fleet (两客一危 plus ordinary goods vehicles).
CATEGORY_MIX = (("普通货车", 0.60), ("客运班车", 0.14), ("旅游包车", 0.09), ("危险货物运输车辆", 0.17))

# Goods-vehicle configurations: (kind, axles, single_drive_axle, Art. 3 limit kg [62号令 Art. 3, docs/legal-basis.md §1],
# share of goods vehicles). The limit is used only to size the registered mass and target loads; the
# overload rules own the legal computation.
TRUCK_CONFIGS = (
    ("truck", 2, False, 18000, 0.30),
    ("truck", 3, False, 25000, 0.12),
    ("train", 3, False, 27000, 0.05),
    ("truck", 4, False, 31000, 0.13),
    ("train", 4, False, 36000, 0.07),
    ("train", 5, False, 43000, 0.10),
    ("train", 6, False, 49000, 0.20),
    ("train", 6, True, 46000, 0.03),
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰涛明超秀霞平刚桂英华建国志红文斌辉鹏"
PLATE_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
DIGITS = "0123456789"
SITE_KINDS = ("coal", "cement", "sand", "steel", "station")
SITE_NAMES = {"coal": "煤矿", "cement": "水泥厂", "sand": "砂石场", "steel": "钢材市场", "station": "货运站"}


def _name(rng: np.random.Generator) -> str:
    return SURNAMES[rng.integers(len(SURNAMES))] + "".join(GIVEN[i] for i in rng.integers(len(GIVEN), size=2))


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(DIGITS[i] for i in rng.integers(10, size=n))


def make_plate(rng: np.random.Generator, prov: Province = HUNAN) -> str:
    """A plate matching ``PLATE_RE``: province, city letter, five serial characters (mostly digits)."""
    city = prov.city_letters[rng.integers(len(prov.city_letters))]
    serial = "".join(PLATE_CHARS[i] if rng.random() < 0.3 else DIGITS[i % 10]
                     for i in rng.integers(len(PLATE_CHARS), size=5))
    return f"{prov.plate_prefix}{city}{serial}"


def square(lon: float, lat: float, half_m: float) -> list:
    """Closed square ring of half-width ``half_m`` metres around a point, as [[lon, lat], …]."""
    dlat = half_m / 111_320.0
    dlon = half_m / (111_320.0 * np.cos(np.radians(lat)))
    r = lambda v: round(float(v), 6)  # noqa: E731
    return [[r(lon - dlon), r(lat - dlat)], [r(lon + dlon), r(lat - dlat)], [r(lon + dlon), r(lat + dlat)],
            [r(lon - dlon), r(lat + dlat)], [r(lon - dlon), r(lat - dlat)]]


def corridor(a: tuple, b: tuple, half_width_m: float) -> list:
    """Closed ring of a straight corridor of half-width ``half_width_m`` from point a to point b."""
    (lon1, lat1), (lon2, lat2) = a, b
    kx = 111_320.0 * np.cos(np.radians((lat1 + lat2) / 2))
    dx, dy = (lon2 - lon1) * kx, (lat2 - lat1) * 111_320.0
    n = np.hypot(dx, dy)
    ox, oy = -dy / n * half_width_m / kx, dx / n * half_width_m / 111_320.0
    r = lambda v: round(float(v), 6)  # noqa: E731
    return [[r(lon1 + ox), r(lat1 + oy)], [r(lon2 + ox), r(lat2 + oy)], [r(lon2 - ox), r(lat2 - oy)],
            [r(lon1 - ox), r(lat1 - oy)], [r(lon1 + ox), r(lat1 + oy)]]


def generate_fleet(vehicles: int, stations: int, seed: int, *, prov: Province = HUNAN,
                   enterprises: int | None = None, sites: int | None = None,
                   expired_devices: int = 1, not_in_network: float = 0.02,
                   as_of: datetime | None = None, station_counties: tuple | None = None,
                   checkpoints: tuple = ()) -> Registry:
    """A complete, valid registry. ``expired_devices`` stations get one device whose calibration
    certificate expired before ``as_of`` (default 2025-03-01); the others are valid for a year around it.
    Stations cycle through ``station_counties`` (default the province's list); the ids in ``checkpoints``
    are 超限检测站 (kind ``checkpoint``: officers stop trucks there) instead of 非现场执法点. The stations are
    linked into a road graph (simulators/roadgraph.py)."""
    if vehicles < 0 or stations < 0:
        raise ValueError("vehicles and stations must be ≥ 0")
    rng = np.random.default_rng(seed)
    as_of = as_of or datetime(2025, 3, 1, tzinfo=BEIJING)
    reg = Registry(region=prov.name)
    n_ent = enterprises if enterprises is not None else max(1, vehicles // 25)
    # enterprises are registered in the counties that have a station (all of them from 20 stations on),
    # so a small fleet's trucks live where they can be weighed
    n_cty = min(len(prov.counties), stations) if stations > 0 else len(prov.counties)
    for i in range(n_ent):
        county = prov.counties[rng.integers(n_cty)]
        eid = f"E{i + 1:05d}"
        reg.enterprises[eid] = Enterprise(
            enterprise_id=eid, name=f"{county}{_name(rng)[:2]}运输有限公司", county=county,
            licence_no=f"湘交运管许可{_digits(rng, 12)}号", goods_vehicles=0)
    ent_ids = list(reg.enterprises)

    cats = [c for c, _ in CATEGORY_MIX]
    probs = np.array([p for _, p in CATEGORY_MIX])
    cat_draw = rng.choice(len(cats), size=vehicles, p=probs / probs.sum())
    cfg_p = np.array([c[4] for c in TRUCK_CONFIGS])
    plates: set[str] = set()
    for i in range(vehicles):
        cat = cats[cat_draw[i]]
        plate = make_plate(rng, prov)
        while plate in plates:
            plate = make_plate(rng, prov)
        plates.add(plate)
        eid = ent_ids[rng.integers(len(ent_ids))]
        ent = reg.enterprises[eid]
        did = f"D{i + 1:06d}"
        reg.drivers[did] = Driver(driver_id=did, name=_name(rng), enterprise_id=eid,
                                  qualification_no=f"43{_digits(rng, 16)}")
        common = dict(plate=plate, plate_color=2, category=cat, enterprise_id=eid, owner=ent.name,
                      transport_cert_no=f"湘交运管{_digits(rng, 12)}号", county=ent.county,
                      driver_id=did, terminal_id=f"0{_digits(rng, 11)}",
                      in_network=bool(rng.random() >= not_in_network))
        if cat in ("客运班车", "旅游包车"):
            long_distance = cat == "客运班车" and rng.random() < 0.6
            v = Vehicle(**common, vehicle_kind="bus", axle_count=2 if rng.random() < 0.8 else 3,
                        registered_total_kg=float(rng.choice([16000, 18000, 25000])), rated_load_kg=0.0,
                        curb_kg=float(rng.choice([11000, 12500, 14000])),
                        long_distance=long_distance,
                        route_km=float(round(rng.uniform(120, 600) if long_distance else rng.uniform(20, 95))))
        else:
            kind, axles, sda, limit, _ = TRUCK_CONFIGS[rng.choice(len(TRUCK_CONFIGS), p=cfg_p / cfg_p.sum())]
            curb = round(limit * rng.uniform(0.30, 0.40), -2)
            ent.goods_vehicles += 1
            v = Vehicle(**common, vehicle_kind=kind, axle_count=axles, registered_total_kg=float(limit),
                        rated_load_kg=float(limit - curb - 130), curb_kg=float(curb),
                        single_tyre_axles=0, air_suspension=bool(axles in (3, 4) and kind == "truck"
                                                                  and rng.random() < 0.2),
                        single_drive_axle=sda)
        reg.vehicles[plate] = v

    box = (prov.traffic_lon, prov.traffic_lat)
    for i in range(sites if sites is not None else max(2, stations)):
        county = prov.counties[i % len(prov.counties)]
        lon, lat = near(prov, county, rng, 3.0, 15.0, box)
        sid = f"S{i + 1:04d}"
        kind = SITE_KINDS[rng.integers(len(SITE_KINDS))]
        reg.source_sites[sid] = SourceSite(site_id=sid, name=f"{county}{SITE_NAMES[kind]}货运源头{i + 1}",
                                           kind=kind, polygon=square(lon, lat, 150.0))

    for i, county in enumerate(prov.zone_counties):
        lon, lat = seat(prov, county)
        zid = f"Z{i + 1:03d}"
        dg_only = i == 0
        reg.zones[zid] = Zone(zone_id=zid, name=f"{county}{'危化品车辆' if dg_only else ''}禁行区",
                              kind="restricted", polygon=square(lon, lat, 2000.0),
                              categories=["危险货物运输车辆"] if dg_only else [])
    rl, ra = prov.reserved_lon, prov.reserved_lat
    x_lat = ra[0] + 0.05          # the corridor runs west–east, south of the zones
    reg.zones["X001"] = Zone(zone_id="X001", name=prov.expressway, kind="expressway",
                             polygon=corridor((rl[0], x_lat), (rl[1], x_lat), 60.0))

    counties = tuple(station_counties) if station_counties else prov.counties
    for c in counties:
        seat(prov, c)                             # a county without seat coordinates cannot hold a station
    for i in range(stations):
        county = counties[i % len(counties)]
        lon, lat = near(prov, county, rng, 2.0, 8.0, box)
        stid = f"W{i + 1:03d}"
        n_dev = 2 if i < expired_devices else int(rng.integers(1, 3))
        devices = []
        for j in range(n_dev):
            expired = i < expired_devices and j == 0
            valid_from = as_of - timedelta(days=int(rng.integers(400, 700)) if expired else int(rng.integers(30, 300)))
            valid_to = valid_from + timedelta(days=365)
            devices.append({"device_id": f"{stid}-D{j + 1}", "cert_no": f"湘计检字{_digits(rng, 10)}",
                            "valid_from": format_ts(valid_from), "valid_to": format_ts(valid_to)})
        _approve(devices, seed, i, stid)
        acc = str(rng.choice(["2", "5", "5", "5", "10"]))
        checkpoint = stid in checkpoints
        reg.stations[stid] = Station(station_id=stid,
                                     name=f"{county}{'超限检测站' if checkpoint else '治超非现场检测点'}{i + 1}",
                                     lat=round(float(lat), 6), lon=round(float(lon), 6),
                                     lanes=int(rng.integers(2, 5)), accuracy_class=acc, devices=devices,
                                     county=county, kind="checkpoint" if checkpoint else "wim")
    unknown = sorted(set(checkpoints) - set(reg.stations))
    if unknown:
        raise ValueError(f"checkpoints {unknown} are not among the generated stations")
    link_stations(list(reg.stations.values()), seed)
    for v in reg.vehicles.values():
        assert PLATE_RE.match(v.plate), v.plate
    return reg


ROADS = ("G107", "G207", "G319", "G320", "S308", "S311", "S206", "G240")


def _approve(devices: list[dict], seed: int, i: int, stid: str) -> None:
    """Road, direction, type and the 行政处罚法 Art. 41 approval records (legal and technical review,
    signage, public announcement), all dated before the station's first calibration certificate so every
    reading inside a certificate's validity is from an approved device. A separate generator keeps the
    rest of the registry the same bytes as before these fields existed."""
    arng = np.random.default_rng([seed, 41, i])
    first = min(datetime.fromisoformat(d["valid_from"]) for d in devices)
    base = first - timedelta(days=int(arng.integers(20, 90)))
    road = ROADS[int(arng.integers(len(ROADS)))]
    km = int(arng.integers(5, 900))
    year = base.year
    n = int(arng.integers(1, 90))
    for j, dev in enumerate(devices):
        dev.update(device_type="fixed", road=f"{road} K{km}+{int(arng.integers(0, 1000)):03d}",
                   direction=("上行", "下行")[j % 2])
        dev["approval"] = {
            "legal_review": {"date": format_ts(base), "reference": f"湘交法审〔{year}〕{n}号",
                             "reviewer": "市交通运输局法制科"},
            "technical_review": {"date": format_ts(base + timedelta(days=3)),
                                 "reference": f"湘交技审〔{year}〕{n}号", "reviewer": "市公路事务中心"},
            "signage": {"date": format_ts(base + timedelta(days=10)), "reference": f"{stid}-标志验收-{j + 1}",
                        "reviewer": "市交通运输综合行政执法支队"},
            "announcement": {"date": format_ts(base + timedelta(days=15)),
                             "reference": f"关于公路治超非现场执法点位的通告（{year}年第{n}号）",
                             "reviewer": "市交通运输局"},
        }


def full_approval(date: str, ref: str = "TEST") -> dict:
    """Every Art. 41 item on file at ``date`` (ISO with offset): for hand-built test and bench registries."""
    return {item: {"date": date, "reference": f"{ref}-{item}", "reviewer": "审核单位"}
            for item in ("legal_review", "technical_review", "signage", "announcement")}


def valid_device(station: Station, at: datetime) -> dict | None:
    """First device of the station whose certificate is valid at ``at`` (None if all expired)."""
    for dev in station.devices:
        if datetime.fromisoformat(dev["valid_from"]) <= at <= datetime.fromisoformat(dev["valid_to"]):
            return dev
    return None


def expired_device(station: Station, at: datetime) -> dict | None:
    for dev in station.devices:
        if not datetime.fromisoformat(dev["valid_from"]) <= at <= datetime.fromisoformat(dev["valid_to"]):
            return dev
    return None
