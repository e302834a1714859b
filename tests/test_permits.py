"""大件运输许可: a passage inside a valid permit's limits and route is "permitted" (no case, the permit number
recorded); outside the limits, the route or the validity it is judged with the reasons (review) or as usual."""
from datetime import timedelta

import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.models.overload import assess
from roadwatch.models.permits import PermitError, PermitIndex, parse_permits
from roadwatch.models.registry import parse_registry

from test_overload_helpers import PLATE, T0, iso, reading, registry_dict

# station S1 of the helpers' registry lies at lat 34.7, lon 113.6
AROUND_S1 = [[113.5, 34.6], [113.7, 34.6], [113.7, 34.8], [113.5, 34.8]]


def permit(**kw):
    p = {"permit_no": "豫大件2025-0001", "plate": PLATE, "valid_from": iso(T0 - timedelta(days=1)),
         "valid_to": iso(T0 + timedelta(days=1)), "max_gross_kg": 80000, "stations": ["S1"]}
    p.update(kw)
    return {k: v for k, v in p.items() if v is not None}


def judge(gross, *permits, **kw):
    data = registry_dict()
    data["permits"] = list(permits)
    return assess(reading(gross, **kw), parse_registry(data), Config(), counters=_NoCounts(),
                  permits=PermitIndex(parse_permits(data)))


class _NoCounts:
    def vehicle_violations(self, *a):
        return 0

    driver_violations = source_site_violations = enterprise_violating_vehicles = vehicle_violations


def test_inside_the_permit_is_permitted_not_a_violation():
    v = judge(60000, permit())
    assert v["action"] == "none" and v["case_id"] is None and v["violation"] is False
    assert v["permitted"] is True and v["permit"]["permit_no"] == "豫大件2025-0001"
    assert v["permit"]["status"] == "permitted" and v["over_limit"] is True      # over Art. 3, but permitted


def test_corridor_route_and_axle_loads():
    v = judge(60000, permit(stations=None, corridor=AROUND_S1))
    assert v["permitted"] is True
    far = [[110.0, 30.0], [110.1, 30.0], [110.1, 30.1]]
    v = judge(60000, permit(stations=None, corridor=far))
    assert v["action"] == "review" and v["review_reason"] == "permit_terms_not_met"
    assert v["permit"]["reasons"] == ["off_permitted_route"]
    v = judge(60000, permit(max_axle_loads_kg=[7000, 10000, 10000, 10000, 10000, 10000]))
    assert v["action"] == "review" and "over the permitted axle loads" in v["permit"]["reasons"][0]


def test_over_the_permitted_mass_or_off_the_route_goes_to_review_with_the_reasons():
    v = judge(85000, permit())
    assert v["action"] == "review" and v["case_id"] and v["permit"]["status"] == "not_covered"
    assert v["permit"]["reasons"] == ["gross 85000 kg over the permitted 80000 kg"]
    v = judge(60000, permit(stations=["S9"]))
    assert v["action"] == "review" and v["permit"]["reasons"] == ["off_permitted_route"]


def test_expired_or_other_plate_permit_is_ignored():
    v = judge(60000, permit(valid_to=iso(T0 - timedelta(seconds=1))))
    assert v["action"] == "fine" and v["permit"] is None and v["fine_yuan"] == 5500
    v = judge(60000, permit(plate="豫B00000"))
    assert v["action"] == "fine" and v["permit"] is None
    # of two permits valid at the time, the one that covers the passage decides
    v = judge(60000, permit(stations=["S9"]), permit(permit_no="豫大件2025-0002"))
    assert v["permitted"] is True and v["permit"]["permit_no"] == "豫大件2025-0002"


@pytest.mark.parametrize("bad,msg", [
    ({"stations": None}, "a route is required"),
    ({"max_gross_kg": -1}, "max_gross_kg"),
    ({"valid_to": iso(T0 - timedelta(days=5))}, "valid_to precedes valid_from"),
    ({"corridor": [[1, 2], [3, 4]], "stations": None}, "corridor"),
    ({"colour": "red"}, "unknown field"),
    ({"valid_from": "2025-01-01T00:00:00"}, "offset"),
])
def test_bad_permits_are_refused_with_the_entry_named(bad, msg):
    with pytest.raises(PermitError) as e:
        parse_permits({"permits": [permit(**bad) if "colour" not in bad else {**permit(), **bad}]})
    assert msg in str(e.value) and "permits[0]" in str(e.value)
    with pytest.raises(PermitError, match="duplicate permit_no"):
        parse_permits({"permits": [permit(), permit()]})


def test_the_registry_files_permits_reach_assess_wim_and_survive_a_dump(tmp_path, monkeypatch, capsysbinary):
    """The permits are read once, with the registry (``Registry.permits``): ``roadwatch assess wim`` judges by
    them, a bad one is refused with exit 2, and a dumped registry keeps them."""
    from roadwatch.models.permits import registry_permits
    from roadwatch.models.registry import load_registry
    from test_overload_cli import line, run_inproc
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    data = registry_dict()
    data["permits"] = [permit()]
    reg = tmp_path / "registry.json"
    reg.write_bytes(orjson.dumps(data))
    code, out, err = run_inproc(monkeypatch, capsysbinary, line(60000) + b"\n", "--registry", str(reg))
    assert code == 0 and out[0]["permitted"] is True and out[0]["permit"]["permit_no"] == "豫大件2025-0001"
    load_registry(reg).dump(tmp_path / "again.json")
    assert [p.permit_no for p in registry_permits(load_registry(tmp_path / "again.json"))] == ["豫大件2025-0001"]
    data["permits"] = [permit(max_gross_kg=-1)]
    reg.write_bytes(orjson.dumps(data))
    code, out, err = run_inproc(monkeypatch, capsysbinary, line(60000) + b"\n", "--registry", str(reg))
    assert code == 2 and "permits[0]" in err and out == []
