"""Cross-partition order (issue 12 item 5): a case does not wait forever for the GPS track and card events of
its passage (other partitions) and does not lose them either — it waits for the track to pass the passage
(watermark) or ``case.resolve_timeout_s``; data arriving later amends it (a new act and chain entry, the Art. 66
views recomputed). Real SQLite archive, the worker's CaseStore."""
from datetime import timedelta

import pytest

from roadwatch.models.config import Config
from roadwatch.models.evidence import verify_tree
from roadwatch.models.overload import assess
from roadwatch.streams.archive import close_all, open_archive
from roadwatch.streams.cases import ArchiveCounters, ArchiveDrivers, ArchiveTracks, CaseStore

from test_overload_helpers import PLATE, T0, ms, reading, registry, vehicle

CFG = Config({"case.resolve_timeout_s": 600, "case.late_data_h": 48.0})


@pytest.fixture
def env(tmp_path, monkeypatch, archive_target):
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    conn = open_archive(archive_target)
    data = tmp_path / "var"
    store = CaseStore(conn, CFG, evidence_dir=data / "evidence", data_dir=data, watch_late_data=True)
    reg = registry(vehicles=[vehicle(driver_id="")])
    yield conn, store, reg, data
    close_all()


def detect(conn, store, reg, r):
    v = assess(r, reg, CFG, counters=ArchiveCounters(conn), track=ArchiveTracks(conn), driver=ArchiveDrivers(conn),
               passages=store)
    store.record(v, reading=r, chain_id="p0")
    return v


def quarry_track(conn):
    """19 min stopped in quarry Q1 three hours before T0, then on the road up to after the passage."""
    pts = [(ms(T0 - timedelta(hours=3) + timedelta(minutes=i)), 34.61, 113.51, 0.0) for i in range(20)]
    pts += [(ms(T0 - timedelta(minutes=5)), 34.69, 113.59, 60.0), (ms(T0 + timedelta(minutes=2)), 34.71, 113.61, 60.0)]
    ArchiveTracks(conn).record_points(PLATE, *zip(*pts))
    ArchiveTracks(conn).record_stops(PLATE, [(pts[0][0], pts[19][0], 34.61, 113.51, pts[20][0])])


def test_late_track_and_card_amend_the_case(env):
    conn, store, reg, data = env
    v = detect(conn, store, reg, reading(60000))
    assert v["source_site"]["site_id"] is None and v["driver"]["source"] == "unknown"
    (p,) = store.pending()
    assert p["case_id"] == v["case_id"] and p["state"] == "waiting"
    t_detect = p["detected_ms"]
    assert store.resolve_pending(reg, t_detect + 1000) == []          # still waiting: nothing yet, no timeout
    assert store.pending()[0]["state"] == "waiting"
    # the GPS partition catches up: track past the passage, with the loading stop; the card event too
    quarry_track(conn)
    ArchiveDrivers(conn).record_driver_event(PLATE, (T0 - timedelta(hours=4)).isoformat(), "login", "D2")
    (amended,) = store.resolve_pending(reg, t_detect + 2000)
    assert {c["field"]: c["value"] for c in amended["changes"]} == {"driver_id": "D2", "source_site_id": "Q1"}
    assert store.pending() == []                                     # covered by the watermark: done
    case = store.show(v["case_id"])
    assert [h["act"] for h in case["history"]] == ["detect", "amend"]
    assert case["source_site_id"] == "Q1" and case["liable"]["driver"] == {"id": "D2", "source": "ic_card",
                                                                           "identified": True}
    # the amendment is a signed entry on the package's chain; the package itself is unchanged
    assert verify_tree(data / "evidence", data / "keys" / "trusted") == {}
    assert len(list((data / "evidence" / v["case_id"] / "entries").glob("*.json"))) == 1


def test_timeout_makes_the_case_provisional_and_late_data_still_amends_it(env):
    conn, store, reg, _ = env
    v = detect(conn, store, reg, reading(60000))
    t_detect = store.pending()[0]["detected_ms"]
    assert store.resolve_pending(reg, t_detect + 600_000) == []      # timed out, nothing found: provisional
    assert store.pending()[0]["state"] == "provisional"
    ArchiveDrivers(conn).record_driver_event(PLATE, (T0 - timedelta(hours=1)).isoformat(), "login", "D2")
    (amended,) = store.resolve_pending(reg, t_detect + 3_600_000)   # an hour later the card event arrives
    assert amended["changes"][0]["value"] == "D2"
    assert store.pending()[0]["state"] == "provisional"              # still no track: stays open to late data
    assert store.resolve_pending(reg, t_detect + 48 * 3_600_000) == []
    assert store.pending() == []                                     # beyond case.late_data_h: closed
    assert [h["act"] for h in store.show(v["case_id"])["history"]] == ["detect", "amend"]


def test_a_case_whose_track_is_already_in_does_not_wait(env):
    conn, store, reg, _ = env
    quarry_track(conn)
    v = detect(conn, store, reg, reading(60000))
    assert v["source_site"]["site_id"] == "Q1" and store.pending() == []


def test_late_card_data_changes_the_driver_counts(env):
    """Four decided cases without a card: no driver escalation; the card events arrive late: D2 escalates."""
    conn, store, reg, _ = env
    cids = []
    for i in range(4):
        v = detect(conn, store, reg, reading(60000, ts=T0 + timedelta(days=i)))
        cids.append(v["case_id"])
        for action, days in (("confirm", 10), ("file", 10), ("notify", 11), ("decide", 20 + i)):
            store.act(v["case_id"], action, "op", at=(T0 + timedelta(days=days)).date().isoformat())
    at = (T0 + timedelta(days=23)).date().isoformat()
    assert {e["target"] for e in store.escalations(at)} == {"vehicle"}
    ArchiveDrivers(conn).record_driver_event(PLATE, (T0 - timedelta(hours=1)).isoformat(), "login", "D2")
    t = max(p["detected_ms"] for p in store.pending())
    assert len(store.resolve_pending(reg, t + 600_000)) == 4
    esc = {e["target"]: e for e in store.escalations(at)}
    assert esc["driver"]["subject"] == "D2" and esc["driver"]["case_ids"] == sorted(cids)
    assert esc["driver"]["proposal_id"]
