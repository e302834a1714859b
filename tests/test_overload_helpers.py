"""Shared builders for the overload / evidence / sites tests (no tests here)."""
from __future__ import annotations

from datetime import datetime, timedelta

from roadwatch.models.records import BEIJING, parse_wim_reading
from roadwatch.models.registry import parse_registry
from roadwatch.simulators.fleet import full_approval

T0 = datetime(2025, 3, 1, 10, 0, 0, tzinfo=BEIJING)
PLATE = "豫A12345"
SQUARE = [[113.50, 34.60], [113.52, 34.60], [113.52, 34.62], [113.50, 34.62], [113.50, 34.60]]


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def registry_dict(*, vehicles=None, goods_vehicles=30, station_tolerance=None, tolerance_source="",
                  valid_from=T0 - timedelta(days=300), valid_to=T0 + timedelta(days=800), cert_no="JD-2024-001",
                  drivers=None, approval=None) -> dict:
    dev = {"device_id": "W1", "cert_no": cert_no,
           "valid_from": iso(valid_from) if valid_from else None, "valid_to": iso(valid_to) if valid_to else None,
           "approval": approval if approval is not None else full_approval(iso(T0 - timedelta(days=400)))}
    return {
        "region": "test",
        "enterprises": [{"enterprise_id": "E1", "name": "运输公司", "licence_no": "豫交运管许可字410100001",
                         "goods_vehicles": goods_vehicles}],
        "drivers": drivers if drivers is not None else [
            {"driver_id": "D1", "name": "张三", "enterprise_id": "E1", "qualification_no": "410100000001"},
            {"driver_id": "D2", "name": "李四", "enterprise_id": "E1", "qualification_no": "410100000002"}],
        "vehicles": vehicles if vehicles is not None else [vehicle()],
        "source_sites": [{"site_id": "Q1", "name": "砂石料场", "kind": "sand", "polygon": SQUARE}],
        "stations": [{"station_id": "S1", "name": "G107 治超点", "lat": 34.7, "lon": 113.6, "accuracy_class": "5",
                      "tolerance": station_tolerance, "tolerance_source": tolerance_source, "devices": [dev]}],
    }


def vehicle(plate=PLATE, **kw) -> dict:
    v = {"plate": plate, "plate_color": 2, "category": "普通货车", "enterprise_id": "E1", "owner": "王五",
         "transport_cert_no": "豫410100123456", "vehicle_kind": "train", "axle_count": 6,
         "registered_total_kg": 49000.0, "rated_load_kg": 32000.0, "curb_kg": 15000.0, "driver_id": "D1"}
    v.update(kw)
    return v


def registry(**kw):
    return parse_registry(registry_dict(**kw))


def reading(gross: float, *, plate=PLATE, ts: datetime = T0, axles=6, kind="train", confidence=0.95,
            device="W1", station="S1", images=None, spacings=None, loads=None, single_drive_axle=False):
    if loads is None:
        first = 7000.0
        rest = (gross - first) / (axles - 1)
        loads = [first] + [rest] * (axles - 1)
    if spacings is None:
        spacings = [3.5] * (axles - 1)     # far apart: no axle groups unless a test wants them
    d = {"station_id": station, "lane": 1, "ts": iso(ts), "plate": plate, "plate_color": 2,
         "plate_confidence": confidence, "vehicle_kind": kind, "axle_count": axles, "axle_loads_kg": loads,
         "axle_spacings_m": spacings, "gross_kg": gross, "speed_kmh": 62.0, "device_id": device,
         "single_drive_axle": single_drive_axle}
    if images is not None:
        d["images"] = images
    return parse_wim_reading(d)
