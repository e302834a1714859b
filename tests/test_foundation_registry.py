import sys

import pytest
from hypothesis import given, settings, strategies as st

from roadwatch.models import records as R
from roadwatch.models.registry import RegistryError, _build, _shape, load_registry, parse_registry


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
    # each JSON type the fields are checked against: text, whole number, number, true/false, list
    (lambda d: d["vehicles"][0].update(owner=7), "field owner has the wrong type"),
    (lambda d: d["vehicles"][0].update(axle_count=True), "field axle_count has the wrong type"),
    (lambda d: d["vehicles"][0].update(curb_kg=False), "field curb_kg has the wrong type"),
    (lambda d: d["vehicles"][0].update(air_suspension=1), "field air_suspension has the wrong type"),
    (lambda d: d["stations"][0].update(devices="D1"), "field devices has the wrong type"),
    (lambda d: d["vehicles"][0].update(colour=1), "unknown field"),
    (lambda d: d["vehicles"].append(dict(d["vehicles"][0])), "duplicate plate"),
    (lambda d: d["source_sites"][0].update(polygon=[[1, 2]]), "polygon"),
    (lambda d: d["stations"][0]["devices"][0].update(valid_to="2027-01-01"), "offset"),
    # issue 13.6: ids unique per kind, one terminal per vehicle, misspelt top-level keys, ranges
    (lambda d: d["stations"].append(dict(d["stations"][0], devices=[])), "duplicate station_id 'S1'"),
    (lambda d: d["enterprises"].append(dict(d["enterprises"][0])), "duplicate enterprise_id"),
    (lambda d: d["source_sites"].append(dict(d["source_sites"][0])), "duplicate site_id"),
    (lambda d: d.update(drivers=[{"driver_id": "D1", "name": "甲"}, {"driver_id": "D1", "name": "乙"}]),
     "duplicate driver_id"),
    (lambda d: d["stations"].append(dict(d["stations"][0], station_id="S2")), "duplicate device_id 'D1'"),
    (lambda d: (d["vehicles"][0].update(terminal_id="013300000001"),
                d["vehicles"].append(dict(d["vehicles"][0], plate="苏A54321"))), "already belongs to 苏A12345"),
    (lambda d: d.update(vehicle=d.pop("vehicles")), r"unknown top-level key\(s\) \['vehicle'\]"),
    (lambda d: d.update(region=7), "region must be a string"),
    (lambda d: d["vehicles"][0].update(registered_total_kg=1e308), "registered_total_kg must lie in"),
    (lambda d: d["stations"][0].update(lat=91.0), "lat must lie in"),
    (lambda d: d["stations"][0].update(tolerance=-0.5), "tolerance must lie in"),
    (lambda d: d["enterprises"][0].update(goods_vehicles=-1), "goods_vehicles must lie in"),
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


# --- building a record without Faust's per-field descriptor calls (models/registry.py ``_build``) ------------

_VALUES = {str: st.text(max_size=8), int: st.integers(-5, 10 ** 6), float: st.floats(allow_nan=False),
           bool: st.booleans()}
_BUILT_DIRECTLY = (R.Vehicle, R.Driver, R.Enterprise)      # plain fields: stored as given


@st.composite
def _entry(draw, cls):
    """A value, None or nothing for each optional field; a value (or None) for each required one."""
    e = {}
    for name, typ in cls._options.fields.items():
        value = draw(st.none() | _VALUES[typ])
        if name in cls._options.optionalset and draw(st.booleans()):
            continue
        e[name] = value
    return e


@pytest.mark.parametrize("cls", _BUILT_DIRECTLY, ids=lambda c: c.__name__)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_record_built_directly_is_the_one_faust_builds(cls, data):
    """Same fields in the same order, the same defaults for None, equal, the same dict and JSON, as small."""
    assert _shape(cls).defaults is not None        # the direct path is the one taken
    e = data.draw(_entry(cls))
    try:
        built = _build(cls, e, "x")
    except RegistryError as err:          # a wrong-typed (None) field: Faust's record holds the same value
        faust_rec = cls(**e)
        assert "has the wrong type" in str(err)
        assert any(v is None for v in faust_rec.__dict__.values())
        return
    faust_rec = cls(**e)
    assert list(built.__dict__.items()) == list(faust_rec.__dict__.items())
    # the dict shares its keys with the class's other records, as Faust's does: a province's fleet is held in
    # memory for the worker's life (a dict of its own: 832 B a vehicle instead of 280, sys.getsizeof)
    assert sys.getsizeof(built.__dict__) == sys.getsizeof(faust_rec.__dict__)
    assert built == faust_rec and built.asdict() == faust_rec.asdict() and built.dumps() == faust_rec.dumps()
    assert repr(built) == repr(faust_rec)


@pytest.mark.parametrize("cls", (R.Station, R.MobileUnit, R.Zone, R.SourceSite), ids=lambda c: c.__name__)
def test_records_with_coerced_fields_are_built_by_faust(cls):
    assert _shape(cls).defaults is None


def test_a_missing_required_field_is_named():
    d = base()
    del d["vehicles"][0]["plate"]
    with pytest.raises(RegistryError, match=r"vehicles\[0\]: missing required field\(s\) \['plate'\]"):
        parse_registry(d)
