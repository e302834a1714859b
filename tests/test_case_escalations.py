"""Issue 12 "Done when", batch path: a scripted sequence through the CLI (readings out of order, a dismissal,
a review later confirmed, decisions on chosen dates entered out of order, an identified and a presumed
driver, a withdrawal) yields exactly the Art. 66 escalations the statute gives on each date.

Expected values are worked out by hand from 条例 Art. 66 (more than 3 decided violations in the 365 days
ending at the date, keyed on the decision date; enterprise: distinct violating vehicles > 10 % of its
goods vehicles) — see the table in ``EXPECTED``.
"""
import random
from datetime import datetime, timedelta

import orjson
import pytest

from roadwatch.models.records import BEIJING
from roadwatch.streams.archive import close_all
from roadwatch.streams.cli import main

import officers
from test_overload_helpers import iso, registry_dict, vehicle

A, B, C, D = "豫A11111", "豫B22222", "豫C33333", "豫D44444"


def day(m, d, y=2025, h=10):
    return datetime(y, m, d, h, 0, tzinfo=BEIJING)


def wim(plate, ts, gross=60000, confidence=0.97):
    return {"station_id": "S1", "lane": 1, "ts": iso(ts), "plate": plate, "plate_color": 2,
            "plate_confidence": confidence, "vehicle_kind": "train", "axle_count": 6,
            "axle_loads_kg": [7000] + [(gross - 7000) / 5] * 5, "axle_spacings_m": [3.5] * 5, "gross_kg": gross,
            "speed_kmh": 60, "device_id": "W1"}


# readings, deliberately out of order: A on the 10th, 20th, 30th, 5th (dismissed later), 25th (low plate
# confidence → review, later confirmed); B three times with an IC card login, once without; C once.
READINGS = {
    "a10": wim(A, day(3, 10)), "a20": wim(A, day(3, 20)), "a30": wim(A, day(3, 30)), "a05": wim(A, day(3, 5)),
    "a25": wim(A, day(3, 25), confidence=0.5),
    "b11": wim(B, day(3, 11)), "b12": wim(B, day(3, 12)), "b13": wim(B, day(3, 13)), "b01": wim(B, day(3, 1)),
    "c15": wim(C, day(3, 15)),
    "d16": wim(D, day(3, 16), gross=70000),                  # D holds a 大件运输许可 for 80 t at S1
}

# (case, action, legal date, extra args); per case in legal order, entered in the order given
ACTS = [
    ("a30", "confirm", "2025-04-01", []), ("a30", "file", "2025-04-01", []), ("a30", "notify", "2025-04-02", []),
    ("a05", "dismiss", "2025-04-01", ["--reason", "车牌识别错误"]),
    ("b11", "confirm", "2025-03-20", []), ("b11", "file", "2025-03-20", []), ("b11", "notify", "2025-03-21", []),
    ("b11", "decide", "2025-04-02", []),
    ("b12", "confirm", "2025-03-20", []), ("b12", "file", "2025-03-20", []), ("b12", "notify", "2025-03-21", []),
    ("b12", "decide", "2025-04-03", []),
    ("a10", "confirm", "2025-04-01", []), ("a10", "file", "2025-04-01", []), ("a10", "notify", "2025-04-02", []),
    ("b13", "confirm", "2025-03-20", []), ("b13", "file", "2025-03-20", []), ("b13", "notify", "2025-03-21", []),
    ("b13", "decide", "2025-04-04", []),
    # B's passage without a card: the officer identifies the driver during the investigation
    ("b01", "confirm", "2025-03-20", []), ("b01", "file", "2025-03-20", ["--driver", "D2"]),
    ("b01", "notify", "2025-03-21", []), ("b01", "decide", "2025-04-05", []),
    ("a30", "decide", "2025-04-10", []),
    ("a20", "confirm", "2025-04-01", []), ("a20", "file", "2025-04-01", []), ("a20", "notify", "2025-04-02", []),
    ("a20", "decide", "2025-04-15", []),
    ("a10", "decide", "2025-04-12", []),            # entered after a20's decision, dated before it
    ("c15", "confirm", "2025-04-01", []), ("c15", "file", "2025-04-01", []), ("c15", "notify", "2025-04-02", []),
    ("c15", "decide", "2025-04-20", []),
    ("a25", "review", "2025-04-01", []), ("a25", "confirm", "2025-04-02", []), ("a25", "file", "2025-04-02", []),
    ("a25", "notify", "2025-04-03", []), ("a25", "decide", "2025-04-25", []),
    ("a10", "withdraw", "2025-05-01", ["--reason", "复议撤销"]),
]

# date → {(target, subject): count}; worked out by hand (see the module docstring). Before the last act
# (a10 withdrawn) A's fourth decided case — the review case a25, confirmed later — escalates the vehicle on
# 04-25; the withdrawal voids a10 from the start, so afterwards A never had more than 3.
BEFORE_WITHDRAWAL = {
    "2025-04-24": {("vehicle", B): 4, ("driver", "D2"): 4, ("enterprise", "E1"): 3},
    "2025-04-25": {("vehicle", B): 4, ("driver", "D2"): 4, ("enterprise", "E1"): 3, ("vehicle", A): 4},
}
EXPECTED = {
    "2025-04-04": {},                                              # B: 3 decided
    "2025-04-05": {("vehicle", B): 4, ("driver", "D2"): 4},        # b01 (officer-identified driver) decided
    "2025-04-19": {("vehicle", B): 4, ("driver", "D2"): 4},        # enterprise: 2 vehicles, not > 20 × 10 %
    "2025-04-20": {("vehicle", B): 4, ("driver", "D2"): 4, ("enterprise", "E1"): 3},   # C decided: 3 > 2.0
    "2025-04-25": {("vehicle", B): 4, ("driver", "D2"): 4, ("enterprise", "E1"): 3},   # a10 withdrawn
    "2026-04-01": {("vehicle", B): 4, ("driver", "D2"): 4, ("enterprise", "E1"): 3},   # window 2025-04-02 …
    "2026-04-02": {("enterprise", "E1"): 3},                       # … b11 (decided 04-02) left the window
    "2026-04-16": {},                                              # A's and B's decisions left: 1 vehicle (C)
}


def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp_path / "var"}"')
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    reg = registry_dict(goods_vehicles=20, vehicles=[vehicle(A, driver_id="D1"), vehicle(B, driver_id=""),
                                                    vehicle(C, driver_id=""), vehicle(D, driver_id="")])
    reg["permits"] = [{"permit_no": "豫大件2025-0007", "plate": D, "valid_from": iso(day(3, 1)),
                       "valid_to": iso(day(3, 31)), "max_gross_kg": 80000, "stations": ["S1"]}]
    (tmp_path / "registry.json").write_bytes(orjson.dumps(reg))
    # B's IC card logins (JT/T 808 0x0702 as recorded): before its passages of the 11th–13th only
    pings = [{"plate": B, "plate_color": 2, "terminal_id": "T2", "ts": iso(day(3, d, h=8)), "lat": 34.0,
              "lon": 113.0, "speed_kmh": 30.0, "heading": 0, "altitude_m": 100, "driver_id": "D2"}
             for d in (11, 12, 13)]
    (tmp_path / "pings.jsonl").write_bytes(b"\n".join(orjson.dumps(p) for p in pings) + b"\n")


def cli(capsys, *args) -> tuple[int, list]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr().out
    return code, [orjson.loads(x) for x in out.splitlines() if x.strip()]


def assess(tmp_path, capsys, monkeypatch, keys):
    import io
    import sys
    stdin = b"".join(orjson.dumps(READINGS[k]) + b"\n" for k in keys)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code, out = cli(capsys, "assess", "wim", "--registry", str(tmp_path / "registry.json"), "--pings",
                    str(tmp_path / "pings.jsonl"), "--archive", str(tmp_path / "archive.sqlite"),
                    "--evidence-dir", str(tmp_path / "var" / "evidence"))
    assert code == 0
    return out


def run_sequence(tmp_path, capsys, monkeypatch, reading_order, act_order) -> dict:
    setup(tmp_path, monkeypatch)
    verdicts = assess(tmp_path, capsys, monkeypatch, reading_order)
    case_of = {k: v["case_id"] for k, v in zip(reading_order, verdicts)}
    arch = str(tmp_path / "archive.sqlite")
    officers.enrol(monkeypatch, arch, "officer7", "op", "legal1")
    before = {}
    for i, (key, action, at, extra) in enumerate(act_order):
        if i == len(act_order) - 1:
            for d in BEFORE_WITHDRAWAL:
                before[d] = cli(capsys, "escalations", "--archive", arch, "--at", d)[1]
        code, out = cli(capsys, "case", "act", case_of[key], action, "--archive", arch, "--by", "officer7",
                        "--at", at, *extra)
        assert code == 0, (key, action)
        assert out[0]["status"] != "detected"
    results = {}
    for at in EXPECTED:
        code, out = cli(capsys, "escalations", "--archive", arch, "--at", at)
        assert code == 0
        results[at] = out
    return {"case_of": case_of, "escalations": results, "archive": arch, "before": before,
            "verdicts": dict(zip(reading_order, verdicts))}


def test_scripted_sequence_gives_the_statutory_escalations(tmp_path, capsys, monkeypatch):
    keys = list(READINGS)
    r = run_sequence(tmp_path, capsys, monkeypatch, keys, ACTS)
    case_of = r["case_of"]
    for at, want in EXPECTED.items():
        got = {(e["target"], e["subject"]): e["count"] for e in r["escalations"][at]}
        assert got == want, at
    d16 = r["verdicts"]["d16"]                                   # the permitted passage: no case, no count
    assert d16["permitted"] is True and d16["case_id"] is None and d16["permit"]["permit_no"] == "豫大件2025-0007"
    for at, want in BEFORE_WITHDRAWAL.items():
        assert {(e["target"], e["subject"]): e["count"] for e in r["before"][at]} == want, at
    by = {(e["target"], e["subject"]): e for e in r["before"]["2025-04-25"]}
    va = by[("vehicle", A)]
    assert va["case_ids"] == sorted(case_of[k] for k in ("a10", "a20", "a25", "a30"))
    assert va["threshold"] == 3 and va["window_start"] == "2024-04-26" and va["window_end"] == "2025-04-25"
    assert va["proposal_id"] and va["proposal_id"].startswith("P")
    assert by[("enterprise", "E1")]["threshold"] == 2.0
    assert {(e["target"], e["subject"]) for e in r["escalations"]["2025-04-25"]} == set(EXPECTED["2025-04-25"])
    assert by[("driver", "D2")]["case_ids"] == sorted(case_of[k] for k in ("b01", "b11", "b12", "b13"))
    # the presumed driver D1 (registry) of A's four decided cases is never counted
    assert not [e for at in EXPECTED for e in r["escalations"][at] + r["before"].get(at, []) if e["subject"] == "D1"]

    # the case as a history; the presumed driver shown as such
    code, out = cli(capsys, "case", "show", case_of["a10"], "--archive", r["archive"])
    case = out[0]
    assert case["status"] == "withdrawn"
    assert [h["act"] for h in case["history"]] == ["detect", "confirm", "file", "notify", "decide", "withdraw"]
    assert case["history"][4]["at"].startswith("2025-04-12") and case["history"][-1]["reason"] == "复议撤销"
    assert case["liable"]["driver"] == {"id": "D1", "source": "registry", "identified": False, "presumed": True}
    code, out = cli(capsys, "case", "show", case_of["b01"], "--archive", r["archive"])
    assert out[0]["liable"]["driver"]["source"] == "officer" and out[0]["liable"]["driver"]["identified"]
    code, out = cli(capsys, "case", "show", case_of["b11"], "--archive", r["archive"])
    assert out[0]["liable"]["driver"] == {"id": "D2", "source": "ic_card", "identified": True}

    # the vehicle A proposal lost a case of its basis: flagged for review, not silently kept or dropped
    code, out = cli(capsys, "case", "show", va["proposal_id"], "--archive", r["archive"])
    prop = out[0]
    assert prop["target"] == "vehicle" and prop["subject"] == A and prop["status"] == "proposed"
    assert prop["flag"] and "fell away" in prop["flag"]

    # the same archive (one run of the sequence, not two): the proposal workflow of vehicle B
    _proposal_workflow(r, capsys)


def test_order_of_arrival_and_entry_does_not_matter(tmp_path, capsys, monkeypatch):
    rnd = random.Random(12)
    keys = list(READINGS)
    rnd.shuffle(keys)
    # shuffle the entry order across cases, keeping each case's own acts in legal order
    per_case: dict[str, list] = {}
    for a in ACTS:
        per_case.setdefault(a[0], []).append(a)
    order = []
    queues = {k: list(v) for k, v in per_case.items()}
    while queues:
        k = rnd.choice(sorted(queues))
        order.append(queues[k].pop(0))
        if not queues[k]:
            del queues[k]
    r = run_sequence(tmp_path, capsys, monkeypatch, keys, order)
    for at, want in EXPECTED.items():
        assert {(e["target"], e["subject"]): e["count"] for e in r["escalations"][at]} == want, at


def test_illegal_acts_are_refused_and_replays_are_no_ops(tmp_path, capsys, monkeypatch):
    setup(tmp_path, monkeypatch)
    v = assess(tmp_path, capsys, monkeypatch, ["a10"])[0]
    arch = str(tmp_path / "archive.sqlite")
    officers.enrol(monkeypatch, arch, "op")
    cid = v["case_id"]

    def act(*args):
        return cli(capsys, "case", "act", cid, *args, "--archive", arch, "--by", "op")

    assert act("decide")[0] == 2                                   # not notified yet
    assert act("dismiss")[0] == 2                                  # a reason is required
    assert act("frobnicate")[0] == 2
    assert cli(capsys, "case", "act", "CNOPE", "confirm", "--archive", arch, "--by", "op")[0] == 1
    code, out = act("confirm", "--at", "2025-03-11")
    assert code == 0 and out[0]["replayed"] is False
    code, out = act("confirm", "--at", "2025-03-12")               # the same act again: no-op
    assert code == 0 and out[0]["replayed"] is True
    assert act("file", "--at", "2025-03-09")[0] == 2                # legal dates never go backwards
    assert act("file", "--at", "2999-01-01")[0] == 2                # nor lie after the day of entry
    assert act("file", "--at", "2025-03-12")[0] == 0
    assert act("notify", "--at", "2025-03-12")[0] == 0
    # the owner's 陈述申辩 period (3 days, counted from the day after notification) must have run out
    assert act("decide", "--at", "2025-03-15")[0] == 2
    code, out = act("decide", "--at", "2025-03-16")
    assert code == 0 and out[0]["status"] == "decided" and out[0]["decided_on"].startswith("2025-03-16")
    assert act("serve", "--at", "2025-03-17")[0] == 0
    assert act("close", "--at", "2025-03-20")[0] == 2               # closing needs a reason (paid / executed)
    code, out = act("close", "--at", "2025-03-20", "--reason", "已缴纳罚款")
    assert out[0]["status"] == "closed" and out[0]["allowed_actions"] == []
    assert act("withdraw", "--reason", "x")[0] == 2                 # nothing after closure
    code, out = cli(capsys, "case", "show", cid, "--archive", arch)
    assert [h["act"] for h in out[0]["history"]] == ["detect", "confirm", "file", "notify", "decide", "serve",
                                                        "close"]
    close_all()


def _proposal_workflow(r, capsys):
    """The escalation proposal of vehicle B (on the scripted sequence's archive) through 法制审核, 告知 and
    the decision; a case of its basis withdrawn afterwards flags the decision."""
    pid = next(e["proposal_id"] for e in r["escalations"]["2025-04-05"] if e["target"] == "vehicle")
    arch = r["archive"]

    def act(*args):
        return cli(capsys, "case", "act", pid, *args, "--archive", arch, "--by", "legal1")

    assert act("decide", "--at", "2025-04-10")[0] == 2              # 法制审核 and 告知 first
    assert act("legal_review", "--at", "2025-04-08")[0] == 0
    assert act("notify", "--at", "2025-04-09")[0] == 0
    assert act("decide", "--at", "2025-04-14")[0] == 2              # inside the 5-day hearing-request period
    code, out = act("decide", "--at", "2025-04-15")
    assert code == 0 and out[0]["status"] == "decided"
    assert [h["act"] for h in out[0]["history"]] == ["propose", "legal_review", "notify", "decide"]
    assert out[0]["basis"]["count"] == 4 and out[0]["flag"] is None
    # a case of the decided proposal's basis is withdrawn afterwards: the decision is flagged for review
    assert cli(capsys, "case", "act", r["case_of"]["b11"], "withdraw", "--archive", arch, "--by", "op",
               "--reason", "行政复议撤销", "--at", "2025-05-01")[0] == 0
    code, out = cli(capsys, "case", "show", pid, "--archive", arch)
    assert out[0]["status"] == "decided" and r["case_of"]["b11"] in out[0]["flag"]
    assert "no longer holds" in out[0]["flag"] and out[0]["history"][-1]["act"] == "flag"


def test_a_cli_act_needs_the_officers_password_and_role(tmp_path, capsys, monkeypatch):
    """``--by`` alone proves nothing: the officer is a console user (operator or above) with a password."""
    import io
    import sys
    setup(tmp_path, monkeypatch)
    cid = assess(tmp_path, capsys, monkeypatch, ["a10"])[0]["case_id"]
    arch = str(tmp_path / "archive.sqlite")
    officers.enrol(monkeypatch, arch, "op")
    officers.enrol(monkeypatch, arch, "watcher", role="viewer")

    def act(by, env_pw=None, stdin=None):
        if env_pw is None:
            monkeypatch.delenv("ROADWATCH_OFFICER_PASSWORD", raising=False)
        else:
            monkeypatch.setenv("ROADWATCH_OFFICER_PASSWORD", env_pw)
        extra = []
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
            extra = ["--password-stdin"]
        capsys.readouterr()
        code = main(["case", "act", cid, "confirm", "--archive", arch, "--by", by, *extra])
        return code, capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))   # not a terminal: no prompt
    assert act("op")[0] == 2 and "officer_not_authenticated" in act("op")[1]          # no password at all
    assert act("op", env_pw="guess")[0] == 2                                          # wrong password
    assert act("nobody", env_pw=officers.PASSWORD)[0] == 2                           # not a user
    code, err = act("watcher", env_pw=officers.PASSWORD)                              # a viewer may not act
    assert code == 2 and "viewer" in err
    code, out = cli(capsys, "case", "show", cid, "--archive", arch)
    assert [h["act"] for h in out[0]["history"]] == ["detect"]                        # nothing was recorded
    assert act("op", stdin=officers.PASSWORD.encode() + b"\n")[0] == 0               # proven: recorded
    code, out = cli(capsys, "case", "show", cid, "--archive", arch)
    assert [(h["act"], h["by"]) for h in out[0]["history"]] == [("detect", out[0]["history"][0]["by"]), ("confirm", "op")]
