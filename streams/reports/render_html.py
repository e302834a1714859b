"""report.html: one self-contained page (inline CSS and SVG, no scripts, no external assets)."""
from __future__ import annotations

from html import escape

from roadwatch.models.rates import LABELS, PERCENT_RATES, RATE_NAMES

from .charts import grouped_bars, hbar_chart, line_chart
from .labels import basis_label, reason_label
from .narrative import fmt_number

CSS = """
body{font-family:"Noto Sans CJK SC","Source Han Sans SC","WenQuanYi Micro Hei","Microsoft YaHei","PingFang SC",
"DejaVu Sans",sans-serif;margin:24px auto;max-width:1180px;color:#222;background:#f7f7f5}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;border-left:5px solid #1f77b4;padding-left:8px;margin-top:28px}
.meta{color:#666;font-size:13px}.narrative{background:#fff;border:1px solid #ddd;padding:14px 18px;line-height:1.9}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#e8eef5}
td.t,th.t{text-align:left}.null{color:#999}.charts{display:flex;flex-wrap:wrap;gap:10px}.charts svg{border:1px solid #ddd}
.up{color:#2ca02c}.down{color:#d62728}
"""


def _e(x) -> str:
    return escape(str(x))


def _cell(v, unit: str = "") -> str:
    if v is None:
        return '<td class="null">—</td>'
    return f"<td>{_e(fmt_number(v))}{unit}</td>"


def _figure(rec: dict) -> str:
    field_ = "percent" if rec["name"] in PERCENT_RATES else "value"
    unit = "%" if field_ == "percent" else ""
    v = rec.get(field_)
    if v is None:
        return f'<td class="null" title="{_e(rec["reason"])}">—</td>'
    return f"<td>{_e(fmt_number(v))}{unit}</td>"


def _delta(m: dict | None) -> str:
    if not m or m.get("delta") is None:
        return f'<td class="null" title="{_e((m or {}).get("reason") or "")}">—</td>'
    d = m["delta"]
    cls = "up" if d > 0 else "down" if d < 0 else ""
    return f'<td class="{cls}">{"+" if d > 0 else ""}{_e(fmt_number(d))}</td>'


def _rates_table(report: dict) -> str:
    rows = ["<table><tr><th class=t>指标</th><th>分子</th><th>分母</th><th>结果</th><th>较上月</th>"
            "<th class=t>分子/分母口径</th><th>车辆/行数</th></tr>"]
    mom = report["month_on_month"]["rates"]
    for name in RATE_NAMES:
        r = report["rates"][name]
        rows.append(f"<tr><td class=t>{_e(r['label'])}</td>{_cell(r['numerator'])}{_cell(r['denominator'])}"
                    f"{_figure(r)}{_delta(mom.get(name))}<td class=t>{_e(r['numerator_label'])} / "
                    f"{_e(r['denominator_label'])}</td><td>{r['trace']['vehicles']} / {r['trace']['rows']}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _breakdown_table(title: str, groups: dict[str, dict], names: dict[str, str] | None = None,
                     scores: dict[str, dict | None] | None = None) -> str:
    head = "".join(f"<th>{_e(LABELS[n])}</th>" for n in RATE_NAMES)
    out = [f"<h3>{_e(title)}</h3><table><tr><th class=t>单位</th><th>车辆数</th>{head}"
           + ("<th>考核得分</th>" if scores is not None else "") + "</tr>"]
    for key, rates in groups.items():
        label = key if not names else f"{names.get(key, key)} ({key})"
        score = ""
        if scores is not None:
            s = scores.get(key)
            score = _cell(None) if s is None else f"<td>{_e(fmt_number(s['total']))}/{_e(fmt_number(s['max_points']))}</td>"
        out.append(f"<tr><td class=t>{_e(label)}</td><td>{rates['network_rate']['denominator']}</td>"
                   + "".join(_figure(rates[n]) for n in RATE_NAMES) + score + "</tr>")
    out.append("</table>")
    return "".join(out)


def _score_table(score: dict | None) -> str:
    if score is None:
        return "<p class=null>无考核得分（无应入网车辆）。</p>"
    out = [f"<table><tr><th class=t>考核项（{_e(score['table'])}）</th><th>比率</th><th>分值</th><th>得分</th>"
           "<th class=t>规则</th></tr>"]
    for c in score["components"].values():
        rate = None if c["rate"] is None else c["rate"] * 100
        out.append(f"<tr><td class=t>{_e(c['label'])}</td>{_cell(None if rate is None else round(rate, 4), '%')}"
                   f"<td>{_e(fmt_number(c['weight']))}</td><td>{_e(fmt_number(c['points']))}</td>"
                   f"<td class=t>{_e(c['rule'])}{'；' + _e(c['reason']) if c.get('reason') else ''}</td></tr>")
    out.append(f"<tr><th class=t>合计</th><td></td><td>{_e(fmt_number(score['max_points']))}</td>"
               f"<th>{_e(fmt_number(score['total']))}</th><td class=t>依据：{_e(basis_label(score['basis']))}</td></tr></table>")
    return "".join(out)


def _platforms(pl: dict) -> str:
    """平台考核: 平台连通率 and 查岗响应率 per JT/T 809 lower platform, numerator and denominator shown."""
    if not pl.get("available"):
        return f"<p class=null>{_e(pl.get('reason') or '无平台数据')}</p>"
    out = ["<table><tr><th class=t>下级平台</th><th>转发车辆</th><th>累计在线(分钟)</th><th>总时间(分钟)</th>"
           "<th>平台连通率</th><th>查岗响应次数</th><th>查岗次数</th><th>查岗响应率</th><th class=t>查岗明细</th></tr>"]
    for p in pl["items"]:
        c, i = p["connectivity_rate"], p["inspection_response_rate"]
        t = i["trace"]
        out.append(f"<tr><td class=t>{_e(p['name'])} ({p['center_id']})</td><td>{p['vehicles']}</td>"
                   f"{_cell(c['numerator'])}{_cell(c['denominator'])}{_cell(c['percent'], '%')}"
                   f"{_cell(i['numerator'])}{_cell(i['denominator'])}{_cell(i['percent'], '%')}"
                   f"<td class=t>按时 {t['answered']}，超时 {t['late']}，未答 {t['missed']}，未送达 {t['undeliverable']}，"
                   f"待答 {t['pending']}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _overload(ov: dict) -> str:
    if not ov.get("available"):
        return f"<p class=null>{_e(ov.get('reason', '无数据'))}</p>"
    out = ["<table><tr><th class=t>检测站</th><th>检测车辆(辆次)</th><th>超限</th><th>超限率</th><th>警告</th>"
           "<th>罚款(起)</th><th>罚款金额(元)</th><th>转人工审核</th><th>查处率(决定/案件)</th></tr>"]
    for s in ov["stations"] + [ov["total"]]:
        name = s["name"] if s["station_id"] is None else f"{s['name']} ({s['station_id']})"
        q = s["enforcement_rate"]
        out.append(f"<tr><td class=t>{_e(name)}</td><td>{s['readings']}</td><td>{s['over_limit']}</td>"
                   f"{_cell(s['over_limit_percent'], '%')}<td>{s['warnings']}</td><td>{s['fines']}</td>"
                   f"<td>{s['fine_yuan']}</td><td>{s['reviews']}</td>"
                   f"<td>{_e(fmt_number(q['percent']) + '%' if q['percent'] is not None else '—')}"
                   f" ({q['numerator']}/{q['denominator']})</td></tr>")
    out.append("</table><h3>人工审核队列（按原因）</h3><table><tr><th class=t>原因</th><th>数量</th><th>待审核</th></tr>")
    for reason, r in ov["review_queue"].items():
        out.append(f"<tr><td class=t>{_e(reason_label(reason))}</td><td>{r['count']}</td><td>{r['open']}</td></tr>")
    out.append("</table><h3>“一超四罚”：《公路安全保护条例》第六十六条（截至月末，按处罚决定日）</h3>"
               "<table><tr><th class=t>对象</th><th>涉及案件</th><th>涉及主体</th><th class=t>处理建议</th></tr>")
    for target, t in ov["escalations"]["targets"].items():
        recs = "；".join(f"{k}×{v}" for k, v in t["recommendations"].items())
        out.append(f"<tr><td class=t>{_e(t['label'])}</td><td>{t['cases']}</td>{_cell(t['subjects'])}"
                   f"<td class=t>{_e(recs)}</td></tr>")
    out.append("</table>")
    f = ov["cases"]["funnel"]
    labels = ov["cases"]["labels"]
    items = [(labels[s], f[s]) for s in ov["cases"]["stages"]]
    out.append('<div class="charts">' + hbar_chart(items, "案件办理漏斗（起）", max(1, f["detected"]), "起",
                                                   color="#ff7f0e") + "</div>")
    out.append(f"<p>已作出处罚决定的罚款金额合计：{ov['cases']['decided_fine_yuan']} 元；未审核：{f['open']} 起。</p>")
    out.append(_interception(ov.get("interception")))
    return "".join(out)


def _rate_cell(q: dict) -> str:
    pct = fmt_number(q["percent"]) + "%" if q["percent"] is not None else "—"
    return f"<td>{_e(pct)} ({q['numerator']}/{q['denominator']})</td>"


def _interception(ic: dict | None) -> str:
    if not ic:
        return ""
    out = ["<h3>布控拦截：拦截率与查处率（按检测站）</h3>",
           "<table><tr><th class=t>检测站</th><th class=t>类型</th><th>布控任务</th><th>拦截</th><th>未发现</th>"
           "<th>放行</th><th>超时未处置</th><th>布控中</th><th>拦截率(拦截/任务)</th><th>查处率(决定/案件)</th>"
           "<th>卸载(吨)</th><th>检测至拦截中位时长(分钟)</th></tr>"]
    kinds = {"fixed": "固定", "mobile": "流动"}
    for s in ic["stations"] + [ic["total"]]:
        name = s["name"] if s["station_id"] is None else f"{s['name']} ({s['station_id']})"
        wait = s["median_detect_to_intercept_min"]
        out.append(f"<tr><td class=t>{_e(name)}</td><td class=t>{_e(kinds.get(s['kind'], s['kind'] or ''))}</td>"
                   f"<td>{s['tasks']}</td><td>{s['intercepted']}</td><td>{s['not_found']}</td><td>{s['released']}</td>"
                   f"<td>{s['expired']}</td><td>{s['open']}</td>{_rate_cell(s['interception_rate'])}"
                   f"{_rate_cell(s['enforcement_rate'])}<td>{_e(fmt_number(s['unloaded_t']))}</td>"
                   f"{_cell(wait)}</tr>")
    out.append(f"</table><p class=note>{_e(ic['definition'])}</p>")
    return "".join(out)


def render_html(report: dict) -> str:
    y, m = report["month"].split("-")
    title = f"{report['region'] or ''}{int(y)}年{int(m)}月“两客一危”车辆动态监控及治超月报"
    trend = report["trend"]
    months = list(trend["months"])
    main_series = {LABELS[n]: trend["series"][n] for n in ("online_rate", "track_integrity_rate",
                                                             "data_qualified_rate")}
    cats = list(report["by_category"])
    cat_series = {LABELS[n]: [report["by_category"][c][n]["percent"] for c in cats]
                  for n in ("network_rate", "online_rate", "track_integrity_rate", "data_qualified_rate")}
    ent_rank = report["rankings"]["enterprises"]
    county_rank = report["rankings"]["counties"]
    ent_max = max([i["max_points"] for i in ent_rank["top"]] or [100])
    charts = [
        line_chart(months, main_series, "近期指标趋势"),
        line_chart(months, {LABELS["drift_rate"]: trend["series"]["drift_rate"]}, "卫星定位漂移车辆率趋势"),
        grouped_bars(cats, cat_series, "分类别指标"),
        hbar_chart([(i["name"], i["score"]) for i in ent_rank["top"]], "企业考核得分前列", ent_max, "分",
                   color="#2ca02c"),
        hbar_chart([(i["name"], i["score"]) for i in ent_rank["bottom"]], "企业考核得分后列", ent_max, "分",
                   color="#d62728"),
        hbar_chart([(i["id"], i["score"]) for i in county_rank["top"]], "区县考核得分排名", 100, "分"),
    ]
    tr = report["trace"]
    excluded = "，".join(f"{reason_label(k)} {v} 条" for k, v in tr["rows_excluded"].items()) or "无"
    return "".join([
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p class=meta>平台：{_e(report['platform'])}　统计时点：{_e(report['snapshot'])}　口径：{_e(report['population']['filter'])}"
        f"　比率按四舍五入保留{report['config']['report.decimals']}位小数</p>",
        f"<h2>综述</h2><div class=narrative>{_e(report['narrative'])}</div>",
        "<h2>主要指标</h2>", _rates_table(report),
        '<h2>图表</h2><div class="charts">', "".join(charts), "</div>",
        "<h2>分类统计</h2>", _breakdown_table("按车辆类别", report["by_category"]),
        "<h2>考核得分</h2>", _score_table(report["scores"]["agency"]),
        _breakdown_table("按企业", report["by_enterprise"],
                         {k: v["name"] for k, v in report["enterprises"].items()}, report["scores"]["by_enterprise"]),
        _breakdown_table("按区县", report["by_county"], None, report["scores"]["by_county"]),
        "<h2>平台考核（JT/T 809）</h2>", _platforms(report.get("platforms") or {}),
        "<h2>治超非现场执法</h2>", _overload(report["overload"]),
        f"<h2>数据追溯</h2><p>参与统计的车辆日记录 {tr['rows_used']} 条；剔除 {tr['excluded_rows_total']} 条（{_e(excluded)}）。"
        "逐车明细见 trace_vehicles.csv，剔除记录见 trace_excluded.csv。</p>",
        "</body></html>",
    ])
