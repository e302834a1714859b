"""The Chinese summary paragraph of the monthly report, in the style regulators publish:

"2020年7月市级监督平台共有'两客一危'车辆1417辆，其中客运班车361辆，…，经营业户54家。车辆入网率达100%，
七月上线车辆1216辆，月上线率为85.82%；轨迹完整率达88.1%；数据合格率为98.1%…"

Figures come from the report dict only (never recomputed here); percentages drop trailing zeros like the
published text ("100%", "88.1%").
"""
from __future__ import annotations

MONTH_NAMES = ("一", "二", "三", "四", "五", "六", "七", "八", "九", "十", "十一", "十二")


def fmt_number(x: float | int | None) -> str:
    if x is None:
        return "—"
    if isinstance(x, int):
        return str(x)
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return s or "0"


def fmt_pct(rec: dict) -> str | None:
    p = rec.get("percent")
    return None if p is None else fmt_number(p) + "%"


def _rate_phrase(rec: dict, verb: str) -> str:
    p = fmt_pct(rec)
    if p is None:
        return f"{rec['label']}无法计算（{rec['reason'].split(' (')[0]}）"
    return f"{rec['label']}{verb}{p}"


def _delta_phrase(mom: dict | None) -> str:
    if not mom or mom.get("delta") is None:
        return ""
    d = mom["delta"]
    if d > 0:
        return f"，较上月上升{fmt_number(d)}个百分点"
    if d < 0:
        return f"，较上月下降{fmt_number(-d)}个百分点"
    return "，与上月持平"


def narrative(report: dict) -> str:
    y, m = report["month"].split("-")
    mi = int(m)
    pop = report["population"]
    rates = report["rates"]
    mom = report["month_on_month"]["rates"]
    cats = "，".join(f"{c}{n}辆" for c, n in pop["by_category"].items())
    online = rates["online_rate"]
    parts = [
        f"{int(y)}年{mi}月{report['platform']}共有'两客一危'车辆{pop['vehicles']}辆，其中{cats}，"
        f"经营业户{pop['enterprises']}家。",
        _rate_phrase(rates["network_rate"], "达") + "，",
        f"{MONTH_NAMES[mi - 1]}月上线车辆{online['numerator']}辆，",
    ]
    op = fmt_pct(online)
    parts.append(f"月上线率为{op}{_delta_phrase(mom.get('online_rate'))}；" if op else
                 _rate_phrase(online, "为") + "；")
    parts.append(_rate_phrase(rates["track_integrity_rate"], "达") + _delta_phrase(mom.get("track_integrity_rate"))
                 + "；")
    parts.append(_rate_phrase(rates["data_qualified_rate"], "为") + _delta_phrase(mom.get("data_qualified_rate"))
                 + "；")
    drift = rates["drift_rate"]
    parts.append(_rate_phrase(drift, "为") + (f"（漂移车辆{drift['numerator']}辆）" if fmt_pct(drift) else "") + "；")
    avg_o, avg_f = rates["avg_overspeed_count"], rates["avg_fatigue_seconds"]
    if avg_o["value"] is not None:
        parts.append(f"平均车辆超速{fmt_number(avg_o['value'])}次，平均疲劳驾驶时长{fmt_number(avg_f['value'])}秒。")
    else:
        parts[-1] = parts[-1].rstrip("；") + "。"
    agency = report["scores"]["agency"]
    if agency is not None:
        parts.append(f"按联网联控考核办法（管理机构考核表）本月考核得分{fmt_number(agency['total'])}分"
                     f"（满分{fmt_number(agency['max_points'])}分）。")
    ov = report["overload"]
    if ov.get("available") and ov["total"]["readings"]:
        t = ov["total"]
        f = ov["cases"]["funnel"]
        parts.append(f"本月超限检测站共检测车辆{t['readings']}辆次，超限{t['over_limit']}辆次，"
                     f"超限率{fmt_number(t['over_limit_percent'])}%；警告{t['warnings']}起，"
                     f"罚款{t['fines']}起共计{t['fine_yuan']}元，转人工审核{t['reviews']}起；"
                     f"本月检测案件{f['detected']}起，立案{f['filed']}起，已告知{f['notified']}起，"
                     f"作出处罚决定{f['decided']}起，撤销{f['withdrawn']}起；"
                     f"查处率{_rate_text(t['enforcement_rate'])}。")
    ic = (ov.get("interception") or {}).get("total") if ov.get("available") else None
    if ic is not None:
        q = ic["interception_rate"]
        if q["denominator"]:
            wait = ic["median_detect_to_intercept_min"]
            parts.append(f"本月布控任务{q['denominator']}起，拦截{q['numerator']}辆，拦截率{_rate_text(q)}，"
                         f"未发现{ic['not_found']}辆，放行{ic['released']}辆，超时未处置{ic['expired']}起；"
                         f"卸载货物{fmt_number(ic['unloaded_t'])}吨"
                         + (f"，检测至拦截时间中位数{fmt_number(wait)}分钟。" if wait is not None else "。"))
        else:
            parts.append("本月无布控任务。")
    return "".join(parts)


def _rate_text(q: dict) -> str:
    return (f"{fmt_number(q['percent'])}%（{q['numerator']}/{q['denominator']}）" if q["percent"] is not None
            else "无案件")
