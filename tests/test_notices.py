"""抄告 (issue 21 item 3, 62号令 2016 Art. 44): a case closed through the CLI has its notice due 7 working days
later on the configured calendar, exported as signed JSON with every listed field and a printable 抄告单 on
the evidence chain; overdue notices are flagged; a second installation imports it only from a known agency
with a valid signature, and accepted notices count for 条例 Art. 66."""
from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from roadwatch.models import notices as N
from roadwatch.models.config import Config
from roadwatch.models.registry import RegistryError, parse_registry
import officers
from test_documents import cli, fined_case  # noqa: F401  (the CLI fixture and helpers)

ROOT = Path(__file__).resolve().parents[1]
# National Day 2025: 10-01…10-08 off; 09-28 (Sun) and 10-11 (Sat) are make-up working days
CALENDAR = 'calendar.holidays="2025-10-01,2025-10-02,2025-10-03,2025-10-06,2025-10-07,2025-10-08";' \
           'calendar.extra_workdays="2025-09-28,2025-10-11"'
STEPS = (("confirm", "2025-09-01"), ("file", "2025-09-02"), ("notify", "2025-09-03"), ("decide", "2025-09-10"),
         ("serve", "2025-09-12"))


def _pem(private: Ed25519PrivateKey) -> str:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def agencies_file(path: Path, rows: list[dict]) -> Path:
    lines = []
    for r in rows:
        lines.append("[[agency]]")
        for k, v in r.items():
            lines.append(f"{k} = " + ('"""' + v + '"""' if k == "public_key" else orjson.dumps(v).decode()))
    path.write_text("\n".join(lines) + "\n")
    return path


def closed_case(cli, tmp_path, extra: str = ""):  # noqa: F811
    cid, arch = fined_case(cli, tmp_path)
    for a, at in STEPS:
        code, out, err = cli("case", "act", cid, a, "--archive", str(arch), "--by", "officer7", "--at", at, extra=extra)
        assert code == 0, err
    code, out, err = cli("case", "act", cid, "close", "--archive", str(arch), "--by", "officer7", "--at",
                         "2025-09-30", "--reason", "罚款已缴纳", extra=extra)
    assert code == 0, err
    return cid, arch, out[0]


def test_closure_through_the_cli_makes_the_notice_due_exported_and_on_the_chain(cli, tmp_path):  # noqa: F811
    agencies = agencies_file(tmp_path / "agencies.toml", [{"agency_id": "hn-zz", "name": "株洲市交通运输局",
                                                           "plates": ["湘B"]}])
    extra = f'{CALENDAR};notices.agencies_file="{agencies}";notices.own_agency_id="hn-cs"'
    cid, arch, case = closed_case(cli, tmp_path, extra)
    # closed on Tue 2025-09-30: 10-09, 10-10, 10-11 (make-up Saturday), 10-13, 10-14, 10-15, 10-16
    assert case["agency_notice"]["due_on"] == "2025-10-16"
    assert case["agency_notice"]["to_agency"] == "hn-zz"        # 湘B: the plate's home agency
    assert [d["kind"] for d in case["documents"]] == ["inform", "decision", "agency_notice"]
    # overdue: not sent by the due day
    code, out, err = cli("notices", "list", "--archive", str(arch), "--at", "2025-10-16", extra=extra)
    assert code == 0 and [n["overdue"] for n in out] == [False]
    code, out, err = cli("notices", "list", "--archive", str(arch), "--at", "2025-10-17", "--overdue", extra=extra)
    assert [(n["case_id"], n["overdue"]) for n in out] == [(cid, True)]
    # exported: the signed JSON with every Art. 44 item, and the printable 抄告单
    code, out, err = cli("notices", "export", cid, "--archive", str(arch), "--out", str(tmp_path / "out"),
                         "--mark-sent", "--by", "nobody", extra=extra)
    assert code == 2 and "officer_not_authenticated" in err          # a dispatch is recorded by a proven officer
    code, out, err = cli("notices", "export", cid, "--archive", str(arch), "--out", str(tmp_path / "out"),
                         "--mark-sent", "--by", "officer7", extra=extra)
    assert code == 0, err
    nid = "N" + cid
    assert out[0]["files"] == [f"{nid}.json", f"{nid}.html"] and out[0]["marked_sent"] == "now"
    env = orjson.loads((tmp_path / "out" / f"{nid}.json").read_bytes())
    notice = env["notice"]
    for key in N.TOP:
        assert key in notice, key
    for section, keys in N.SECTIONS.items():
        for k in keys:
            assert k in notice[section], f"{section}.{k}"
    assert notice["vehicle"]["plate"] == "湘BN983S" and notice["vehicle"]["transport_cert_no"]
    assert notice["vehicle"]["owner"] == "株洲县林建运输有限公司" and notice["vehicle"]["enterprise"]
    assert {k: notice["decision"][k] for k in ("decided_on", "served_on", "closed_on", "fine_yuan")} == {
        "decided_on": "2025-09-10", "served_on": "2025-09-12", "closed_on": "2025-09-30", "fine_yuan": 1500}
    assert notice["violation"]["gross_kg"] == 21000 and notice["violation"]["limit_kg"] == 18000
    assert notice["from_agency"] == "hn-cs" and notice["to_agency"] == "hn-zz"
    page = (tmp_path / "out" / f"{nid}.html").read_text()
    for element in ("违法超限运输抄告单", "株洲市交通运输局", "湘BN983S", "第四十四条", "罚款人民币 1,500 元",
                    "2025年9月30日", "2025年10月16日", "货运源头单位", "从业资格证编号"):
        assert element in page, element
    # sent: no longer overdue; the document is on the verified chain
    code, out, err = cli("notices", "list", "--archive", str(arch), "--at", "2025-12-01", extra=extra)
    assert out[0]["overdue"] is False and out[0]["sent_via"] == "manual"
    code, out, err = cli("evidence", "verify", str(tmp_path / "var" / "evidence" / cid))
    assert code == 0, err


def test_inbound_notices_are_authenticated_and_count_for_art66(cli, tmp_path):  # noqa: F811
    # installation A (this data dir) closes a case and exports the notice addressed to 湘B's agency
    agencies_a = agencies_file(tmp_path / "a.toml", [{"agency_id": "hn-zz", "name": "株洲", "plates": ["湘B"]}])
    extra_a = f'notices.agencies_file="{agencies_a}";notices.own_agency_id="hn-cs"'
    cid, arch_a, _ = closed_case(cli, tmp_path, extra_a)
    code, out, err = cli("notices", "export", "all", "--archive", str(arch_a), "--out", str(tmp_path / "x"),
                         extra=extra_a)
    env_file = tmp_path / "x" / f"N{cid}.json"
    pub_a = next((tmp_path / "var" / "keys" / "trusted").glob("*.pub")).read_text()
    # installation B: the home agency, with its own archive
    arch_b = tmp_path / "b.sqlite"
    from roadwatch.streams.archive import open_archive
    open_archive(arch_b)
    extra_b = 'notices.own_agency_id="hn-zz"'
    officers.enrol(cli.monkeypatch, arch_b, "clerk3")
    # unknown sender: refused
    code, out, err = cli("notices", "import", str(env_file), "--archive", str(arch_b), "--by", "clerk3", extra=extra_b)
    assert code == 2 and "unknown_agency" in err and out == []
    agencies_b = agencies_file(tmp_path / "b.toml", [{"agency_id": "hn-cs", "name": "长沙", "plates": ["湘A"],
                                                      "public_key": pub_a}])
    extra_b += f';notices.agencies_file="{agencies_b}"'
    # altered after signing (the fine): refused
    env = orjson.loads(env_file.read_bytes())
    bad = copy.deepcopy(env)
    bad["notice"]["decision"]["fine_yuan"] = 150
    (tmp_path / "bad.json").write_bytes(orjson.dumps(bad))
    code, out, err = cli("notices", "import", str(tmp_path / "bad.json"), "--archive", str(arch_b), "--by", "clerk3", extra=extra_b)
    assert code == 2 and "bad_signature" in err
    # signed by another key claiming to be hn-cs: refused
    forged = N.sign(env["notice"], Ed25519PrivateKey.generate(), "0" * 64)
    (tmp_path / "forged.json").write_bytes(orjson.dumps(forged))
    code, out, err = cli("notices", "import", str(tmp_path / "forged.json"), "--archive", str(arch_b), "--by", "clerk3", extra=extra_b)
    assert code == 2 and "bad_signature" in err
    # not JSON / not an envelope: refused
    (tmp_path / "junk.json").write_bytes(b"{not json")
    code, out, err = cli("notices", "import", str(tmp_path / "junk.json"), "--archive", str(arch_b), "--by", "clerk3", extra=extra_b)
    assert code == 2 and "malformed" in err
    # addressed elsewhere: refused
    code, out, err = cli("notices", "import", str(env_file), "--archive", str(arch_b), "--by", "clerk3",
                         extra=extra_b.replace('own_agency_id="hn-zz"', 'own_agency_id="hn-xt"'))
    assert code == 2 and "not_for_us" in err
    # the genuine one, but by someone who cannot prove who they are: refused, nothing stored
    cli.monkeypatch.setenv("ROADWATCH_OFFICER_PASSWORD", "not-the-password")
    code, out, err = cli("notices", "import", str(env_file), "--archive", str(arch_b), "--by", "clerk3", extra=extra_b)
    assert code == 2 and "officer_not_authenticated" in err and out == []
    cli.monkeypatch.setenv("ROADWATCH_OFFICER_PASSWORD", officers.PASSWORD)
    code, out, err = cli("notices", "list", "--inbound", "--archive", str(arch_b), extra=extra_b)
    assert out == []
    # the genuine one: accepted once, shown for the vehicle with the officer who imported it
    code, out, err = cli("notices", "import", str(env_file), "--archive", str(arch_b), "--by", "clerk3", extra=extra_b)
    assert code == 0, err
    assert out == [{"notice_id": f"N{cid}", "from_agency": "hn-cs", "case_id": cid, "plate": "湘BN983S",
                    "decided_on": "2025-09-10", "accepted": True, "new": True}]
    code, out, err = cli("notices", "import", str(env_file), "--archive", str(arch_b), "--by", "clerk3", extra=extra_b)
    assert out[0]["new"] is False
    code, out, err = cli("notices", "list", "--inbound", "--plate", "湘BN983S", "--archive", str(arch_b), extra=extra_b)
    assert [(n["notice_key"], n["received_via"], n["received_by"]) for n in out] == [(f"hn-cs:N{cid}", "file", "clerk3")]
    # Art. 66: one decided case is not "more than 3 times"; three more notices from hn-xt make four
    code, out, err = cli("escalations", "--archive", str(arch_b), "--at", "2025-12-31", extra=extra_b)
    assert out == []
    key_x = Ed25519PrivateKey.generate()
    agencies_file(agencies_b, [{"agency_id": "hn-cs", "name": "长沙", "plates": ["湘A"], "public_key": pub_a},
                               {"agency_id": "hn-xt", "name": "湘潭", "plates": ["湘C"], "public_key": _pem(key_x)}])
    lines = []
    for i, day in enumerate(("2025-10-20", "2025-11-03", "2025-11-20")):
        n = copy.deepcopy(env["notice"])
        n.update(from_agency="hn-xt", case_id=f"CX{i}", notice_id=f"NCX{i}")
        n["decision"].update(decided_on=day, closed_on=day, served_on=day)
        lines.append(orjson.dumps(N.sign(n, key_x, "x")))
    (tmp_path / "xt.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = cli("notices", "import", str(tmp_path / "xt.jsonl"), "--archive", str(arch_b), "--by", "clerk3", extra=extra_b)
    assert code == 0, err
    assert [o["case_id"] for o in out] == ["CX0", "CX1", "CX2"]
    code, out, err = cli("escalations", "--archive", str(arch_b), "--at", "2025-12-31", extra=extra_b)
    vehicle = [e for e in out if e["target"] == "vehicle"]
    assert [(e["subject"], e["count"], e["case_ids"]) for e in vehicle] == [
        ("湘BN983S", 4, sorted([f"hn-cs:{cid}", "hn-xt:CX0", "hn-xt:CX1", "hn-xt:CX2"]))]
    assert vehicle[0]["proposal_id"]          # the proposal was derived when the fourth notice was accepted
    # a window that ends before the last one holds three: below the threshold
    code, out, err = cli("escalations", "--archive", str(arch_b), "--at", "2025-11-19", extra=extra_b)
    assert [e for e in out if e["target"] == "vehicle"] == []


def test_home_agency_from_the_registry_or_the_plate_prefix():
    agencies = N.parse_agencies({"agency": [{"agency_id": "hn", "name": "湖南", "plates": ["湘"]},
                                            {"agency_id": "hn-zz", "name": "株洲", "plates": ["湘B"]}]})
    assert N.home_agency("湘BN983S", None, agencies) == "hn-zz"       # the longest prefix
    assert N.home_agency("湘AN983S", None, agencies) == "hn"
    assert N.home_agency("粤AN983S", None, agencies) is None
    assert N.home_agency("湘BN983S", "hn-ly", agencies) == "hn-ly"   # the registry's field wins
    with pytest.raises(N.NoticeError, match="already belongs"):
        N.parse_agencies({"agency": [{"agency_id": "a", "name": "A", "plates": ["湘B"]},
                                     {"agency_id": "b", "name": "B", "plates": ["湘B"]}]})
    reg = orjson.loads((ROOT / "examples/registry.json").read_bytes())
    reg["vehicles"][0]["home_agency"] = "hn-zz"
    assert parse_registry(reg).vehicles[reg["vehicles"][0]["plate"]].home_agency == "hn-zz"
    reg["vehicles"][0]["home_agency"] = "株洲 运管"
    with pytest.raises(RegistryError, match="home_agency"):
        parse_registry(reg)


def test_due_day_and_overdue_are_exact():
    from datetime import date
    cfg = Config({"calendar.holidays": "2025-10-01,2025-10-02,2025-10-03,2025-10-06,2025-10-07,2025-10-08",
                  "calendar.extra_workdays": "2025-09-28,2025-10-11"})
    assert N.due_on(date(2025, 9, 30), cfg) == date(2025, 10, 16)
    # from Fri 09-26: 09-28 (make-up Sunday), 29, 30, 10-09, 10-10, 10-11 (make-up Saturday), 10-13
    assert N.due_on(date(2025, 9, 26), cfg) == date(2025, 10, 13)
    assert N.due_on(date(2025, 6, 2), Config({"notices.due_working_days": 1})) == date(2025, 6, 3)
    assert N.overdue("2025-10-16", None, date(2025, 10, 16)) is False
    assert N.overdue("2025-10-16", None, date(2025, 10, 17)) is True
    assert N.overdue("2025-10-16", "2025-10-20T09:00:00+08:00", date(2025, 10, 30)) is False


@pytest.mark.integration
def test_worker_puts_notices_on_the_topic_and_takes_in_other_agencies(tmp_path, monkeypatch, capsys):
    """The real worker: our unsent 抄告 goes onto `agency-notices` and is recorded as sent; of the records on
    the topic the genuine notice addressed to us is accepted, a forged one is dead-lettered with its reason,
    one addressed to another agency is passed over."""
    import base64
    import os
    import time

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from roadwatch.models.config import load_config
    from roadwatch.streams import topics as T
    from roadwatch.streams.archive import notices as db
    from roadwatch.streams.archive import open_archive
    from roadwatch.streams.broker import free_port, kafka_bootstrap
    from roadwatch.streams.cli import main
    from roadwatch.streams.runtime import WorkerProcess
    if os.environ.get("ROADWATCH_KAFKA"):
        pytest.skip("uses the embedded broker")
    key_x = Ed25519PrivateKey.generate()
    agencies = agencies_file(tmp_path / "agencies.toml", [
        {"agency_id": "hn-zz", "name": "株洲", "plates": ["湘B"]},
        {"agency_id": "hn-xt", "name": "湘潭", "plates": ["湘C"], "public_key": _pem(key_x)}])
    port = free_port()
    settings = (f'paths.data_dir="{tmp_path / "data"}";web.port={port};notices.own_agency_id="hn-cs";'
                f'notices.agencies_file="{agencies}";notices.publish_interval_s=1')
    monkeypatch.setenv("ROADWATCH_SET", settings)
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    cfg = load_config(None)
    arch = cfg.archive_path
    import io
    import sys
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((ROOT / "examples/wim-readings.jsonl").read_bytes())))
    main(["assess", "wim", "--registry", str(ROOT / "examples/registry.json"), "--archive", str(arch),
          "--evidence-dir", str(tmp_path / "data" / "evidence")])
    cid = next(v for v in map(orjson.loads, capsys.readouterr().out.splitlines()) if v["action"] == "fine")["case_id"]
    officers.enrol(monkeypatch, arch, "o7")
    for a, at in STEPS + (("close", "2025-09-30"),):
        assert main(["case", "act", cid, a, "--archive", str(arch), "--by", "o7", "--at", at, "--reason", "结案"]) == 0
    capsys.readouterr()
    conn = open_archive(arch)
    assert db.outbound(conn, unsent=True)[0]["to_agency"] == "hn-zz"
    # a notice whose vehicle's home agency is unknown: never sent, overdue
    lost = copy.deepcopy(db.outbound(conn)[0]["notice"])
    lost.update(case_id="CLOST", notice_id="NCLOST", to_agency=None, due_on="2025-01-10")
    with conn.transaction():
        db.insert_outbound(conn, lost, "2025-01-01T00:00:00+08:00")
    # what other agencies put on the topic
    n = copy.deepcopy(db.outbound(conn, case_id=cid)[0]["notice"])
    n.update(from_agency="hn-xt", to_agency="hn-cs", case_id="CX1", notice_id="NCX1")
    n["vehicle"]["plate"] = "湘A12345"
    genuine = N.sign(n, key_x, "x")
    forged = copy.deepcopy(genuine)
    forged["notice"]["decision"]["fine_yuan"] = 1
    elsewhere = N.sign({**n, "to_agency": "hn-yy", "notice_id": "NCX2"}, key_x, "x")

    def poll(pred, what, timeout=90.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")

    with kafka_bootstrap(cfg) as bootstrap:
        w = WorkerProcess(bootstrap, registry_path=str(ROOT / "examples/registry.json"), env={"ROADWATCH_SET": settings})
        try:
            w.wait_ready(90)
            p = KafkaProducer(bootstrap_servers=bootstrap)
            for env in (forged, elsewhere, genuine):
                p.send(T.AGENCY_NOTICES, key=env["notice"]["to_agency"].encode(), value=orjson.dumps(env)).get(10)
            p.close()
            poll(lambda: db.inbound(conn), "the genuine notice accepted")
            poll(lambda: [r["case_id"] for r in db.outbound(conn, unsent=True)] == ["CLOST"], "our notice sent")

            def metrics():
                import urllib.request
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    return r.read().decode()
            # the gauge: the notice without an addressee is overdue, the sent one no longer
            poll(lambda: "roadwatch_agency_notices_overdue 1.0" in metrics(), "the overdue gauge")
            text = metrics()
            for line in ('roadwatch_agency_notices_total{direction="out",outcome="sent"} 1.0',
                         'roadwatch_agency_notices_total{direction="in",outcome="accepted"} 1.0',
                         'roadwatch_agency_notices_total{direction="in",outcome="bad_signature"} 1.0',
                         'roadwatch_agency_notices_total{direction="in",outcome="not_for_us"} 1.0'):
                assert line in text, line
        finally:
            w.stop()
        assert [r["notice_key"] for r in db.inbound(conn)] == ["hn-xt:NCX1"]
        sent = db.outbound(conn, case_id=cid)[0]
        assert sent["sent_via"] == "kafka" and sent["sent_at"]
        cons = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        topics = {}
        for t in (T.AGENCY_NOTICES, T.DEAD_LETTER):
            parts = [TopicPartition(t, q) for q in cons.partitions_for_topic(t)]
            cons.assign(parts)
            cons.seek_to_beginning()
            got, deadline = [], time.monotonic() + 20
            ends = cons.end_offsets(parts)
            while sum(cons.position(tp) for tp in parts) < sum(ends.values()) and time.monotonic() < deadline:
                for recs in cons.poll(timeout_ms=500).values():
                    got += recs
            topics[t] = got
        cons.close()
    ours = [orjson.loads(r.value) for r in topics[T.AGENCY_NOTICES] if r.key == b"hn-zz"]
    assert [e["notice"]["notice_id"] for e in ours] == [f"N{cid}"]
    assert N.open_envelope(orjson.dumps(ours[0]), {"hn-cs": N.Agency("hn-cs", "长沙", (), N.parse_public_key(
        next((tmp_path / "data" / "keys" / "trusted").glob("*.pub")).read_text(), "k"))}, "hn-zz")["case_id"] == cid
    dead = [orjson.loads(r.value) for r in topics[T.DEAD_LETTER] if r.key == T.AGENCY_NOTICES.encode()]
    assert [(d["reason"], base64.b64decode(d["original_b64"]) == orjson.dumps(forged)) for d in dead] == \
        [("bad_signature", True)]


def overdue_and_inbound(cli, tmp_path, inbound_plate: str):  # noqa: F811
    """A case closed through the CLI (its 抄告 to hn-zz overdue by now) and an accepted notice from hb-sjz about
    ``inbound_plate``: (case id, archive)."""
    from roadwatch.streams.archive import notices as db
    from roadwatch.streams.archive import open_archive
    key_x = Ed25519PrivateKey.generate()
    agencies = agencies_file(tmp_path / "agencies.toml", [
        {"agency_id": "hn-zz", "name": "株洲", "plates": ["湘B"]},
        {"agency_id": "hb-sjz", "name": "石家庄", "plates": ["冀A"], "public_key": _pem(key_x)}])
    extra = f'notices.agencies_file="{agencies}";notices.own_agency_id="hn-cs"'
    cid, arch, _ = closed_case(cli, tmp_path, extra)
    n = copy.deepcopy(db.outbound(open_archive(arch))[0]["notice"])
    n.update(from_agency="hb-sjz", to_agency="hn-cs", case_id="CSJZ1", notice_id="NCSJZ1")
    n["vehicle"]["plate"] = inbound_plate
    (tmp_path / "in.json").write_bytes(orjson.dumps(N.sign(n, key_x, "x")))
    code, out, err = cli("notices", "import", str(tmp_path / "in.json"), "--archive", str(arch), "--by", "officer7",
                         extra=extra)
    assert code == 0, err
    return cid, arch


def test_console_shows_overdue_notices_and_the_vehicles_inbound_ones(cli, tmp_path):  # noqa: F811
    from test_web_console import session_test
    from web_support import make_cfg, seed_user
    cid, arch = overdue_and_inbound(cli, tmp_path, "冀A10001")          # closed 2025-09-30: long overdue today
    cfg = make_cfg(tmp_path, **{"paths.archive": str(arch), "notices.own_agency_id": "hn-cs"})
    seed_user(cfg, "view", "viewer")

    @session_test(cfg, user="view")
    async def _(c, hub, fleet, h):
        d = await (await c.get("/api/notices")).json()
        assert d["overdue"] == 1 and [(x["case_id"], x["due_on"], x["overdue"]) for x in d["notices"]] == [
            (cid, "2025-10-09", True)]     # 7 working days after Tue 09-30 on a plain Mon–Fri calendar
        v = await (await c.get("/api/vehicles/冀A10001")).json()
        assert [(x["notice_key"], x["decided_on"]) for x in v["notices_in"]] == [("hb-sjz:NCSJZ1", "2025-09-10")]
        case = await (await c.get(f"/api/cases/{cid}")).json()
        assert case["agency_notice"]["overdue"] is True and case["agency_notice"]["to_agency"] == "hn-zz"


def test_export_issues_a_missing_printable_notice(cli, tmp_path):  # noqa: F811
    """A case closed where its 抄告单 could not be written (here: a store without the data directory) gets it
    on the chain when the notice is exported."""
    from roadwatch.streams.archive import open_archive
    from roadwatch.streams.cases import CaseStore
    cid, arch = fined_case(cli, tmp_path)
    store = CaseStore(open_archive(arch), Config())
    for a, at in STEPS + (("close", "2025-09-30"),):
        store.act(cid, a, "officer7", "结案", at=at)
    assert store.show(cid)["agency_notice"]["due_on"] == "2025-10-09" and store.show(cid)["documents"] == []
    code, out, err = cli("notices", "export", cid, "--archive", str(arch), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert out[0]["files"] == [f"N{cid}.json", f"N{cid}.html"]
    code, out, err = cli("case", "show", cid, "--archive", str(arch))
    assert [d["kind"] for d in out[0]["documents"]] == ["agency_notice"]
    assert cli("evidence", "verify", str(tmp_path / "var" / "evidence" / cid))[0] == 0


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium is not installed")
def test_browser_case_page_flags_the_overdue_notice_and_the_vehicle_lists_inbound_ones(cli, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    from web_support import ConsoleThread, logged_in_page, make_app, make_cfg, seed_user
    cid, arch = overdue_and_inbound(cli, tmp_path, "湘BN983S")
    cfg = make_cfg(tmp_path, **{"paths.archive": str(arch)})
    seed_user(cfg, "ops", "operator")
    app, hub, fleet = make_app(cfg)
    fleet.update("湘BN983S", 38.05, 114.50, "2025-10-20T09:00:00+08:00", "moving")
    errors: list[str] = []
    with ConsoleThread(app) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        try:
            page = logged_in_page(browser, srv.url, "ops", errors)
            page.click("button[data-view='cases']")
            page.click(f"tr[data-case='{cid}']")
            box = page.locator("#case-agency-notice")
            expect(box).to_have_attribute("data-overdue", "1")
            expect(box).to_contain_text("逾期未抄告")
            expect(box).to_contain_text("hn-zz")
            expect(page.locator("#documents tr[data-document='agency_notice']")).to_contain_text("违法超限运输抄告单")
            page.click("#case-vehicle-link")
            expect(page.locator("#vehicle-notices-in tr[data-notice='hb-sjz:NCSJZ1']")).to_contain_text("hb-sjz")
        finally:
            browser.close()
    assert errors == []
