"""案卷评查 (issue 21 item 5): a reproducible sample of a month's closed case files, an exact checklist score
per file (documents, evidence chain, deadlines), tables per officer and per station in every report format,
and `roadwatch case-review` on a case taken to closure through the CLI."""
from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import openpyxl
import orjson

from roadwatch.models import case_review as R
from roadwatch.models.config import Config
from roadwatch.models.registry import load_registry
from roadwatch.streams.archive import open_archive
from roadwatch.streams.reports import build_monthly_report, write_report
from test_documents import cli  # noqa: F401  (the CLI fixture)
from test_notices import closed_case

ROOT = Path(__file__).resolve().parents[1]


def test_sample_is_reproducible_with_its_seed():
    ids = [f"C{i:03d}" for i in range(40)]
    cfg = Config({"review.sample_rate": 0.1, "review.seed": 7})
    first = R.sample(ids, "2025-09", cfg)
    assert len(first) == 4 and first == sorted(first) and set(first) <= set(ids)
    assert R.sample(list(reversed(ids)), "2025-09", cfg) == first           # order of the archive does not matter
    assert R.sample(ids, "2025-09", Config({"review.sample_rate": 0.1, "review.seed": 7})) == first
    others = {tuple(R.sample(ids, "2025-09", Config({"review.sample_rate": 0.1, "review.seed": s}))) for s in range(8)}
    assert len(others) > 1                                                  # the seed decides the draw
    assert R.sample(ids[:3], "2025-09", cfg) and len(R.sample(ids[:3], "2025-09", cfg)) == 1   # at least one
    assert len(R.sample(ids[:15], "2025-09", cfg)) == 2                     # 1.5 → 2 (half up)
    assert R.sample(ids, "2025-09", Config({"review.sample_rate": 0.0})) == []
    assert R.sample(ids, "2025-09", Config({"review.sample_rate": 1.0})) == ids


def _file(**kw) -> dict:
    history = [{"act": a, "by": "张三", "at": f"{d}T00:00:00+08:00"} for a, d in (
        ("file", "2025-06-02"), ("notify", "2025-06-03"), ("decide", "2025-06-10"), ("serve", "2025-06-12"),
        ("close", "2025-09-05"))]
    docs = [{"kind": k, "files": [{"path": f"documents/{k}-0000.html"}]}
            for k in ("notice", "inform", "decision", "agency_notice")]
    base = {"case_id": "C1", "station_id": "W001", "history": history, "documents": docs, "chain_problems": [],
            "notice": {"due_on": "2025-09-16", "sent_at": "2025-09-15T10:00:00+08:00"}}
    return base | kw


def test_score_is_exact_on_a_constructed_file():
    cfg = Config()          # statement 3 days, decision within 90 days of filing, service within 7 days
    as_of = date(2025, 10, 15)
    perfect = R.score(_file(), cfg, as_of)
    assert (perfect["score"], perfect["passed"], perfect["scored"], perfect["officer"]) == (100.0, 9, 9, "张三")
    f = _file(case_id="C2")
    f["documents"] = [d for d in f["documents"] if d["kind"] != "notice"]                 # notice missing
    f["chain_problems"] = ["file documents/decision-0000.html: altered (sha256 mismatch)"]  # chain broken
    f["history"] = [h if h["act"] != "decide" else {**h, "at": "2025-09-02T00:00:00+08:00"}  # 92 days after filing
                    for h in f["history"]]
    f["history"] = [h if h["act"] != "serve" else {**h, "at": "2025-09-03T00:00:00+08:00"} for h in f["history"]]
    f["notice"] = {"due_on": "2025-09-16", "sent_at": None}                                  # not sent, overdue
    s = R.score(f, cfg, as_of)
    failed = sorted(n for n, i in s["items"].items() if i["ok"] is False)
    assert failed == ["agency_notice_deadline", "decision_deadline", "doc_decision", "doc_notice", "evidence_chain"]
    assert (s["passed"], s["scored"], s["score"]) == (4, 9, 44.4)
    assert "92 day(s)" in s["items"]["decision_deadline"]["detail"]
    # a 抄告 not yet due is not scored; one sent late fails
    pending = R.score(_file(notice={"due_on": "2025-10-20", "sent_at": None}), cfg, as_of)
    assert pending["items"]["agency_notice_deadline"]["ok"] is None and (pending["scored"], pending["score"]) == (8, 100.0)
    late = R.score(_file(notice={"due_on": "2025-09-16", "sent_at": "2025-09-17T08:00:00+08:00"}), cfg, as_of)
    assert late["items"]["agency_notice_deadline"]["ok"] is False and late["score"] == 88.9
    # a decision inside the 陈述申辩 period (a history from before the lifecycle refused it)
    early = _file()
    early["history"] = [h if h["act"] != "decide" else {**h, "at": "2025-06-05T00:00:00+08:00"} for h in early["history"]]
    assert R.score(early, cfg, as_of)["items"]["statement_period"]["ok"] is False
    # tables per officer and per station
    g = _file(case_id="C3", station_id="W002")
    g["history"] = [{**h, "by": "李四"} for h in g["history"]]
    rev = R.review([_file(), f, g], 30, "2025-09", cfg, as_of)
    assert [(r["officer"], r["files"], r["mean_score"], r["full_marks"], r["failures"]["doc_notice"])
            for r in rev["by_officer"]] == [("张三", 2, 72.2, 1, 1), ("李四", 1, 100.0, 1, 0)]
    assert [(r["station_id"], r["files"], r["mean_score"]) for r in rev["by_station"]] == [
        ("W001", 2, 72.2), ("W002", 1, 100.0)]


def test_case_closed_through_the_cli_is_reviewed_and_in_every_report_format(cli, tmp_path):  # noqa: F811
    extra = "review.sample_rate=1.0"
    cid, arch, _ = closed_case(cli, tmp_path, extra)       # closed 2025-09-30, 抄告 due 2025-10-09, not sent
    code, out, err = cli("case-review", "--month", "2025-09", "--archive", str(arch), "--at", "2025-10-20",
                         extra=extra)
    assert code == 0, err
    rev = orjson.loads(cli.stdout)
    assert (rev["closed_cases"], rev["sampled"]) == (1, 1)
    f = rev["files"][0]
    # no 违法行为通知书 was issued and the 抄告 is overdue: 7 of 9
    assert {n for n, i in f["items"].items() if not i["ok"]} == {"doc_notice", "agency_notice_deadline"}
    assert (f["case_id"], f["officer"], f["score"]) == (cid, "officer7", 77.8)
    assert rev["agency_notices"]["overdue_cases"] == [{"case_id": cid, "due_on": "2025-10-09", "to_agency": None}]
    # no case closed in August: nothing drawn
    code, out, err = cli("case-review", "--month", "2025-08", "--archive", str(arch), extra=extra)
    assert orjson.loads(cli.stdout)["sampled"] == 0
    code, out, err = cli("case-review", "--month", "2025-13", "--archive", str(arch), extra=extra)
    assert code == 2
    # the monthly report carries the tables in json, html, xlsx and csv
    cfg = Config({"paths.data_dir": str(tmp_path / "var"), "review.sample_rate": 1.0})
    report = build_monthly_report(open_archive(arch), load_registry(ROOT / "examples/registry.json"), "2025-09", cfg,
                                  "2025-10-20T08:00:00+08:00")
    write_report(report, tmp_path / "rep")
    js = orjson.loads((tmp_path / "rep" / "report.json").read_bytes())["case_review"]
    assert [(r["officer"], r["files"], r["mean_score"]) for r in js["by_officer"]] == [("officer7", 1, 77.8)]
    assert [(r["station_id"], r["files"]) for r in js["by_station"]] == [("W001", 1)]
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<h2>案卷评查</h2>" in html and 'id="case-review-officer"' in html and "officer7" in html
    assert 'id="agency-notices-overdue"' in html and cid in html
    ws = openpyxl.load_workbook(tmp_path / "rep" / "report.xlsx")["案卷评查"]
    rows = [[c for c in r] for r in ws.iter_rows(values_only=True)]
    assert ["officer7", 1, 77.8, 0] == rows[rows.index(next(r for r in rows if r[0] == "承办人")) + 1][:4]
    assert any(r[0] == "W001" and r[2] == 77.8 for r in rows)
    got = list(csv.DictReader(io.StringIO((tmp_path / "rep" / "case_review.csv").read_text(encoding="utf-8-sig"))))
    assert {(r["key"], r["failures_item"], r["failures"]) for r in got if r["table"] == "by_officer"} >= {
        ("officer7", "doc_notice", "1"), ("officer7", "evidence_chain", "0")}
    assert {(r["key"], r["files"]) for r in got if r["table"] == "agency_notices"} >= {("overdue", "1")}


def test_notices_and_review_on_both_backends(archive_target):
    """The 抄告 and review queries on SQLite and PostgreSQL: a case closed through the workflow has its notice,
    the review draws and scores it, an accepted inbound notice is listed for the vehicle and counted."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from roadwatch.models import notices as N
    from roadwatch.streams import notices
    from roadwatch.streams.archive import notices as db
    from roadwatch.streams.case_review import month_review
    from roadwatch.streams.cases import CaseStore
    from test_report_overload import FULL, case
    conn = open_archive(archive_target)
    conn.executemany("INSERT INTO cases VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     [case("C1", "苏E00001", "S1", "fine", 1500), case("C2", "苏E00002", "S2", "fine", 500)])
    cfg = Config({"review.sample_rate": 1.0, "notices.own_agency_id": "js-nj"})
    store = CaseStore(conn, cfg)
    for cid in ("C1", "C2"):
        for action, at in FULL + [("serve", "2020-07-21"), ("close", "2020-07-31" if cid == "C1" else "2020-08-03")]:
            store.act(cid, action, "王五", "结案" if action == "close" else None, at=at)
    assert [r["case_id"] for r in db.outbound(conn)] == ["C2", "C1"]          # newest closure first
    assert store.show("C1")["agency_notice"]["due_on"] == "2020-08-11"      # Fri 07-31 + 7 working days
    assert db.overdue_count(conn, "2020-08-12") == 1 and db.overdue_count(conn, "2020-08-11") == 0
    rev = month_review(conn, cfg, "2020-07", date(2020, 8, 5))
    assert (rev["closed_cases"], [f["case_id"] for f in rev["files"]]) == (1, ["C1"])
    f = rev["files"][0]
    assert f["items"]["evidence_chain"]["detail"] == "no evidence package" and f["officer"] == "王五"
    assert f["items"]["agency_notice_deadline"]["ok"] is None and (f["passed"], f["scored"]) == (3, 8)
    # an inbound notice about 苏E00001 from a known agency: listed and counted for Art. 66
    key = Ed25519PrivateKey.generate()
    n = copy_notice(db.outbound(conn, case_id="C1")[0]["notice"], from_agency="js-sz", to_agency="js-nj",
                    case_id="SZ1", notice_id="NSZ1")
    env = orjson.dumps(N.sign(n, key, "k"))
    agencies = {"js-sz": N.Agency("js-sz", "苏州", ("苏E",), key.public_key())}
    assert notices.accept(store, env, via="file", agencies=agencies)[1] is True
    assert notices.accept(store, env, via="file", agencies=agencies)[1] is False
    assert [r["notice_key"] for r in db.inbound(conn, plate="苏E00001")] == ["js-sz:NSZ1"]
    cfg.set("art66.vehicle_driver_threshold", 1)
    (esc,) = [e for e in store.escalations("2020-12-31") if e["target"] == "vehicle" and e["subject"] == "苏E00001"]
    assert esc["case_ids"] == ["C1", "js-sz:SZ1"]


def copy_notice(notice: dict, **kw) -> dict:
    return orjson.loads(orjson.dumps(notice)) | kw
