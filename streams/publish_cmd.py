"""``roadwatch publish decisions``: the public list of decided cases (行政处罚决定公示) as decisions.html and
decisions.json (models/publication.py: masking, the working-day deadline, withdrawn decisions left out)."""
from __future__ import annotations

import argparse
import html
import sys
from datetime import date, datetime
from pathlib import Path

import orjson

from roadwatch.models.config import Config
from roadwatch.models.publication import CalendarError, decision_list
from roadwatch.models.records import BEIJING
from roadwatch.streams.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archive", required=True, metavar="PATH", help="the archive (SQLite file or PostgreSQL URL)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for decisions.html and decisions.json")
    p.add_argument("--at", metavar="YYYY-MM-DD", help="the list as of this day (default today, Beijing time)")


def to_html(doc: dict) -> bytes:
    e = html.escape
    rows = "".join(
        f"<tr data-case=\"{e(d['case_id'])}\"><td>{e(d['doc_no'])}</td><td>{e(d['decided_on'])}</td>"
        f"<td>{e(d['party'])}</td><td>{e(d['plate'])}</td><td>{e(d['facts'])}</td><td>{e(d['penalty'])}</td>"
        f"<td>{e(d['basis'])}</td></tr>" for d in doc["decisions"])
    page = (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>行政处罚决定公示</title>'
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;width:100%;font-size:13px}"
            "th,td{border:1px solid #999;padding:4px 6px;text-align:left;vertical-align:top}th{background:#eee}"
            f"</style></head><body><h1>{e(doc['authority'])} 行政处罚决定公示</h1>"
            f"<p>截至 {e(doc['as_of'])}，共 {len(doc['decisions'])} 件。个人信息已按规定隐去。</p>"
            "<table><thead><tr><th>决定书文号</th><th>决定日期</th><th>当事人</th><th>车辆号牌</th><th>违法事实</th>"
            f"<th>处罚内容</th><th>处罚依据</th></tr></thead><tbody>{rows}</tbody></table></body></html>")
    return page.encode()


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.archive import open_archive
    from roadwatch.streams.archive.publication import decided_cases
    from roadwatch.streams.cases import CaseStore
    try:
        as_of = date.fromisoformat(args.at) if args.at else datetime.now(BEIJING).date()
    except ValueError:
        raise UsageError(f"--at: {args.at!r} is not a YYYY-MM-DD date") from None
    if "://" not in str(args.archive) and not Path(args.archive).is_file():
        raise UsageError(f"no archive at {args.archive}")
    store = CaseStore(open_archive(args.archive), cfg, data_dir=cfg.data_dir)
    cases = [store.show(cid) for cid, _ in decided_cases(store.conn)]
    try:
        doc = decision_list([c for c in cases if c], cfg, as_of)
    except CalendarError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decisions.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    (out / "decisions.html").write_bytes(to_html(doc))
    print(f"wrote {out}/decisions.{{html,json}}: {len(doc['decisions'])} decision(s), "
          f"{len(doc['withdrawn'])} withdrawn, as of {doc['as_of']}", file=sys.stderr)
    return 0
