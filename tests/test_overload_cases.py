"""streams/cases.py: idempotent case records, restart-proof counters/passages, workflow, driver cards, tracks."""
from datetime import timedelta

import numpy as np
import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.models.overload import MemoryCounters, assess, trace_source_site
from roadwatch.streams.archive import close_all, open_archive
from roadwatch.models.evidence import verify_tree
from roadwatch.streams.cases import (ArchiveCounters, ArchiveDrivers, ArchiveTrack, ArchiveTracks,
                           CaseActionError, CaseStore)
from test_overload_helpers import PLATE, T0, ms, reading, registry, vehicle


@pytest.fixture
def conn(archive_target):
    c = open_archive(archive_target)
    yield c
    close_all()


def worker_step(conn, r, reg=None, cfg=None, **record_kw):
    """What the stream worker (streams/wim.py) does per reading: assess with archive sources, then record."""
    reg = reg or registry()
    store = CaseStore(conn, Config())
    v = assess(r, reg, cfg or Config(), counters=ArchiveCounters(conn), track=ArchiveTracks(conn),
               driver=ArchiveDrivers(conn), passages=store)
    store.record(v, reading=r if record_kw else None, **record_kw)
    return v


def count(conn, table):
    return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_record_is_idempotent(conn):
    v = worker_step(conn, reading(60000))
    store = CaseStore(conn, Config())
    assert store.record(v) is False                 # second time: no new case
    again = worker_step(conn, reading(60000))       # replayed reading
    assert again["case_id"] == v["case_id"] and again["counters"]["vehicle"] == 1
    assert count(conn, "cases") == 1 and count(conn, "wim_verdicts") == 1
    row = store.get(v["case_id"])
    assert row["status"] == "detected" and row["violation"] == 1 and row["fine_yuan"] == 5500
    assert row["driver_id"] == "D1" and row["enterprise_id"] == "E1"


def test_not_over_limit_stores_verdict_but_no_case(conn):
    v = worker_step(conn, reading(40000))
    assert v["case_id"] is None and count(conn, "wim_verdicts") == 1 and count(conn, "cases") == 0


def test_duplicates_across_a_restart(conn, archive_target):
    first = worker_step(conn, reading(60000))
    close_all()                                     # worker restarts: in-memory state gone
    conn2 = open_archive(archive_target)
    dup = worker_step(conn2, reading(60500, ts=T0 + timedelta(seconds=90)))
    assert dup["duplicate_of"] == first["passage_id"] and dup["case_id"] is None
    assert count(conn2, "cases") == 1 and count(conn2, "wim_verdicts") == 1


def test_archive_counters_match_memory_counters(conn):
    mem = MemoryCounters()
    reg = registry()
    for i in range(4):
        r = reading(60000, ts=T0 + timedelta(days=30 * i))
        v = worker_step(conn, r, reg)
        m = assess(r, reg, Config(), counters=mem)
        mem.record(m)
        assert v["counters"]["vehicle"] == m["counters"]["vehicle"] == i + 1
    assert "escalations" not in v and "escalations" not in m    # derived from decided cases, never stamped
    assert v["counters"]["driver"] is None                      # D1 is the registry's (presumed) driver


def test_dismissed_cases_leave_the_counters(conn):
    vs = [worker_step(conn, reading(60000, ts=T0 + timedelta(days=i))) for i in range(3)]
    store = CaseStore(conn, Config())
    store.act(vs[0]["case_id"], "review", "op1")
    store.act(vs[0]["case_id"], "dismiss", "op1", "车牌识别错误")
    v = worker_step(conn, reading(60000, ts=T0 + timedelta(days=3)))
    assert v["counters"]["vehicle"] == 3           # 2 remaining + the current one


def test_workflow_transitions(conn):
    v = worker_step(conn, reading(60000))
    store, cid = CaseStore(conn, Config()), v["case_id"]

    def act(*args, **kw):
        return store.act(*args, now=T0, **kw)

    with pytest.raises(CaseActionError) as err:
        act(cid, "notify", "op1")              # 立案 first
    assert err.value.code == "bad_transition" and "allowed now" in err.value.detail
    with pytest.raises(CaseActionError) as err:
        act(cid, "approve", "op1")
    assert err.value.code == "bad_action"
    with pytest.raises(CaseActionError) as err:
        act("C-nope", "review", "op1")
    assert err.value.code == "not_found"
    assert act(cid, "review", "op1")["status"] == "reviewed"
    with pytest.raises(CaseActionError) as err:
        act(cid, "dismiss", "op1", "  ")      # dismiss needs a reason
    assert err.value.code == "reason_required"
    out = act(cid, "confirm", "op2")
    assert out["status"] == "confirmed" and out["notify_due"] == (T0 + timedelta(days=5)).isoformat()
    assert act(cid, "file", "op2")["status"] == "filed"
    assert act(cid, "notify", "op2")["status"] == "notified"
    with pytest.raises(CaseActionError):
        act(cid, "dismiss", "op1", "too late")
    assert act(cid, "review", "op1")["replayed"] is True   # an act already in the history: no-op
    assert [a["action"] for a in store.actions(cid)] == ["review", "confirm", "file", "notify"]
    assert store.get(cid)["status"] == "notified"


def test_notify_deadline_honours_the_config_it_is_given(conn):
    v = worker_step(conn, reading(60000))
    out = CaseStore(conn, Config({"notify.days_after_review": 9})).act(v["case_id"], "confirm", "op", now=T0)
    assert out["notify_due"] == (T0 + timedelta(days=9)).isoformat()


def test_confirming_a_review_case_makes_it_count(conn):
    v = worker_step(conn, reading(60000, confidence=0.5))
    assert v["action"] == "review"
    store = CaseStore(conn, Config())
    assert store.get(v["case_id"])["violation"] == 0
    store.act(v["case_id"], "review", "op1")
    store.act(v["case_id"], "confirm", "op1")
    row = store.get(v["case_id"])
    assert row["violation"] == 1 and row["action"] == "fine" and row["fine_yuan"] == 5500
    nxt = worker_step(conn, reading(60000, ts=T0 + timedelta(days=1)))
    assert nxt["counters"]["vehicle"] == 2


def test_enterprise_counter_distinct_plates(conn):
    plates = ["豫A10001", "豫A10002", "豫A10003", "豫A10004"]
    reg = registry(vehicles=[vehicle(plate=p, driver_id="") for p in plates], goods_vehicles=30)
    for i, p in enumerate(plates[:3]):
        worker_step(conn, reading(60000, plate=p, ts=T0 + timedelta(hours=i)), reg)
        worker_step(conn, reading(60000, plate=p, ts=T0 + timedelta(hours=i, minutes=30)), reg)
    third = worker_step(conn, reading(60000, plate=plates[2], ts=T0 + timedelta(hours=5)), reg)
    assert third["counters"]["enterprise_violating_vehicles"] == 3
    fourth = worker_step(conn, reading(60000, plate=plates[3], ts=T0 + timedelta(hours=6)), reg)
    assert fourth["counters"]["enterprise_violating_vehicles"] == 4


def test_driver_cards(conn):
    d = ArchiveDrivers(conn)
    d.record_driver_event(PLATE, (T0 - timedelta(hours=3)).isoformat(), "login", "D2")
    assert d.active_driver(PLATE, ms(T0)) == "D2"
    assert d.active_driver(PLATE, ms(T0 - timedelta(hours=4))) is None
    d.record_driver_event(PLATE, (T0 - timedelta(hours=1)).isoformat(), "logout", "D2")
    assert d.active_driver(PLATE, ms(T0)) is None
    with pytest.raises(ValueError):
        d.record_driver_event(PLATE, T0.isoformat(), "swipe", "D2")
    d.record_driver_event(PLATE, (T0 - timedelta(minutes=10)).isoformat(), "login", "D1")
    v = worker_step(conn, reading(60000))
    assert v["driver"]["id"] == "D1" and v["driver"]["source"] == "ic_card"


def test_stop_events_feed_source_tracing_and_prune_with_the_track(conn):
    tr = ArchiveTracks(conn)
    ts = [ms(T0 - timedelta(hours=2) + timedelta(minutes=i)) for i in range(20)]
    tr.record_points(PLATE, ts, [34.61] * 20, [113.51] * 20, [0.0] * 20)
    tr.record_points(PLATE, ts[:5], [34.61] * 5, [113.51] * 5, [0.0] * 5)      # re-sent: no duplicates
    t, la, lo, sp = tr.points(PLATE, ts[0], ts[-1])
    assert len(t) == 20 and t.dtype == np.int64 and np.all(np.diff(t) > 0)
    # points alone are no stop: the search reads the engine's stop events
    assert trace_source_site(registry(), Config(), tr, PLATE, ms(T0)) == {"site_id": None, "reason": "no_stop_in_site"}
    stop = (ts[0], ts[-1], 34.61, 113.51, ts[-1] + 60_000)
    tr.record_stops(PLATE, [stop])
    tr.record_stops(PLATE, [stop])                                               # re-sent: no duplicates
    st, en, sla, slo = tr.stops(PLATE, ts[0], ms(T0))
    assert list(st) == [ts[0]] and list(en) == [ts[-1]] and st.dtype == np.int64
    v = worker_step(conn, reading(60000))
    assert v["source_site"]["site_id"] == "Q1" and v["source_site"]["stop_min"] == 19.0
    row = CaseStore(conn, Config()).get(v["case_id"])
    assert row["source_site_id"] == "Q1"
    assert tr.prune_track_points(ts[10]) == 10
    assert len(tr.points(PLATE, 0, ms(T0))[0]) == 10
    assert len(tr.stops(PLATE, 0, ms(T0))[0]) == 1                             # ended after the cut: kept
    tr.prune_track_points(ts[-1] + 1)
    assert len(tr.stops(PLATE, 0, ms(T0))[0]) == 0


def test_record_writes_the_evidence_package_once(conn, tmp_path, monkeypatch):
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    data = tmp_path / "var"
    kw = {"evidence_dir": data / "evidence", "data_dir": data, "chain_id": "p3"}
    v = worker_step(conn, reading(60000), **kw)
    row = CaseStore(conn, Config()).get(v["case_id"])
    assert row["evidence_path"] == str(data / "evidence" / v["case_id"])
    manifest = orjson.loads(row["manifest"])
    assert manifest["chain"]["chain_id"] == "p3" and manifest["targets"]["vehicle"]["owner"] == "王五"
    worker_step(conn, reading(60000), **kw)                                   # replay
    worker_step(conn, reading(60000, ts=T0 + timedelta(seconds=30)), **kw)    # duplicate reading
    worker_step(conn, reading(40000, ts=T0 + timedelta(hours=1)), **kw)       # not over: no package
    assert len((data / "evidence" / "chain-p3.jsonl").read_bytes().splitlines()) == 1
    assert verify_tree(data / "evidence", data / "keys" / "trusted") == {}
    CaseStore(conn, Config()).act(v["case_id"], "review", "op")
    CaseStore(conn, Config()).act(v["case_id"], "confirm", "op")


def test_worker_alias():
    assert ArchiveTrack is ArchiveTracks


def test_indexed_counters_agree_with_brute_force(conn):
    """MemoryCounters (bisect) and ArchiveCounters (SQL) against a plain loop over random cases."""
    import random

    from roadwatch.models.overload import MemoryCounters
    from roadwatch.models.records import epoch_ms_to_iso
    rnd = random.Random(7)
    plates, drivers, sites = ["豫A10001", "豫A10002", "豫A10003"], ["D1", "D2", None], ["Q1", None]
    cases = []
    mem, store = MemoryCounters(), CaseStore(conn, Config())
    for i in range(120):
        t = ms(T0) + rnd.randrange(0, 400) * 86_400_000 + rnd.randrange(0, 86_400) * 1000
        v = {"case_id": f"C{i:04d}", "violation": rnd.random() < 0.8, "ts_ms": t, "plate": rnd.choice(plates),
             "driver": {"id": rnd.choice(drivers), "source": rnd.choice(["ic_card", "registry"])}, "enterprise_id": "E1", "source_site": {"site_id": rnd.choice(sites)},
             "passage_id": f"P{i}", "station_id": "S1", "action": "fine", "over_limit": True, "excess_kg": 5000.0,
             "fine_yuan": 2500, "ts": epoch_ms_to_iso(t)}
        cases.append(v)
        mem.record(v)
        store.record(v)
    arch = ArchiveCounters(conn)
    for _ in range(200):
        until = ms(T0) + rnd.randrange(0, 420) * 86_400_000 + rnd.randrange(0, 86_400) * 1000
        until -= until % 1000                      # the archive compares at second resolution
        since = until - 365 * 86_400_000
        ex = rnd.choice(cases)["case_id"]
        live = [c for c in cases if c["violation"] and since < c["ts_ms"] <= until]
        for src in (mem, arch):
            for p in plates:
                assert src.vehicle_violations(p, since, until, ex) == \
                    sum(1 for c in live if c["plate"] == p and c["case_id"] != ex)
            for d in ("D1", "D2"):
                assert src.driver_violations(d, since, until, ex) == \
                    sum(1 for c in live if c["driver"]["id"] == d and c["driver"]["source"] == "ic_card"
                        and c["case_id"] != ex)          # a presumed (registry) driver never counts
            assert src.source_site_violations("Q1", since, until, ex) == \
                sum(1 for c in live if c["source_site"]["site_id"] == "Q1" and c["case_id"] != ex)
            assert src.enterprise_violating_vehicles("E1", since, until, "豫A10001") == \
                len({c["plate"] for c in live if c["plate"] != "豫A10001"})


def test_cases_from_before_the_lifecycle_get_their_history(conn):
    """An archive written by the first delivery: a case row with status and a case_actions trail, no acts."""
    v = worker_step(conn, reading(60000))
    cid = v["case_id"]
    conn.execute("DELETE FROM case_acts")
    conn.execute("DELETE FROM case_state")
    conn.execute("UPDATE cases SET status='notified' WHERE case_id=?", (cid,))
    conn.executemany("INSERT INTO case_actions (case_id, action, operator, reason, ts) VALUES (?,?,?,?,?)",
                     [(cid, "review", "op1", None, "2025-03-02T09:00:00+08:00"),
                      (cid, "confirm", "op1", "ok", "2025-03-02T09:05:00+08:00"),
                      (cid, "notify", "op2", None, "2025-03-03T09:00:00+08:00")])
    store = CaseStore(conn, Config())
    case = store.show(cid)
    # the old notify came straight after confirm (no 立案 was recorded): kept as a legacy fact, not a transition
    assert [(h["act"], h["by"]) for h in case["history"]] == [("detect", "roadwatch"), ("review", "op1"),
                                                            ("confirm", "op1"), ("legacy", "op2")]
    assert case["status"] == "confirmed" and store.get(cid)["status"] == "confirmed"
    assert store.act(cid, "file", "op3", at="2025-03-04")["status"] == "filed"
    store.show(cid)                                                  # migrating again changes nothing
    assert len(store.history(cid)) == 5
