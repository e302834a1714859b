"""Intercept tasks, pure model (models/intercept.py) and the registry's road graph (models/registry.py)."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from roadwatch.geo.distance import haversine_km_scalar
from roadwatch.models import intercept as I
from roadwatch.models.config import Config
from roadwatch.models.records import BEIJING, epoch_ms_to_iso, iso_to_epoch_ms
from roadwatch.models.registry import RegistryError, parse_registry

T0 = "2026-03-10T08:00:00+08:00"
T0_MS = iso_to_epoch_ms(T0)
MIN = 60_000


def _station(sid, lat, lon, kind="wim", downstream=()):
    return {"station_id": sid, "name": f"{sid} 站", "lat": lat, "lon": lon, "kind": kind,
            "downstream": [{"station": s, "km": km} for s, km in downstream]}


def graph():
    """A → B (30 km north) → K1 (checkpoint, 20 km further north); A → K2 (checkpoint, 80 km east);
    K4 (checkpoint south of A) → A: upstream of A, never downstream."""
    return parse_registry({"stations": [
        _station("A", 34.70, 113.60, downstream=[("B", 30.0), ("K2", 80.0)]),
        _station("B", 34.97, 113.60, downstream=[("K1", 20.0)]),
        _station("K1", 35.15, 113.60, "checkpoint"),
        _station("K2", 34.70, 114.30, "checkpoint"),
        _station("K4", 34.40, 113.60, "checkpoint", downstream=[("A", 35.0)]),
    ]})


def verdict(station="A", ts_ms=T0_MS, plate="豫A12345", case="C1", action="fine", pct=30.0, kind="truck", axles=6):
    return {"plate": plate, "plate_color": 2, "case_id": case, "station_id": station, "ts": epoch_ms_to_iso(ts_ms),
            "ts_ms": ts_ms, "action": action, "excess_pct": pct, "vehicle_kind": kind, "axle_count": axles,
            "gross_kg": 63000.0, "excess_kg": 14000.0, "fine_yuan": 1000, "duplicate_of": None}


def cfg(**kw):
    return Config({f"intercept.{k}": v for k, v in kw.items()})


# --- registry ------------------------------------------------------------------------------------------------

def test_registry_reads_kind_and_downstream():
    reg = graph()
    assert reg.stations["K1"].kind == "checkpoint" and reg.stations["A"].kind == "wim"
    assert reg.stations["A"].downstream == [{"station": "B", "km": 30.0}, {"station": "K2", "km": 80.0}]
    # a registry without the new fields still loads: every station a WIM point with no neighbours
    old = parse_registry({"stations": [{"station_id": "S", "name": "s", "lat": 30.0, "lon": 110.0}]})
    assert old.stations["S"].kind == "wim" and old.stations["S"].downstream == []


@pytest.mark.parametrize("edge, message", [
    ({"station": "Z", "km": 5}, "unknown station 'Z'"),
    ({"station": "A", "km": 5}, "its own downstream"),
    ({"station": "B", "km": 0}, "km must be"),
    ({"station": "B", "km": -3}, "km must be"),
    ({"station": "B", "km": float("nan")}, "km must be"),
    ({"station": "B", "km": float("inf")}, "km must be"),
    ({"station": "B", "km": True}, "km must be"),
    ({"station": "B"}, "expected"),
    ({"station": "B", "km": 5, "road": "G107"}, "expected"),
])
def test_registry_rejects_bad_edges(edge, message):
    with pytest.raises(RegistryError, match=message):
        parse_registry({"stations": [{"station_id": "A", "name": "a", "lat": 30, "lon": 110, "downstream": [edge]},
                                     {"station_id": "B", "name": "b", "lat": 30.1, "lon": 110}]})


def test_registry_rejects_twice_listed_neighbour_and_bad_kind():
    with pytest.raises(RegistryError, match="listed twice"):
        parse_registry({"stations": [
            {"station_id": "A", "name": "a", "lat": 30, "lon": 110,
             "downstream": [{"station": "B", "km": 5}, {"station": "B", "km": 6}]},
            {"station_id": "B", "name": "b", "lat": 30.1, "lon": 110}]})
    with pytest.raises(RegistryError, match="kind must be one of"):
        parse_registry({"stations": [{"station_id": "A", "name": "a", "lat": 30, "lon": 110, "kind": "toll"}]})


# --- the threshold -------------------------------------------------------------------------------------------

def test_threshold_defaults_to_every_fine_level_case():
    c = Config()
    assert I.over_threshold(verdict(), c)
    assert not I.over_threshold(verdict(action="warning"), c)
    assert not I.over_threshold(verdict(action="review"), c)
    assert not I.over_threshold({**verdict(), "duplicate_of": "P1"}, c)
    assert I.over_threshold(verdict(action="warning"), cfg(actions="fine_or_warning"))
    assert not I.over_threshold(verdict(pct=9.9), cfg(min_excess_pct=10.0))
    assert I.over_threshold(verdict(pct=10.0), cfg(min_excess_pct=10.0))
    assert not I.over_threshold(verdict(kind="train"), cfg(vehicle_kinds="truck"))
    assert not I.over_threshold(verdict(axles=2), cfg(min_axles=3))
    assert not I.over_threshold(verdict(), cfg(enabled=False))


# --- downstream and ETA --------------------------------------------------------------------------------------

def test_road_graph_targets_and_eta_from_the_passage_speed():
    task = I.plan(verdict(), graph(), Config(), passage_speed_kmh=60.0)
    assert task["basis"] == "road_graph" and task["basis_note"] == "no_fix"
    assert [(t["point_id"], t["km"], t["eta_min"]) for t in task["targets"]] == [("K1", 50.0, 50.0),
                                                                                  ("K2", 80.0, 80.0)]
    assert task["targets"][0]["eta"] == epoch_ms_to_iso(T0_MS + 50 * MIN)
    # K4 lies upstream (K4 → A): never a target; the nearest max_targets by ETA; max_eta cuts
    assert [t["point_id"] for t in I.plan(verdict(), graph(), cfg(max_targets=1), passage_speed_kmh=60.0)["targets"]] == ["K1"]
    assert [t["point_id"] for t in I.plan(verdict(), graph(), cfg(max_eta_min=60.0), passage_speed_kmh=60.0)["targets"]] == ["K1"]


def test_slow_or_missing_passage_speed_uses_the_default_speed():
    task = I.plan(verdict(), graph(), cfg(default_speed_kmh=50.0, min_speed_kmh=20.0), passage_speed_kmh=5.0)
    assert task["targets"][0]["eta_min"] == 60.0 and task["speed_kmh"] == 50.0


def test_gps_heading_picks_the_points_ahead():
    # the truck drives east past A: two fixes 1 km apart, the latest one minute after the passage
    lat = [34.70, 34.70]
    lon = [113.60, 113.60 + 1.0 / (111.32 * math.cos(math.radians(34.70)))]
    ts = [T0_MS, T0_MS + MIN]
    task = I.plan(verdict(), graph(), Config(), track=(ts, lat, lon, [72.0, 72.0]), passage_speed_kmh=60.0)
    assert task["basis"] == "gps" and 85 < task["position"]["heading_deg"] < 95
    assert [t["point_id"] for t in task["targets"]] == ["K2"]            # K1 (north) is off the heading
    km = haversine_km_scalar(lat[1], lon[1], 34.70, 114.30) * 1.3
    assert task["targets"][0]["km"] == round(km, 2)
    assert task["targets"][0]["eta_ms"] == ts[1] + round(km / 72.0 * 3_600_000)


def test_gps_without_movement_or_too_old_falls_back_to_the_graph():
    still = ([T0_MS, T0_MS + MIN], [34.70, 34.70], [113.60, 113.60], [0.0, 0.0])
    t = I.plan(verdict(), graph(), Config(), track=still, passage_speed_kmh=60.0)
    assert t["basis"] == "road_graph" and t["basis_note"] == "no_heading"
    old = ([T0_MS - 3_600_000, T0_MS - 3_590_000], [34.60, 34.70], [113.60, 113.60], [60.0, 60.0])
    t = I.plan(verdict(), graph(), cfg(gps_max_age_s=600), track=old, passage_speed_kmh=60.0)
    assert t["basis"] == "road_graph" and t["basis_note"] == "no_fix"


def test_mobile_team_on_the_graph_and_by_heading():
    reg = graph()
    # deployed 2 km from B (attached to B: 30 km of road + 2 km × road factor)
    near_b = I.EnforcementPoint("M1", "mobile", "流动1", 34.97 + 2.0 / 111.2, 113.60)
    t = I.plan(verdict(), reg, Config(), mobile=[near_b], passage_speed_kmh=60.0)
    m = next(x for x in t["targets"] if x["point_id"] == "M1")
    assert m["kind"] == "mobile" and m["km"] == pytest.approx(30.0 + haversine_km_scalar(near_b.lat, near_b.lon,
                                                                                          34.97, 113.60) * 1.3, abs=0.01)
    far = I.EnforcementPoint("M2", "mobile", "流动2", 36.5, 113.6)            # off the graph
    assert "M2" not in [x["point_id"] for x in I.plan(verdict(), reg, Config(), mobile=[far],
                                                      passage_speed_kmh=60.0)["targets"]]



def test_a_detection_by_a_mobile_unit_starts_where_its_deployment_joins_the_graph():
    reg = graph()
    # the unit weighs 3 km from A (attached to A): downstream of A, plus its own offset × road factor
    here = I.EnforcementPoint("M3", "mobile", "流动3", 34.70 - 3.0 / 111.2, 113.60)
    off = haversine_km_scalar(here.lat, here.lon, 34.70, 113.60) * 1.3
    t = I.plan(verdict(station="M3"), reg, Config(), mobile=[here], passage_speed_kmh=60.0)
    assert t["basis"] == "road_graph"
    assert [(x["point_id"], x["km"]) for x in t["targets"]] == [("K1", round(50.0 + off, 2)),
                                                                ("K2", round(80.0 + off, 2))]
    # at its own station node: no offset; off the graph (nothing within reach): no road-graph target
    at_b = I.EnforcementPoint("M4", "mobile", "流动4", 34.97, 113.60, "B")
    assert [(x["point_id"], x["km"]) for x in I.plan(verdict(station="M4"), reg, Config(), mobile=[at_b],
                                                     passage_speed_kmh=60.0)["targets"]] == [("K1", 20.0)]
    far = I.EnforcementPoint("M2", "mobile", "流动2", 36.5, 113.6)
    assert I.plan(verdict(station="M2"), reg, Config(), mobile=[far], passage_speed_kmh=60.0)["targets"] == []


# --- one open task per truck ---------------------------------------------------------------------------------

def test_repeated_passage_updates_the_open_task():
    reg, c = graph(), Config()
    first = I.plan(verdict(), reg, c, passage_speed_kmh=60.0)
    assert first["task_id"] == I.task_id_for("豫A12345", "C1") and first["revision"] == 1
    second = I.plan(verdict(station="B", ts_ms=T0_MS + 30 * MIN, case="C2"), reg, c, open_task=first,
                    passage_speed_kmh=60.0)
    assert second["task_id"] == first["task_id"] and second["revision"] == 2
    assert second["case_ids"] == ["C1", "C2"] and second["station_id"] == "A" and second["last_station_id"] == "B"
    assert second["expires_ms"] == T0_MS + 30 * MIN + 120 * MIN
    assert [(t["point_id"], t["km"]) for t in second["targets"]] == [("K1", 20.0)]
    assert I.plan(verdict(station="B", ts_ms=T0_MS + 30 * MIN, case="C2"), reg, c, open_task=second) == second


def test_expired_or_closed_task_is_not_updated():
    reg = graph()
    first = I.plan(verdict(), reg, cfg(expiry_min=60), passage_speed_kmh=60.0)
    later = I.plan(verdict(ts_ms=T0_MS + 61 * MIN, case="C9"), reg, cfg(expiry_min=60), open_task=first)
    assert later["task_id"] != first["task_id"] and later["revision"] == 1
    assert I.status(first, T0_MS + 59 * MIN) == "open" and I.status(first, T0_MS + 60 * MIN) == "expired"
    closed = {**first, "outcome": {"outcome": "not_found"}}
    assert I.plan(verdict(ts_ms=T0_MS + 5 * MIN, case="C3"), reg, Config(), open_task=closed)["task_id"] != first["task_id"]
    other = I.plan(verdict(plate="豫B00001", case="C4"), reg, Config(), open_task=first)
    assert other["task_id"] != first["task_id"]


# --- the outcome -------------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 10, 2, 0, tzinfo=timezone.utc)      # 10:00 Beijing


def test_outcome_rules():
    task = I.plan(verdict(), graph(), Config(), passage_speed_kmh=60.0)
    ok = I.check_outcome(task, "intercepted", by="张警官", at="2026-03-10T08:47:00+08:00", now=NOW,
                         unloaded_kg=12500, on_the_spot=True, point_id="K1")
    assert ok["unloaded_kg"] == 12500.0 and ok["case_id"] == "C1" and ok["at_ms"] == T0_MS + 47 * MIN
    for kw, code in [(dict(outcome="intercepted", unloaded_kg=None, on_the_spot=True), "bad_input"),
                     (dict(outcome="intercepted", unloaded_kg=-1, on_the_spot=True), "bad_input"),
                     (dict(outcome="intercepted", unloaded_kg=float("nan"), on_the_spot=True), "bad_input"),
                     (dict(outcome="intercepted", unloaded_kg=10, on_the_spot=None), "bad_input"),
                     (dict(outcome="released"), "reason_required"),
                     (dict(outcome="not_found", unloaded_kg=5), "bad_input"),
                     (dict(outcome="escaped"), "bad_input"),
                     (dict(outcome="not_found", by=" "), "bad_input"),
                     (dict(outcome="not_found", at="2026-03-10T07:59:00+08:00"), "too_early"),
                     (dict(outcome="not_found", at=(NOW + timedelta(hours=1)).isoformat()), "bad_input")]:
        args = {"by": "张警官", "at": None, **kw}
        with pytest.raises(I.InterceptError) as e:
            I.check_outcome(task, args.pop("outcome"), now=NOW, **args)
        assert e.value.code == code, kw
    done = {**task, "outcome": ok}
    again = I.check_outcome(done, "intercepted", by="张警官", at=None, now=NOW, unloaded_kg=12500, on_the_spot=True)
    assert again["replayed"] and again["at"] == ok["at"]
    with pytest.raises(I.InterceptError) as e:
        I.check_outcome(done, "not_found", by="李警官", at=None, now=NOW)
    assert e.value.code == "already_recorded"


def test_rates_numerator_denominator_median():
    reg, c = graph(), Config()
    tasks = []
    for i, (sid, out, kg, wait) in enumerate([("A", "intercepted", 10000, 40), ("A", "intercepted", 6000, 60),
                                              ("A", "not_found", None, None), ("B", "released", None, None),
                                              ("B", None, None, None), ("B", "intercepted", 500, 90)]):
        t = I.plan(verdict(station=sid, case=f"C{i}", plate=f"豫A0000{i}", ts_ms=T0_MS + i * MIN), reg, c)
        if out:
            t["outcome"] = {"outcome": out, "unloaded_kg": kg,
                            "at_ms": t["detected_ms"] + (wait or 10) * MIN}
        tasks.append(t)
    # a task of another month never counts
    tasks.append(I.plan(verdict(case="CX", plate="豫A99999", ts_ms=iso_to_epoch_ms("2026-04-01T00:00:00+08:00")),
                        reg, c))
    r = I.interception_rates(tasks, "2026-03", T0_MS + 10 * MIN, 2)
    a, b = r["stations"]
    assert (a["station_id"], a["tasks"], a["interception_rate"]["numerator"], a["interception_rate"]["percent"]) == \
        ("A", 3, 2, 66.67)
    assert a["unloaded_kg"] == 16000.0 and a["median_detect_to_intercept_min"] == 50.0
    assert (b["released"], b["open"], b["intercepted"]) == (1, 1, 1)
    tot = r["total"]
    assert tot["interception_rate"] == {"name": "拦截率", "numerator": 3, "denominator": 6, "percent": 50.0,
                                        "definition": "拦截车辆数 / 布控任务数"}
    assert tot["unloaded_t"] == 16.5 and tot["median_detect_to_intercept_min"] == 60.0
    assert datetime.fromtimestamp(T0_MS / 1000, BEIJING).strftime("%Y-%m") == r["month"]
