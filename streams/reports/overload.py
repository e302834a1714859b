"""Overload (超限) section of the monthly report: pure counting over archive rows (no I/O).

Inputs are the month's ``wim_verdicts`` rows (one per distinct passage), its ``cases`` rows and their
``case_actions`` (see streams/archive/schema.py). Rates are half-up decimal percentages like the GPS indicators.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Mapping

import orjson

from roadwatch.models.rates import percent

# Escalation targets of "一超四罚" (§3.2) → the case column naming the subject, and the Chinese label.
# Matched by keyword so both English ids and Chinese names written by the case builder are understood.
_TARGETS = (
    (("vehicle", "车辆"), "plate", "车辆(吊销道路运输证)"),
    (("driver", "驾驶"), "driver_id", "驾驶人(吊销从业资格证)"),
    (("enterprise", "企业", "业户"), "enterprise_id", "道路运输企业(停业整顿)"),
    (("source", "源头", "装载"), "source_site_id", "货运源头单位"),
)

STAGE_ORDER = ("detected", "reviewed", "confirmed", "dismissed", "notified")
STAGE_LABELS = {"detected": "检测", "reviewed": "已审核", "confirmed": "确认", "dismissed": "撤销",
                "notified": "已告知"}
_ACTION_STAGES = {"review": {"reviewed"}, "confirm": {"reviewed", "confirmed"},
                  "dismiss": {"reviewed", "dismissed"}, "notify": {"reviewed", "confirmed", "notified"}}
_STATUS_STAGES = {"detected": set(), "reviewed": {"reviewed"}, "confirmed": {"reviewed", "confirmed"},
                  "dismissed": {"reviewed", "dismissed"}, "notified": {"reviewed", "confirmed", "notified"}}


def target_info(target: str) -> tuple[str | None, str]:
    t = str(target).lower()
    for words, column, label in _TARGETS:
        if any(w in t for w in words):
            return column, label
    return None, str(target)


def _int(v) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def station_stats(verdicts: Iterable[Mapping], station_names: Mapping[str, str], decimals: int) -> dict:
    """Per station and total: passages, over-limit count and rate, warnings, fines (count, yuan), reviews."""
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

    def row(station_id: str | None, c: Counter) -> dict:
        p = percent(c["over_limit"], c["readings"], decimals)
        return {"station_id": station_id, "name": station_names.get(station_id, "") if station_id else "合计",
                "readings": c["readings"], "over_limit": c["over_limit"],
                "over_limit_percent": None if p is None else float(p),
                "warnings": c["warnings"], "fines": c["fines"], "fine_yuan": c["fine_yuan"],
                "reviews": c["reviews"]}

    total = Counter()
    for c in per.values():
        total.update(c)
    stations = [row(s, per[s]) for s in sorted(per)]
    return {"stations": stations, "total": row(None, total), "review_reasons": dict(review_reasons.most_common())}


def case_stages(cases: Iterable[Mapping], actions: Iterable[Mapping]) -> dict[str, set[str]]:
    """Stages each case reached, from its status and its audit trail (whichever says more); when both a
    confirm and a dismiss exist the latest action decides, unless the status is already final."""
    by_case: dict[str, list[Mapping]] = defaultdict(list)
    for a in actions:
        by_case[str(a["case_id"])].append(a)
    out: dict[str, set[str]] = {}
    for c in cases:
        cid = str(c["case_id"])
        stages = {"detected"} | _STATUS_STAGES.get(c["status"], set())
        trail = sorted(by_case.get(cid, []), key=lambda a: str(a["ts"]))
        for a in trail:
            stages |= _ACTION_STAGES.get(a["action"], set())
        if "confirmed" in stages and "dismissed" in stages:
            if c["status"] in ("confirmed", "notified"):
                stages.discard("dismissed")
            elif c["status"] == "dismissed":
                stages.discard("confirmed")
            else:
                last = next((a["action"] for a in reversed(trail) if a["action"] in ("confirm", "dismiss")), None)
                stages.discard("dismissed" if last == "confirm" else "confirmed")
        out[cid] = stages
    return out


def case_funnel(cases: list[Mapping], actions: Iterable[Mapping]) -> dict:
    """detected → reviewed → confirmed/dismissed → notified, overall and per case action."""
    stages = case_stages(cases, actions)
    total = Counter()
    per_action: dict[str, Counter] = defaultdict(Counter)
    confirmed_yuan = 0
    for c in cases:
        st = stages[str(c["case_id"])]
        total.update(st)
        per_action[c["action"]].update(st)
        if c["action"] == "fine" and "confirmed" in st:
            confirmed_yuan += _int(c["fine_yuan"])
    funnel = {s: total[s] for s in STAGE_ORDER}
    funnel["open"] = total["detected"] - total["reviewed"]
    return {"funnel": funnel, "labels": STAGE_LABELS, "confirmed_fine_yuan": confirmed_yuan,
            "by_action": {a: {s: cnt[s] for s in STAGE_ORDER} for a, cnt in sorted(per_action.items())}}


def review_queue(cases: list[Mapping], verdicts: Iterable[Mapping], stages: dict[str, set[str]]) -> dict:
    """Review verdicts by reason, and how many of their cases still wait for a reviewer."""
    reason_of_case = {str(v["case_id"]): (v["review_reason"] or "(未注明)")
                      for v in verdicts if v["action"] == "review" and v["case_id"]}
    out: dict[str, dict] = {}
    for v in verdicts:
        if v["action"] != "review":
            continue
        r = out.setdefault(v["review_reason"] or "(未注明)", {"count": 0, "open": 0})
        r["count"] += 1
    for cid, reason in reason_of_case.items():
        st = stages.get(cid)
        if st is not None and "reviewed" not in st:
            out.setdefault(reason, {"count": 0, "open": 0})["open"] += 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["count"], kv[0])))


def escalations(cases: Iterable[Mapping]) -> dict:
    """"一超四罚" escalations in the month's case manifests, by target: cases carrying one, distinct subjects
    (vehicle / driver / enterprise / source site) and recommendations."""
    per: dict[str, dict] = {}
    subjects: dict[str, set] = defaultdict(set)
    bad_manifests = 0
    for c in cases:
        try:
            manifest = orjson.loads(c["manifest"]) if isinstance(c["manifest"], (str, bytes)) else c["manifest"]
            items = manifest.get("escalations") or []
            if not isinstance(items, list):
                raise TypeError
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            bad_manifests += 1
            continue
        for e in items:
            if not isinstance(e, dict) or "target" not in e:
                bad_manifests += 1
                continue
            target = str(e["target"])
            column, label = target_info(target)
            t = per.setdefault(target, {"label": label, "cases": 0, "subjects": None, "recommendations": Counter()})
            t["cases"] += 1
            if e.get("recommendation"):
                t["recommendations"][str(e["recommendation"])] += 1
            subject = e.get("id") or (c[column] if column else None)   # the case builder names it in "id"
            if subject:
                subjects[target].add(str(subject))
    for target, t in per.items():
        t["subjects"] = len(subjects[target]) if subjects[target] else None
        t["recommendations"] = dict(t["recommendations"].most_common())
    return {"targets": dict(sorted(per.items())), "bad_manifests": bad_manifests}


def overload_section(verdicts: list[Mapping], cases: list[Mapping], actions: list[Mapping],
                     station_names: Mapping[str, str], decimals: int) -> dict:
    stats = station_stats(verdicts, station_names, decimals)
    stages = case_stages(cases, actions)
    return {
        "available": True,
        "stations": stats["stations"],
        "total": stats["total"],
        "review_queue": review_queue(cases, verdicts, stages),
        "escalations": escalations(cases),
        "cases": case_funnel(cases, actions),
    }
