"""Overload (超限) section of the monthly report: pure counting over archive rows (no I/O).

Inputs are the month's ``wim_verdicts`` rows (one per distinct passage), its ``cases`` rows, their acts
(``case_acts``: the case histories, streams/cases.py) and the Art. 66 escalations the lifecycle derives at
the month's last day (``CaseStore.escalations``). What counts is what the lifecycle says counts:

- the funnel shows every status a case has passed through (models/lifecycle.py);
- 查处率 per station = cases decided (决定, and not withdrawn) / cases detected, with both numbers;
- escalations are the derived ones (decided cases, identified drivers), with the statutory sanction names
  (《公路安全保护条例》第六十六条).

Rates are half-up decimal percentages like the GPS indicators.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Mapping

from roadwatch.models import lifecycle
from roadwatch.models.intercept import interception_rates
from roadwatch.models.art66 import BASIS as ART66_BASIS, SANCTIONS
from roadwatch.models.rates import percent

# Art. 66 targets → the case column naming the subject and the label with the statutory sanction
_TARGETS = (
    (("vehicle", "车辆"), "plate", f"货运车辆（{SANCTIONS['vehicle']}）"),
    (("driver", "驾驶"), "driver_id", f"货运车辆驾驶人（{SANCTIONS['driver']}）"),
    (("enterprise", "企业", "业户"), "enterprise_id", f"道路运输企业（{SANCTIONS['enterprise']}）"),
    (("source", "源头", "装载"), "source_site_id", "货运源头单位"),
)

STAGE_ORDER = lifecycle.STATUSES
STAGE_LABELS = {s: lifecycle.LABELS[s] for s in STAGE_ORDER}
DECIDED = frozenset({"decided", "served", "closed"})


def target_info(target: str) -> tuple[str | None, str]:
    t = str(target).lower()
    for words, column, label in _TARGETS:
        if any(w in t for w in words):
            return column, label
    return None, str(target)


def _int(v) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def case_stages(cases: Iterable[Mapping], acts: Iterable[Mapping]) -> dict[str, set[str]]:
    """Every status each case passed through, folding its acts (in order) with the lifecycle's rules;
    a case without acts is only ``detected``."""
    by_case: dict[str, list[Mapping]] = defaultdict(list)
    for a in acts:
        by_case[str(a["case_id"])].append(a)
    out: dict[str, set[str]] = {}
    for c in cases:
        cid = str(c["case_id"])
        status, stages = "detected", {"detected"}
        for a in sorted(by_case.get(cid, []), key=lambda a: a.get("seq") or 0):
            t = lifecycle.TRANSITIONS.get(a["action"])
            if t and status in t[0]:
                status = t[1]
                stages.add(status)
        out[cid] = stages
    return out


def final_status(stages: set[str]) -> str:
    """The status a case ends in, from the stages it passed (the graph has no cycle)."""
    for s in ("withdrawn", "dismissed", "closed", "served", "decided", "notified", "filed", "confirmed",
              "reviewed"):
        if s in stages:
            return s
    return "detected"


def counts_as_decided(stages: set[str]) -> bool:
    return bool(stages & DECIDED) and "withdrawn" not in stages


def station_stats(verdicts: Iterable[Mapping], cases: list[Mapping], stages: dict[str, set[str]],
                  station_names: Mapping[str, str], decimals: int) -> dict:
    """Per station and total: passages, over-limit count and rate, warnings, fines (count, yuan), reviews,
    permitted passages, and 查处率 = decided cases / detected cases."""
    per: dict[str, Counter] = defaultdict(Counter)
    review_reasons: Counter = Counter()
    for v in verdicts:
        c = per[str(v["station_id"])]
        c["readings"] += 1
        c["over_limit"] += 1 if v["over_limit"] else 0
        action = v["action"]
        if action == "warning":
            c["warnings"] += 1
        elif action == "fine":
            c["fines"] += 1
            c["fine_yuan"] += _int(v["fine_yuan"])
        elif action == "review":
            c["reviews"] += 1
            review_reasons[v["review_reason"] or "(未注明)"] += 1
    for case in cases:
        c = per[str(case["station_id"])]
        c["cases"] += 1
        c["decided"] += 1 if counts_as_decided(stages.get(str(case["case_id"]), set())) else 0

    def row(station_id: str | None, c: Counter) -> dict:
        p = percent(c["over_limit"], c["readings"], decimals)
        q = percent(c["decided"], c["cases"], decimals)
        return {"station_id": station_id, "name": station_names.get(station_id, "") if station_id else "合计",
                "readings": c["readings"], "over_limit": c["over_limit"],
                "over_limit_percent": None if p is None else float(p),
                "warnings": c["warnings"], "fines": c["fines"], "fine_yuan": c["fine_yuan"],
                "reviews": c["reviews"],
                "enforcement_rate": {"name": "查处率", "numerator": c["decided"], "denominator": c["cases"],
                                     "percent": None if q is None else float(q),
                                     "definition": "作出处罚决定（未撤销）的案件数 / 检测立案前的案件数"}}

    total = Counter()
    for c in per.values():
        total.update(c)
    stations = [row(s, per[s]) for s in sorted(per)]
    return {"stations": stations, "total": row(None, total), "review_reasons": dict(review_reasons.most_common())}


def case_funnel(cases: list[Mapping], stages: dict[str, set[str]]) -> dict:
    """Every status: how many of the month's cases passed through it, and how many end in it now."""
    passed, now = Counter(), Counter()
    per_action: dict[str, Counter] = defaultdict(Counter)
    decided_yuan = 0
    for c in cases:
        st = stages[str(c["case_id"])]
        passed.update(st)
        now[final_status(st)] += 1
        per_action[c["action"]].update(st)
        if c["action"] == "fine" and counts_as_decided(st):
            decided_yuan += _int(c["fine_yuan"])
    funnel = {s: passed[s] for s in STAGE_ORDER}
    funnel["open"] = now["detected"] + now["reviewed"]          # no review decision yet
    return {"stages": list(STAGE_ORDER), "funnel": funnel, "current": {s: now[s] for s in STAGE_ORDER},
            "labels": STAGE_LABELS, "decided_fine_yuan": decided_yuan,
            "by_action": {a: {s: cnt[s] for s in STAGE_ORDER} for a, cnt in sorted(per_action.items())}}


def review_queue(verdicts: Iterable[Mapping], stages: dict[str, set[str]]) -> dict:
    """Review verdicts by reason, and how many of their cases still wait for a review decision."""
    out: dict[str, dict] = {}
    for v in verdicts:
        if v["action"] != "review":
            continue
        r = out.setdefault(v["review_reason"] or "(未注明)", {"count": 0, "open": 0})
        r["count"] += 1
        st = stages.get(str(v["case_id"])) if v["case_id"] else None
        if st is not None and final_status(st) in ("detected", "reviewed"):
            r["open"] += 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["count"], kv[0])))


def escalations(items: Iterable[Mapping], at: str | None = None) -> dict:
    """The Art. 66 escalations the lifecycle derives at the month's last day, by target: subjects over the
    threshold, the cases they rest on, the statutory sanction, and each subject with its proposal."""
    per: dict[str, dict] = {}
    case_ids: dict[str, set] = defaultdict(set)
    for e in items:
        target = str(e["target"])
        _, label = target_info(target)
        t = per.setdefault(target, {"label": label, "sanction": SANCTIONS.get(target), "subjects": 0, "cases": 0,
                                    "recommendations": Counter(), "items": []})
        t["subjects"] += 1
        case_ids[target] |= set(e.get("case_ids") or [])
        if SANCTIONS.get(target):
            t["recommendations"][SANCTIONS[target]] += 1
        t["items"].append({k: e.get(k) for k in ("subject", "count", "threshold", "window_start", "window_end",
                                                 "case_ids", "proposal_id")})
    for target, t in per.items():
        t["cases"] = len(case_ids[target])
        t["recommendations"] = dict(t["recommendations"].most_common())
    return {"at": at, "basis": ART66_BASIS, "targets": dict(sorted(per.items()))}


def overload_section(verdicts: list[Mapping], cases: list[Mapping], acts: list[Mapping],
                     station_names: Mapping[str, str], decimals: int, escalation_items: Iterable[Mapping] = (),
                     escalations_at: str | None = None, *, intercept_tasks: Iterable[Mapping] = (),
                     month: str | None = None, now_ms: int = 0,
                     station_kinds: Mapping[str, str] | None = None) -> dict:
    stages = case_stages(cases, acts)
    stats = station_stats(verdicts, cases, stages, station_names, decimals)
    return {
        "interception": interception_section(intercept_tasks, stats, month, now_ms, decimals, station_names,
                                             station_kinds or {}) if month else None,
        "available": True,
        "stations": stats["stations"],
        "total": stats["total"],
        "review_queue": review_queue(verdicts, stages),
        "escalations": escalations(escalation_items, escalations_at),
        "cases": case_funnel(cases, stages),
    }


def interception_section(tasks: Iterable[Mapping], station_rows: Mapping, month: str, now_ms: int, decimals: int,
                         station_names: Mapping[str, str], station_kinds: Mapping[str, str]) -> dict:
    """布控 and its outcomes per detecting station and in total (``models.intercept.interception_rates``):
    拦截率 = intercepted / tasks created, beside the 查处率 the station rows already give (decided / detected
    cases: the same figure, not a second count); every station with tasks or cases is listed."""
    enf = {s["station_id"]: s["enforcement_rate"] for s in station_rows["stations"]}
    r = interception_rates(tasks, month, now_ms, decimals, station_kinds, stations=enf)
    empty = {"name": "查处率", "numerator": 0, "denominator": 0, "percent": None,
             "definition": station_rows["total"]["enforcement_rate"]["definition"]}
    for row in r["stations"]:
        row["name"] = station_names.get(row["station_id"], "")
        row["enforcement_rate"] = enf.get(row["station_id"], empty)
    r["total"]["name"] = "合计"
    r["total"]["enforcement_rate"] = station_rows["total"]["enforcement_rate"]
    r["definition"] = ("拦截率 = 布控后拦截的车辆数 / 布控任务数（按检测站、按首次检测所在月份）；"
                       "查处率 = 作出处罚决定（未撤销）的案件数 / 检测案件数；检测至拦截时长取中位数")
    return r
