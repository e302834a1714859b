"""report.xlsx (openpyxl): summary, one sheet per breakdown, scores, overload, per-vehicle trace.

Figures are written as numbers (percent as 85.82 with a 0.00 format), never as text.
"""
from __future__ import annotations

import io

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill

from roadwatch.models.rates import LABELS, PERCENT_RATES, RATE_NAMES

from .labels import basis_label, reason_label
from .render_csv import VEHICLE_COLUMNS

HEAD_FILL = PatternFill("solid", fgColor="E8EEF5")
BOLD = Font(bold=True)


def _header(ws, row: int, titles) -> None:
    for i, t in enumerate(titles, 1):
        c = ws.cell(row=row, column=i, value=t)
        c.font, c.fill = BOLD, HEAD_FILL


def _fig(rec: dict):
    return rec.get("percent") if rec["name"] in PERCENT_RATES else rec.get("value")


def _summary(ws, report: dict) -> None:
    ws.title = "汇总"
    ws["A1"] = f"{report['month']} 两客一危动态监控月报"
    ws["A1"].font = Font(bold=True, size=14)
    ws["A2"] = f"统计时点 {report['snapshot']}；口径 {report['population']['filter']}"
    ws["A3"] = report["narrative"]
    ws["A3"].alignment = Alignment(wrap_text=True, vertical="top")
    ws.merge_cells("A3:H3")
    ws.row_dimensions[3].height = 120
    _header(ws, 5, ("指标", "rate", "分子", "分母", "结果", "单位", "较上月", "说明"))
    mom = report["month_on_month"]["rates"]
    for i, name in enumerate(RATE_NAMES, 6):
        r = report["rates"][name]
        ws.append([r["label"], name, r["numerator"], r["denominator"], _fig(r), r["unit"],
                   mom[name]["delta"], r["reason"] or mom[name]["reason"] or ""])
        ws.cell(row=i, column=5).number_format = "0.00"
    agency = report["scores"]["agency"]
    ws.append([])
    ws.append(["管理机构考核得分", "score", agency["total"] if agency else None,
               agency["max_points"] if agency else None])
    for col, w in zip("ABCDEFGH", (22, 22, 14, 14, 10, 8, 10, 40)):
        ws.column_dimensions[col].width = w


def _breakdown(wb, title: str, groups: dict, names: dict | None = None, scores: dict | None = None) -> None:
    ws = wb.create_sheet(title)
    head = ["编号", "名称"]
    for n in RATE_NAMES:
        head += [f"{LABELS[n]} 分子", f"{LABELS[n]} 分母", f"{LABELS[n]}" + (" %" if n in PERCENT_RATES else "")]
    if scores is not None:
        head.append("考核得分")
    _header(ws, 1, head)
    for key, rates in groups.items():
        row = [key, (names or {}).get(key, key)]
        for n in RATE_NAMES:
            row += [rates[n]["numerator"], rates[n]["denominator"], _fig(rates[n])]
        if scores is not None:
            s = scores.get(key)
            row.append(s["total"] if s else None)
        ws.append(row)
    ws.column_dimensions["A"].width = 18
    ws.column_dimensions["B"].width = 24


def _scores(wb, report: dict) -> None:
    ws = wb.create_sheet("考核")
    agency = report["scores"]["agency"]
    _header(ws, 1, ("考核项", "比率", "分值", "得分", "规则", "说明"))
    if agency:
        for c in agency["components"].values():
            ws.append([c["label"], c["rate"], c["weight"], c["points"], c["rule"], c.get("reason") or ""])
        ws.append(["合计", None, agency["max_points"], agency["total"], basis_label(agency["basis"])])
    ws.append([])
    ws.append(["企业考核（道路运输企业）"])
    start = ws.max_row + 1
    comp_names = ("network_rate", "online_rate", "track_integrity_rate", "data_qualified_rate", "drift_rate",
                  "avg_overspeed_count", "avg_fatigue_seconds")
    _header(ws, start, ["企业", "名称"] + [LABELS[n] + " 得分" for n in comp_names] + ["合计", "满分"])
    for e, s in report["scores"]["by_enterprise"].items():
        if s is None:
            continue
        ws.append([e, report["enterprises"].get(e, {}).get("name", e)]
                  + [s["components"][n]["points"] for n in comp_names] + [s["total"], s["max_points"]])
    ws.column_dimensions["A"].width = 22
    ws.column_dimensions["E"].width = 40


def _overload(wb, report: dict) -> None:
    ws = wb.create_sheet("超限")
    ov = report["overload"]
    if not ov.get("available"):
        ws["A1"] = ov.get("reason", "无数据")
        return
    _header(ws, 1, ("检测站", "名称", "检测车辆(辆次)", "超限", "超限率 %", "警告", "罚款(起)", "罚款金额(元)", "转人工审核",
                    "查处率 %", "已决定(起)", "案件(起)"))
    for s in ov["stations"] + [ov["total"]]:
        q = s["enforcement_rate"]
        ws.append([s["station_id"] or "合计", s["name"], s["readings"], s["over_limit"], s["over_limit_percent"],
                   s["warnings"], s["fines"], s["fine_yuan"], s["reviews"], q["percent"], q["numerator"],
                   q["denominator"]])
    ws.append([])
    r = ws.max_row + 1
    _header(ws, r, ("审核原因", "数量", "待审核"))
    for reason, q in ov["review_queue"].items():
        ws.append([reason_label(reason), q["count"], q["open"]])
    ws.append([])
    r = ws.max_row + 1
    _header(ws, r, ("一超四罚对象", "涉及案件", "涉及主体", "处理建议"))
    for target, t in ov["escalations"]["targets"].items():
        ws.append([t["label"], t["cases"], t["subjects"],
                   "；".join(f"{k}×{v}" for k, v in t["recommendations"].items())])
    ws.append([])
    r = ws.max_row + 1
    f = ov["cases"]["funnel"]
    labels = ov["cases"]["labels"]
    _header(ws, r, ("案件阶段", "数量"))
    for stage in [*ov["cases"]["stages"], "open"]:
        ws.append([labels.get(stage, "未审核"), f[stage]])
    ws.append(["已决定罚款金额(元)", ov["cases"]["decided_fine_yuan"]])
    ic = ov.get("interception")
    if ic:
        ws.append([])
        _header(ws, ws.max_row + 1, ("布控检测站", "名称", "类型", "布控任务", "拦截", "未发现", "放行", "超时未处置",
                                     "布控中", "拦截率 %", "拦截(辆)", "任务(起)", "查处率 %", "已决定(起)", "案件(起)",
                                     "卸载(吨)", "检测至拦截中位时长(分钟)"))
        for s in ic["stations"] + [ic["total"]]:
            q, e = s["interception_rate"], s["enforcement_rate"]
            ws.append([s["station_id"] or "合计", s["name"], s["kind"] or "", s["tasks"], s["intercepted"],
                       s["not_found"], s["released"], s["expired"], s["open"], q["percent"], q["numerator"],
                       q["denominator"], e["percent"], e["numerator"], e["denominator"], s["unloaded_t"],
                       s["median_detect_to_intercept_min"]])
    ws.column_dimensions["A"].width = 24
    ws.column_dimensions["B"].width = 20


def _platforms(wb, report: dict) -> None:
    ws = wb.create_sheet("平台")
    pl = report.get("platforms") or {}
    if not pl.get("available"):
        ws["A1"] = pl.get("reason") or "无平台数据"
        return
    _header(ws, 1, ("下级平台", "接入码", "转发车辆", "累计在线(分钟)", "总时间(分钟)", "平台连通率 %", "查岗响应次数",
                    "查岗次数", "查岗响应率 %", "超时", "未答", "未送达"))
    for p in pl["items"]:
        c, i = p["connectivity_rate"], p["inspection_response_rate"]
        ws.append([p["name"], p["center_id"], p["vehicles"], c["numerator"], c["denominator"], c["percent"],
                   i["numerator"], i["denominator"], i["percent"], i["trace"]["late"], i["trace"]["missed"],
                   i["trace"]["undeliverable"]])
    ws.column_dimensions["A"].width = 24


def _trace(wb, report: dict) -> None:
    ws = wb.create_sheet("追溯")
    _header(ws, 1, VEHICLE_COLUMNS)
    for v in report["trace"]["vehicles"]:
        ws.append([int(v[c]) if isinstance(v[c], bool) else v[c] for c in VEHICLE_COLUMNS[:-1]]
                  + [" ".join(v["days"])])


def render_xlsx(report: dict) -> bytes:
    wb = Workbook()
    _summary(wb.active, report)
    _breakdown(wb, "按类别", report["by_category"])
    _breakdown(wb, "按企业", report["by_enterprise"], {k: v["name"] for k, v in report["enterprises"].items()},
               report["scores"]["by_enterprise"])
    _breakdown(wb, "按区县", report["by_county"], None, report["scores"]["by_county"])
    _scores(wb, report)
    _platforms(wb, report)
    _overload(wb, report)
    _trace(wb, report)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
