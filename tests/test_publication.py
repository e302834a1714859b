"""Publication of decided cases (issue 21 item 4): masking, the working-day deadline, a withdrawn decision
leaves the list — through `roadwatch publish decisions` on a real archive."""
from __future__ import annotations

from datetime import date

import orjson

from roadwatch.models.config import Config
from roadwatch.models.publication import add_working_days, is_working_day, mask_party, mask_plate
import officers
from test_documents import ROOT, act, cli  # noqa: F401 - the CLI fixture


def test_working_days_follow_the_configured_calendar():
    cfg = Config()
    assert add_working_days(date(2025, 6, 20), 7, cfg) == date(2025, 7, 1)          # Fri + 7 → Tue
    # 2025 National Day: Oct 1–8 off, Sat Oct 11 a make-up working day
    hol = Config({"calendar.holidays": ",".join(f"2025-10-0{d}" for d in range(1, 9)),
                  "calendar.extra_workdays": "2025-10-11"})
    assert not is_working_day(date(2025, 10, 2), hol) and is_working_day(date(2025, 10, 11), hol)
    # after Tue Sep 30: Thu Oct 9 is the 1st working day, Fri 10 the 2nd, Sat 11 (make-up) the 3rd, Mon 13 the 4th
    assert add_working_days(date(2025, 9, 30), 2, hol) == date(2025, 10, 10)
    assert add_working_days(date(2025, 9, 30), 3, hol) == date(2025, 10, 11)
    assert add_working_days(date(2025, 9, 30), 4, hol) == date(2025, 10, 13)


def test_masking():
    cfg = Config()
    assert mask_party("张三丰", cfg) == "张**" and mask_party("株洲县林建运输有限公司", cfg) == "株洲县林建运输有限公司"
    org = Config({"publication.mask_organisations": True})
    assert mask_party("株洲县林建运输有限公司", org) == "株洲*******公司"
    assert mask_plate("湘BN983S", cfg) == "湘B***3S"
    assert mask_plate("湘BN983S", Config({"publication.plate_mask": "none"})) == "湘BN983S"


def test_publish_decisions_lists_decided_cases_and_drops_a_revoked_one(cli, tmp_path):  # noqa: F811
    arch = tmp_path / "a.sqlite"
    code, out, err = cli("assess", "wim", "--registry", str(ROOT / "examples/registry.json"), "--archive", str(arch),
                         "--evidence-dir", str(tmp_path / "var" / "evidence"),
                         stdin=(ROOT / "examples/wim-readings.jsonl").read_bytes())
    fines = [v["case_id"] for v in out if v.get("action") in ("fine", "warning")]
    assert len(fines) == 3
    officers.enrol(cli.monkeypatch, arch, "officer7")
    for cid in fines[:2]:
        for a, at in (("confirm", "2025-06-10"), ("file", "2025-06-11"), ("notify", "2025-06-12"),
                      ("decide", "2025-06-20")):
            act(cli, cid, arch, a, at)
    pub = tmp_path / "pub"
    code, _, err = cli("publish", "decisions", "--archive", str(arch), "--out", str(pub), "--at", "2025-06-19")
    assert code == 0 and orjson.loads((pub / "decisions.json").read_bytes())["decisions"] == []   # not yet decided
    code, _, err = cli("publish", "decisions", "--archive", str(arch), "--out", str(pub), "--at", "2025-06-30")
    doc = orjson.loads((pub / "decisions.json").read_bytes())
    assert sorted(d["case_id"] for d in doc["decisions"]) == sorted(fines[:2])
    d = doc["decisions"][0]
    assert d["decided_on"] == "2025-06-20" and d["publish_by"] == "2025-07-01"
    assert "*" in d["plate"] and d["doc_no"].startswith("交执罚〔2025〕")
    page = (pub / "decisions.html").read_text()
    assert "行政处罚决定公示" in page and "湘BN983S" not in page and d["plate"] in page
    assert "driver" not in orjson.dumps(doc).decode()
    # the decision is revoked: it leaves the list, and is named (without details) as withdrawn
    act_out = cli("case", "act", fines[0], "withdraw", "--archive", str(arch), "--by", "officer7", "--at",
                  "2025-07-02", "--reason", "复议决定撤销")
    assert act_out[0] == 0, act_out[2]
    code, _, err = cli("publish", "decisions", "--archive", str(arch), "--out", str(pub), "--at", "2025-07-03")
    doc = orjson.loads((pub / "decisions.json").read_bytes())
    assert [d["case_id"] for d in doc["decisions"]] == [fines[1]]
    assert doc["withdrawn"] == [{"case_id": fines[0], "withdrawn_on": "2025-07-02"}]
    assert fines[0] not in (pub / "decisions.html").read_text()
    code, _, err = cli("publish", "decisions", "--archive", str(arch), "--out", str(pub), "--at", "July")
    assert code == 2 and "--at" in err
