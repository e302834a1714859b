"""models/lifecycle.py and models/art66.py: transition table, derived status, Art. 66 counting boundaries.

The expected values are the statute's words applied by hand: "超过3次" = 4 or more decided violations in the
window; "超过…10%" = strictly above; the window is the 365 days ending at the date, keyed on the decision
date; a presumed (registry) driver never counts; withdrawn or dismissed cases never count.
"""
from datetime import date, timedelta

import pytest

from roadwatch.models import lifecycle
from roadwatch.models.art66 import CaseFacts, crossings, escalations_at
from roadwatch.models.config import Config
from roadwatch.models.lifecycle import Act, TransitionError

D0 = date(2025, 1, 1)

# every status × action against the table written out from the issue
EXPECTED = {
    ("detected", "review"): "reviewed", ("detected", "confirm"): "confirmed", ("detected", "dismiss"): "dismissed",
    ("reviewed", "confirm"): "confirmed", ("reviewed", "dismiss"): "dismissed",
    ("confirmed", "file"): "filed", ("filed", "notify"): "notified", ("notified", "decide"): "decided",
    ("decided", "serve"): "served", ("served", "close"): "closed",
    **{(s, "withdraw"): "withdrawn" for s in ("detected", "reviewed", "confirmed", "filed", "notified", "decided",
                                             "served")},
}


def iso(d: date) -> str:
    return f"{d.isoformat()}T00:00:00+08:00"


def history_to(status: str, case_id="C1") -> list[Act]:
    path = {"detected": [], "reviewed": ["review"], "confirmed": ["confirm"], "dismissed": ["dismiss"],
            "filed": ["confirm", "file"], "notified": ["confirm", "file", "notify"],
            "decided": ["confirm", "file", "notify", "decide"], "served": ["confirm", "file", "notify", "decide",
                                                                           "serve"],
            "closed": ["confirm", "file", "notify", "decide", "serve", "close"],
            "withdrawn": ["withdraw"]}[status]
    return [Act(case_id, a, "op", iso(D0), iso(D0), "r") for a in path]


@pytest.mark.parametrize("status", lifecycle.STATUSES)
@pytest.mark.parametrize("action", lifecycle.ACTIONS)
def test_transition_table(status, action):
    acts = history_to(status)
    assert lifecycle.derive(acts)["status"] == status
    act = Act("C1", action, "op", iso(D0 + timedelta(days=30)), iso(D0), "a reason")
    want = EXPECTED.get((status, action))
    if want is None:
        with pytest.raises(TransitionError) as e:
            lifecycle.check(status, acts, act, statement_days=3)
        assert e.value.code == "bad_transition" and status in e.value.detail
    else:
        assert lifecycle.check(status, acts, act, statement_days=3) == want
        assert lifecycle.derive(acts + [act])["status"] == want


def test_statement_period_counts_from_the_day_after_notification():
    acts = history_to("notified")                        # notified on D0
    for days, earliest in ((3, D0 + timedelta(days=4)), (0, D0), (10, D0 + timedelta(days=11))):
        ok = Act("C1", "decide", "op", iso(earliest), iso(D0))
        assert lifecycle.check("notified", acts, ok, statement_days=days) == "decided"
        if earliest > D0:
            early = Act("C1", "decide", "op", iso(earliest - timedelta(days=1)), iso(D0))
            with pytest.raises(TransitionError) as e:
                lifecycle.check("notified", acts, early, statement_days=days)
            assert e.value.code == "too_early"


def case(cid, plate, decided: date | None, *, driver=None, source="unknown", ent="E1", fleet=20, extra=()):
    acts = [Act(cid, "detect", "sys", iso(D0), iso(D0))]
    if decided is not None:
        acts += [Act(cid, a, "op", iso(D0), iso(D0)) for a in ("confirm", "file", "notify")]
        acts.append(Act(cid, "decide", "op", iso(decided), iso(D0)))
    acts += [Act(cid, a, "op", iso(d), iso(D0), "r", driver_id=drv) for a, d, drv in extra]
    return CaseFacts(cid, plate, ent, fleet, driver, source, acts)


def subjects(cases, at: date, cfg=None):
    return {(e["target"], e["subject"]): e["count"] for e in escalations_at(cases, cfg or Config(), iso(at))}


def test_fourth_decided_violation_escalates_the_vehicle_and_an_identified_driver_only():
    days = [D0 + timedelta(days=10 * i + 10) for i in range(4)]
    presumed = [case(f"A{i}", "A", d, driver="D1", source="registry") for i, d in enumerate(days)]
    carded = [case(f"B{i}", "B", d, driver="D2", source="ic_card") for i, d in enumerate(days)]
    cases = presumed + carded
    got = subjects(cases, days[2])
    assert ("vehicle", "A") not in got and ("driver", "D2") not in got           # 3 is not "more than 3"
    got = subjects(cases, days[3])
    assert got[("vehicle", "A")] == 4 and got[("vehicle", "B")] == 4 and got[("driver", "D2")] == 4
    assert ("driver", "D1") not in got                                            # presumed: never counted


def test_undecided_cases_never_count_and_the_configured_status_is_honoured():
    days = [D0 + timedelta(days=i + 1) for i in range(4)]
    cases = [case(f"A{i}", "A", d) for i, d in enumerate(days)]
    undecided = [case(f"U{i}", "U", None) for i in range(6)]
    assert subjects(cases + undecided, days[3])[("vehicle", "A")] == 4
    assert ("vehicle", "U") not in subjects(cases + undecided, days[3])
    # counting only closed cases: none of the four is closed
    assert ("vehicle", "A") not in subjects(cases, days[3], Config({"art66.counts_from": "closed"}))


def test_rolling_window_is_keyed_on_the_decision_date():
    decided = [D0, D0 + timedelta(days=100), D0 + timedelta(days=200), D0 + timedelta(days=364)]
    cases = [case(f"A{i}", "A", d) for i, d in enumerate(decided)]
    assert subjects(cases, D0 + timedelta(days=364))[("vehicle", "A")] == 4       # D0 is the window's first day
    assert ("vehicle", "A") not in subjects(cases, D0 + timedelta(days=365))      # D0 has left the window
    assert ("vehicle", "A") not in subjects(cases, D0 + timedelta(days=363))      # the 4th not decided yet
    w = Config({"art66.window_days": 730})
    assert subjects(cases, D0 + timedelta(days=365), w)[("vehicle", "A")] == 4


@pytest.mark.parametrize("goods,distinct,escalates", [
    (30, 3, False),      # exactly 10 %
    (30, 4, True),       # 13.3 %
    (100, 10, False),    # exactly 10 %
    (100, 11, True),
    (99, 10, True),      # 10.1 %
    (5, 1, True),        # one vehicle of five: 20 %
])
def test_enterprise_share_strictly_above_ten_percent(goods, distinct, escalates):
    cases = [case(f"E{i}", f"P{i}", D0 + timedelta(days=1), fleet=goods) for i in range(distinct)]
    cases += [case("X", "P0", D0 + timedelta(days=2), fleet=goods)]              # a second case, same vehicle
    got = subjects(cases, D0 + timedelta(days=2))
    assert (("enterprise", "E1") in got) is escalates
    if escalates:
        assert got[("enterprise", "E1")] == distinct


def test_withdrawal_voids_a_case_at_every_date_and_an_officer_can_identify_the_driver():
    days = [D0 + timedelta(days=i + 1) for i in range(4)]
    cases = [case(f"A{i}", "A", d, driver="D1", source="registry") for i, d in enumerate(days)]
    assert subjects(cases, days[3])[("vehicle", "A")] == 4
    cases[0] = case("A0", "A", days[0], driver="D1", source="registry",
                    extra=[("withdraw", days[3] + timedelta(days=30), None)])
    assert ("vehicle", "A") not in subjects(cases, days[3])
    # an officer names D9 on every case: the driver now counts
    cases = [case(f"A{i}", "A", d, driver="D1", source="registry", extra=[("amend", D0, "D9")])
             for i, d in enumerate(days)]
    assert subjects(cases, days[3])[("driver", "D9")] == 4
    assert crossings(cases, Config())[("driver", "D9")]["window_end"] == days[3].isoformat()


@pytest.mark.parametrize("counts_from", ["decided", "served"])
def test_crossings_agree_with_day_by_day_evaluation(counts_from):
    """The sweep in ``crossings`` against evaluating ``escalations_at`` on every day of two years."""
    import random
    rnd = random.Random(5 if counts_from == "decided" else 6)
    cfg = Config({"art66.counts_from": counts_from, "art66.window_days": 90})
    cases = []
    for i in range(60):
        decided = D0 + timedelta(days=rnd.randrange(0, 700))
        served = decided + timedelta(days=rnd.randrange(0, 40))
        extra = [("serve", served, None)] if rnd.random() < 0.7 else []
        if rnd.random() < 0.1:
            extra.append(("withdraw", served + timedelta(days=1), None))
        c = case(f"C{i:02d}", rnd.choice("ABC"), decided, driver=rnd.choice(["D1", "D2"]),
                 source=rnd.choice(["ic_card", "registry"]), ent="E1", fleet=20, extra=extra)
        cases.append(c)
    got = crossings(cases, cfg)
    first: dict = {}
    for k in range(760):
        at = D0 + timedelta(days=k)
        for e in escalations_at(cases, cfg, iso(at)):
            first.setdefault((e["target"], e["subject"]), e)
    assert set(got) == set(first) and len(got) >= 4          # vehicles, drivers and the enterprise cross
    for key, e in first.items():
        assert (got[key]["window_end"], got[key]["count"], got[key]["case_ids"]) == \
            (e["window_end"], e["count"], e["case_ids"]), key
