import orjson
import pytest

from roadwatch.models.registry import RegistryError, load_registry, parse_registry


def base():
    return {"enterprises": [{"enterprise_id": "E1", "name": "甲运输", "goods_vehicles": 10}],
            "vehicles": [{"plate": "苏A12345", "plate_color": 2, "category": "普通货车", "enterprise_id": "E1",
                          "axle_count": 2, "registered_total_kg": 18000.0}],
            "source_sites": [{"site_id": "X1", "name": "砂场", "polygon": [[118.0, 32.0], [118.01, 32.0], [118.01, 32.01]]}],
            "stations": [{"station_id": "S1", "name": "站", "lat": 32.0, "lon": 118.0,
                          "devices": [{"device_id": "D1", "cert_no": "C1", "valid_from": "2026-01-01T00:00:00+08:00",
                                       "valid_to": "2027-01-01T00:00:00+08:00"}]}]}


def test_load_round_trip(tmp_path):
    reg = parse_registry(base())
    p = tmp_path / "r.json"
    reg.dump(p)
    again = load_registry(p)
    assert again.vehicles["苏A12345"].registered_total_kg == 18000.0
    assert again.station_device("S1", "D1")["cert_no"] == "C1"


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: d["vehicles"][0].update(category="卡车"), "category"),
    (lambda d: d["vehicles"][0].update(enterprise_id="E9"), "unknown enterprise_id"),
    (lambda d: d["vehicles"][0].update(axle_count="two"), "wrong type"),
    (lambda d: d["vehicles"][0].update(colour=1), "unknown field"),
    (lambda d: d["vehicles"].append(dict(d["vehicles"][0])), "duplicate plate"),
    (lambda d: d["source_sites"][0].update(polygon=[[1, 2]]), "polygon"),
    (lambda d: d["stations"][0]["devices"][0].update(valid_to="2027-01-01"), "offset"),
])
def test_bad_registry_entries_are_named(mutate, msg):
    d = base()
    mutate(d)
    with pytest.raises(RegistryError, match=msg):
        parse_registry(d)


def test_unreadable_registry(tmp_path):
    with pytest.raises(RegistryError):
        load_registry(tmp_path / "missing.json")
    p = tmp_path / "bad.json"
    p.write_bytes(b"{")
    with pytest.raises(RegistryError, match="not valid JSON"):
        load_registry(p)
