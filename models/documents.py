"""Case documents as printable HTML: 违法行为通知书 (notice), 行政处罚告知书 (inform), 行政处罚决定书 (decision),
违法超限运输抄告单 (agency_notice, the 62号令 Art. 44 notice to the home agency: models/notices.py).

Pure: ``render(kind, case, cfg, template_text)`` fills a template from the case as ``CaseStore.show`` returns
it (row, manifest, history, liable parties) and the configuration (agency, deadlines). Templates are plain
HTML with ``$name`` placeholders (``string.Template``); every value is HTML-escaped before it is put in, and
lists (evidence, rights) arrive as ready-made, escaped ``<li>`` items. Each document template is the body
only; the frame every document shares (head, page style) is ``base.html`` with ``$title``, ``$case_id`` and
``$body``. The bundled templates live in streams/doc_templates/; an agency adapts copies in
``documents.templates_dir``. Legal basis of each element:
docs/legal-basis.md §9.2.
"""
from __future__ import annotations

import html
from datetime import datetime
from string import Template

from .config import Config
from .devices import APPROVAL_ITEMS

APPROVAL_LABELS = {item: label for item, (_, label) in APPROVAL_ITEMS.items()}

KINDS = {"notice": "违法行为通知书", "inform": "行政处罚告知书", "decision": "行政处罚决定书",
         "agency_notice": "违法超限运输抄告单"}
# the case status from which each document can be issued (a decision needs the decide act)
ISSUABLE_FROM = {"notice": ("confirmed", "filed", "notified", "decided", "served", "closed"),
                 "inform": ("filed", "notified", "decided", "served", "closed"),
                 "decision": ("decided", "served", "closed"),
                 "agency_notice": ("closed",)}
# placeholders every template must use: an adapted template that drops one is refused (a document missing a
# required element must not be issued)
REQUIRED = {
    "notice": ("agency", "doc_no", "party", "plate", "facts", "evidence", "legal_basis", "statement_days"),
    "inform": ("agency", "doc_no", "party", "plate", "facts", "evidence", "legal_basis", "penalty",
               "rights", "statement_days", "hearing_days", "seal"),
    "decision": ("agency", "doc_no", "party", "plate", "facts", "evidence", "legal_basis", "penalty",
                 "rights", "payment_days", "review_days", "review_authority", "litigation_months", "court",
                 "decided_on", "seal"),
    "agency_notice": ("agency", "doc_no", "to_agency", "basis", "plate", "vehicle_type", "owner", "enterprise",
                      "transport_cert_no", "driver_name", "qualification_no", "driver_enterprise", "source_site",
                      "loading_bill", "violation", "decision_no", "decided_on", "penalty", "served_on",
                      "closed_on", "due_on", "seal"),
    "base": ("body",),
}
KIND_CODES = {"notice": "通", "inform": "告", "decision": "罚", "agency_notice": "抄"}


class DocumentError(ValueError):
    """``code``: not_issuable | bad_template."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


def check_template(kind: str, text: str) -> None:
    names = {m.group("named") or m.group("braced") for m in Template.pattern.finditer(text)} - {None}
    missing = [n for n in REQUIRED[kind] if n not in names]
    if missing:
        raise DocumentError("bad_template", f"{kind} template lacks required element(s) {missing}")


def _date_cn(iso: str | None) -> str:
    if not iso:
        return "____年__月__日"
    d = datetime.fromisoformat(iso)
    return f"{d.year}年{d.month}月{d.day}日"


def _li(items: list[str]) -> str:
    return "".join(f"<li>{html.escape(i)}</li>" for i in items)


def _or_none(v) -> str:
    return "—" if v is None or v == "" else str(v)


def notice_context(case: dict, cfg: Config) -> dict[str, str]:
    """The 抄告单's elements from the notice (``case["agency_notice"]``, models/notices.py)."""
    n = case.get("agency_notice")
    if not n:
        raise DocumentError("not_issuable", f"case {case['case_id']} has no 抄告 (it is made on closure)")
    v, d, dec, src, vio = n["vehicle"], n["driver"], n["decision"], n["source"], n["violation"]
    e = html.escape
    kind = "汽车列车" if v.get("kind") == "train" else "货车"
    return {
        "title": e(KINDS["agency_notice"]), "case_id": e(case["case_id"]), "notice_id": e(n["notice_id"]),
        "agency": e(cfg["documents.agency_name"]), "seal": e(cfg["documents.seal_text"]),
        "agency_contact": e(cfg["documents.agency_contact"]),
        "doc_no": e(f"{cfg['documents.number_prefix']}{KIND_CODES['agency_notice']}〔{dec['closed_on'][:4]}〕"
                    f"{case['case_id']}号"),
        "to_agency": e(n.get("to_agency_name") or n.get("to_agency") or "车籍地道路运输管理机构（未查明）"),
        "basis": e(n["basis"]), "plate": e(v["plate"]),
        "vehicle_type": e(f"{_or_none(v.get('axle_count'))}轴{kind}，{_or_none(v.get('category'))}"),
        "owner": e(_or_none(v.get("owner"))), "enterprise": e(_or_none(v.get("enterprise"))),
        "transport_cert_no": e(_or_none(v.get("transport_cert_no"))),
        "driver_name": e(_or_none(d.get("name")) if d.get("identified") else "未查明"),
        "qualification_no": e(_or_none(d.get("qualification_no"))),
        "driver_enterprise": e(_or_none(d.get("enterprise"))),
        "source_site": e(_or_none(src.get("name") or src.get("site_id"))),
        "loading_bill": e(_or_none(src.get("loading_bill"))),
        "violation": e(f"{_date_cn(vio.get('ts'))} 于 {_or_none(vio.get('station'))} 检测，车货总质量 "
                       f"{(vio.get('gross_kg') or 0):,.0f} 千克，超过限定标准 {(vio.get('limit_kg') or 0):,.0f} 千克 "
                       f"{(vio.get('excess_kg') or 0):,.0f} 千克（{_or_none(vio.get('excess_pct'))}%）"),
        "decision_no": e(dec["doc_no"]), "decided_on": e(_date_cn(dec["decided_on"])), "penalty": e(dec["penalty"]),
        "penalty_basis": e(_or_none(dec.get("basis"))), "served_on": e(_date_cn(dec.get("served_on"))),
        "closed_on": e(_date_cn(dec["closed_on"])), "due_on": e(_date_cn(n["due_on"])),
        "due_working_days": str(int(cfg["notices.due_working_days"])),
        "evidence": e(f"证据包 {n['evidence']['package']}（证据链 {_or_none(n['evidence'].get('chain_id'))}）及案卷文书："
                      + "、".join(KINDS.get(k, k) for k in n["evidence"].get("documents") or [])),
        "issued_on": e(_date_cn(dec["closed_on"])),
    }


def context(kind: str, case: dict, cfg: Config) -> dict[str, str]:
    """Every element of the document, as escaped text (``*_html`` values are escaped lists)."""
    if kind not in KINDS:
        raise DocumentError("not_issuable", f"unknown document {kind!r}; one of {', '.join(KINDS)}")
    if case["status"] not in ISSUABLE_FROM[kind]:
        raise DocumentError("not_issuable", f"a {KINDS[kind]} needs the case {' or '.join(ISSUABLE_FROM[kind])}; "
                                            f"it is {case['status']}")
    if kind == "agency_notice":
        return notice_context(case, cfg)
    m = case.get("manifest") or {}
    site, veh, tg = m.get("site") or {}, m.get("vehicle") or {}, m.get("targets") or {}
    lim, exc, meas = m.get("limit") or {}, m.get("excess") or {}, m.get("measurement") or {}
    tol = m.get("tolerance") or {}
    owner = ((case.get("liable") or {}).get("owner") or {}).get("owner") or (tg.get("vehicle") or {}).get("owner")
    ent = tg.get("enterprise") or {}
    drv = (case.get("liable") or {}).get("driver") or {}
    acts = {h["act"]: h for h in case.get("history") or []}
    ts = (m.get("time") or {}).get("ts") or case.get("ts")
    year = (ts or "0000")[:4]
    party = owner or "（车辆所有人未登记）"
    if ent.get("name") and ent.get("name") != owner:
        party += f"（道路运输经营者：{ent['name']}）"
    facts = (f"{_date_cn(ts)} {str(ts)[11:16]}，号牌为 {case['plate']} 的{veh.get('axle_count', '')}轴"
             f"{'汽车列车' if veh.get('kind') == 'train' else '货车'}经 {site.get('name') or case.get('station_id')}"
             f"（设备 {site.get('device_id') or ''}）动态称重检测，车货总质量 {meas.get('gross_kg', 0):,.0f} 千克，"
             f"超过 {lim.get('limit_kg', 0):,.0f} 千克的限定标准（{lim.get('basis') or ''}）"
             f"{exc.get('kg', 0):,.0f} 千克（{exc.get('pct', 0)}%），已扣除或计入检测允许误差（{tol.get('source') or ''}），"
             f"属于违法超限运输。")
    evidence = [f"动态称重检测记录及证据包 {case['case_id']}（电子签名，证据链 "
                f"{(m.get('chain') or {}).get('chain_id', '')}）",
                f"计量检定证书 {site.get('certificate_no') or '—'}，有效期 {str(site.get('certificate_valid_from') or '')[:10]}"
                f" 至 {str(site.get('certificate_valid_to') or '')[:10]}"]
    appr = (site.get("device_approval") or {}).get("items") or {}
    if appr:
        state = {"ok": "已完成", "pending": "未生效", "missing": "未完成"}
        evidence.append("检测设备" + "、".join(f"{APPROVAL_LABELS.get(k, k)}{state.get(v, v)}" for k, v in appr.items())
                        + "（《中华人民共和国行政处罚法》第四十一条）")
    for a in m.get("artefacts") or []:
        if isinstance(a, dict) and a.get("kind"):
            evidence.append(f"现场图像（{a['kind']}），SHA-256 {str(a.get('sha256'))[:16]}…")
    if drv.get("identified") and drv.get("id"):
        evidence.append(f"驾驶人身份（{drv.get('source')}）：{drv['id']}")
    rp = (m.get("penalties") or {}).get("road_administration") or {}
    fine = int(case.get("fine_yuan") or rp.get("fine_yuan") or 0)
    action = case.get("action")
    penalty = f"罚款人民币 {fine:,} 元" if action == "fine" or fine else "警告"
    if fine and rp.get("tonnes"):
        penalty += f"（超限 {rp['tonnes']} 吨）"
    sd, hd = int(cfg["case.statement_days"]), int(cfg["case.hearing_days"])
    pay, rev, lit = int(cfg["documents.payment_days"]), int(cfg["documents.review_days"]), \
        int(cfg["documents.litigation_months"])
    if kind == "decision":
        rights = [f"当事人应当自收到本决定书之日起{pay}日内缴纳罚款；到期不缴纳的，每日按罚款数额的百分之三加处罚款"
                  f"（《中华人民共和国行政处罚法》第六十七条、第七十二条）。",
                  f"如不服本决定，可以在收到本决定书之日起{rev}日内向{cfg['documents.review_authority']}申请行政复议，"
                  f"或者在{lit}个月内依法向{cfg['documents.court']}提起行政诉讼。",
                  "行政复议和行政诉讼期间，本决定不停止执行，法律另有规定的除外。"]
    else:
        rights = [f"当事人有权进行陈述和申辩，可在收到本告知书之日起{sd}日内向本机关提出（《中华人民共和国行政处罚法》"
                  f"第四十五条）；逾期未提出的，视为放弃此权利。",
                  f"拟作出较大数额罚款的，当事人有权在收到本告知书之日起{hd}日内要求听证（同法第六十三条、第六十四条）。",
                  "本机关不因当事人陈述、申辩而给予更重的处罚。"]
    decided = acts.get("decide") or {}
    e = html.escape
    return {
        "title": e(KINDS[kind]), "agency": e(cfg["documents.agency_name"]), "seal": e(cfg["documents.seal_text"]),
        "agency_contact": e(cfg["documents.agency_contact"]),
        "doc_no": e(f"{cfg['documents.number_prefix']}{KIND_CODES[kind]}〔{year}〕{case['case_id']}号"),
        "case_id": e(case["case_id"]), "party": e(party), "plate": e(case["plate"]),
        "enterprise": e(ent.get("name") or "—"), "transport_cert_no": e(ent.get("vehicle_transport_cert_no") or "—"),
        "driver": e(drv.get("id") if drv.get("identified") else "未查明"),
        "facts": e(facts), "evidence": _li(evidence),
        "legal_basis": e(f"《中华人民共和国公路法》第五十条、《公路安全保护条例》第三十三条；处罚依据：{rp.get('basis') or ''}"),
        "penalty": e(penalty), "rights": _li(rights),
        "statement_days": str(sd), "hearing_days": str(hd), "payment_days": str(pay), "review_days": str(rev),
        "review_authority": e(cfg["documents.review_authority"]), "court": e(cfg["documents.court"]),
        "litigation_months": str(lit),
        "notified_on": e(_date_cn((acts.get("notify") or {}).get("at"))),
        "decided_on": e(_date_cn(decided.get("at"))), "decided_by": e(decided.get("by") or ""),
        "issued_on": e(_date_cn(decided.get("at") if kind == "decision" else
                                (acts.get("notify") or acts.get("file") or acts.get("confirm") or {}).get("at"))),
    }


def render(kind: str, case: dict, cfg: Config, template_text: str, base_text: str) -> str:
    """The document: its template filled, inside the shared frame (``base.html``)."""
    check_template(kind, template_text)
    check_template("base", base_text)
    ctx = context(kind, case, cfg)
    body = Template(template_text).safe_substitute(ctx)
    return Template(base_text).safe_substitute(title=ctx["title"], case_id=ctx["case_id"], body=body)
