"""Case documents (issue 21 item 2): 告知书 on notify and 决定书 on decide, issued onto the evidence chain
through the CLI; required elements; agency templates; tampering found by `evidence verify`; a browser test
that prints a 决定书 to PDF with headless Chromium."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from roadwatch.streams.cli import main as cli_main

import officers

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture()
def cli(tmp_path, monkeypatch, capsysbinary):
    """``run(*argv) -> (code, stdout JSON lines, stderr)`` with this test's own data dir."""
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    sets = [f'paths.data_dir="{tmp_path / "var"}"']

    def run(*argv, stdin: bytes | None = None, extra: str = ""):
        monkeypatch.setenv("ROADWATCH_SET", ";".join(sets + ([extra] if extra else [])))
        if stdin is not None:
            import io
            import sys
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = cli_main(list(argv))
        cap = capsysbinary.readouterr()
        run.stdout = cap.out.decode()
        return code, [orjson.loads(x) for x in cap.out.splitlines() if x.startswith(b"{")], cap.err.decode()
    run.monkeypatch = monkeypatch
    return run


def fined_case(cli, tmp_path) -> tuple[str, Path]:
    """The README's example readings through `assess wim --archive`: the first fine's case id, the archive."""
    arch = tmp_path / "a.sqlite"
    code, out, err = cli("assess", "wim", "--registry", str(ROOT / "examples/registry.json"), "--archive", str(arch),
                         "--evidence-dir", str(tmp_path / "var" / "evidence"),
                         stdin=(ROOT / "examples/wim-readings.jsonl").read_bytes())
    fine = next(v for v in out if v.get("action") == "fine")
    officers.enrol(cli.monkeypatch, arch, "officer7", "o8")
    return fine["case_id"], arch


def act(cli, case_id, arch, action, at):
    code, out, err = cli("case", "act", case_id, action, "--archive", str(arch), "--by", "officer7", "--at", at)
    assert code == 0, err
    return out[0]


def test_lifecycle_puts_inform_and_decision_on_the_chain(cli, tmp_path):
    cid, arch = fined_case(cli, tmp_path)
    # a notice before the case is confirmed is refused
    code, out, err = cli("case", "document", cid, "notice", "--archive", str(arch), "--by", "officer7")
    assert code == 2 and "not_issuable" in err
    act(cli, cid, arch, "confirm", "2025-06-10")
    code, out, err = cli("case", "document", cid, "notice", "--archive", str(arch), "--by", "officer7",
                         "--out", str(tmp_path / "notice.html"))
    assert code == 0, err
    notice = (tmp_path / "notice.html").read_text()
    assert "违法行为通知书" in notice and "湘BN983S" in notice and "株洲县林建运输有限公司" in notice
    act(cli, cid, arch, "file", "2025-06-11")
    case = act(cli, cid, arch, "notify", "2025-06-12")
    assert [d["kind"] for d in case["documents"]] == ["notice", "inform"]
    case = act(cli, cid, arch, "decide", "2025-06-20")
    assert [d["kind"] for d in case["documents"]] == ["notice", "inform", "decision"]
    pkg = tmp_path / "var" / "evidence" / cid
    inform = (pkg / case["documents"][1]["files"][0]["path"]).read_text()
    assert "行政处罚告知书" in inform and "3日内" in inform and "5日内要求听证" in inform   # case.* deadlines
    decision = (pkg / case["documents"][2]["files"][0]["path"]).read_text()
    for element in ("行政处罚决定书", "当事人：株洲县林建运输有限公司", "湘BN983S", "21,000 千克", "18,000 千克",
                    "3,000 千克", "湘计检字2919573204",                     # evidence: calibration certificate
                    "法制审核已完成", "第四十三条", "罚款人民币 1,500 元", "15日内缴纳罚款", "60日内向某市人民政府申请行政复议",
                    "6个月内依法向某市某区人民法院提起行政诉讼", "2025年6月20日", "2025年6月12日依法告知",
                    "某市交通运输综合行政执法支队", "（印章）"):
        assert element in decision, element
    # the same case shown again lists the same documents; every file is on the verified chain
    code, out, err = cli("case", "show", cid, "--archive", str(arch))
    assert [d["kind"] for d in out[0]["documents"]] == ["notice", "inform", "decision"]
    code, out, err = cli("evidence", "verify", str(pkg))
    assert code == 0, err
    # re-issuing an unchanged document adds nothing; altering a stored document is found
    code, out, err = cli("case", "document", cid, "decision", "--archive", str(arch), "--by", "officer7")
    assert out[0]["entry"] == case["documents"][2]["entry"]
    f = pkg / case["documents"][2]["files"][0]["path"]
    f.write_text(f.read_text().replace("1,500", "150"))
    code, out, err = cli("evidence", "verify", str(pkg))
    assert code == 1 and f"file {case['documents'][2]['files'][0]['path']}: altered" in cli.stdout


def test_agency_templates_and_configuration(cli, tmp_path):
    cid, arch = fined_case(cli, tmp_path)
    for a, at in (("confirm", "2025-06-10"), ("file", "2025-06-11"), ("notify", "2025-06-12"), ("decide", "2025-06-20")):
        act(cli, cid, arch, a, at)
    own = tmp_path / "templates"
    own.mkdir()
    bundled = (ROOT / "streams/doc_templates/decision.html").read_text()
    (own / "decision.html").write_text(bundled.replace("行政处罚决定书</h1>", "行政处罚决定书</h1><p>本市格式 v2</p>"))
    extra = (f'documents.templates_dir="{own}";documents.agency_name="长沙市交通运输综合行政执法支队";'
             'documents.review_days=30')
    code, out, err = cli("case", "document", cid, "decision", "--archive", str(arch), "--by", "o8",
                         "--out", str(tmp_path / "d.html"), extra=extra)
    assert code == 0, err
    page = (tmp_path / "d.html").read_text()
    assert "本市格式 v2" in page and "长沙市交通运输综合行政执法支队" in page and "30日内" in page
    assert out[0]["entry"].endswith("-document.json")
    # an adapted template that drops a required element (the court) is refused
    (own / "decision.html").write_text(bundled.replace("$court", "法院"))
    code, out, err = cli("case", "document", cid, "decision", "--archive", str(arch), "--by", "o8", extra=extra)
    assert code == 2 and "bad_template" in err and "court" in err


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
def test_decision_printed_to_pdf_by_chromium(cli, tmp_path):
    from playwright.sync_api import sync_playwright
    cid, arch = fined_case(cli, tmp_path)
    for a, at in (("confirm", "2025-06-10"), ("file", "2025-06-11"), ("notify", "2025-06-12"), ("decide", "2025-06-20")):
        act(cli, cid, arch, a, at)
    pdf = tmp_path / "decision.pdf"
    code, out, err = cli("case", "document", cid, "decision", "--archive", str(arch), "--by", "officer7",
                         "--out", str(pdf))
    assert code == 0, err
    assert pdf.read_bytes()[:5] == b"%PDF-" and [f["media_type"] for f in out[0]["files"]] == \
        ["text/html", "application/pdf"]
    pkg = tmp_path / "var" / "evidence" / cid
    assert (pkg / out[0]["files"][1]["path"]).read_bytes() == pdf.read_bytes()
    assert cli("evidence", "verify", str(pkg))[0] == 0
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, check=True).stdout.decode()
    else:       # no poppler here: the text Chromium printed is the HTML's, as laid out in the browser
        html = pkg / out[0]["files"][0]["path"]
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = b.new_page(viewport={"width": 900, "height": 1250})
            page.goto(html.as_uri())
            text = page.inner_text("body")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "decision.png"), full_page=True)
            b.close()
    flat = " ".join(text.split())
    for element in ("行政处罚决定书", "湘BN983S", "罚款人民币 1,500 元", "申请行政复议", "提起行政诉讼", "2025年6月20日"):
        assert element in flat, element


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
def test_case_page_lists_documents_and_issues_one(cli, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from web_support import ConsoleThread, logged_in_page, make_app, make_cfg, seed_user
    cfg = make_cfg(tmp_path)            # the same data dir as the CLI fixture (tmp_path / "var")
    seed_user(cfg, "ops", "operator")
    arch = cfg.archive_path
    code, out, err = cli("assess", "wim", "--registry", str(ROOT / "examples/registry.json"), "--archive", str(arch),
                         "--evidence-dir", str(tmp_path / "var" / "evidence"),
                         stdin=(ROOT / "examples/wim-readings.jsonl").read_bytes())
    cid = next(v for v in out if v.get("action") == "fine")["case_id"]
    officers.enrol(cli.monkeypatch, arch, "officer7")
    for a, at in (("confirm", "2025-06-10"), ("file", "2025-06-11"), ("notify", "2025-06-12"), ("decide", "2025-06-20")):
        act(cli, cid, arch, a, at)
    app, hub, fleet = make_app(cfg)
    errors: list[str] = []
    with ConsoleThread(app) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = logged_in_page(browser, srv.url, "ops", errors)
            page.click("button[data-view='cases']")
            page.click(f"tr[data-case='{cid}']")
            expect(page.locator("#documents tr[data-document]")).to_have_count(2)
            expect(page.locator("#documents tr[data-document='decision']")).to_contain_text("行政处罚决定书")
            page.click("button[data-issue='notice']")
            expect(page.locator("#documents tr[data-document]")).to_have_count(3)
            # the stored 决定书 opens from the case page (served inline, its own styles)
            href = page.locator("#documents tr[data-document='decision'] a").first.get_attribute("href")
            r = page.request.get(srv.url + href)
            assert r.status == 200 and "罚款人民币 1,500 元" in r.text()
            assert "style-src 'unsafe-inline'" in r.headers["content-security-policy"]
            ARTIFACTS.mkdir(exist_ok=True)
            page.locator("#documents").screenshot(path=str(ARTIFACTS / "case-documents.png"))
        finally:
            browser.close()
    assert errors == []
