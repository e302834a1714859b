"""The replayed feed of the fault-injection tests, its batch oracle, and the archive read-back.

The feed is built here (not with ``simulators/``) so the reliability proofs do not move when the simulator
changes. It is deterministic: a few hundred vehicles of three categories over a Beijing midnight, with
overspeed, curfew, drift, an offline silence followed by a blind-area re-upload, plus WIM readings with
fines, warnings, reviews, in-tolerance passes and duplicate readings of one passage.

The oracle is the batch path on the same input: ``streams.assess_gps.run_pings`` once per partition (the
stream keeps one engine per partition, so the event-time watermark is per partition) and
``models.overload.assess`` with in-memory sources in input order. The tests in this module check the
feed really exercises each behaviour, and that the oracle itself does not depend on how the pings are cut
into batches (the stream cuts them differently: that invariance is what makes the comparison exact).
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import orjson

from roadwatch.models.config import Config
from roadwatch.models.overload import MemoryCounters, MemoryPassages, assess
from roadwatch.models.pingbatch import encode_batch
from roadwatch.models.records import Enterprise, Station, Vehicle, parse_wim_reading
from roadwatch.models.registry import Registry
from roadwatch.simulators.fleet import full_approval
from roadwatch.streams.assess_gps import run_pings
from roadwatch.streams.batcher import partition_for

BJ = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 9, 23, 50, tzinfo=BJ)          # feed start: 10 min before a Beijing midnight
T0_MS = int(T0.timestamp() * 1000)
STEP_MS = 20_000
STEPS = 150                                             # 50 min of pings per vehicle
PARTITIONS = 4
# Config shared by the worker (ROADWATCH_SET) and the oracle: curfew moved into the feed's window.
OVERRIDES = {"curfew.start": "00:10", "curfew.end": "05:00", "stream.partitions": PARTITIONS}
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"


def override_string(extra: dict | None = None) -> str:
    """``ROADWATCH_SET`` for the worker: the same values as ``oracle_config``."""
    items = {**OVERRIDES, **(extra or {})}
    return ";".join(f"{k}={orjson.dumps(v).decode()}" for k, v in items.items())


def oracle_config() -> Config:
    return Config(dict(OVERRIDES))


def plate_of(i: int) -> str:
    return f"{PROVINCES[i % len(PROVINCES)]}{LETTERS[(i // 7) % len(LETTERS)]}{i:05d}"


def build_registry(n: int = 300) -> Registry:
    reg = Registry()
    reg.enterprises["E1"] = Enterprise(enterprise_id="E1", name="甲运输", goods_vehicles=n)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            v = Vehicle(plate=plate_of(i), plate_color=2, category="危险货物运输车辆", enterprise_id="E1",
                        axle_count=3, registered_total_kg=25000.0, rated_load_kg=14000.0, curb_kg=11000.0)
        elif kind == 1:
            v = Vehicle(plate=plate_of(i), plate_color=1, category="客运班车", enterprise_id="E1",
                        vehicle_kind="bus", long_distance=(i % 2 == 1), route_km=350.0)
        else:
            v = Vehicle(plate=plate_of(i), plate_color=2, category="普通货车", enterprise_id="E1",
                        axle_count=2, registered_total_kg=18000.0, rated_load_kg=10000.0, curb_kg=8000.0,
                        driver_id=f"D{i}")
        reg.vehicles[v.plate] = v
    for s in range(3):
        reg.stations[f"S{s}"] = Station(
            station_id=f"S{s}", name=f"治超站{s}", lat=32.0 + s, lon=118.0,
            devices=[{"device_id": f"S{s}-D1", "cert_no": f"JJG907-{s}", "valid_from": "2020-01-01T00:00:00+08:00",
                      "valid_to": "2099-01-01T00:00:00+08:00",
                      "approval": full_approval("2020-01-01T00:00:00+08:00")}])
    return reg


def build_gps_feed(n: int = 300, seed: int = 7) -> list[dict]:
    """Pings in arrival order (time order; a blind-area backlog arrives after its silence)."""
    rnd = random.Random(seed)
    by_step: list[list[dict]] = [[] for _ in range(STEPS + 1)]
    for i in range(n):
        plate, kind = plate_of(i), i % 3
        lat, lon = 30.0 + (i % 50) * 0.05, 115.0 + (i // 50) * 0.1
        base_speed = 50.0 + rnd.random() * 10
        silent = range(60, 120) if i % 25 == 4 else range(0)        # 20 min without a ping (offline)
        backlog: list[dict] = []
        for k in range(STEPS):
            speed = base_speed
            if kind == 0 and i % 4 == 0 and 30 <= k < 40:
                speed = 75.0 + k % 3                                 # dangerous goods > 60 km/h for 3 min
            if kind == 2 and i % 5 == 0 and 90 <= k < 96:
                speed = 92.0                                         # truck > 80 km/h for 100 s
            lat += speed * STEP_MS / 3_600_000 / 111.0
            p = {"plate": plate, "plate_color": 1 if kind == 1 else 2, "terminal_id": f"0133{i:08d}",
                 "ts": T0_MS + k * STEP_MS, "lat": round(lat, 6), "lon": round(lon, 6), "speed_kmh": speed,
                 "heading": 0, "altitude_m": 20.0, "alarm_flags": 0, "status_flags": 3, "reupload": False}
            if i % 17 == 3 and k in (50, 51):
                p["lat"] = round(lat + 0.4, 6)                       # two drift points (≈ 44 km jump)
            if k in silent:
                if k % 3 == 0:
                    backlog.append(dict(p, reupload=True))           # stored by the terminal, sent later
                continue
            if silent and k == silent.stop:
                by_step[k].extend(backlog)
            by_step[k].append(p)
    out = []
    for step in by_step:
        out.extend(step)
    return out


def gps_records(pings: list[dict], max_pings: int = 250, per_step: int = 300) -> list[tuple[int, bytes, bytes]]:
    """Kafka records (partition, key, value) in arrival order: every ``per_step`` pings the open batch of
    each partition is cut, as the gateway's batcher does on its timer."""
    out: list[tuple[int, bytes, bytes]] = []
    open_: dict[int, list[dict]] = {}

    def cut(p: int) -> None:
        if open_.get(p):
            out.append((p, open_[p][0]["plate"].encode(), encode_batch(open_[p])))
            open_[p] = []
    for n, ping in enumerate(pings, 1):
        p = partition_for(ping["plate"], PARTITIONS)
        open_.setdefault(p, []).append(ping)
        if len(open_[p]) >= max_pings:
            cut(p)
        if n % per_step == 0:
            for q in list(open_):
                cut(q)
    for q in list(open_):
        cut(q)
    return out


def build_wim_feed(registry: Registry, seed: int = 11) -> list[dict]:
    """WIM readings in arrival order: 2- and 3-axle trucks, some over the limit, some read twice."""
    rnd = random.Random(seed)
    trucks = [p for p, v in registry.vehicles.items() if v.category in ("普通货车", "危险货物运输车辆")]
    out = []
    for k in range(90):
        plate = trucks[(k * 7) % len(trucks)]
        v = registry.vehicles[plate]
        axles = v.axle_count
        limit = 18000 if axles == 2 else 25000
        # below, within tolerance, 950 kg over (a warning for 2 axles: 5 % of 18 t < 950 ≤ 1 t), fines
        gross = [limit * 0.8, limit * 1.03, limit + 950, limit * 1.2, limit * 1.5][k % 5]
        gross = float(round(gross + (rnd.randint(0, 40) if k % 5 == 2 else rnd.randint(0, 300))))
        loads = [round(gross / axles, 1)] * (axles - 1)
        loads.append(round(gross - sum(loads), 1))
        st = f"S{k % 3}"
        ts = T0 + timedelta(seconds=30 * k)
        r = {"station_id": st, "lane": 1, "ts": ts.isoformat(), "plate": plate, "plate_color": 2,
             "plate_confidence": 0.8 if k % 11 == 5 else 0.97, "vehicle_kind": "truck", "axle_count": axles,
             "axle_loads_kg": loads, "axle_spacings_m": [4.0] * (axles - 1), "gross_kg": gross,
             "speed_kmh": 60.0, "device_id": f"{st}-D1", "reading_id": f"R{k}"}
        out.append(r)
        if k % 6 == 0:                                            # the same passage read again 40 s later
            out.append(dict(r, ts=(ts + timedelta(seconds=40)).isoformat(), reading_id=f"R{k}b"))
    return out


# --- oracle -------------------------------------------------------------------------------------------

def oracle_gps(pings: list[dict], registry: Registry, cfg: Config, batch: int = 2000):
    """(alerts {alert_id: end_ts}, day rows {(plate, day): row}) of the batch path, one engine per partition."""
    alerts: dict[str, str | None] = {}
    rows: dict[tuple, dict] = {}
    for part in range(PARTITIONS):
        lines = [orjson.dumps(p) for p in pings if partition_for(p["plate"], PARTITIONS) == part]
        a, r, errors = run_pings(lines, registry, None, cfg, batch=batch)
        assert errors == [], errors[:3]
        for x in a:
            alerts[x["alert_id"]] = x["end_ts"]
        for x in r:
            rows[(x["plate"], x["day"])] = {k: x[k] for k in DAY_FIELDS}
    return alerts, rows


def oracle_wim(readings: list[dict], registry: Registry, cfg: Config):
    """(verdicts {passage_id: action} of distinct passages, cases {case_id: (action, excess_kg, fine)},
    duplicates) from ``assess`` with in-memory sources, in input order."""
    counters, passages = MemoryCounters(), MemoryPassages()
    verdicts, cases, dups = {}, {}, 0
    for r in readings:
        v = assess(parse_wim_reading(orjson.dumps(r)), registry, cfg, counters=counters, passages=passages)
        counters.record(v)
        if v["duplicate_of"]:
            dups += 1
            continue
        verdicts[v["passage_id"]] = v["action"]
        if v["case_id"]:
            cases[v["case_id"]] = (v["action"], float(v["excess_kg"]), int(v["fine_yuan"]))
    return verdicts, cases, dups


DAY_FIELDS = ("pings", "qualified", "km_total", "km_incomplete", "drift_points", "overspeed_count", "fatigue_s",
              "curfew_events", "offline_events")


def archive_state(conn):
    """What the worker wrote, in the oracle's shapes: gps alerts, day rows, verdicts, cases, overload alerts."""
    alerts = {r["alert_id"]: r["end_ts"] for r in conn.execute("SELECT alert_id, end_ts FROM alerts WHERE type != 'overload'")}
    rows = {(r["plate"], r["day"]): {k: r[k] for k in DAY_FIELDS} for r in conn.execute("SELECT * FROM vehicle_day")}
    verdicts = {r["passage_id"]: r["action"] for r in conn.execute("SELECT passage_id, action FROM wim_verdicts")}
    cases = {r["case_id"]: (r["action"], float(r["excess_kg"]), int(r["fine_yuan"]))
             for r in conn.execute("SELECT case_id, action, excess_kg, fine_yuan FROM cases")}
    overload = {r["alert_id"] for r in conn.execute("SELECT alert_id FROM alerts WHERE type = 'overload'")}
    return alerts, rows, verdicts, cases, overload


def rows_equal(a: dict, b: dict, tol: float = 1e-6) -> list[str]:
    """Differences between two day-row maps (integers exact, floats within ``tol``)."""
    diffs = [f"missing {k}" for k in a.keys() - b.keys()] + [f"extra {k}" for k in b.keys() - a.keys()]
    for k in a.keys() & b.keys():
        for f in DAY_FIELDS:
            x, y = a[k][f], b[k][f]
            if (abs(x - y) > tol) if isinstance(x, float) or isinstance(y, float) else x != y:
                diffs.append(f"{k} {f}: oracle {x} archive {y}")
    return diffs


# --- the feed is what the proofs claim it is -----------------------------------------------------------

def test_feed_exercises_every_behaviour():
    reg = build_registry()
    pings = build_gps_feed()
    alerts, rows = oracle_gps(pings, reg, oracle_config())
    # counted independently from the feed definition: 25 dangerous-goods vehicles speed (i%12==0 of 300),
    # 20 trucks speed (i%15==2 ... i%3==2 and i%5==0), curfew for the 50 long-distance buses (i%6==1 and odd)
    dg = sum(1 for i in range(300) if i % 3 == 0 and i % 4 == 0)
    trucks = sum(1 for i in range(300) if i % 3 == 2 and i % 5 == 0)
    curfew_buses = sum(1 for i in range(300) if i % 3 == 1 and i % 2 == 1)
    offline = sum(1 for i in range(300) if i % 25 == 4)
    drift = sum(1 for i in range(300) if i % 17 == 3)
    days = {d for _, d in rows}
    assert days == {"2026-11-09", "2026-11-10"}
    total = {f: sum(r[f] for r in rows.values()) for f in DAY_FIELDS}
    assert total["overspeed_count"] == dg + trucks
    assert total["curfew_events"] == curfew_buses
    assert total["offline_events"] == offline
    assert total["drift_points"] >= drift
    assert total["pings"] == len(pings)


def test_wim_feed_has_fines_warnings_reviews_and_duplicates():
    reg = build_registry()
    readings = build_wim_feed(reg)
    verdicts, cases, dups = oracle_wim(readings, reg, oracle_config())
    actions = sorted(a for a, _, _ in cases.values())
    assert dups == 15                                   # every 6th of 90 readings is read twice
    assert len(verdicts) == 90
    assert {"fine", "warning", "review"} <= set(actions)
    assert any(a == "none" for a in verdicts.values())


def test_oracle_does_not_depend_on_batch_cuts():
    reg = build_registry(90)
    pings = build_gps_feed(90)
    cfg = oracle_config()
    a1, r1 = oracle_gps(pings, reg, cfg, batch=37)
    a2, r2 = oracle_gps(pings, reg, cfg, batch=5000)
    assert a1 == a2
    assert rows_equal(r1, r2) == []


def test_records_keep_each_partition_in_arrival_order():
    pings = build_gps_feed(60)
    recs = gps_records(pings, max_pings=50, per_step=97)
    from roadwatch.models.pingbatch import columns_to_pings, decode_batch
    for part in range(PARTITIONS):
        got = [(p["plate"], p["ts"]) for q, _, v in recs if q == part for p in columns_to_pings(decode_batch(v))]
        want = [(p["plate"], p["ts"]) for p in pings if partition_for(p["plate"], PARTITIONS) == part]
        assert got == want
