"""Issuing case documents: render (models/documents.py), store in the case's evidence package, chain them.

A document is written to ``<package>/documents/<kind>-<sha8>.html`` (and ``.pdf`` when asked and Chromium is
there) and recorded as a new signed entry on the package's chain whose fact lists each file with its sha256
(``evidence verify`` checks them, models/evidence.py). The case JSON lists its documents (``documents``), read
back from those entries. Re-issuing an unchanged document is a no-op (the entry id hashes the HTML); a changed
one (new facts, an adapted template) is a new entry beside the old — nothing is rewritten.

PDF: headless Chromium's print (``page.pdf``) through Playwright with Debian's /usr/bin/chromium
($ROADWATCH_CHROMIUM overrides the path); where no Chromium is installed only the HTML is produced and the
command says so.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import orjson

from roadwatch.models.config import Config
from roadwatch.models.documents import KINDS, DocumentError, render
from roadwatch.models.evidence import append_entry

BUNDLED = Path(__file__).resolve().parent / "doc_templates"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def template_text(kind: str, cfg: Config) -> tuple[str, str]:
    """(text, where it came from): the agency's copy in ``documents.templates_dir`` if present, else bundled.
    ``base`` is the frame every document shares."""
    if kind not in KINDS and kind != "base":
        raise DocumentError("not_issuable", f"unknown document {kind!r}; one of {', '.join(KINDS)}")
    own = cfg["documents.templates_dir"]
    if own:
        f = Path(own) / f"{kind}.html"
        if f.is_file():
            return f.read_text(encoding="utf-8"), str(f)
    return (BUNDLED / f"{kind}.html").read_text(encoding="utf-8"), f"bundled {kind}.html"


def chromium_path() -> str | None:
    env = os.environ.get("ROADWATCH_CHROMIUM")
    for c in ((env,) if env else ()) + CHROMIUM_CANDIDATES:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return shutil.which("chromium")


def html_to_pdf(html_file: Path, pdf_file: Path) -> bool:
    """Print ``html_file`` with headless Chromium (A4, backgrounds); False when there is no Chromium or
    Playwright (the HTML is still the document)."""
    exe = chromium_path()
    if exe is None:
        return False
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return False
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(html_file.resolve().as_uri())
            page.pdf(path=str(pdf_file), format="A4", print_background=True, prefer_css_page_size=True)
        finally:
            browser.close()
    return True


def package_of(store, case_id: str) -> Path | None:
    row = store.get(case_id)
    if not row or not row.get("evidence_path"):
        return None
    pkg = Path(row["evidence_path"])
    if not pkg.is_absolute() and not (pkg / "manifest.json").exists() and store.data_dir is not None:
        pkg = store.data_dir / pkg
    return pkg if (pkg / "manifest.json").exists() else None


def issue(store, case_id: str, kind: str, *, by: str, pdf: bool = False, case: dict | None = None) -> dict:
    """Render, store and chain one document; returns its listing (kind, files with sha256, entry path)."""
    case = case or store.show(case_id)
    if case is None:
        raise DocumentError("not_found", f"no case {case_id!r}")
    text, source = template_text(kind, store.cfg)
    base, base_source = template_text("base", store.cfg)
    page = render(kind, case, store.cfg, text, base).encode("utf-8")
    pkg = package_of(store, case_id)
    if pkg is None:
        raise DocumentError("no_evidence", f"case {case_id} has no evidence package to hold its documents")
    sha = hashlib.sha256(page).hexdigest()
    ddir = pkg / "documents"
    ddir.mkdir(exist_ok=True)
    name = f"documents/{kind}-{sha[:8]}.html"
    if not (pkg / name).exists():
        tmp = ddir / f".{kind}.tmp-{os.getpid()}"
        tmp.write_bytes(page)
        os.replace(tmp, pkg / name)
    files = [{"path": name, "sha256": sha, "media_type": "text/html"}]
    pdf_note = None
    if pdf:
        pdf_name = name[:-5] + ".pdf"
        if html_to_pdf(pkg / name, pkg / pdf_name):
            files.append({"path": pdf_name, "sha256": hashlib.sha256((pkg / pdf_name).read_bytes()).hexdigest(),
                          "media_type": "application/pdf"})
        else:
            pdf_note = "no Chromium on this machine: HTML only"
    fid = f"{case_id}:document:{kind}:" + hashlib.sha256(
        orjson.dumps([f["sha256"] for f in files])).hexdigest()[:16]
    entry = append_entry(pkg, {"id": fid, "kind": "document", "document": kind, "title": KINDS[kind],
                               "by": by, "template": source, "frame": base_source,
                               "files": files}, key=store._key(store.data_dir),
                         sync=store.cfg["evidence.chain_sync"])
    store.archive_evidence(case_id, pkg)          # the document and its entry, for the other hosts too
    out = {"kind": kind, "title": KINDS[kind], "files": files, "entry": entry.relative_to(pkg).as_posix()}
    if pdf_note:
        out["pdf_note"] = pdf_note
    return out


def listing(pkg: Path | None) -> list[dict]:
    """The documents on a package's chain, oldest first (from its signed entries)."""
    if pkg is None or not (pkg / "entries").is_dir():
        return []
    out = []
    for f in sorted((pkg / "entries").glob("*.json")):
        try:
            doc = orjson.loads(f.read_bytes())
        except orjson.JSONDecodeError:
            continue
        fact = doc.get("fact") or {}
        if fact.get("kind") == "document":
            out.append({"kind": fact.get("document"), "title": fact.get("title"), "files": fact.get("files") or [],
                        "by": fact.get("by"), "issued_at": doc.get("created_at"),
                        "entry": f.relative_to(pkg).as_posix()})
    return out
